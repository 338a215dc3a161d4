"""What the core reads for a reach report, ready for the channels: page views, plays, deliveries, titles.

The channels rank below the store and the distribution server, so the report reads these sources for them
and hands each channel a `publishers.reach.ReachWindow` over them (`ReachSources.window`):
- **page views**: successful views of public pages in the distribution server's access log
  (`data_dir/logs/access.jsonl`, plus rotated `access*.jsonl*`), by `rongmei.distribution.accesslog.is_page_view`:
  GET only, status 200 or 304, no bots or scripts, no previews (logged with kind "preview"), media, feeds or
  terminal polls;
- **plays**: proof-of-play rows, by the local day the play started, with the reporting terminal's zone, its
  township (苏木镇街道) and its display group;
- **deliveries**: each channel's own successful deliveries, to join its remote statistics to our items.
"""

from __future__ import annotations

import glob
import gzip
import json
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from datetime import date, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import select

from publishers.reach import ChannelDelivery, PageView, PlayCount, ReachWindow
from rongmei.core.settings import Settings
from rongmei.core.states import DONE_STATES
from rongmei.core.zones import zone_index
from rongmei.distribution.accesslog import is_page_view
from rongmei.reach.window import local_day, utc_bounds
from rongmei.storage.store import Store
from rongmei.storage.tables import Delivery, Play, Version

__all__ = [
    "ReachSources", "access_log_files", "channel_deliveries", "page_views", "play_counts",
    "published_in_window", "titles"
]



# Page views ----------------------------------------------------------------------------------------------
def access_log_files(settings: Settings) -> list[Path]:
    """The live access log and any rotated copies (`access.jsonl.1`, `access-2026-05-01.jsonl.gz`, …)."""
    pattern = str(settings.data_dir / "logs" / "access*.jsonl*")
    return [Path(p) for p in sorted(glob.glob(pattern))]


def _lines(path: Path) -> Iterator[str]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8", errors="replace") as handle:
        yield from handle


def page_views(settings: Settings, since: date, until: date, prefix: str) -> Iterator[PageView]:
    """Page views of paths starting with `prefix` from the access log, inside the window."""
    zone = ZoneInfo(settings.timezone)
    start, end = utc_bounds(settings, since, until)
    needle = f'"{prefix}'
    for path in access_log_files(settings):
        for line in _lines(path):
            # Terminal polls are most of the log: skip them before paying for a JSON parse.
            if needle not in line:
                continue
            try:
                entry = json.loads(line)
                moment = datetime.fromisoformat(entry["time"])
            except (ValueError, KeyError, TypeError):
                continue  # a line cut short by a crash; the rest of the log still counts
            page = entry.get("path") or ""
            if not page.startswith(prefix) or not is_page_view(entry) or not start <= moment < end:
                continue
            yield PageView(page, moment, local_day(moment, zone))


# Plays ---------------------------------------------------------------------------------------------------
def play_counts(store: Store, settings: Settings, since: date, until: date) -> list[PlayCount]:
    """Proof-of-play rows grouped by item, local day and terminal audience, sorted by item, day, township and
    display group name."""
    zone = ZoneInfo(settings.timezone)
    zones = zone_index(settings)
    group_names = {g.id: g.name for g in settings.screen_groups}
    start, end = utc_bounds(settings, since, until)

    def township(code: str) -> str:
        if not code:
            return ""
        here = zones.get(code)
        if here is None:
            return f"未知区划 {code}"
        top = zones.get(here.parent) if here.parent else None
        return (top or here).name

    counts: Counter[tuple[str, date, str, str, str, str]] = Counter()
    with store.session() as session:
        rows = session.execute(
            select(Play.item_id, Play.started_at, Play.zone, Play.group)
            .where(Play.started_at >= start, Play.started_at < end)
            .execution_options(yield_per=5000)
        )
        for item_id, started_at, code, group in rows:
            counts[(item_id, local_day(started_at, zone), township(code), group_names.get(group, group),
                    code or "", group or "")] += 1
    return [PlayCount(item_id, day, zone=code, township=town, group=group, group_name=name, plays=n)
            for (item_id, day, town, name, code, group), n in sorted(counts.items())]


# Deliveries and items ------------------------------------------------------------------------------------
def channel_deliveries(store: Store, channel: str) -> list[ChannelDelivery]:
    """Every delivery of `channel` that went out (publications and corrections)."""
    with store.session() as session:
        rows = session.execute(
            select(Delivery.item_id, Delivery.remote_id, Delivery.details)
            .where(Delivery.channel == channel, Delivery.state.in_(DONE_STATES))
        ).all()
    return [ChannelDelivery(item_id, remote_id or "", details or {}) for item_id, remote_id, details in rows]


def titles(store: Store, item_ids: Iterable[str]) -> dict[str, str]:
    """Item id -> title of its latest version."""
    wanted = list(item_ids)
    found: dict[str, str] = {}
    with store.session() as session:
        for chunk in (wanted[i:i + 500] for i in range(0, len(wanted), 500)):
            rows = session.execute(
                select(Version.item_id, Version.number, Version.meta).where(Version.item_id.in_(chunk))
            ).all()
            for item_id, _number, meta in sorted(rows, key=lambda r: r[1]):
                found[item_id] = str((meta or {}).get("title") or item_id)  # the latest version wins
    return found


def published_in_window(store: Store, settings: Settings, since: date, until: date) -> list[str]:
    """Items delivered during the window: they belong in the report even when nobody reached them."""
    start, end = utc_bounds(settings, since, until)
    with store.session() as session:
        return list(session.scalars(
            select(Delivery.item_id)
            .where(Delivery.state.in_(DONE_STATES), Delivery.action == "publish",
                   Delivery.updated_at >= start, Delivery.updated_at < end)
            .distinct()
        ))


# The channels' windows -----------------------------------------------------------------------------------
class ReachSources:
    """The sources of one report window, each read at most once however many channels use it (plays), or
    streamed to the channel that asks (page views, which can be a large log)."""

    def __init__(self, store: Store, settings: Settings, since: date, until: date, today: date,
                 clients: Mapping[str, Any] | None = None) -> None:
        self.store, self.settings = store, settings
        self.since, self.until, self.today = since, until, today
        self.clients = dict(clients or {})  # channel name -> stand-in for its remote API (tests)
        self._plays: list[PlayCount] | None = None

    def page_views(self, prefix: str) -> Iterator[PageView]:
        return page_views(self.settings, self.since, self.until, prefix)

    def plays(self) -> list[PlayCount]:
        if self._plays is None:
            self._plays = play_counts(self.store, self.settings, self.since, self.until)
        return self._plays

    def window(self, channel: str) -> ReachWindow:
        """What `channel`'s `Publisher.reach` is given."""
        return ReachWindow(
            channel=channel, since=self.since, until=self.until, today=self.today, settings=self.settings,
            page_views=self.page_views, plays=self.plays,
            deliveries=lambda: channel_deliveries(self.store, channel), client=self.clients.get(channel),
        )
