"""What the store calls stranded work (rongmei.delivery.stranded), on a plain store: no Prefect."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from rongmei.core.model import SHANGHAI
from rongmei.core.states import DeliveryState
from rongmei.delivery.deliveries import deliver, settle_item_state
from rongmei.delivery.retraction import mark_retracted, withdraw_from_store
from rongmei.delivery.stranded import (
    ABANDONED,
    CHECKED_AT,
    CHECKS,
    PUBLISH,
    RETRACTION,
    REVIEW,
    UNCONFIRMED,
    next_check_at,
    pending_stages,
    review_run_verdict,
    scheduled_run_verdict,
    stranded_in_store,
)
from rongmei.review.reviewers import enroll, set_active
from rongmei.review.signoff import apply_signoff, stage_position
from rongmei.storage.snapshots import load_version
from rongmei.storage.tables import Delivery, Version
from rongmei.storage.transitions import transition
from tests.support.drops import ingest_staged
from tests.support.review import code_for, sign_all_stages


@pytest.fixture
def settings(settings):  # type: ignore[no-untyped-def]
    settings.reconcile_grace_seconds = 0  # everything counts at once, unless a test says otherwise
    return settings


def found(store, settings, kind=None, **kwargs):  # type: ignore[no-untyped-def]
    now = datetime.now(UTC) + timedelta(seconds=1)
    return [s for s in stranded_in_store(store, settings, now=now, **kwargs) if kind is None or s.kind == kind]


def add_delivery(store, version_id: int, state: str, *, channel: str = "web", **columns) -> int:  # type: ignore[no-untyped-def]
    """A delivery row as a publish run leaves it, moved into `state` the way deliveries are."""
    updated_at = columns.pop("updated_at", None)
    with store.session() as session:
        version = session.get(Version, version_id)
        row = Delivery(item_id=version.item_id, version_id=version_id, channel=channel, action="publish",
                       state=DeliveryState.pending, **columns)
        session.add(row)
        session.flush()
        transition(session, [(row, DeliveryState.in_progress)])
        if state != DeliveryState.in_progress:
            transition(session, [(row, state)])
        if updated_at is not None:
            row.updated_at = updated_at  # set in this flush, so the column's onupdate leaves it
        session.flush()
        return row.id


def test_a_version_in_review_waits_at_its_next_stage(store, settings):
    version_id = ingest_staged(settings, store, "town", "title: 镇里的新闻\nauthor: 张三\nchannels: [web]")
    [waiting] = found(store, settings, REVIEW)
    assert (waiting.item_id, waiting.version_id, waiting.stage) == ("town", version_id, "first")
    assert "审核中" in waiting.why and "初审" in waiting.why
    enroll(store, settings, "ed", "李编辑", ["editor"])
    version = load_version(store, version_id)
    first = settings.stages[0]
    result = apply_signoff(store, settings, version, first, "first-0",
                           {"decision": "approve", "reviewer": "ed", "code": code_for(settings, "ed")})
    assert result.status == "approved"
    [waiting] = found(store, settings, REVIEW)
    assert waiting.stage == "second"
    expected = stage_position(store, settings, version)
    with store.session() as session:  # the batched rule is stage_position's rule
        assert pending_stages(session, settings, [session.get(Version, version_id)])[version_id] == expected


def test_fresh_work_is_left_to_the_run_about_to_take_it(store, settings):
    ingest_staged(settings, store, "fresh", "title: 刚收的稿\nauthor: 张三\nchannels: [web]")
    settings.reconcile_grace_seconds = 3600
    assert found(store, settings) == []


def test_an_approved_version_is_stranded_until_a_channel_is_asked(store, settings):
    version_id = ingest_staged(settings, store, "signed", "title: 已签发\nauthor: 张三\nchannels: [web]")
    signers = sign_all_stages(store, settings, version_id)
    [waiting] = found(store, settings)
    assert (waiting.kind, waiting.version_id, waiting.publish_at) == (PUBLISH, version_id, None)
    result = deliver(store, settings, load_version(store, version_id), "web")
    assert result.state == "succeeded"
    [unsettled] = found(store, settings)  # out on the web, but the run died before settling the version
    assert unsettled.kind == PUBLISH and "状态没有更新" in unsettled.why
    settle_item_state(store, load_version(store, version_id), [result])
    assert found(store, settings) == []
    # One the gate would refuse is not stranded: nothing a publish run could do for it.
    other = ingest_staged(settings, store, "unsignable", "title: 签字人停用\nauthor: 张三\nchannels: [web]")
    sign_all_stages(store, settings, other, prefix="gone")
    set_active(store, f"gone-{other}-final", False, actor="cli:test")
    assert found(store, settings) == [] and signers


def test_an_approval_whose_publish_run_died_part_way(store, settings):
    version_id = ingest_staged(settings, store, "part", "title: 发了一半\nauthor: 张三\nchannels: [web, wechat]")
    sign_all_stages(store, settings, version_id, prefix="part")
    deliver(store, settings, load_version(store, version_id), "web")  # then the run died: WeChat never asked
    [missing] = found(store, settings)
    assert missing.kind == PUBLISH and "wechat 还没有开始发布" in missing.why


def test_an_embargoed_approval_is_stranded_with_its_time(store, settings):
    publish_at = datetime.now(SHANGHAI).replace(microsecond=0) + timedelta(hours=3)
    version_id = ingest_staged(settings, store, "later", f"title: 定时\nauthor: 张三\nchannels: [web]\n"
                                                          f"publish_at: {publish_at.isoformat()}")
    sign_all_stages(store, settings, version_id)
    [waiting] = found(store, settings, PUBLISH)
    assert waiting.publish_at == publish_at and "定于" in waiting.why


def test_deliveries_a_dead_run_left_in_progress(store, settings):
    version_id = ingest_staged(settings, store, "halfway", "title: 发送中断\nauthor: 张三\nchannels: [web, wechat]")
    sign_all_stages(store, settings, version_id)
    now = datetime.now(UTC)
    expired = add_delivery(store, version_id, DeliveryState.in_progress, lease_holder="run-dead",
                           lease_expires=now - timedelta(seconds=5))
    held = add_delivery(store, version_id, DeliveryState.in_progress, channel="wechat", lease_holder="run-alive",
                        lease_expires=now + timedelta(minutes=5))
    [abandoned] = found(store, settings, ABANDONED)
    assert (abandoned.delivery_id, abandoned.channel) == (expired, "web") and "run-dead" in abandoned.why
    assert held not in {s.delivery_id for s in found(store, settings)}
    # A row from before leases (no expiry) counts once it was not touched for a lease's length.
    with store.session() as session:
        row = session.get(Delivery, held)
        row.lease_expires, row.lease_holder = None, ""
        row.updated_at = now - timedelta(seconds=settings.delivery_lease_seconds + 60)
    assert {s.delivery_id for s in found(store, settings, ABANDONED)} == {expired, held}
    # The version is still "approved" with deliveries: it is not also reported as never started.
    assert found(store, settings, PUBLISH) == []


def test_unconfirmed_deliveries_are_due_with_a_growing_wait(store, settings):
    version_id = ingest_staged(settings, store, "wx", "title: 公众号\nauthor: 张三\nchannels: [web, wechat]")
    sign_all_stages(store, settings, version_id)
    long_ago = datetime.now(UTC) - timedelta(hours=2)
    first = add_delivery(store, version_id, DeliveryState.unconfirmed, channel="wechat", updated_at=long_ago)
    second = add_delivery(store, version_id, DeliveryState.unconfirmed, channel="web",
                          updated_at=long_ago + timedelta(minutes=30))
    assert [s.delivery_id for s in found(store, settings, UNCONFIRMED)] == [first, second]  # oldest first
    with store.session() as session:
        row = session.get(Delivery, first)
        row.details = {CHECKS: 1, CHECKED_AT: (datetime.now(UTC) - timedelta(minutes=15)).isoformat()}
    assert [s.delivery_id for s in found(store, settings, UNCONFIRMED)] == [second]  # asked 15 min ago: waits 20
    waits = [next_check_at(Delivery(updated_at=long_ago, details={CHECKS: n, CHECKED_AT: long_ago.isoformat()}),
                           settings) - long_ago for n in range(12)]
    minutes = [w.total_seconds() / 60 for w in waits]
    assert minutes[:4] == [10, 20, 40, 80] and max(minutes) == settings.reconcile_unconfirmed_max_interval_minutes


def test_a_retraction_that_stopped_half_way(store, settings):
    version_id = ingest_staged(settings, store, "gone", "title: 撤稿\nauthor: 张三\nchannels: [web]")
    sign_all_stages(store, settings, version_id)
    deliver(store, settings, load_version(store, version_id), "web")
    withdraw_from_store(store, "gone", "数据有误", "reviewer:desk")  # the process dies right after this commit
    settings.delivery_lease_seconds = 0
    [left] = found(store, settings, RETRACTION)
    assert (left.item_id, left.reason, left.ordered_by) == ("gone", "数据有误", "reviewer:desk")
    mark_retracted(store, "gone", "数据有误", "reviewer:desk", [])
    assert found(store, settings) == []


def test_scheduled_publish_runs_held_against_the_store(store, settings):
    publish_at = datetime.now(SHANGHAI).replace(microsecond=0) + timedelta(hours=3)
    version_id = ingest_staged(settings, store, "timed", f"title: 定时\nauthor: 张三\nchannels: [web]\n"
                                                          f"publish_at: {publish_at.isoformat()}")
    sign_all_stages(store, settings, version_id)
    assert scheduled_run_verdict(store, settings, version_id, publish_at).action == "keep"
    moved = scheduled_run_verdict(store, settings, version_id, publish_at + timedelta(hours=1))
    assert (moved.action, moved.at) == ("reschedule", publish_at) and "不符" in moved.why
    assert scheduled_run_verdict(store, settings, 10**9, publish_at).action == "cancel"
    withdraw_from_store(store, "timed", "撤稿", "reviewer:desk")
    gone = scheduled_run_verdict(store, settings, version_id, publish_at)
    assert gone.action == "cancel" and "撤稿" in gone.why
    now_version = ingest_staged(settings, store, "now", "title: 立即\nauthor: 张三\nchannels: [web]")
    sign_all_stages(store, settings, now_version, prefix="now")
    early = scheduled_run_verdict(store, settings, now_version, datetime.now(UTC) + timedelta(days=1))
    assert (early.action, early.at) == ("reschedule", None)  # no embargo: publish now, not tomorrow


def test_waiting_review_runs_held_against_the_store(store, settings):
    version_id = ingest_staged(settings, store, "rev", "title: 审核\nauthor: 张三\nchannels: [web]")
    assert review_run_verdict(store, settings, version_id, "first").action == "keep"
    assert review_run_verdict(store, settings, version_id, "").action == "keep"  # scheduled, not yet paused
    stale = review_run_verdict(store, settings, version_id, "second")  # paused at a stage already past
    assert stale.action == "cancel" and "初审" in stale.why
    ingest_staged(settings, store, "rev2", "id: rev\ntitle: 审核（二稿）\nauthor: 张三\nchannels: [web]")
    superseded = review_run_verdict(store, settings, version_id, "first")
    assert superseded.action == "cancel" and "取代" in superseded.why
    with store.session() as session:
        assert session.scalars(select(Version.state).where(Version.id == version_id)).one() == "superseded"
