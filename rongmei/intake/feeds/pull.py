"""One pull of one source: fetch conditionally, write a drop per entry not taken before, and record in the
store what was taken and how the source answered. Upstream trouble never raises: it becomes the source's health.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from rongmei.core.errors import RongmeiError
from rongmei.core.settings import FeedSourceConfig
from rongmei.intake.feeds.drops import build_reprint, write_drop
from rongmei.intake.feeds.fetch import READ_TIMEOUT, FeedFetchError, fetch, parse, short_reason
from rongmei.storage import ledger
from rongmei.storage.store import Store
from rongmei.storage.tables import Base, FeedEntry, FeedSource, utcnow

__all__ = ["PullResult", "configured_sources", "ensure_tables", "pull_all", "pull_source"]

log = logging.getLogger(__name__)


def ensure_tables(store: Store) -> None:
    """Create the feed tables if this database predates them and was opened without `Store.create_schema`
    (which creates them with every other table)."""
    Base.metadata.create_all(store.engine, tables=[FeedSource.__table__, FeedEntry.__table__])


def configured_sources(settings: Any) -> list[FeedSourceConfig]:
    """Enabled sources from `[[feeds]]` in the configuration."""
    return [s for s in settings.feeds if s.enabled]


@dataclass
class PullResult:
    """What one pull of one source did; `status` is ok | not_modified | warning | error."""

    name: str
    url: str
    status: str
    new_items: list[str] = field(default_factory=list)
    entries: int = 0
    message: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "url": self.url,
            "status": self.status,
            "new": len(self.new_items),
            "new_items": list(self.new_items),
            "entries": self.entries,
            "message": self.message,
        }


def _state(session: Session, source: FeedSourceConfig) -> FeedSource:
    state = session.get(FeedSource, source.url)
    if state is None:
        state = FeedSource(url=source.url, name=source.name)
        session.add(state)
    state.name = source.name
    return state


def pull_source(
    source: FeedSourceConfig, inbox: Path, store: Store, *, timeout: float = READ_TIMEOUT
) -> PullResult:
    """Pull one source and write a drop per new entry. Never raises for upstream trouble: it goes to health."""
    ensure_tables(store)
    with store.session() as session:
        state = _state(session, source)
        etag, last_modified = state.etag, state.last_modified
    checked = utcnow()
    try:
        fetched = fetch(source.url, etag, last_modified, timeout=timeout)
    except FeedFetchError as exc:
        log.warning("feed %s: %s", source.url, exc)
        return _record_failure(store, source, checked, str(exc), exc.http_status)
    if fetched.status == 304:
        with store.session() as session:
            state = _state(session, source)
            # Unchanged content is still as malformed as last time: a warning stays until the feed changes.
            still_malformed = state.last_status == "warning"
            state.last_status = "warning" if still_malformed else "not_modified"
            state.last_error = state.last_error if still_malformed else ""
            state.last_http_status = 304
            state.last_checked = state.last_success = checked
            state.last_new = 0
            message = state.last_error
        return PullResult(source.name, source.url, "not_modified", message=message)

    parsed = parse(fetched)
    warning = ""
    if parsed.bozo:
        reason = f"{parsed.bozo_exception.__class__.__name__}: {short_reason(parsed.bozo_exception)}"
        if not parsed.entries:
            return _record_failure(
                store, source, checked, f"内容不是有效的 RSS/Atom，未能读出任何条目（{reason}）", fetched.status
            )
        warning = f"订阅源格式有误，已尽量读出 {len(parsed.entries)} 条（{reason}）"

    result = PullResult(source.name, source.url, "warning" if warning else "ok", entries=len(parsed.entries),
                        message=warning)
    try:
        with store.session() as session:
            state = _state(session, source)
            known = set(session.scalars(select(FeedEntry.key).where(FeedEntry.source == source.url)))
            for entry in parsed.entries:
                reprint = build_reprint(entry, source, fetched.url)
                if reprint is None or reprint.key in known:
                    continue
                known.add(reprint.key)
                # The drop goes first: if the transaction then fails, the next pull writes it again and the
                # ingest sees the same id and content ("unchanged"); the other order could lose an entry.
                written = write_drop(inbox, reprint)
                session.add(FeedEntry(source=source.url, key=reprint.key, item_id=reprint.item_id, link=reprint.link))
                if written is not None:
                    result.new_items.append(reprint.item_id)
                    ledger.record(
                        session,
                        "reprint.dropped",
                        actor=f"feed:{source.name}",
                        item_id=reprint.item_id,
                        details={"source": source.url, "key": reprint.key, "link": reprint.link, "drop": written.name},
                    )
            state.etag, state.last_modified = fetched.etag, fetched.last_modified
            state.last_status, state.last_http_status, state.last_error = result.status, fetched.status, warning
            state.last_checked = state.last_success = checked
            state.last_new = len(result.new_items)
    except RongmeiError as exc:  # the inbox cannot be written: nothing of this pull is recorded as taken
        log.error("feed %s: %s", source.url, exc)
        return _record_failure(store, source, checked, str(exc))
    log.info("feed %s: %d entries, %d new", source.url, result.entries, len(result.new_items))
    return result


def _record_failure(
    store: Store, source: FeedSourceConfig, checked: datetime, message: str, http_status: int = 0
) -> PullResult:
    # Validators are kept: the next pull may still be answered with 304 once the source is back.
    with store.session() as session:
        state = _state(session, source)
        state.last_status, state.last_http_status, state.last_error = "error", http_status, message
        state.last_checked = checked
        state.last_new = 0
    return PullResult(source.name, source.url, "error", message=message)


def pull_all(
    sources: list[FeedSourceConfig], inbox: Path, store: Store, *, timeout: float = READ_TIMEOUT
) -> list[PullResult]:
    """Pull every source in turn (the Prefect flow runs them as separate tasks instead)."""
    return [pull_source(source, inbox, store, timeout=timeout) for source in sources]


