"""Publish (一键分发): deliver one approved version to each of its channels, in parallel.

One delivery per (version, channel, action): a re-run publishes nothing twice, a failing channel never
blocks the others, and transient failures retry with backoff. Anyone with the Prefect UI login can start
this deployment with any version id, so the run first passes the delivery gate (rongmei.delivery.gate): a version
that is not signed off in every stage, or was retracted, superseded, returned or rejected, fails the run
with the reason, recorded in the ledger, and reaches no channel (each delivery checks the gate again).
"""

from __future__ import annotations

import time
from datetime import UTC, datetime

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.futures import wait
from prefect.runtime import task_run
from prefect.tasks import exponential_backoff

from rongmei.core.errors import PublishError
from rongmei.core.settings import load_settings
from rongmei.core.states import DONE_STATES, DeliveryState
from rongmei.delivery.deliveries import DeliveryResult, deliver, give_up, results_table, settle_item_state
from rongmei.delivery.gate import current_caller
from rongmei.delivery.plan import delivery_plan, embargoed_until
from rongmei.delivery.release import check_release
from rongmei.runtime.orchestration import PrefectSlots
from rongmei.runtime.runs import PUBLISH_DEPLOYMENT
from rongmei.runtime.transient import again_after_transient_errors
from rongmei.storage.snapshots import VersionSnapshot
from rongmei.storage.store import store_for

__all__ = ["EARLY_START_TOLERANCE", "deliver_to", "outcome", "publish", "requeue", "wait_for_embargo"]


@task(name="deliver", cache_policy=NO_CACHE, task_run_name="{action} → {channel}")
def deliver_to(version: VersionSnapshot, channel: str, action: str) -> DeliveryResult:
    """One channel's delivery; raises only when a retry can help, so Prefect retries it with backoff. The tasks
    run in threads of the flow's process and share its store and its snapshot of the version."""
    settings = load_settings()
    store = store_for(settings)
    result = deliver(store, settings, version, channel, action, slots=PrefectSlots())
    if result.retryable:
        if task_run.run_count <= settings.publish_retries:
            raise PublishError(f"{channel}: {result.message}", retryable=True)
        result = give_up(store, version.id, channel, action)
    return result


@flow(name="publish", log_prints=False)
@again_after_transient_errors  # safe: a delivery that succeeded is never attempted again
def publish(version_id: int) -> list[dict]:
    settings = load_settings()
    store = store_for(settings)
    version = check_release(store, settings, version_id, current_caller("system:publish"))
    if (held := embargoed_until(version)) is not None and not wait_for_embargo(held):
        get_run_logger().warning("稿件定于 %s 发布，现在不发布；已重新排定", held.isoformat())
        requeue(version_id, held)
        return []
    delivery = deliver_to.with_options(
        retries=settings.publish_retries,
        retry_delay_seconds=exponential_backoff(backoff_factor=settings.publish_retry_delay),
    )
    futures = {
        (channel, action): delivery.submit(version, channel, action)
        for channel, action in delivery_plan(store, settings, version)
    }
    wait(list(futures.values()))
    results = [outcome(channel, action, future) for (channel, action), future in futures.items()]
    state = settle_item_state(store, version, results)
    create_table_artifact(key=f"publish-{version_id}", table=results_table(results),
                          description=f"各渠道发布结果（版本 {version_id}，稿件状态：{state}）")
    failed = [r for r in results if r.state not in DONE_STATES]
    if failed:
        get_run_logger().warning("未成功的渠道：%s", "、".join(f"{r.channel}（{r.message}）" for r in failed))
    return [r.__dict__ for r in results]


EARLY_START_TOLERANCE = 120  # seconds; workers pick scheduled runs up a little early (prefetch)


def wait_for_embargo(held: datetime) -> bool:
    """A run started just before the embargo waits for it; one started long before gives the time back."""
    remaining = (held - datetime.now(UTC)).total_seconds()
    if remaining > EARLY_START_TOLERANCE:
        return False
    time.sleep(max(0.0, remaining) + 0.05)
    return True


def requeue(version_id: int, held: datetime) -> None:
    from prefect.deployments import run_deployment

    run_deployment(PUBLISH_DEPLOYMENT, parameters={"version_id": version_id}, scheduled_time=held, timeout=0,
                   as_subflow=False, idempotency_key=f"embargo-{version_id}-{held.isoformat()}")


def outcome(channel: str, action: str, future) -> DeliveryResult:  # type: ignore[no-untyped-def]
    state = future.state
    if state.is_completed():
        return future.result()
    return DeliveryResult(channel, action, str(DeliveryState.failed), message=str(state.message or state.name))
