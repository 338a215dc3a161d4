"""The reach report's outputs: the terminal table, the CSVs, the PNG chart, the Markdown summary, the CLI.

Every header, label and colour comes from the report's channels (`ReportChannel`), so a channel added to the
registry shows up in all of them. The chart and CSVs go to `data_dir/reports/<run date>/`, never under the
public site: the report shows per-item numbers leadership sees, not readers. The run's Markdown summary
names them by `file://` path.
"""

from __future__ import annotations

import csv
import io
import sys
import unicodedata
from datetime import date
from pathlib import Path
from typing import Any

from rongmei.core.files import ASSETS_DIR
from rongmei.core.settings import Settings
from rongmei.reach.report import ITEM_HEADERS, ReachReport, ReachTable, gather
from rongmei.reach.window import ReportError, local_today, report_window
from rongmei.storage.store import Store

__all__ = [
    "FONT_PATH", "cli_report", "display_rows", "format_report", "report_dir", "summary_markdown", "totals",
    "write_chart", "write_csv", "write_daily_csv", "write_outputs"
]

FONT_PATH = ASSETS_DIR / "fonts" / "NotoSansSC-Regular.otf"


# Tables --------------------------------------------------------------------------------------------------
def totals(table: ReachTable) -> dict[str, Any]:
    total: dict[str, Any] = {"item_id": "合计", "title": f"{len(table.rows)} 篇稿件"}
    for key in table.numbers:
        total[key] = sum(int(row[key]) for row in table.rows)
    return total


def display_rows(table: ReachTable, *, with_total: bool = True) -> list[dict[str, Any]]:
    """Rows keyed by the Chinese headers, optionally with a 合计 line: for the Prefect table and CSV."""
    rows = table.rows
    shown = [*rows, totals(table)] if with_total and rows else list(rows)
    return [{header: row[key] for key, header in table.headers.items()} for row in shown]


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


def format_report(table: ReachTable, *, title_width: int = 30) -> str:
    """The table for a terminal, CJK-aligned, with a 合计 line."""
    if not table.rows:
        return "这段时间没有稿件的传播数据。"
    shown = [*table.rows, totals(table)]
    cells = [[str(row["item_id"]), _fit(str(row["title"]), title_width), *(str(row[k]) for k in table.numbers)]
             for row in shown]
    headers = list(table.headers.values())
    widths = [max(_width(h), *(_width(c[i]) for c in cells)) for i, h in enumerate(headers)]

    def line(values: list[str]) -> str:
        parts = []
        for i, value in enumerate(values):
            pad = " " * (widths[i] - _width(value))
            parts.append(value + pad if i < len(ITEM_HEADERS) else pad + value)  # text left, numbers right
        return "  ".join(parts).rstrip()

    rule = "  ".join("-" * w for w in widths)
    body = [line(c) for c in cells]
    return "\n".join([line(headers), rule, *body[:-1], rule, body[-1]])


# Files ---------------------------------------------------------------------------------------------------
def write_csv(table: ReachTable, path: Path) -> Path:
    """UTF-8 with a BOM, so Excel on Windows opens the Chinese headers and titles correctly."""
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(table.headers.values()), lineterminator="\r\n")
    writer.writeheader()
    writer.writerows(display_rows(table, with_total=False))
    path.write_text(buffer.getvalue(), encoding="utf-8-sig")
    return path


def write_daily_csv(report: ReachReport, path: Path) -> Path:
    """Reach per day and channel (the chart's numbers), same encoding as `write_csv`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(["日期", *(channel.label for channel in report.channels), "合计"])
    for day in report.days():
        values = [report.daily[(day, channel.name)] for channel in report.channels]
        # A channel without data for the day yet shows nothing, not zero reads.
        shown: list[Any] = [value if report.known(channel.name, day) else ""
                            for channel, value in zip(report.channels, values, strict=True)]
        writer.writerow([day.isoformat(), *shown, sum(values)])
    path.write_text(buffer.getvalue(), encoding="utf-8-sig")
    return path


def _township_channels(report: ReachReport) -> list[tuple[str, str, str]]:
    """(name, label, colour) of the channels that roll up to townships, last column first: the township
    table's column order and the chart's stacking order (first at the base)."""
    return [(c.name, c.label, c.color) for c in reversed(report.channels) if c.name in report.township_channels]


def write_chart(report: ReachReport, path: Path) -> Path:
    """PNG: reach by channel per day (left) and plays by township (right), labelled in Chinese."""
    import matplotlib

    matplotlib.use("Agg")  # no display on servers and workers
    from matplotlib import pyplot as plt
    from matplotlib.font_manager import FontProperties
    from matplotlib.ticker import MaxNLocator

    font = FontProperties(fname=str(FONT_PATH))
    small = FontProperties(fname=str(FONT_PATH), size=8)
    days = report.days()
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 5), dpi=100, gridspec_kw={"width_ratios": [3, 2]})
    try:
        for channel in report.channels:
            shown = [i for i, d in enumerate(days) if report.known(channel.name, d)]
            label = channel.label
            through = report.lag_through(channel.name)
            if through is not None:
                label += f"（截至 {through:%m-%d}）"  # the channel's delay, not a drop to 0
            left.plot(shown, [report.daily[(days[i], channel.name)] for i in shown], marker="o",
                      color=channel.color, label=label)
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
            base: list[int] | None = None
            for name, label, color in _township_channels(report):
                values = [report.townships[n][name] for n in names]
                right.barh(positions, values, left=base, color=color, label=label)
                base = values if base is None else [b + v for b, v in zip(base, values, strict=True)]
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


# Summary -------------------------------------------------------------------------------------------------
def _headline(report: ReachReport, total: dict[str, Any]) -> str:
    """Each channel's reach as `<label> <n>`, its engagement numbers after it in brackets, comma-separated."""
    parts = []
    for channel in report.channels:
        part = f"{channel.reach.label} {total[channel.reach.key]}"
        if channel.engagement:
            part += "（" + "、".join(f"{c.brief} {total[c.key]}" for c in channel.engagement) + "）"
        parts.append(part)
    return "，".join(parts)


def summary_markdown(report: ReachReport, files: dict[str, Path]) -> str:
    """The run's Markdown summary: headline numbers, notes, townships, display groups, the files."""
    table = report.table()
    rows = table.rows
    total = totals(table) if rows else {k: 0 for k in table.numbers}
    lines = [f"## 传播监测 {report.since} 至 {report.until}", ""]
    lines.append(f"共 {len(rows)} 篇稿件，总到达 **{total['total_reach']}** 次：{_headline(report, total)}。")
    lines += [""] + [f"> {note}" for note in report.notes]
    if report.townships:
        channels = _township_channels(report)
        lines += ["", "### 各苏木镇街道播放次数", "",
                  "| 苏木镇街道 | " + " | ".join(label for _name, label, _color in channels) + " |",
                  "|---|" + "---:|" * len(channels)]
        for name in sorted(report.townships, key=lambda n: -sum(report.townships[n].values())):
            counts = report.townships[name]
            lines.append(f"| {name} | " + " | ".join(str(counts[c]) for c, _label, _color in channels) + " |")
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
        "csv": write_csv(report.table(), folder / f"{stem}.csv"),
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
    out = [f"传播监测 {start} 至 {end}", "", format_report(report.table())]
    out += ["", *report.notes] if report.notes else []
    sys.stdout.write("\n".join(out) + "\n")
    return 0
