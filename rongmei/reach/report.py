"""The reach report (传播监测反馈, issue 7 item 4): how far each item went, per channel and per day.

Sources, and what counts:
- **web**: successful page views of `/articles/<id>/` in the distribution server's access log
  (`data_dir/logs/access.jsonl`, plus rotated `access*.jsonl*`), by `rongmei.distribution.accesslog.is_page_view`: GET only,
  status 200 or 304 (a 304 is a reader coming back with the page cached, still a view), no bots or
  scripts, no previews (logged with kind "preview"), media, feeds or terminal polls.
- **wechat**: reads, shares and likes from `datacube/getarticletotaldetail`, joined to items through the
  `msg_data_id` our WeChat deliveries keep. WeChat has data up to yesterday at the earliest, so the WeChat
  columns stop there and the report says so. The endpoint lists articles by publication date with a
  cumulative `detail_list`; we ask from `WECHAT_LOOKBACK_DAYS` before the window (reading happens mostly in
  the first days) and count the day-by-day increments that fall inside the window.
- **screens / loudspeakers**: proof-of-play rows (`plays`), by the local day the play started. A terminal
  enrolled with a display group is a screen, one with only a zone a loudspeaker; plays are rolled up from
  the village to its township (苏木镇街道) and, for screens, to their display group.

Total reach = web views + WeChat reads + screen plays + loudspeaker plays (shares and likes are engagement,
not extra reach). Days are local days in `settings.timezone`.

The chart and CSV go to `data_dir/reports/<run date>/`, never under the public site: the report shows
per-item numbers leadership sees, not readers. The run's Markdown summary names them by `file://` path.
"""

from __future__ import annotations

import csv
import glob
import gzip
import io
import json
import logging
import re
import sys
import unicodedata
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import select

from rongmei.core.errors import ConfigError, RongmeiError
from rongmei.core.files import ASSETS_DIR
from rongmei.core.settings import Settings
from rongmei.core.zones import zone_index
from rongmei.distribution.accesslog import is_page_view
from rongmei.storage.store import Delivery, Play, Store, Version

log = logging.getLogger(__name__)

CHANNELS = ("web", "wechat", "screens", "loudspeakers")
CHANNEL_LABELS = {"web": "网站", "wechat": "微信公众号", "screens": "大屏", "loudspeakers": "村村响"}
DONE_STATES = ("succeeded", "draft_ready")  # as rongmei.delivery.deliveries: a draft never reached readers, but harmless
DEFAULT_DAYS = 7
WECHAT_LOOKBACK_DAYS = 7
WECHAT_SPAN_DAYS = 30  # getarticletotaldetail answers at most this many days per call
ARTICLE_PATH = re.compile(r"^/articles/([^/]+)/(?:index\.html)?$")
FONT_PATH = ASSETS_DIR / "fonts" / "NotoSansSC-Regular.otf"

# Column order and the headers people see (terminal, Prefect table, CSV).
COLUMNS = {
    "item_id": "稿件编号",
    "title": "标题",
    "web_views": "网站浏览",
    "wechat_reads": "微信阅读",
    "wechat_shares": "微信分享",
    "wechat_likes": "微信点赞",
    "screen_plays": "大屏播放",
    "loudspeaker_plays": "村村响播放",
    "total_reach": "总到达",
}
NUMBERS = [key for key in COLUMNS if key not in ("item_id", "title")]


class ReportError(RongmeiError):
    """Raised when a report cannot be made as asked (bad dates, window backwards)."""


# The gathered numbers ----------------------------------------------------------------------------------
@dataclass
class ItemReach:
    item_id: str
    title: str = ""
    web_views: int = 0
    wechat_reads: int = 0
    wechat_shares: int = 0
    wechat_likes: int = 0
    screen_plays: int = 0
    loudspeaker_plays: int = 0

    @property
    def total_reach(self) -> int:
        return self.web_views + self.wechat_reads + self.screen_plays + self.loudspeaker_plays

    def row(self) -> dict[str, Any]:
        return {key: getattr(self, key) for key in COLUMNS}


@dataclass
class ReachReport:
    since: date
    until: date
    items: dict[str, ItemReach] = field(default_factory=dict)
    daily: Counter[tuple[date, str]] = field(default_factory=Counter)  # (day, channel) -> reach
    townships: dict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))  # name -> channel
    groups: Counter[str] = field(default_factory=Counter)  # display group name -> screen plays
    notes: list[str] = field(default_factory=list)
    wechat_through: date | None = None  # last day WeChat has data for (yesterday at the latest)

    def item(self, item_id: str) -> ItemReach:
        if item_id not in self.items:
            self.items[item_id] = ItemReach(item_id)
        return self.items[item_id]

    def days(self) -> list[date]:
        return [self.since + timedelta(days=n) for n in range((self.until - self.since).days + 1)]

    def rows(self) -> list[dict[str, Any]]:
        """Per item, most reached first."""
        ordered = sorted(self.items.values(), key=lambda r: (-r.total_reach, r.item_id))
        return [reach.row() for reach in ordered]


# Window --------------------------------------------------------------------------------------------------
def local_today(settings: Settings) -> date:
    return datetime.now(ZoneInfo(settings.timezone)).date()


def parse_day(text: str, what: str) -> date:
    try:
        return date.fromisoformat(text.strip())
    except ValueError as exc:
        raise ReportError(f"{what}日期 {text!r} 无法识别：请写成 2026-05-01 这样的 年-月-日") from exc


def report_window(settings: Settings, since: str | date | None = None, until: str | date | None = None,
                  *, today: date | None = None) -> tuple[date, date]:
    """(since, until) inclusive local days; defaults: until today, since `DEFAULT_DAYS` days before."""
    today = today or local_today(settings)
    end = parse_day(until, "截止") if isinstance(until, str) else (until or today)
    start = parse_day(since, "起始") if isinstance(since, str) else (since or end - timedelta(days=DEFAULT_DAYS - 1))
    if start > end:
        raise ReportError(f"起始日期 {start} 晚于截止日期 {end}：请对调两者")
    return start, end


def _utc_bounds(settings: Settings, since: date, until: date) -> tuple[datetime, datetime]:
    zone = ZoneInfo(settings.timezone)
    start = datetime.combine(since, time.min, zone).astimezone(UTC)
    end = datetime.combine(until + timedelta(days=1), time.min, zone).astimezone(UTC)
    return start, end


def _local_day(moment: datetime, zone: ZoneInfo) -> date:
    if moment.tzinfo is None:  # SQLite hands back naive datetimes; the store writes UTC
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(zone).date()


# Web -----------------------------------------------------------------------------------------------------
def access_log_files(settings: Settings) -> list[Path]:
    """The live access log and any rotated copies (`access.jsonl.1`, `access-2026-05-01.jsonl.gz`, …)."""
    pattern = str(settings.data_dir / "logs" / "access*.jsonl*")
    return [Path(p) for p in sorted(glob.glob(pattern))]


def _lines(path: Path) -> Iterator[str]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8", errors="replace") as handle:
        yield from handle


def web_views(settings: Settings, since: date, until: date) -> Counter[tuple[str, date]]:
    """Page views per (item id, local day) from the access log."""
    zone = ZoneInfo(settings.timezone)
    start, end = _utc_bounds(settings, since, until)
    views: Counter[tuple[str, date]] = Counter()
    for path in access_log_files(settings):
        for line in _lines(path):
            # Terminal polls are most of the log: skip them before paying for a JSON parse.
            if '"/articles/' not in line:
                continue
            try:
                entry = json.loads(line)
                moment = datetime.fromisoformat(entry["time"])
            except (ValueError, KeyError, TypeError):
                continue  # a line cut short by a crash; the rest of the log still counts
            match = ARTICLE_PATH.match(entry.get("path") or "")
            if match is None or not is_page_view(entry) or not start <= moment < end:
                continue
            views[(match.group(1), _local_day(moment, zone))] += 1
    return views


# WeChat --------------------------------------------------------------------------------------------------
@dataclass
class WeChatNumbers:
    reads: Counter[tuple[str, date]] = field(default_factory=Counter)
    shares: Counter[tuple[str, date]] = field(default_factory=Counter)
    likes: Counter[tuple[str, date]] = field(default_factory=Counter)
    note: str = ""
    through: date | None = None  # last day asked for; WeChat has nothing newer than yesterday


def wechat_articles(store: Store) -> dict[str, str]:
    """msg_data_id -> item id, for every WeChat delivery that went out (publications and corrections)."""
    with store.session() as session:
        rows = session.execute(
            select(Delivery.item_id, Delivery.details)
            .where(Delivery.channel == "wechat", Delivery.state.in_(DONE_STATES))
        ).all()
    mapping: dict[str, str] = {}
    for item_id, details in rows:
        msg_data_id = str((details or {}).get("msg_data_id") or "")
        if msg_data_id:
            mapping[msg_data_id] = item_id
    return mapping


def _chunks(begin: date, end: date, span: int = WECHAT_SPAN_DAYS) -> Iterator[tuple[date, date]]:
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


def wechat_numbers(settings: Settings, store: Store, since: date, until: date, *, client: Any = None,
                   today: date | None = None) -> WeChatNumbers:
    """Reads, shares and likes per (item id, local day); `note` says how current or why missing."""
    from publishers.wechat_client import WeChatClient, WeChatError

    numbers = WeChatNumbers()
    yesterday = (today or local_today(settings)) - timedelta(days=1)
    last = min(until, yesterday)
    numbers.through = last if last >= since else None
    articles = wechat_articles(store)
    if not articles:
        return numbers  # nothing of ours on WeChat: no columns to qualify
    if last < until:
        numbers.note = f"微信数据截至昨日（{yesterday}）：微信统计有一天延迟，今天的阅读明天才有。"
    if last < since:
        numbers.note = f"微信数据要到 {since + timedelta(days=1)} 才有（微信统计有一天延迟）。"
        return numbers
    try:
        client = client or WeChatClient(settings.wechat, settings.data_dir)
    except ConfigError:
        numbers.note = "未配置公众号（wechat.app_id / app_secret），没有统计微信数据。"
        return numbers
    unmatched = 0
    try:
        for begin, end in _chunks(since - timedelta(days=WECHAT_LOOKBACK_DAYS), last):
            data = client.call("/datacube/getarticletotaldetail",
                               {"begin_date": begin.isoformat(), "end_date": end.isoformat()})
            for entry in data.get("list", []):
                msg_data_id = str(entry.get("msgid", "")).rsplit("_", 1)[0]
                item_id = articles.get(msg_data_id)
                if item_id is None:
                    unmatched += 1  # posted by hand in the WeChat back office: not one of our items
                    continue
                details = entry.get("detail_list") or []
                for counter, key in ((numbers.reads, "read_user"), (numbers.shares, "share_user"),
                                     (numbers.likes, "like_user")):
                    for day, added in _daily_increments(details, key).items():
                        if since <= day <= last and added:
                            counter[(item_id, day)] += added
    except (WeChatError, OSError) as exc:
        log.warning("reach: WeChat statistics unavailable: %s", exc)
        numbers.note = f"微信统计获取失败，微信各列为 0：{exc}"
    if unmatched:
        log.info("reach: %d WeChat articles in the statistics are not rongmei deliveries", unmatched)
    return numbers


# Plays ---------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PlayCount:
    item_id: str
    day: date
    channel: str  # screens | loudspeakers
    township: str  # township name, "" when the terminal has no zone
    group: str  # display group name, "" for loudspeakers
    plays: int


def play_counts(store: Store, settings: Settings, since: date, until: date) -> list[PlayCount]:
    """Proof-of-play rows grouped by item, local day, channel, township and display group."""
    zone = ZoneInfo(settings.timezone)
    zones = zone_index(settings)
    group_names = {g.id: g.name for g in settings.screen_groups}
    start, end = _utc_bounds(settings, since, until)

    def township(code: str) -> str:
        if not code:
            return ""
        here = zones.get(code)
        if here is None:
            return f"未知区划 {code}"
        top = zones.get(here.parent) if here.parent else None
        return (top or here).name

    counts: Counter[tuple[str, date, str, str, str]] = Counter()
    with store.session() as session:
        rows = session.execute(
            select(Play.item_id, Play.started_at, Play.zone, Play.group)
            .where(Play.started_at >= start, Play.started_at < end)
            .execution_options(yield_per=5000)
        )
        for item_id, started_at, code, group in rows:
            channel = "screens" if group else "loudspeakers"
            counts[(item_id, _local_day(started_at, zone), channel, township(code),
                    group_names.get(group, group))] += 1
    return [PlayCount(*key, plays=n) for key, n in sorted(counts.items())]


# Assembling ----------------------------------------------------------------------------------------------
def _titles(store: Store, item_ids: Iterable[str]) -> dict[str, str]:
    wanted = list(item_ids)
    titles: dict[str, str] = {}
    with store.session() as session:
        for chunk in (wanted[i:i + 500] for i in range(0, len(wanted), 500)):
            rows = session.execute(
                select(Version.item_id, Version.number, Version.meta).where(Version.item_id.in_(chunk))
            ).all()
            for item_id, _number, meta in sorted(rows, key=lambda r: r[1]):
                titles[item_id] = str((meta or {}).get("title") or item_id)  # the latest version wins
    return titles


def _published_in_window(store: Store, settings: Settings, since: date, until: date) -> list[str]:
    """Items delivered during the window: they belong in the report even when nobody reached them."""
    start, end = _utc_bounds(settings, since, until)
    with store.session() as session:
        return list(session.scalars(
            select(Delivery.item_id)
            .where(Delivery.state.in_(DONE_STATES), Delivery.action == "publish",
                   Delivery.updated_at >= start, Delivery.updated_at < end)
            .distinct()
        ))


def gather(store: Store, settings: Settings, since: date, until: date, *, wechat_client: Any = None,
           today: date | None = None) -> ReachReport:
    """Every channel's numbers for the window, per item, per day, per township and display group."""
    report = ReachReport(since, until)
    for item_id in _published_in_window(store, settings, since, until):
        report.item(item_id)
    for (item_id, day), n in web_views(settings, since, until).items():
        report.item(item_id).web_views += n
        report.daily[(day, "web")] += n
    wechat = wechat_numbers(settings, store, since, until, client=wechat_client, today=today)
    for (item_id, day), n in wechat.reads.items():
        report.item(item_id).wechat_reads += n
        report.daily[(day, "wechat")] += n
    for (item_id, _day), n in wechat.shares.items():
        report.item(item_id).wechat_shares += n
    for (item_id, _day), n in wechat.likes.items():
        report.item(item_id).wechat_likes += n
    if wechat.note:
        report.notes.append(wechat.note)
    report.wechat_through = wechat.through
    for count in play_counts(store, settings, since, until):
        reach = report.item(count.item_id)
        if count.channel == "screens":
            reach.screen_plays += count.plays
            report.groups[count.group or "（未分组）"] += count.plays
        else:
            reach.loudspeaker_plays += count.plays
        if count.township:
            report.townships[count.township][count.channel] += count.plays
        report.daily[(count.day, count.channel)] += count.plays
    titles = _titles(store, report.items)
    for item_id, reach in report.items.items():
        reach.title = titles.get(item_id, "（库中没有此稿件）")
    return report


def report_table(store: Store, settings: Settings, since: str | date | None = None,
                 until: str | date | None = None) -> list[dict[str, Any]]:
    """One dict per item (keys of `COLUMNS`, most reached first): what `rongmei report` prints."""
    start, end = report_window(settings, since, until)
    return gather(store, settings, start, end).rows()


def totals(rows: list[dict[str, Any]]) -> dict[str, Any]:
    total: dict[str, Any] = {"item_id": "合计", "title": f"{len(rows)} 篇稿件"}
    for key in NUMBERS:
        total[key] = sum(int(row[key]) for row in rows)
    return total


def display_rows(rows: list[dict[str, Any]], *, with_total: bool = True) -> list[dict[str, Any]]:
    """Rows keyed by the Chinese headers, optionally with a 合计 line: for the Prefect table and CSV."""
    shown = [*rows, totals(rows)] if with_total and rows else list(rows)
    return [{COLUMNS[key]: row[key] for key in COLUMNS} for row in shown]


# Rendering -----------------------------------------------------------------------------------------------
def _width(text: str) -> int:
    return sum(2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in text)


def _fit(text: str, width: int) -> str:
    if _width(text) <= width:
        return text
    out = ""
    for ch in text:
        if _width(out + ch) > width - 1:
            return out + "…"
        out += ch
    return out


def format_report(rows: list[dict[str, Any]], *, title_width: int = 30) -> str:
    """The table for a terminal, CJK-aligned, with a 合计 line."""
    if not rows:
        return "这段时间没有稿件的传播数据。"
    shown = [*rows, totals(rows)]
    cells = [[str(row["item_id"]), _fit(str(row["title"]), title_width), *(str(row[k]) for k in NUMBERS)]
             for row in shown]
    headers = list(COLUMNS.values())
    widths = [max(_width(h), *(_width(c[i]) for c in cells)) for i, h in enumerate(headers)]

    def line(values: list[str]) -> str:
        parts = []
        for i, value in enumerate(values):
            pad = " " * (widths[i] - _width(value))
            parts.append(value + pad if i < 2 else pad + value)  # text left, numbers right
        return "  ".join(parts).rstrip()

    rule = "  ".join("-" * w for w in widths)
    body = [line(c) for c in cells]
    return "\n".join([line(headers), rule, *body[:-1], rule, body[-1]])


def write_csv(rows: list[dict[str, Any]], path: Path) -> Path:
    """UTF-8 with a BOM, so Excel on Windows opens the Chinese headers and titles correctly."""
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(COLUMNS.values()), lineterminator="\r\n")
    writer.writeheader()
    writer.writerows(display_rows(rows, with_total=False))
    path.write_text(buffer.getvalue(), encoding="utf-8-sig")
    return path


def write_daily_csv(report: ReachReport, path: Path) -> Path:
    """Reach per day and channel (the chart's numbers), same encoding as `write_csv`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(["日期", *(CHANNEL_LABELS[c] for c in CHANNELS), "合计"])
    for day in report.days():
        values = [report.daily[(day, c)] for c in CHANNELS]
        shown: list[Any] = list(values)
        if not _wechat_known(report, day):
            shown[CHANNELS.index("wechat")] = ""  # no data yet, not zero reads
        writer.writerow([day.isoformat(), *shown, sum(values)])
    path.write_text(buffer.getvalue(), encoding="utf-8-sig")
    return path


def _wechat_known(report: ReachReport, day: date) -> bool:
    return report.wechat_through is not None and day <= report.wechat_through


def write_chart(report: ReachReport, path: Path) -> Path:
    """PNG: reach by channel per day (left) and plays by township (right), labelled in Chinese."""
    import matplotlib

    matplotlib.use("Agg")  # no display on servers and workers
    from matplotlib import pyplot as plt
    from matplotlib.font_manager import FontProperties
    from matplotlib.ticker import MaxNLocator

    font = FontProperties(fname=str(FONT_PATH))
    small = FontProperties(fname=str(FONT_PATH), size=8)
    colors = {"web": "#1f77b4", "wechat": "#2ca02c", "screens": "#ff7f0e", "loudspeakers": "#9467bd"}
    days = report.days()
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 5), dpi=100, gridspec_kw={"width_ratios": [3, 2]})
    try:
        for channel in CHANNELS:
            shown = [i for i, d in enumerate(days) if channel != "wechat" or _wechat_known(report, d)]
            label = CHANNEL_LABELS[channel]
            if channel == "wechat" and report.wechat_through and report.wechat_through < report.until:
                label += f"（截至 {report.wechat_through:%m-%d}）"  # WeChat's one-day delay, not a drop to 0
            left.plot(shown, [report.daily[(days[i], channel)] for i in shown], marker="o",
                      color=colors[channel], label=label)
        left.set_xticks(range(len(days)))
        step = max(1, len(days) // 10)
        left.set_xticklabels([d.strftime("%m-%d") if i % step == 0 else "" for i, d in enumerate(days)],
                             fontproperties=small)
        left.set_title("各渠道每日到达量", fontproperties=font)
        left.set_ylabel("次数", fontproperties=font)
        left.set_ylim(bottom=0)
        left.yaxis.set_major_locator(MaxNLocator(integer=True))
        left.legend(prop=font)
        left.grid(alpha=0.3)

        names = sorted(report.townships, key=lambda n: -sum(report.townships[n].values()))
        if names:
            positions = range(len(names))
            speakers = [report.townships[n]["loudspeakers"] for n in names]
            screens = [report.townships[n]["screens"] for n in names]
            right.barh(positions, speakers, color=colors["loudspeakers"], label=CHANNEL_LABELS["loudspeakers"])
            right.barh(positions, screens, left=speakers, color=colors["screens"], label=CHANNEL_LABELS["screens"])
            right.set_yticks(list(positions))
            right.set_yticklabels(names, fontproperties=font)
            right.invert_yaxis()
            right.legend(prop=font)
            right.xaxis.set_major_locator(MaxNLocator(integer=True))
        else:
            right.text(0.5, 0.5, "这段时间没有播放回执", ha="center", va="center", fontproperties=font,
                       transform=right.transAxes)
            right.set_yticks([])
        right.set_title("各苏木镇街道播放次数", fontproperties=font)
        right.set_xlabel("播放次数", fontproperties=font)
        fig.suptitle(f"传播监测 {report.since} 至 {report.until}", fontproperties=font)
        fig.tight_layout()
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, format="png")
    finally:
        plt.close(fig)
    return path


def summary_markdown(report: ReachReport, files: dict[str, Path]) -> str:
    """The run's Markdown summary: headline numbers, notes, townships, display groups, the files."""
    rows = report.rows()
    total = totals(rows) if rows else {k: 0 for k in NUMBERS}
    lines = [f"## 传播监测 {report.since} 至 {report.until}", ""]
    lines.append(f"共 {len(rows)} 篇稿件，总到达 **{total['total_reach']}** 次：网站浏览 {total['web_views']}，"
                 f"微信阅读 {total['wechat_reads']}（分享 {total['wechat_shares']}、点赞 {total['wechat_likes']}），"
                 f"大屏播放 {total['screen_plays']}，村村响播放 {total['loudspeaker_plays']}。")
    lines += [""] + [f"> {note}" for note in report.notes]
    if report.townships:
        lines += ["", "### 各苏木镇街道播放次数", "", "| 苏木镇街道 | 村村响 | 大屏 |", "|---|---:|---:|"]
        for name in sorted(report.townships, key=lambda n: -sum(report.townships[n].values())):
            counts = report.townships[name]
            lines.append(f"| {name} | {counts['loudspeakers']} | {counts['screens']} |")
    if report.groups:
        lines += ["", "### 各大屏分组播放次数", "", "| 大屏分组 | 播放 |", "|---|---:|"]
        lines += [f"| {name} | {n} |" for name, n in report.groups.most_common()]
    if rows:
        top = rows[0]
        lines += ["", f"到达最多：**{top['title']}**（{top['total_reach']} 次）。"]
    labels = {"chart": "图表（PNG）", "csv": "稿件明细（CSV）", "daily_csv": "每日分渠道（CSV）"}
    lines += ["", "### 文件", "",
              "图表和表格存放在服务器的数据目录中（不在公开网站上），可用下面的路径打开或下载："]
    lines += [f"- [{labels.get(key, key)}]({path.resolve().as_uri()}) `{path.resolve()}`"
              for key, path in files.items()]
    return "\n".join(lines) + "\n"


def report_dir(settings: Settings, run_day: date | None = None) -> Path:
    return settings.data_dir / "reports" / (run_day or local_today(settings)).isoformat()


def write_outputs(report: ReachReport, settings: Settings, run_day: date | None = None) -> dict[str, Path]:
    """Chart and CSVs into `data_dir/reports/<run date>/`, named by the window; returns their paths."""
    folder = report_dir(settings, run_day)
    stem = f"reach_{report.since}_{report.until}"
    return {
        "chart": write_chart(report, folder / f"{stem}.png"),
        "csv": write_csv(report.rows(), folder / f"{stem}.csv"),
        "daily_csv": write_daily_csv(report, folder / f"{stem}_daily.csv"),
    }


# Command line --------------------------------------------------------------------------------------------
def cli_report(since: str, until: str | None = None) -> int:
    """`rongmei report --since DATE [--until DATE]`: print the table; exit code 0, or 2 on a bad date."""
    from rongmei.core.settings import load_settings

    settings = load_settings()
    try:
        start, end = report_window(settings, since, until)
    except ReportError as exc:
        sys.stderr.write(f"{exc}\n")
        return 2
    report = gather(Store.from_settings(settings), settings, start, end)
    out = [f"传播监测 {start} 至 {end}", "", format_report(report.rows())]
    out += ["", *report.notes] if report.notes else []
    sys.stdout.write("\n".join(out) + "\n")
    return 0
