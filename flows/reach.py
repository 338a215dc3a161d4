"""Reach report (传播监测反馈, issue 7): daily and on demand, how far each item went on every channel.

Gathers every channel's numbers (rongmei.reach.report), then leaves on the run a table artifact (per item), a
Markdown summary, and a PNG chart plus CSVs under `data_dir/reports/<run date>/` (private: the summary names
them by path).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE

from rongmei.core.settings import Settings, load_settings
from rongmei.reach.outputs import display_rows, summary_markdown, write_outputs
from rongmei.reach.report import ReachReport, gather
from rongmei.reach.window import report_window
from rongmei.storage.store import store_for

__all__ = ["gather_reach", "reach_report", "write_files"]


@task(name="gather reach", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=30)
def gather_reach(settings: Settings, since: str | None, until: str | None) -> ReachReport:
    """Every channel's numbers for the window, per item, day, township and display group."""
    start, end = report_window(settings, since, until)
    return gather(store_for(settings), settings, start, end)


@task(name="write chart and CSV", cache_policy=NO_CACHE)
def write_files(report: ReachReport, settings: Settings) -> dict[str, Path]:
    """PNG chart and CSV exports into the private reports folder."""
    return write_outputs(report, settings)


@flow(name="reach-report", log_prints=False)
def reach_report(since: str | None = None, until: str | None = None) -> dict[str, Any]:
    """传播监测：since/until are local dates (YYYY-MM-DD); by default the last 7 days up to today."""
    settings = load_settings()
    report = gather_reach(settings, since, until)
    files = write_files(report, settings)
    table = report.table()
    window = f"{report.since} 至 {report.until}"
    create_table_artifact(key="reach-report", table=display_rows(table),
                          description=f"传播监测 {window}：各稿件分渠道到达量")
    create_markdown_artifact(key="reach-summary", markdown=summary_markdown(report, files),
                             description=f"传播监测 {window}：摘要与图表")
    logger = get_run_logger()
    for note in report.notes:
        logger.info(note)
    logger.info("传播监测 %s：%d 篇稿件，图表 %s", window, len(table.rows), files["chart"])
    return {"since": report.since.isoformat(), "until": report.until.isoformat(), "rows": table.rows,
            "files": {key: str(path) for key, path in files.items()}, "notes": report.notes}


if __name__ == "__main__":
    reach_report()
