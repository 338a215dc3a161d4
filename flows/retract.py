"""Retract (撤稿): withdraw an item from the store, its pending runs, every channel that received it (by
delivery history), the media server and the previews. Needs a desk head's or chief editor's code."""

from __future__ import annotations

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NO_CACHE

from rongmei.core.settings import load_settings
from rongmei.core.states import DeliveryState
from rongmei.delivery.deliveries import DeliveryResult, results_table
from rongmei.delivery.retraction import authorise_retraction, retract_item_everywhere
from rongmei.runtime.orchestration import cancel_item_runs
from rongmei.storage.store import store_for

__all__ = ["retract", "withdraw"]


@task(name="withdraw from channels", cache_policy=NO_CACHE)
def withdraw(item_id: str, reason: str, actor: str) -> list[DeliveryResult]:
    """Retract on each channel that has the item; one channel failing does not stop the others."""
    settings = load_settings()
    return retract_item_everywhere(store_for(settings), settings, item_id, reason, actor,
                                   cancel_runs=cancel_item_runs, via="prefect:retract")


@flow(name="retract", log_prints=False)
def retract(item_id: str, reason: str, reviewer: str, code: str) -> list[dict]:
    """撤稿 from the Prefect UI: the reviewer's id and TOTP code say who asked for it."""
    settings = load_settings()
    actor = authorise_retraction(store_for(settings), settings, item_id, reason, reviewer, code,
                                 via="prefect:retract")
    results = withdraw(item_id, reason, actor)
    create_table_artifact(key=f"retract-{item_id.lower()}"[:60].replace("_", "-"), table=results_table(results),
                          description=f"撤稿结果：{item_id}（原因：{reason}）")
    for r in results:
        if r.state != DeliveryState.succeeded:
            get_run_logger().warning("%s 撤回未完成：%s", r.channel, r.message)
    return [r.__dict__ for r in results]
