"""The reach hook (传播监测): what the report hands each channel, and what a channel hands back.

The report (`rongmei.reach`) ranks above the channels, so a channel cannot read the access log, the plays or
the deliveries itself without importing upwards: the report gives it a `ReachWindow` whose sources are
ready-made, and the channel alone decides what they mean for it (which pages are its views, which terminals
are its own, how its remote statistics are read) and answers with a `ChannelReach`.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any, NamedTuple

from rongmei.core.settings import Settings

__all__ = [
    "UNGROUPED", "ChannelDelivery", "ChannelReach", "PageView", "PlayCount", "ReachColumn", "ReachWindow",
    "count_plays", "page_reach"
]

UNGROUPED = "（未分组）"  # the display-group rollup of plays whose terminal's group has no name


class ReachColumn(NamedTuple):
    """One number a channel shows in the report (`Publisher.reach_columns`); a plain `(key, label)` tuple is one.

    `key` names it in rows, the flow's result and the tests (`web_views`); `label` is the header people see in
    the terminal table, the Prefect table and the CSV (`网站浏览`); `short` is how the Markdown summary names an
    engagement number inside its channel's brackets (`分享`), the label when empty."""

    key: str
    label: str
    short: str = ""

    @classmethod
    def of(cls, column: tuple[str, ...]) -> ReachColumn:
        return cls(*column)

    @property
    def brief(self) -> str:
        return self.short or self.label


@dataclass(frozen=True)
class PageView:
    """A reader's view of a public page, from the distribution server's access log: a successful GET by
    something that is not a bot (`rongmei.distribution.accesslog.is_page_view`), inside the window."""

    path: str  # as requested, e.g. /articles/2026-harvest/
    at: datetime  # when, aware
    day: date  # the local day (settings.timezone) it falls on


@dataclass(frozen=True)
class PlayCount:
    """Proof-of-play reports inside the window, counted per item, local day and reporting terminal's audience.

    The audience is what the terminal was enrolled with: a zone (village code) and/or a display group. The
    core resolves the zone's township (苏木镇街道; `未知区划 <code>` when the code is not configured) and the
    group's name, so channels need not read the configuration of zones and groups."""

    item_id: str
    day: date
    zone: str  # administrative code the terminal was enrolled with, "" when none
    township: str  # the zone's township name, "" when the terminal has no zone
    group: str  # display group id the terminal was enrolled with, "" when none
    group_name: str  # that group's configured name (its id when it has none), "" when no group
    plays: int


@dataclass(frozen=True)
class ChannelDelivery:
    """One successful delivery of the channel (publications and corrections; drafts too, which reached no one
    but are harmless): how a channel joins its remote statistics to our items."""

    item_id: str
    remote_id: str
    details: Mapping[str, Any]


@dataclass(frozen=True)
class ReachWindow:
    """What the report hands one channel: the window and the sources the core reads for it.

    The sources are functions so that a channel pays only for what it reads; the report reads each source
    at most once however many channels use it. `client` is a stand-in for the channel's remote API, given by
    tests; a channel makes its own when it is None."""

    channel: str
    since: date  # first local day, inclusive
    until: date  # last local day, inclusive
    today: date  # local; remote statistics usually stop before it
    settings: Settings
    page_views: Callable[[str], Iterator[PageView]]  # views of pages whose path starts with the prefix given
    plays: Callable[[], Sequence[PlayCount]]  # every terminal's, sorted by item, day, township, group name
    deliveries: Callable[[], Sequence[ChannelDelivery]]  # this channel's own successful deliveries
    client: Any = None


@dataclass
class ChannelReach:
    """A channel's numbers for one window. Every counter is keyed by item id and local day first.

    `reach` is what the channel's first reach column shows and what adds to 总到达. `engagement` holds the
    further columns by key (shown, never added to reach: WeChat shares and likes). `townships` and `groups`
    roll the reach up to townships and display groups, keyed (item, day, name); None when the channel has no
    such rollup (an empty counter: it has one, with nothing in this window). `through` is the last day the
    channel has data for when that is before the window's end (a day before `since`: nothing yet): the chart
    and the daily CSV show the days after it as "no data yet", not as 0. `notes` are shown with the report."""

    reach: Counter[tuple[str, date]] = field(default_factory=Counter)
    engagement: dict[str, Counter[tuple[str, date]]] = field(default_factory=dict)
    townships: Counter[tuple[str, date, str]] | None = None
    groups: Counter[tuple[str, date, str]] | None = None
    through: date | None = None
    notes: list[str] = field(default_factory=list)


def page_reach(window: ReachWindow, prefix: str, page: re.Pattern[str]) -> ChannelReach:
    """Reach of a channel whose items are public pages: views of paths under `prefix` that `page` matches,
    its first group being the item id, per (item, local day)."""
    views: Counter[tuple[str, date]] = Counter()
    for view in window.page_views(prefix):
        match = page.match(view.path)
        if match is not None:
            views[(match.group(1), view.day)] += 1
    return ChannelReach(views)


def count_plays(window: ReachWindow, mine: Callable[[PlayCount], bool], *, by_group: bool) -> ChannelReach:
    """Reach of a channel whose terminals report proof of play: the plays of the terminals `mine` says are the
    channel's, per (item, local day), rolled up to townships and, with `by_group`, to display groups."""
    reach: Counter[tuple[str, date]] = Counter()
    townships: Counter[tuple[str, date, str]] = Counter()
    groups: Counter[tuple[str, date, str]] = Counter()
    for count in window.plays():
        if not mine(count):
            continue
        reach[(count.item_id, count.day)] += count.plays
        if by_group:
            groups[(count.item_id, count.day, count.group_name or UNGROUPED)] += count.plays
        if count.township:
            townships[(count.item_id, count.day, count.township)] += count.plays
    return ChannelReach(reach, townships=townships, groups=groups if by_group else None)
