"""Ingest: take settled drops from content/inbox into the store, then send each new version to review.

One drop's trouble is that drop's outcome (rejected, or left in the inbox and reported once): the pass goes
on with the others, and the new versions of the good ones are sent to review all the same.
"""

from __future__ import annotations

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.states import State

from rongmei.core.errors import RongmeiError
from rongmei.core.settings import Settings, load_settings
from rongmei.intake.drops import Drop
from rongmei.intake.ingest import Outcome, ingest_drop, settled_drops
from rongmei.intake.names import escape_name
from rongmei.intake.outages import one_line
from rongmei.storage.store import Store, store_for

__all__ = ["ingest", "reason", "send_to_review", "summary", "take_in"]


@task(name="take in drop", cache_policy=NO_CACHE, task_run_name="take in {drop.name}")
def take_in(drop: Drop, settings: Settings, store: Store) -> Outcome | None:
    """Read, check and store one drop; archive or reject the original. None: gone or still changing."""
    outcome = ingest_drop(drop, settings, store)
    logger = get_run_logger()
    if outcome is None:
        logger.info("%s 已被取走或仍在变化，下一轮再看", drop.label)
    elif outcome.status == "rejected":
        logger.warning("退稿 %s：%s", drop.label, "；".join(p.message for p in outcome.problems))
    elif outcome.status == "stuck":
        log = logger.info if outcome.repeat else logger.error
        log("%s 无法处理，仍留在收稿箱：%s", drop.label, "；".join(p.message for p in outcome.problems))
    else:
        logger.info("%s %s → %s v%s", outcome.status, drop.label, outcome.item_id, outcome.version)
    return outcome


@task(name="send to review", cache_policy=NO_CACHE)
def send_to_review(outcome: Outcome, settings: Settings) -> None:
    """Start the sign-off run for a new version (when the review deployment exists)."""
    from flows.review import request_review

    request_review(outcome.version_id, settings)


@flow(name="ingest", log_prints=False)
def ingest(start_reviews: bool = True) -> list[dict]:
    settings = load_settings()
    store = store_for(settings)
    logger = get_run_logger()
    outcomes: list[Outcome] = []
    waiting: list[str] = []  # drops the store could not take (unreachable, or its disk full): still in the inbox
    why = ""  # the first reason, said once: it is the same for every drop that waits
    for drop in settled_drops(settings):
        state = take_in(drop, settings, store, return_state=True)
        if not state.is_completed():
            waiting.append(drop.label)
            why = why or reason(state)
            continue
        if (outcome := state.result()) is not None:
            outcomes.append(outcome)
    not_sent: list[str] = []
    if start_reviews:
        for outcome in outcomes:
            if outcome.status != "ingested" or not outcome.version_id:
                continue
            if not send_to_review(outcome, settings, return_state=True).is_completed():
                not_sent.append(f"{outcome.item_id} v{outcome.version}")
    news = [o for o in outcomes if not o.repeat]  # a drop stuck as before was reported by an earlier run
    if news:
        create_markdown_artifact(key="ingest-summary", markdown=summary(news), description="本次收稿结果")
    if waiting or not_sent:
        logger.error("收稿未全部完成：%s", "；".join(waiting + not_sent))
        raise RongmeiError(
            "ingest did not finish: "
            + (f"the store failed for drops {waiting} (they wait in the inbox; the next run retries them): {why} "
               if waiting else "")
            + (f"No review run was started for {not_sent} (their versions are stored): check that the review "
               "deployment exists (`prefect deploy --all`, as `rongmei up` runs it) and the Prefect server is "
               "reachable; the 'send to review' task logs say what failed."
               if not_sent else "")
        )
    return [{"drop": o.drop, "status": o.status, "item": o.item_id, "version": o.version} for o in outcomes]


def reason(state: State) -> str:
    """What stopped a task, in one line (a full disk says where and what to do)."""
    try:
        error = state.result(raise_on_failure=False)
    except Exception:  # the exception could not be read back: the state's own message names it
        error = None
    return one_line(error) if isinstance(error, BaseException) else str(state.message or state.name)


def summary(outcomes: list[Outcome]) -> str:
    labels = {"ingested": "已收稿", "unchanged": "内容未变（已归档）", "rejected": "退稿", "stuck": "无法处理（仍在收稿箱）"}
    rows = ["| 稿件 | 结果 | 编号 | 版本 | 问题 |", "|---|---|---|---|---|"]
    for o in outcomes:
        problems = "；".join(p.message for p in o.problems) or "—"
        cells = [escape_name(o.drop), labels[o.status], o.item_id, str(o.version or "—"), problems]
        rows.append("| " + " | ".join(" ".join(c.split()).replace("|", "\\|") for c in cells) + " |")
    return "\n".join(rows)


if __name__ == "__main__":
    ingest()
