"""Driving review runs from tests the way a reviewer does: find the waiting run, answer its form."""

from __future__ import annotations

import time
from uuid import UUID

import pyotp
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterTags
from prefect.flow_runs import resume_flow_run

from rongmei.core.settings import Settings
from rongmei.review.reviewers import _load_secrets


def code_for(settings: Settings, reviewer_id: str, offset_steps: int = 0) -> str:
    secret = _load_secrets(settings)[reviewer_id]["secret"]
    totp = pyotp.TOTP(secret)
    return totp.at(time.time() + offset_steps * totp.interval)


def review_run_id(item_id: str, timeout: float = 90) -> UUID:
    deadline = time.monotonic() + timeout
    with get_client(sync_client=True) as client:
        while time.monotonic() < deadline:
            runs = client.read_flow_runs(
                flow_run_filter=FlowRunFilter(tags=FlowRunFilterTags(all_=[f"item:{item_id}"]))
            )
            runs = [r for r in runs if r.name.startswith("审核")]
            if runs:
                return sorted(runs, key=lambda r: r.created)[-1].id
            time.sleep(0.5)
    raise AssertionError(f"no review run for {item_id} within {timeout}s")


def await_pause(run_id: UUID, key: str, timeout: float = 120):
    """Wait until the run is suspended at the form with this pause key; returns the flow run."""
    deadline = time.monotonic() + timeout
    with get_client(sync_client=True) as client:
        while time.monotonic() < deadline:
            run = client.read_flow_run(run_id)
            state = run.state
            waiting = state and state.is_paused() and state.state_details.pause_key == key
            if waiting and state.state_details.run_input_keyset:
                return run
            if state and state.is_final():
                raise AssertionError(f"run ended as {state.type.value}: {state.message}")
            time.sleep(0.4)
        raise AssertionError(f"run {run_id} did not wait at {key!r} within {timeout}s (state {state.name})")


def await_final(run_id: UUID, timeout: float = 120):
    deadline = time.monotonic() + timeout
    with get_client(sync_client=True) as client:
        while time.monotonic() < deadline:
            run = client.read_flow_run(run_id)
            if run.state and run.state.is_final():
                return run
            time.sleep(0.4)
    raise AssertionError(f"run {run_id} did not finish within {timeout}s")


def sign(run_id: UUID, key: str, reviewer: str, code: str, decision: str = "approve", comment: str = "") -> None:
    await_pause(run_id, key)
    resume_flow_run(run_id, run_input={"decision": decision, "reviewer": reviewer, "code": code, "comment": comment})


def sign_all_stages(store, settings: Settings, version_id: int, prefix: str = "") -> list[str]:
    """Sign every configured stage of a version as the review flow does (real codes, distinct reviewers), without
    Prefect. Reviewer ids are made from `prefix` and the version id, so no time step is spent twice."""
    from rongmei.review.reviewers import enroll
    from rongmei.review.signoff import apply_signoff
    from rongmei.storage.snapshots import load_version
    from rongmei.storage.tables import Reviewer

    version = load_version(store, version_id)  # each sign-off checks the version's current state itself
    signers = []
    for stage in settings.stages:
        reviewer_id = f"{prefix or 'sig'}-{version_id}-{stage.name}"
        with store.session() as session:
            known = session.get(Reviewer, reviewer_id) is not None
        if not known:
            enroll(store, settings, reviewer_id, f"签字人{stage.label}", [stage.role])
        result = apply_signoff(store, settings, version, stage, f"{stage.name}-direct",
                               {"decision": "approve", "reviewer": reviewer_id, "code": code_for(settings, reviewer_id)})
        assert result.status == "approved", result.message
        signers.append(reviewer_id)
    return signers
