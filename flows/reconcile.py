"""Reconcile (自动核对): every two minutes, find work that crashed, killed or never-started runs left stranded and
finish it, each action in the ledger (rongmei.runtime.reconciler says what counts as stranded and what is done).

Its own deployment, not part of housekeeping: housekeeping applies `expires` every minute and must stay quick,
while a pass here may wait on a channel (re-querying an unconfirmed WeChat submit) or start many runs after an
outage; and each can be paused in the UI without the other.
"""

from __future__ import annotations

from dataclasses import asdict

from prefect import flow, get_run_logger
from prefect.artifacts import create_table_artifact

from rongmei.core.settings import load_settings
from rongmei.runtime.reconciler import ACTIONS, reconcile

__all__ = ["reconcile_pass"]


@flow(name="reconcile", log_prints=False)
def reconcile_pass(dry_run: bool = False) -> list[dict]:
    settings = load_settings()
    logger = get_run_logger()
    report = reconcile(settings, dry_run=dry_run)
    for line in report.lines():
        logger.info(line)
    if report.actions:
        create_table_artifact(
            key="reconcile", description="自动核对：本轮发现并处理的搁置工作",
            table=[{"动作": ACTIONS[a.what][1], "稿件": a.item_id, "版本": a.version or "—", "原因": a.why,
                    "结果": a.outcome or "—"} for a in report.actions])
    for failed in report.failed:
        logger.error("未能完成：%s %s：%s", failed.item_id, ACTIONS[failed.what][1], failed.outcome)
    return [asdict(a) for a in report.actions]


if __name__ == "__main__":
    reconcile_pass()
