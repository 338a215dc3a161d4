"""Driving review runs from tests the way a reviewer does: find the waiting run, answer its form."""

from __future__ import annotations

import time
from collections.abc import Callable
from uuid import UUID

import pyotp
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterTags
from prefect.flow_runs import resume_flow_run

from rongmei.core.settings import Settings
from rongmei.review.reviewers import _load_secrets
from tests.support.waiting import PATIENCE, wait_until


def code_for(settings: Settings, reviewer_id: str, offset_steps: int = 0) -> str:
    secret = _load_secrets(settings)[reviewer_id]["secret"]
    totp = pyotp.TOTP(secret)
    return totp.at(time.time() + offset_steps * totp.interval)


def fresh_code(settings: Settings, reviewer_id: str, offset_steps: int = 0) -> Callable[[], str]:
    """The reviewer's code as it is when the form is filled in, for `sign`: a code taken before a long wait for
    the form (a busy machine) may have expired by the time it is submitted."""
    return lambda: code_for(settings, reviewer_id, offset_steps)


def review_run_id(item_id: str, timeout: float = PATIENCE) -> UUID:
    with get_client(sync_client=True) as client:
        def newest_review_run() -> UUID | None:
            runs = client.read_flow_runs(
                flow_run_filter=FlowRunFilter(tags=FlowRunFilterTags(all_=[f"item:{item_id}"]))
            )
            runs = [r for r in runs if r.name.startswith("审核")]
            return sorted(runs, key=lambda r: r.created)[-1].id if runs else None

        return wait_until(newest_review_run, timeout=timeout, message=f"no review run for {item_id}")


def await_pause(run_id: UUID, key: str, timeout: float = PATIENCE):
    """Wait until the run is suspended at the form with this pause key; returns the flow run."""
    seen = {}
    with get_client(sync_client=True) as client:
        def waiting_at_the_form():
            run = client.read_flow_run(run_id)
            state = seen["state"] = run.state
            if state and state.is_paused() and state.state_details.pause_key == key and state.state_details.run_input_keyset:
                return run
            if state and state.is_final():
                raise AssertionError(f"run ended as {state.type.value}: {state.message}")
            return None

        return wait_until(waiting_at_the_form, timeout=timeout, message=lambda: (
            f"run {run_id} did not wait at {key!r} (state {seen['state'].name if seen.get('state') else None})"))


def await_final(run_id: UUID, timeout: float = PATIENCE):
    with get_client(sync_client=True) as client:
        def finished():
            run = client.read_flow_run(run_id)
            return run if run.state and run.state.is_final() else None

        return wait_until(finished, timeout=timeout, message=f"run {run_id} did not finish")


def sign(run_id: UUID, key: str, reviewer: str, code: str | Callable[[], str], decision: str = "approve",
         comment: str = "") -> None:
    """Wait for the form, then answer it. Give `fresh_code(...)` for a code that must still be valid then."""
    await_pause(run_id, key)
    code = code() if callable(code) else code
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
