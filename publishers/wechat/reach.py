"""WeChat's numbers for the reach report (传播监测): reads, shares and likes of our articles.

They come from `datacube/getarticletotaldetail`, joined to items through the `msg_data_id` our WeChat
deliveries keep. WeChat has data up to yesterday at the earliest, so the WeChat columns stop there and the
report says so. The endpoint lists articles by publication date with a cumulative `detail_list`; we ask from
`LOOKBACK_DAYS` before the window (reading happens mostly in the first days) and count the day-by-day
increments that fall inside the window. Reads are the reach; shares and likes are engagement, not extra reach.
Kept apart from the publisher so that publishing never loads it, and the report only when it runs.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from datetime import date, timedelta
from typing import Any

from pydantic import ValidationError

from publishers.reach import ChannelDelivery, ChannelReach, ReachWindow
from publishers.wechat.client import WeChatClient, WeChatError
from publishers.wechat.config import WeChatSettings
from rongmei.core.errors import ConfigError

__all__ = ["LOOKBACK_DAYS", "SPAN_DAYS", "articles_of", "wechat_reach"]

log = logging.getLogger(__name__)

LOOKBACK_DAYS = 7
SPAN_DAYS = 30  # getarticletotaldetail answers at most this many days per call


def articles_of(deliveries: Sequence[ChannelDelivery]) -> dict[str, str]:
    """msg_data_id -> item id, for every WeChat delivery that went out (publications and corrections)."""
    mapping: dict[str, str] = {}
    for delivery in deliveries:
        msg_data_id = str((delivery.details or {}).get("msg_data_id") or "")
        if msg_data_id:
            mapping[msg_data_id] = delivery.item_id
    return mapping


def _chunks(begin: date, end: date, span: int = SPAN_DAYS) -> Iterator[tuple[date, date]]:
    while begin <= end:
        stop = min(end, begin + timedelta(days=span - 1))
        yield begin, stop
        begin = stop + timedelta(days=1)


def _daily_increments(detail_list: Iterable[dict[str, Any]], key: str) -> dict[date, int]:
    """Cumulative values per stat_date → what each day added."""
    increments: dict[date, int] = {}
    previous = 0
    for entry in sorted(detail_list, key=lambda d: str(d.get("stat_date", ""))):
        try:
            day = date.fromisoformat(str(entry.get("stat_date")))
        except ValueError:
            continue
        value = int(entry.get(key) or 0)
        increments[day] = max(0, value - previous)
        previous = max(previous, value)
    return increments


def wechat_reach(window: ReachWindow) -> ChannelReach:
    """Reads (reach), shares and likes (engagement) per (item id, local day); the note says how current or why
    missing. `window.client` stands in for the WeChat API in tests."""
    since, until, settings = window.since, window.until, window.settings
    reads: Counter[tuple[str, date]] = Counter()
    shares: Counter[tuple[str, date]] = Counter()
    likes: Counter[tuple[str, date]] = Counter()
    numbers = ChannelReach(reads, {"wechat_shares": shares, "wechat_likes": likes})
    yesterday = window.today - timedelta(days=1)
    last = min(until, yesterday)
    numbers.through = last  # before `since` when WeChat has nothing for the window yet
    articles = articles_of(window.deliveries())
    if not articles:
        return numbers  # nothing of ours on WeChat: no columns to qualify
    if last < since:
        numbers.notes = [f"微信数据要到 {since + timedelta(days=1)} 才有（微信统计有一天延迟）。"]
        return numbers
    if last < until:
        numbers.notes = [f"微信数据截至昨日（{yesterday}）：微信统计有一天延迟，今天的阅读明天才有。"]
    try:
        config = WeChatSettings.model_validate(settings.channel_section("wechat"))
        client = window.client or WeChatClient(config, settings.data_dir)
    except (ConfigError, ValidationError):
        numbers.notes = ["未配置公众号（wechat.app_id / app_secret），没有统计微信数据。"]
        return numbers
    unmatched = 0
    try:
        for begin, end in _chunks(since - timedelta(days=LOOKBACK_DAYS), last):
            data = client.call("/datacube/getarticletotaldetail",
                               {"begin_date": begin.isoformat(), "end_date": end.isoformat()})
            for entry in data.get("list", []):
                msg_data_id = str(entry.get("msgid", "")).rsplit("_", 1)[0]
                item_id = articles.get(msg_data_id)
                if item_id is None:
                    unmatched += 1  # posted by hand in the WeChat back office: not one of our items
                    continue
                details = entry.get("detail_list") or []
                for counter, key in ((reads, "read_user"), (shares, "share_user"), (likes, "like_user")):
                    for day, added in _daily_increments(details, key).items():
                        if since <= day <= last and added:
                            counter[(item_id, day)] += added
    except (WeChatError, OSError) as exc:
        log.warning("reach: WeChat statistics unavailable: %s", exc)
        numbers.notes = [f"微信统计获取失败，微信各列为 0：{exc}"]
    if unmatched:
        log.info("reach: %d WeChat articles in the statistics are not rongmei deliveries", unmatched)
    return numbers
