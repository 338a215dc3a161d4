"""The reconciler against the session's real stack: Prefect server + worker, the WeChat stand-in over HTTP.

Each test strands work the way a crash does (a run cancelled or gone, a row left behind, an answer lost), runs
one pass limited to its own items (the stack's store is shared with other tests), checks what was done, in
Prefect, on the channel and in the ledger, and that a second pass does nothing.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from uuid import UUID

import pytest
import requests
from prefect.client.orchestration import get_client
from prefect.states import Cancelled, Running, Scheduled
from sqlalchemy import select
from typer.testing import CliRunner

from flows.ingest import ingest
from publishers import Registry
from publishers.wechat import WeChatPublisher
from rongmei.cli.commands import app
from rongmei.core.model import SHANGHAI
from rongmei.core.states import DeliveryState
from rongmei.delivery.deliveries import deliver
from rongmei.delivery.retraction import retract_item_everywhere
from rongmei.delivery.stranded import CHECKED_AT, CHECKS, UNCONFIRMED
from rongmei.review.reviewers import enroll
from rongmei.runtime.reconciler import reconcile, stranded
from rongmei.runtime.runs import last_heartbeats
from rongmei.storage import ledger
from rongmei.storage.snapshots import load_version
from rongmei.storage.store import Store
from rongmei.storage.tables import Delivery, Item, LedgerEntry, SignOff, Version
from rongmei.storage.transitions import transition
from standins.wechat import start_standin
from tests.support.drops import ingest_staged, write_drop
from tests.support.review import await_final, await_pause, code_for, review_run_id, sign, sign_all_stages

pytestmark = pytest.mark.prefect
WAIT = 600  # seconds: generous, for a fully loaded machine; the waits end as soon as the run gets there


@pytest.fixture(scope="module")
def stack(prefect_stack):
    # No grace period: the tests strand work and reconcile it at once.
    settings = prefect_stack.settings.model_copy(update={"reconcile_grace_seconds": 0})
    return settings, Store.from_settings(settings)


def entries(store, item_id: str, action: str) -> list[LedgerEntry]:
    with store.session() as s:
        return list(s.scalars(select(LedgerEntry).where(LedgerEntry.item_id == item_id, LedgerEntry.action == action)
                              .order_by(LedgerEntry.seq)))


def deliveries(store, item_id: str) -> list[tuple[str, str, str]]:
    with store.session() as s:
        return sorted((d.channel, d.action, d.state) for d in s.scalars(select(Delivery).where(Delivery.item_id == item_id)))


def nothing_left(settings, item_id: str) -> None:
    """A second pass finds nothing and does nothing."""
    assert stranded(settings, item_ids=[item_id]) == []
    assert reconcile(settings, item_ids=[item_id]).actions == []


def test_a_review_whose_run_died_starts_again_at_its_stage(stack):
    settings, store = stack
    for prefix, role in (("e", "editor"), ("d", "desk_head"), ("c", "chief_editor")):
        enroll(store, settings, f"{prefix}-recrev", f"{prefix}-recrev", [role])
    write_drop(settings.inbox, "rec-review", "title: 审核中断的稿件\nauthor: 张三\nchannels: [web]")
    ingest()
    old = review_run_id("rec-review", timeout=WAIT)
    await_pause(old, "first-0", timeout=WAIT)  # then the code: one made before a long wait may have expired
    sign(old, "first-0", "e-recrev", code_for(settings, "e-recrev"))
    await_pause(old, "second-0", timeout=WAIT)
    with get_client(sync_client=True) as client:  # the run is gone, as after a crash that Prefect noticed
        client.set_flow_run_state(old, Cancelled(message="测试：模拟运行中断"), force=True)
    assert [s.stage for s in stranded(settings, item_ids=["rec-review"])] == ["second"]

    report = reconcile(settings, item_ids=["rec-review"])
    [action] = report.actions
    assert (action.what, action.ok) == ("start_review", True) and "复审" in action.why
    new = UUID(action.flow_run_id)
    paused = await_pause(new, "second-0", timeout=WAIT)  # the next stage, not 初审 again
    assert {"stage:second", "item:rec-review"} <= set(paused.tags)
    [started] = entries(store, "rec-review", "reconcile_review_started")
    assert (started.actor, started.details["stage"], started.details["flow_run_id"]) == \
        ("system:reconcile", "second", action.flow_run_id)
    nothing_left(settings, "rec-review")

    deadline = time.monotonic() + WAIT  # the worker's runs send heartbeats (rongmei.runtime.transient)
    while str(new) not in last_heartbeats([str(new)]) and time.monotonic() < deadline:
        time.sleep(1)
    assert str(new) in last_heartbeats([str(new)]), "no heartbeat event from a worker's flow run"

    sign(new, "second-0", "d-recrev", code_for(settings, "d-recrev"))
    await_pause(new, "final-0", timeout=WAIT)
    sign(new, "final-0", "c-recrev", code_for(settings, "c-recrev"))
    assert await_final(new, timeout=WAIT).state.is_completed()
    assert (settings.site_dir / "articles" / "rec-review" / "index.html").is_file()
    with store.session() as s:
        version = store.latest_version(s, "rec-review")
        stages = sorted(s.scalars(select(SignOff.stage).where(SignOff.version_id == version.id)))
        assert ledger.verify(s).ok
    assert stages == ["final", "first", "second"]  # 初审 applied once, in the run that died
    assert deliveries(store, "rec-review") == [("web", "publish", "succeeded")]


def test_a_run_prefect_shows_running_whose_process_died_is_marked_crashed_and_replaced(stack):
    settings, store = stack
    version_id = ingest_staged(settings, store, "rec-zombie", "title: 进程被杀的审核\nauthor: 张三\nchannels: [web]")
    with get_client(sync_client=True) as client:
        deployment = client.read_deployment_by_name("review/review")
        # What a killed worker leaves: Prefect still says Running, and no process will ever say otherwise.
        zombie = client.create_flow_run_from_deployment(
            deployment.id, parameters={"version_id": version_id}, tags=["item:rec-zombie"], state=Running())
    assert stranded(settings, item_ids=["rec-zombie"]) == []  # as far as anyone can tell, it is at work

    silent = settings.model_copy(update={"reconcile_dead_run_seconds": 0.001})
    report = reconcile(silent, item_ids=["rec-zombie"])
    assert [a.what for a in report.actions] == ["mark_crashed", "start_review"], report.lines()
    with get_client(sync_client=True) as client:
        crashed = client.read_flow_run(zombie.id).state
    assert crashed.is_crashed() and "心跳" in crashed.message
    new = UUID(report.actions[1].flow_run_id)
    await_pause(new, "first-0", timeout=WAIT)
    [started] = entries(store, "rec-zombie", "reconcile_review_started")
    assert started.details["replaces"] == [str(zombie.id)]
    assert entries(store, "rec-zombie", "reconcile_run_crashed")[0].details["flow_run_id"] == str(zombie.id)
    nothing_left(settings, "rec-zombie")
    with get_client(sync_client=True) as client:  # tidy: the stack's store is shared
        client.set_flow_run_state(new, Cancelled(message="测试结束"), force=True)
    retract_item_everywhere(store, settings, "rec-zombie", "测试结束", "reviewer:test")


def test_an_approval_that_never_reached_a_channel_is_published_once(stack):
    settings, store = stack
    version_id = ingest_staged(settings, store, "rec-approved", "title: 签发后没有发布\nauthor: 张三\nchannels: [web]")
    sign_all_stages(store, settings, version_id, prefix="recapp")  # the review run died before its publish
    [action] = reconcile(settings, item_ids=["rec-approved"]).actions
    assert action.what == "start_publish"
    assert await_final(UUID(action.flow_run_id), timeout=WAIT).state.is_completed()
    assert (settings.site_dir / "articles" / "rec-approved" / "index.html").is_file()
    assert deliveries(store, "rec-approved") == [("web", "publish", "succeeded")]
    assert entries(store, "rec-approved", "reconcile_publish_started")[0].details["flow_run_id"] == action.flow_run_id
    nothing_left(settings, "rec-approved")


def test_embargo_runs_are_made_moved_and_cancelled_to_match_the_store(stack):
    settings, store = stack
    publish_at = datetime.now(SHANGHAI).replace(microsecond=0) + timedelta(hours=2)
    version_id = ingest_staged(settings, store, "rec-embargo", f"title: 定时稿件\nauthor: 张三\nchannels: [web]\n"
                                                                f"publish_at: {publish_at.isoformat()}")
    sign_all_stages(store, settings, version_id, prefix="recemb")  # approved, but the scheduled run was never made
    [made] = reconcile(settings, item_ids=["rec-embargo"]).actions
    assert made.what == "schedule_publish"
    with get_client(sync_client=True) as client:
        run = client.read_flow_run(UUID(made.flow_run_id))
        assert run.state.is_scheduled() and run.state.state_details.scheduled_time == publish_at
        nothing_left(settings, "rec-embargo")
        # Someone moves it in the UI: it would go out an hour late.
        client.set_flow_run_state(run.id, Scheduled(scheduled_time=publish_at + timedelta(hours=1)), force=True)
        [moved] = reconcile(settings, item_ids=["rec-embargo"]).actions
        assert moved.what == "reschedule_run" and client.read_flow_run(run.id).state.is_cancelled()
        [rescheduled] = entries(store, "rec-embargo", "reconcile_run_rescheduled")
        again = client.read_flow_run(UUID(rescheduled.details["new_flow_run_id"]))
        assert again.state.state_details.scheduled_time == publish_at
        nothing_left(settings, "rec-embargo")
        # Retracted while it waits (by a path that did not cancel its runs): the run must not stay behind.
        retract_item_everywhere(store, settings, "rec-embargo", "内容有误", "reviewer:desk")
        [cancelled] = reconcile(settings, item_ids=["rec-embargo"]).actions
        state = client.read_flow_run(again.id).state
    assert cancelled.what == "cancel_run" and state.is_cancelled() and "撤稿" in state.message
    assert entries(store, "rec-embargo", "reconcile_run_cancelled")[0].details["flow_run_id"] == str(again.id)
    nothing_left(settings, "rec-embargo")


@pytest.fixture
def own_wechat(stack):
    """A WeChat stand-in of this test's own (its faults touch nobody else), and settings pointing at it."""
    settings, store = stack
    standin = start_standin(app_id="wxrecon01", secret="recon-secret", publish_seconds=0)
    wx = settings.model_copy(update={
        "wechat": {"app_id": "wxrecon01", "app_secret": "recon-secret", "base_url": standin.base_url},
        "reconcile_unconfirmed_per_pass": 1})
    try:
        yield wx, store, standin
    finally:
        standin.stop()


class QuickWeChat(WeChatPublisher):
    def __init__(self, settings):  # type: ignore[no-untyped-def]
        super().__init__(settings, poll_delays=(0.01, 0.01))


def unconfirmed_wechat_article(settings, store, name: str) -> int:  # type: ignore[no-untyped-def]
    """An article submitted to WeChat whose outcome could not be read today (the day's budget of
    freepublish/get calls is spent): left unconfirmed, with the promise "明天会继续查询结果"."""
    version_id = ingest_staged(settings, store, name, f"title: 公众号{name}\nauthor: 张三\nchannels: [wechat]", "正文。")
    sign_all_stages(store, settings, version_id, prefix=name)
    spent = settings.model_copy(update={"wechat": {**settings.wechat, "daily_poll_budget": 0}})
    result = deliver(store, spent, load_version(store, version_id), "wechat", registry=Registry({"wechat": QuickWeChat}))
    assert result.state == "unconfirmed" and "明天会继续查询结果" in result.message
    a_day_later(store, name)
    return version_id


def a_day_later(store, item_id: str) -> None:  # type: ignore[no-untyped-def]
    """Move the item's deliveries, and the reconciler's last question about them, a day into the past: the
    next question is due (what waiting for the backoff would do, without the wait)."""
    yesterday = datetime.now(UTC) - timedelta(days=1)
    with store.session() as s:
        for row in s.scalars(select(Delivery).where(Delivery.item_id == item_id)):
            if CHECKED_AT in (row.details or {}):
                row.details = {**row.details, CHECKED_AT: yesterday.isoformat()}
            row.updated_at = yesterday


def test_unconfirmed_wechat_deliveries_are_settled_on_a_budget(own_wechat):
    settings, store, standin = own_wechat
    items = ["rec-wx1", "rec-wx2"]
    for name in items:
        unconfirmed_wechat_article(settings, store, name)
    first = reconcile(settings, item_ids=items)
    [asked] = first.actions  # one per pass (reconcile_unconfirmed_per_pass = 1)
    assert asked.what == "requery" and "已发出" in asked.outcome
    [left] = stranded(settings, item_ids=items)
    assert left.kind == UNCONFIRMED and left.item_id != asked.item_id
    second = reconcile(settings, item_ids=items)
    assert [a.item_id for a in second.actions] == [left.item_id]
    for name in items:
        assert deliveries(store, name) == [("wechat", "publish", "succeeded")]
        [settled] = entries(store, name, "reconciled")
        assert (settled.actor, settled.details["state"]) == ("system:reconcile", "succeeded")
        with store.session() as s:
            assert s.get(Item, name).state == "published"
    seen = requests.get(f"{standin.base_url}/_standin/state", timeout=5).json()
    assert len(seen["publishes"]) == 2  # asked, never submitted again
    for name in items:
        nothing_left(settings, name)


def test_an_unconfirmed_delivery_the_channel_cannot_settle_yet_waits_longer(own_wechat):
    settings, store, standin = own_wechat
    standin.set_faults(publish_gets=1000, publish_seconds=3600)  # WeChat takes its time with this one
    unconfirmed_wechat_article(settings, store, "rec-wx3")
    [asked] = reconcile(settings, item_ids=["rec-wx3"]).actions
    assert asked.what == "requery" and "暂时无法确认" in asked.outcome
    with store.session() as s:
        [row] = s.scalars(select(Delivery).where(Delivery.item_id == "rec-wx3"))
        assert (row.state, row.details[CHECKS]) == ("unconfirmed", 1)
    assert entries(store, "rec-wx3", "reconcile_checked")[0].details["checks"] == 1
    nothing_left(settings, "rec-wx3")  # asked a moment ago: not again for 20 minutes
    with standin.state.lock:  # WeChat finishes publishing
        for publish in standin.state.publishes.values():
            publish["seconds_needed"] = 0
    a_day_later(store, "rec-wx3")
    [settled] = reconcile(settings, item_ids=["rec-wx3"]).actions
    assert "已发出" in settled.outcome
    assert deliveries(store, "rec-wx3") == [("wechat", "publish", "succeeded")]


def test_an_unconfirmed_delivery_that_never_went_out_is_published_again(stack, wechat_standin):
    settings, store = stack
    version_id = ingest_staged(settings, store, "rec-lost", "title: 没有发出的稿件\nauthor: 张三\nchannels: [wechat]")
    sign_all_stages(store, settings, version_id, prefix="reclost")
    before = len(requests.get(f"{wechat_standin.base_url}/_standin/state", timeout=5).json()["publishes"])
    with store.session() as s:  # an attempt lost before anything reached WeChat: nothing for it to find
        row = Delivery(item_id="rec-lost", version_id=version_id, channel="wechat", action="publish",
                       state=DeliveryState.pending, updated_at=datetime.now(UTC) - timedelta(hours=1))
        s.add(row)
        s.flush()
        transition(s, [(row, DeliveryState.in_progress)])
        transition(s, [(row, DeliveryState.unconfirmed)])
        row.updated_at = datetime.now(UTC) - timedelta(hours=1)
    report = reconcile(settings, item_ids=["rec-lost"])  # left an hour ago: due
    assert [a.what for a in report.actions] == ["requery", "start_publish"], report.lines()
    assert entries(store, "rec-lost", "reconciled")[0].details["state"] == "failed"
    assert await_final(UUID(report.actions[1].flow_run_id), timeout=WAIT).state.is_completed()
    assert deliveries(store, "rec-lost") == [("wechat", "publish", "succeeded")]  # by the worker, on the session's stand-in
    after = requests.get(f"{wechat_standin.base_url}/_standin/state", timeout=5).json()["publishes"]
    assert len(after) == before + 1
    nothing_left(settings, "rec-lost")


def test_a_delivery_whose_lease_expired_gets_a_publish_run(stack):
    settings, store = stack
    version_id = ingest_staged(settings, store, "rec-lease", "title: 租约过期\nauthor: 张三\nchannels: [web]")
    sign_all_stages(store, settings, version_id, prefix="reclease")
    with store.session() as s:  # the publish run holding it was killed mid-call
        row = Delivery(item_id="rec-lease", version_id=version_id, channel="web", action="publish",
                       state=DeliveryState.pending, lease_holder="flow-run-that-died",
                       lease_expires=datetime.now(UTC) - timedelta(seconds=1))
        s.add(row)
        s.flush()
        transition(s, [(row, DeliveryState.in_progress)])
    [found] = stranded(settings, item_ids=["rec-lease"])
    assert found.kind == "abandoned" and "flow-run-that-died" in found.why
    [action] = reconcile(settings, item_ids=["rec-lease"]).actions
    assert action.what == "start_publish"
    [started] = entries(store, "rec-lease", "reconcile_publish_started")
    assert (started.details["channel"], started.details["flow_run_id"]) == ("web", action.flow_run_id)
    finished = await_final(UUID(action.flow_run_id), timeout=WAIT)
    assert finished.state.is_completed(), finished.state.message
    # What the run did with the abandoned delivery is deliver()'s business (it takes over expired leases).
    assert deliveries(store, "rec-lease") == [("web", "publish", "succeeded")]
    nothing_left(settings, "rec-lease")


def test_the_deployment_and_the_command(stack, monkeypatch):
    from prefect.deployments import run_deployment

    settings, store = stack
    run = run_deployment("reconcile/reconcile", parameters={"dry_run": True}, timeout=300)
    assert run.state.is_completed(), run.state.message  # prefect.yaml deploys it and our worker runs it
    version_id = ingest_staged(settings, store, "rec-cli", "title: 命令行核对\nauthor: 张三\nchannels: [web]")
    monkeypatch.setenv("RONGMEI_RECONCILE_GRACE_SECONDS", "0")
    listed = CliRunner().invoke(app, ["reconcile", "--dry-run", "rec-cli"])
    assert listed.exit_code == 0, listed.output
    assert "重新开始审核 · rec-cli v1" in listed.output and "仅列出" in listed.output
    assert [s.kind for s in stranded(settings, item_ids=["rec-cli"])] == ["review"]  # nothing changed
    with store.session() as s:
        assert s.get(Version, version_id).state == "in_review"
    retract_item_everywhere(store, settings, "rec-cli", "测试结束", "reviewer:test")  # tidy the shared store
