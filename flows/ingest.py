"""Ingest: take settled drops from content/inbox into the store, then send each new version to review."""

from __future__ import annotations

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from rongmei.bundles import Drop
from rongmei.ingest import Outcome, ingest_drop, settled_drops
from rongmei.settings import Settings, load_settings
from rongmei.store import Store


@task(name="take in drop", cache_policy=NO_CACHE, task_run_name="take in {drop.name}")
def take_in(drop: Drop, settings: Settings, store: Store) -> Outcome:
    """Read, check and store one drop; archive or reject the original."""
    outcome = ingest_drop(drop, settings, store)
    logger = get_run_logger()
    if outcome.status == "rejected":
        logger.warning("退稿 %s：%s", drop.name, "；".join(p.message for p in outcome.problems))
    else:
        logger.info("%s %s → %s v%s", outcome.status, drop.name, outcome.item_id, outcome.version)
    return outcome


@task(name="send to review", cache_policy=NO_CACHE)
def send_to_review(outcome: Outcome, settings: Settings) -> None:
    """Start the sign-off run for a new version (when the review deployment exists)."""
    from flows.review import request_review

    request_review(outcome.version_id, settings)


@flow(name="ingest", log_prints=False)
def ingest(start_reviews: bool = True) -> list[dict]:
    settings = load_settings()
    store = Store.from_settings(settings)
    drops = settled_drops(settings)
    outcomes = [take_in(drop, settings, store) for drop in drops]
    if start_reviews:
        for outcome in outcomes:
            if outcome.status == "ingested":
                send_to_review(outcome, settings)
    if outcomes:
        create_markdown_artifact(key="ingest-summary", markdown=summary(outcomes), description="本次收稿结果")
    return [{"drop": o.drop, "status": o.status, "item": o.item_id, "version": o.version} for o in outcomes]


def summary(outcomes: list[Outcome]) -> str:
    labels = {"ingested": "已收稿", "unchanged": "内容未变（已归档）", "rejected": "退稿"}
    rows = ["| 稿件 | 结果 | 编号 | 版本 | 问题 |", "|---|---|---|---|---|"]
    for o in outcomes:
        problems = "；".join(p.message for p in o.problems) or "—"
        rows.append(f"| {o.drop} | {labels[o.status]} | {o.item_id} | {o.version or '—'} | {problems} |")
    return "\n".join(rows)


if __name__ == "__main__":
    ingest()
