"""Review (审稿签发): renditions and preview, then 初审 → 复审 → 终审 in the Prefect UI, then one-click publish.

Each stage suspends the run until a reviewer answers the sign-off form; a suspended run holds no process and
no worker slot and survives restarts. On resume Prefect runs the flow again from the top; the store says
which stage the version is at, and each form answer is applied once (keyed by its pause key).
"""

from __future__ import annotations

import logging
from typing import Literal

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    FlowRunFilter,
    FlowRunFilterState,
    FlowRunFilterStateType,
    FlowRunFilterTags,
)
from prefect.client.schemas.objects import StateType
from prefect.context import get_run_context
from prefect.exceptions import MissingContextError
from prefect.flow_runs import suspend_flow_run
from prefect.input import RunInput
from prefect.states import Cancelled
from pydantic import Field

from rongmei.core.settings import Settings, load_settings
from rongmei.core.states import ItemState
from rongmei.delivery.plan import embargoed_until
from rongmei.delivery.release import build_release
from rongmei.review.prepare import prepare_preview, prepare_renditions
from rongmei.review.signoff import apply_signoff, attempts_so_far, form_description, stage_position
from rongmei.runtime.runs import PUBLISH_DEPLOYMENT, REVIEW_DEPLOYMENT, start_review_run
from rongmei.runtime.transient import again_after_transient_errors
from rongmei.storage import ledger
from rongmei.storage.snapshots import VersionSnapshot, load_version
from rongmei.storage.store import store_for
from rongmei.storage.tables import Version

__all__ = [
    "PUBLISH_DEPLOYMENT",
    "REVIEW_DEPLOYMENT",
    "SignOffForm",
    "request_review",
    "review",
    "start_publication",
    "submitted_at",
    "withdraw_superseded_reviews",
]

class SignOffForm(RunInput):
    """签字单 — one per stage."""

    decision: Literal["approve", "return", "reject"] = Field(
        description="approve 通过 · return 退回修改 · reject 不予采用"
    )
    reviewer: str = Field(description="审核人编号（登记时的 ID）")
    code: str = Field(pattern=r"^\d{6}$", description="验证器 App 上显示的 6 位动态验证码")
    comment: str = Field(default="", description="审核意见（退回时必填为宜）")


@task(name="prepare for review", cache_policy=NO_CACHE)
def prepare_for_review(version: VersionSnapshot) -> None:
    """Make the renditions the channels need and the reviewers' preview page. Returns nothing (the review run
    persists its tasks' results, and a version's content is no result to keep): the run loads it again."""
    settings = load_settings()
    store = store_for(settings)
    logger = get_run_logger()

    def progress(label: str, fraction: float) -> None:
        logger.info("渲染 %s：%d%%", label, round(fraction * 100))

    if prepare_renditions(store, settings, version, progress):
        logger.warning("渲染结果与上次不同：此前的签字不再有效，需重新审核")
    rendered = load_version(store, version.id)  # with the renditions just made
    prepare_preview(store, settings, rendered, build_release(store, rendered))


def set_stage_tags(item_id: str, stage: str) -> None:
    """Keep the run's tags at `item:<id>` and `stage:<stage>` so people and scripts can find it."""
    run = get_run_context().flow_run
    tags = [t for t in (run.tags or []) if not t.startswith(("stage:", "item:"))]
    with get_client(sync_client=True) as client:
        client.update_flow_run(run.id, tags=[*tags, f"item:{item_id}", f"stage:{stage}"])


@flow(name="review", persist_result=True, log_prints=False)
@again_after_transient_errors  # safe: the stage comes from the store, and each answer is applied once
def review(version_id: int) -> str:
    settings = load_settings()
    store = store_for(settings)
    logger = get_run_logger()
    version = load_version(store, version_id)
    item_id, state = version.item_id, version.state
    if state not in (ItemState.in_review, ItemState.approved, ItemState.published):
        logger.info("版本状态为 %s，无需审核", state)
        return str(state)
    if state == ItemState.in_review:
        prepare_for_review(version)
        version = load_version(store, version_id)  # the renditions (and so what a sign-off covers) may be new
    while (stage := stage_position(store, settings, version)) is not None:
        set_stage_tags(item_id, stage.name)
        key = f"{stage.name}-{attempts_so_far(store, version_id, stage.name)}"
        form = suspend_flow_run(
            wait_for_input=SignOffForm.with_initial_data(
                description=form_description(store, settings, version, stage), decision="approve"
            ),
            key=key,
            timeout=None,
        )
        result = apply_signoff(store, settings, version, stage, key, form.model_dump(), at=submitted_at(key))
        if result.status == "refused":
            logger.warning("签字未被接受：%s。请重新填写签字单。", result.message)
            continue
        logger.info(result.message)
        if result.status in ("returned", "rejected"):
            return result.status
    set_stage_tags(item_id, "published")
    start_publication(version, settings)
    return "approved"


RESUME_SLACK_SECONDS = 10.0  # between the server storing a form answer and recording the resume it came with


def submitted_at(pause_key: str) -> float | None:
    """When the reviewer pressed Submit, as the Prefect server recorded it: a code is checked against that
    moment, not against when a busy worker got round to the run, so a valid code never expires in a queue.

    Only the exact response key of this pause counts (anyone with the UI login can create run inputs with
    other keys), and only if it was stored after the run paused here and together with the resume: an answer
    planted early and resumed later is checked against the moment of the resume, so a code cannot be banked.
    """
    run = get_run_context().flow_run
    exact = f"suspended-{pause_key}-response"
    with get_client(sync_client=True) as client:
        found = [i for i in client.filter_flow_run_input(run.id, exact, limit=50, exclude_keys=set()) if i.key == exact]
        states = client.read_flow_run_states(run.id)
    paused = [st.timestamp for st in states
              if st.type == StateType.PAUSED and st.state_details.pause_key == pause_key]
    if not found or not found[0].created or not paused:
        return None
    created, paused_at = found[0].created, max(paused)
    resumed = [st.timestamp for st in states if st.timestamp > paused_at]
    resumed_at = min(resumed) if resumed else None
    if resumed_at is None:
        return None
    if created < paused_at or abs((resumed_at - created).total_seconds()) > RESUME_SLACK_SECONDS:
        get_run_logger().warning("签字单答复的保存时间（%s）与恢复运行的时间（%s）不符：按恢复时间核对验证码",
                                 created.isoformat(), resumed_at.isoformat())
        return resumed_at.timestamp()
    return created.timestamp()


def start_publication(version: VersionSnapshot, settings: Settings) -> None:
    """The final approval is the one click: publish now, or at `publish_at` as a scheduled run (embargo)."""
    from flows.publish import publish

    held = embargoed_until(version)
    if held is None:
        publish(version.id, return_state=True)
        return
    from prefect.deployments import run_deployment

    title, item_id, number = version.meta.title, version.item_id, version.number
    with store_for(settings).session() as session:
        current = session.get(Version, version.id)  # approved now, not when the run read it
        if current is not None and current.state == ItemState.approved:
            ledger.record(session, "scheduled", actor="system:publish", item_id=item_id, version=number,
                          content_hash=current.signed_hash, details={"publish_at": held.isoformat()})
    run_deployment(
        PUBLISH_DEPLOYMENT, parameters={"version_id": version.id}, scheduled_time=held, timeout=0,
        flow_run_name=f"定时发布 · {title}（v{number}）", tags=[f"item:{item_id}", "embargo"],
        idempotency_key=f"embargo-{version.id}", as_subflow=False,
    )
    run_logger().info("终审已通过，将于 %s 定时发布", held.isoformat())


def run_logger() -> logging.Logger | logging.LoggerAdapter:
    """The flow run's logger, or this module's outside a run (scripts, the CLI, tests)."""
    try:
        return get_run_logger()
    except MissingContextError:
        return logging.getLogger(__name__)


def request_review(version_id: int, settings: Settings) -> None:
    """Start the sign-off run of a new version (from ingest)."""
    version = load_version(store_for(settings), version_id)
    start_review_run(version, settings.stages[0].name)
    withdraw_superseded_reviews(version.item_id, version_id, version.number)


def withdraw_superseded_reviews(item_id: str, version_id: int, number: int) -> None:
    """Cancel the item's older review runs still waiting for a sign-off, so that reviewers see one run per
    item in the UI: the new version's. (Their approvals are void anyway: a sign-off binds one version.)"""
    waiting = FlowRunFilter(
        tags=FlowRunFilterTags(all_=[f"item:{item_id}"]),
        state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.PAUSED, StateType.SCHEDULED])),
    )
    with get_client(sync_client=True) as client:
        for run in client.read_flow_runs(flow_run_filter=waiting):
            older = run.parameters.get("version_id")
            if run.name.startswith("审核") and isinstance(older, int) and older < version_id:
                client.set_flow_run_state(run.id, Cancelled(message=f"已有新版本 v{number} 送审，本版本的审核已撤销"),
                                          force=True)


if __name__ == "__main__":
    import sys

    review(int(sys.argv[1]))
