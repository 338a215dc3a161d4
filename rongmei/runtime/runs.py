"""Our flow runs as Prefect holds them: the live ones per version, a dead one told from a live one, and starting,
cancelling or marking runs. rongmei.runtime.reconciler decides what to do; this module only talks to Prefect.

"Live" is what Prefect says (scheduled, pending, running, paused), except that a run Prefect still shows as
running or pending whose process was killed is dead: Prefect never hears of that death. Our worker's flow runs
send a heartbeat event every `flow_heartbeat_seconds` (`rongmei up` sets PREFECT_FLOWS_HEARTBEAT_FREQUENCY,
see rongmei.runtime.transient); one silent for `reconcile_dead_run_seconds` is dead.

Prefect is imported inside the functions: the CLI must stay quick for commands that never touch it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from rongmei.core.settings import Settings
from rongmei.storage.snapshots import VersionSnapshot

__all__ = [
    "HEARTBEAT_EVENT", "LIVE_TYPES", "PUBLISH_DEPLOYMENT", "REVIEW_DEPLOYMENT", "WATCHED_FLOWS", "RunView", "cancel_run",
    "is_dead", "last_heartbeats", "live_runs", "mark_crashed", "start_publish_run", "start_review_run"
]

REVIEW_DEPLOYMENT = "review/review"
PUBLISH_DEPLOYMENT = "publish/publish"
WATCHED_FLOWS = ("review", "publish", "retract")  # the flows that act on one version or item
LIVE_TYPES = ("SCHEDULED", "PENDING", "RUNNING", "PAUSED")
HEARTBEAT_EVENT = "prefect.flow-run.heartbeat"


@dataclass(frozen=True)
class RunView:
    """What the reconciler needs to know of one live flow run."""

    id: str
    name: str
    flow: str  # review | publish | retract
    version_id: int | None  # parameters.version_id (review, publish)
    item_id: str  # parameters.item_id (retract), else from the `item:<id>` tag
    state_type: str  # one of LIVE_TYPES
    state_name: str  # Scheduled, Late, Suspended, Running, AwaitingRetry…
    since: datetime  # when it entered that state
    scheduled_for: datetime | None = None
    pause_key: str = ""
    from_deployment: bool = True  # False: a subflow (a review run publishing in its own process)

    @property
    def waiting(self) -> bool:
        """Scheduled or paused: no process to die, Prefect's word is the truth."""
        return self.state_type in ("SCHEDULED", "PAUSED")


def _view(run: Any, flow: str) -> RunView:
    state = run.state
    parameters = run.parameters or {}
    version_id = parameters.get("version_id")
    item = str(parameters.get("item_id") or next(
        (t.removeprefix("item:") for t in run.tags or [] if t.startswith("item:")), ""))
    details = state.state_details
    return RunView(
        id=str(run.id), name=run.name, flow=flow, version_id=version_id if isinstance(version_id, int) else None,
        item_id=item, state_type=state.type.value, state_name=state.name or "",
        since=state.timestamp.astimezone(UTC), scheduled_for=details.scheduled_time and details.scheduled_time.astimezone(UTC),
        pause_key=str(details.pause_key or "") if state.type.value == "PAUSED" else "",
        from_deployment=run.deployment_id is not None,
    )


def live_runs(item_id: str | None = None) -> list[RunView]:
    """Every live run of the review, publish and retract flows (paged: a burst of drops holds a thousand), or
    only those tagged `item:<item_id>`."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        FlowFilter,
        FlowFilterId,
        FlowFilterName,
        FlowRunFilter,
        FlowRunFilterState,
        FlowRunFilterStateType,
        FlowRunFilterTags,
    )
    from prefect.client.schemas.objects import StateType
    from prefect.client.schemas.sorting import FlowRunSort

    views: list[RunView] = []
    with get_client(sync_client=True) as client:
        names = {f.id: f.name for f in client.read_flows(
            flow_filter=FlowFilter(name=FlowFilterName(any_=list(WATCHED_FLOWS))))}
        if not names:
            return views
        live = FlowRunFilter(state=FlowRunFilterState(type=FlowRunFilterStateType(
            any_=[StateType(t) for t in LIVE_TYPES])),
            tags=FlowRunFilterTags(all_=[f"item:{item_id}"]) if item_id is not None else None)
        page_size, offset, seen = 200, 0, set()
        while True:
            page = client.read_flow_runs(flow_filter=FlowFilter(id=FlowFilterId(any_=list(names))),
                                         flow_run_filter=live, sort=FlowRunSort.ID_DESC, limit=page_size,
                                         offset=offset)
            for run in page:
                if run.id not in seen and run.state is not None:
                    seen.add(run.id)
                    views.append(_view(run, names[run.flow_id]))
            if len(page) < page_size:
                return views
            offset += page_size


def last_heartbeats(run_ids: Iterable[str]) -> dict[str, datetime]:
    """The newest heartbeat event of each run that sent one."""
    from prefect.client.orchestration import get_client
    from prefect.events.filters import EventFilter, EventNameFilter, EventOrder, EventResourceFilter

    beats: dict[str, datetime] = {}
    with get_client(sync_client=True) as client:
        for run_id in run_ids:
            page = client.read_events(filter=EventFilter(
                event=EventNameFilter(name=[HEARTBEAT_EVENT]),
                resource=EventResourceFilter(id=[f"prefect.flow-run.{run_id}"]), order=EventOrder.DESC), limit=1)
            if page.events:
                beats[run_id] = page.events[0].occurred.astimezone(UTC)
    return beats


def is_dead(run: RunView, heartbeat: datetime | None, settings: Settings, now: datetime | None = None) -> bool:
    """A running or pending run with no sign of life (entering its state, or a heartbeat) for
    `reconcile_dead_run_seconds`. Never when heartbeats are off: then a long run and a dead one look alike."""
    if run.waiting or settings.flow_heartbeat_seconds <= 0:
        return False
    now = now or datetime.now(UTC)
    last_sign = max(t for t in (run.since, heartbeat) if t is not None)
    return now - last_sign > timedelta(seconds=settings.reconcile_dead_run_seconds)


def start_review_run(version: VersionSnapshot, stage: str, *, idempotency_key: str | None = None) -> str:
    """Start the sign-off run of a version, tagged `item:<id>` and `stage:<stage>` (the run finds its stage in
    the store and keeps the tag up to date). Returns the flow run id."""
    from prefect.deployments import run_deployment

    run = run_deployment(
        REVIEW_DEPLOYMENT, parameters={"version_id": version.id}, timeout=0,
        flow_run_name=f"审核 · {version.meta.title}（v{version.number}）",
        tags=[f"item:{version.item_id}", f"stage:{stage}"], idempotency_key=idempotency_key,
        as_subflow=False,  # a review lives on its own, for days, not inside the run that started it
    )
    return str(run.id)


def start_publish_run(version: VersionSnapshot, *, at: datetime | None = None, idempotency_key: str | None = None,
                      name: str = "", tags: Iterable[str] = ()) -> str:
    """Start (or, with `at`, schedule) a run of the publish deployment for a version. Returns its id."""
    from prefect.deployments import run_deployment

    label = "定时发布" if at else "发布"
    run = run_deployment(
        PUBLISH_DEPLOYMENT, parameters={"version_id": version.id}, scheduled_time=at, timeout=0,
        flow_run_name=name or f"{label} · {version.meta.title}（v{version.number}）",
        tags=[f"item:{version.item_id}", *tags], idempotency_key=idempotency_key, as_subflow=False,
    )
    return str(run.id)


def cancel_run(run_id: str, message: str) -> None:
    """Cancel a waiting run at once (it holds no process), saying why in the UI."""
    from prefect.client.orchestration import get_client
    from prefect.states import Cancelled

    with get_client(sync_client=True) as client:
        client.set_flow_run_state(run_id, Cancelled(message=message), force=True)


def mark_crashed(run_id: str, message: str) -> None:
    """Say in Prefect what happened to a run whose process died: it crashed. Its work is finished elsewhere."""
    from prefect.client.orchestration import get_client
    from prefect.states import Crashed

    with get_client(sync_client=True) as client:
        client.set_flow_run_state(run_id, Crashed(message=message), force=True)
