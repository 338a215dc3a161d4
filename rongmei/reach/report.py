"""The reach report (传播监测反馈, issue 7 item 4): how far each item went, per channel and per day.

The report names no channel: every channel in the registry that declares `reach_columns` is a column group,
in `order`, and says what its numbers are through `Publisher.reach` (publishers.reach). Here they are
added up per item, per day and channel, per township (苏木镇街道) and per display group. Total reach is the
sum of each channel's reach; engagement numbers (shares, likes) are shown, not added. Days are
local days in `settings.timezone`.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

from publishers import registry_for
from publishers.base import Publisher
from publishers.reach import ChannelReach, ReachColumn
from rongmei.core.settings import Settings
from rongmei.reach.sources import ReachSources, published_in_window, titles
from rongmei.reach.window import local_today, report_window
from rongmei.storage.store import Store

__all__ = [
    "ITEM_HEADERS", "TOTAL_HEADER", "UNKNOWN_TITLE", "ItemReach", "ReachReport", "ReachTable",
    "ReportChannel", "gather", "report_channels", "report_table"
]

ITEM_HEADERS = {"item_id": "稿件编号", "title": "标题"}
TOTAL_HEADER = {"total_reach": "总到达"}
UNKNOWN_TITLE = "（库中没有此稿件）"


@dataclass(frozen=True)
class ReportChannel:
    """A channel as the report shows it: its name, label, chart colour and columns (the first is its reach)."""

    name: str
    label: str
    color: str
    columns: tuple[ReachColumn, ...]

    @classmethod
    def of(cls, publisher: type[Publisher]) -> ReportChannel:
        return cls(publisher.name, publisher.display_name(), publisher.color,
                   tuple(ReachColumn.of(column) for column in publisher.reach_columns))

    @property
    def reach(self) -> ReachColumn:
        return self.columns[0]

    @property
    def engagement(self) -> tuple[ReachColumn, ...]:
        return self.columns[1:]


def _reporting_publishers(settings: Settings) -> list[type[Publisher]]:
    found = [cls for cls in registry_for(settings).publishers.values() if cls.reach_columns]
    return sorted(found, key=lambda cls: (cls.order, cls.name))


def report_channels(settings: Settings) -> list[ReportChannel]:
    """The channels in the report, in column order."""
    return [ReportChannel.of(cls) for cls in _reporting_publishers(settings)]


# The gathered numbers ----------------------------------------------------------------------------------
@dataclass
class ItemReach:
    item_id: str
    title: str = ""
    numbers: Counter[str] = field(default_factory=Counter)  # column key -> count
    total_reach: int = 0  # the channels' reach columns only: engagement is not extra reach

    def row(self, keys: Iterable[str]) -> dict[str, Any]:
        return {"item_id": self.item_id, "title": self.title, **{key: self.numbers[key] for key in keys},
                "total_reach": self.total_reach}


@dataclass(frozen=True)
class ReachTable:
    """Rows per item (most reached first) and the headers people see for their keys, in column order."""

    headers: dict[str, str]
    rows: list[dict[str, Any]]

    @property
    def numbers(self) -> list[str]:
        return [key for key in self.headers if key not in ITEM_HEADERS]


@dataclass
class ReachReport:
    since: date
    until: date
    channels: list[ReportChannel] = field(default_factory=list)  # in column order
    items: dict[str, ItemReach] = field(default_factory=dict)
    daily: Counter[tuple[date, str]] = field(default_factory=Counter)  # (day, channel) -> reach
    townships: dict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))  # name -> channel
    township_channels: list[str] = field(default_factory=list)  # channels that roll up to townships
    groups: Counter[str] = field(default_factory=Counter)  # display group name -> reach
    notes: list[str] = field(default_factory=list)
    through: dict[str, date] = field(default_factory=dict)  # channel -> last day it has data for, when it lags

    def item(self, item_id: str) -> ItemReach:
        if item_id not in self.items:
            self.items[item_id] = ItemReach(item_id)
        return self.items[item_id]

    def days(self) -> list[date]:
        return [self.since + timedelta(days=n) for n in range((self.until - self.since).days + 1)]

    def known(self, channel: str, day: date) -> bool:
        """Whether `channel` has data for `day` (a lagging channel has none yet for its last days)."""
        through = self.through.get(channel)
        return through is None or day <= through

    def lag_through(self, channel: str) -> date | None:
        """The last day `channel` has data for when that falls inside the window but before its end."""
        through = self.through.get(channel)
        return through if through is not None and self.since <= through < self.until else None

    def headers(self) -> dict[str, str]:
        columns = {column.key: column.label for channel in self.channels for column in channel.columns}
        return {**ITEM_HEADERS, **columns, **TOTAL_HEADER}

    def rows(self) -> list[dict[str, Any]]:
        """Per item, most reached first."""
        keys = [column.key for channel in self.channels for column in channel.columns]
        ordered = sorted(self.items.values(), key=lambda r: (-r.total_reach, r.item_id))
        return [reach.row(keys) for reach in ordered]

    def table(self) -> ReachTable:
        return ReachTable(self.headers(), self.rows())


# Assembling ----------------------------------------------------------------------------------------------
def _add(report: ReachReport, channel: ReportChannel, numbers: ChannelReach) -> None:
    for (item_id, day), n in numbers.reach.items():
        reach = report.item(item_id)
        reach.numbers[channel.reach.key] += n
        reach.total_reach += n
        report.daily[(day, channel.name)] += n
    for column in channel.engagement:
        for (item_id, _day), n in numbers.engagement.get(column.key, Counter()).items():
            report.item(item_id).numbers[column.key] += n
    report.notes.extend(numbers.notes)
    if numbers.through is not None:
        report.through[channel.name] = numbers.through
    if numbers.townships is not None:
        report.township_channels.append(channel.name)


def _rollup(parts: list[tuple[str, Counter[tuple[str, date, str]]]]) -> list[tuple[str, str, int]]:
    """(channel, name, n) from the channels' (item, day, name) rollups, by item and day, then channel name, then
    each channel's own order: the order names first appear in decides ties in the tables and the chart."""
    entries = [(item_id, day, channel, name, n) for channel, counter in parts
               for (item_id, day, name), n in counter.items()]
    entries.sort(key=lambda entry: entry[:3])  # stable: within a channel's (item, day), its own order
    return [(channel, name, n) for _item, _day, channel, name, n in entries]


def gather(store: Store, settings: Settings, since: date, until: date, *,
           clients: Mapping[str, Any] | None = None, today: date | None = None) -> ReachReport:
    """Every channel's numbers for the window, per item, per day, per township and display group.

    `clients` (channel name -> stand-in for its remote API) is for tests; `today` defaults to the local date."""
    publishers = _reporting_publishers(settings)
    report = ReachReport(since, until, channels=[ReportChannel.of(cls) for cls in publishers])
    for item_id in published_in_window(store, settings, since, until):
        report.item(item_id)
    sources = ReachSources(store, settings, since, until, today or local_today(settings), clients)
    townships: list[tuple[str, Counter[tuple[str, date, str]]]] = []
    groups: list[tuple[str, Counter[tuple[str, date, str]]]] = []
    for publisher, channel in zip(publishers, report.channels, strict=True):
        numbers = publisher.reach(sources.window(channel.name))
        if numbers is None:
            continue
        _add(report, channel, numbers)
        townships += [(channel.name, numbers.townships)] if numbers.townships is not None else []
        groups += [(channel.name, numbers.groups)] if numbers.groups is not None else []
    for channel_name, name, n in _rollup(townships):
        report.townships[name][channel_name] += n
    for _channel, name, n in _rollup(groups):
        report.groups[name] += n
    known = titles(store, report.items)
    for item_id, reach in report.items.items():
        reach.title = known.get(item_id, UNKNOWN_TITLE)
    return report


def report_table(store: Store, settings: Settings, since: str | date | None = None,
                 until: str | date | None = None) -> ReachTable:
    """One row per item (most reached first) with its headers: what `rongmei report` prints."""
    start, end = report_window(settings, since, until)
    return gather(store, settings, start, end).table()
