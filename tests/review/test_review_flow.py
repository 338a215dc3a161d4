"""Three-stage sign-off against a real Prefect server and worker, with real TOTP codes."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from flows.ingest import ingest
from rongmei.review.reviewers import enroll
from rongmei.storage import ledger
from rongmei.storage.store import Store
from rongmei.storage.tables import Delivery, LedgerEntry
from tests.support.drops import write_drop
from tests.support.review import await_final, await_pause, code_for, fresh_code, review_run_id, sign

pytestmark = pytest.mark.prefect


@pytest.fixture(scope="module")
def team(prefect_stack):
    settings = prefect_stack.settings
    store = Store.from_settings(settings)
    enroll(store, settings, "ed", "李编辑", ["editor", "desk_head"])
    enroll(store, settings, "desk", "王主任", ["desk_head"])
    enroll(store, settings, "chief", "赵总编", ["chief_editor"])
    enroll(store, settings, "ed2", "周编辑", ["editor"])
    # A code counts once per reviewer and 30-second step: each test signs with reviewers of its own.
    enroll(store, settings, "ed3", "吴编辑", ["editor"])
    enroll(store, settings, "desk3", "钱主任", ["desk_head"])
    enroll(store, settings, "chief3", "孙总编", ["chief_editor"])
    return settings, store


def drop_and_ingest(settings, name, front, body="正文。"):
    write_drop(settings.inbox, name, front, body)
    results = ingest()
    assert [r["status"] for r in results if r["drop"] == name] == ["ingested"]


def test_three_stages_with_refusals_then_publish(team, prefect_stack):
    settings, store = team
    drop_and_ingest(settings, "harvest", "title: 秋粮丰收\nauthor: 张三\nsummary: 丰收\nchannels: [web, flaky, broken]",
                    "今年秋粮产量 12.5万吨。")
    run = review_run_id("harvest")
    sign(run, "first-0", "ed", "000000")  # wrong code
    await_pause(run, "first-1")
    ed_code = code_for(settings, "ed")  # taken with the form open: it stays valid into the next 30 s step
    sign(run, "first-1", "ed", ed_code)
    sign(run, "second-0", "ed", ed_code)  # the same code again (not a fresh one: a 30 s step may have passed)
    sign(run, "second-1", "chief", fresh_code(settings, "chief"))  # wrong role
    sign(run, "second-2", "ed", fresh_code(settings, "ed", 1))  # valid code, but ed signed 初审 (four eyes)
    sign(run, "second-3", "desk", fresh_code(settings, "desk"))
    sign(run, "final-0", "chief", fresh_code(settings, "chief", 1))
    final = await_final(run)
    assert final.state.is_completed(), final.state.message
    assert "stage:published" in final.tags and "item:harvest" in final.tags

    page = settings.site_dir / "articles" / "harvest" / "index.html"
    assert "秋粮丰收" in page.read_text(encoding="utf-8")
    assert "harvest" in (settings.site_dir / "index.html").read_text(encoding="utf-8")
    assert "/articles/harvest/" in (settings.site_dir / "feed.xml").read_text(encoding="utf-8")
    with store.session() as s:
        deliveries = {d.channel: d for d in s.scalars(select(Delivery).where(Delivery.item_id == "harvest"))}
        refused = s.scalars(select(LedgerEntry).where(LedgerEntry.action == "signoff_refused",
                                                      LedgerEntry.item_id == "harvest")).all()
        signed = s.scalars(select(LedgerEntry).where(LedgerEntry.action.in_(("signed", "approved")),
                                                     LedgerEntry.item_id == "harvest")).all()
        # codes were checked against the moment the reviewer submitted, as the Prefect server recorded it
        assert len(signed) == 3 and all(isinstance(e.details["submitted_at"], float) for e in signed)
        assert ledger.verify(s).ok
    assert deliveries["web"].state == "succeeded"
    assert (deliveries["flaky"].state, deliveries["flaky"].attempts) == ("succeeded", 3)  # retried, then worked
    assert deliveries["broken"].state == "failed" and "封禁" in deliveries["broken"].message
    reasons = " ".join(e.details["reason"] for e in refused)
    assert len(refused) == 4 and "不正确" in reasons and "用过" in reasons and "权限" in reasons and "两个环节" in reasons


def test_return_writes_review_md(team, prefect_stack):
    settings, _ = team
    drop_and_ingest(settings, "draft", "title: 待修改稿件\nauthor: 张三\nchannels: [web]")
    run = review_run_id("draft")
    sign(run, "first-0", "ed2", fresh_code(settings, "ed2"), decision="return", comment="第二段数据需要核实来源")
    assert await_final(run).state.is_completed()
    review = (settings.returned / "draft" / "REVIEW.md").read_text(encoding="utf-8")
    assert "初审" in review and "周编辑" in review and "第二段数据需要核实来源" in review
    assert (settings.returned / "draft" / "index.md").is_file()


def test_a_new_version_withdraws_the_waiting_review_of_the_old_one(team, prefect_stack):
    from prefect.client.orchestration import get_client

    settings, _ = team
    drop_and_ingest(settings, "revised", "title: 修改前的稿件\nauthor: 张三\nchannels: [web]", "第一稿。")
    old = review_run_id("revised")
    await_pause(old, "first-0")
    drop_and_ingest(settings, "revised", "title: 修改后的稿件\nauthor: 张三\nchannels: [web]", "第二稿。")
    new = review_run_id("revised")
    assert new != old
    with get_client(sync_client=True) as client:
        withdrawn = client.read_flow_run(old).state
    assert withdrawn.is_cancelled() and "v2" in withdrawn.message
    assert await_pause(new, "first-0").name.endswith("（v2）")  # reviewers see one run: the new version's


def test_restart_while_waiting_still_publishes(team, prefect_stack):
    settings, _store = team
    drop_and_ingest(settings, "restart", "title: 重启测试\nauthor: 张三\nchannels: [web]")
    run = review_run_id("restart")
    sign(run, "first-0", "ed3", fresh_code(settings, "ed3"))
    await_pause(run, "second-0")
    prefect_stack.restart_all()
    sign(run, "second-0", "desk3", fresh_code(settings, "desk3"))
    sign(run, "final-0", "chief3", fresh_code(settings, "chief3"))
    assert await_final(run).state.is_completed()
    assert (settings.site_dir / "articles" / "restart" / "index.html").is_file()


def test_publish_rerun_publishes_nothing_twice_then_retract(team, prefect_stack):
    from flows.publish import publish
    from rongmei.delivery.retraction import retract_item_everywhere

    settings, store = team
    with store.session() as s:
        version_id = store.latest_version(s, "harvest").id
        before = {d.channel: (d.state, d.attempts) for d in s.scalars(select(Delivery).where(
            Delivery.item_id == "harvest"))}
    flaky_log = (settings.data_dir / "flaky.json").read_text()
    results = publish(version_id)
    assert {r["channel"]: r["already_done"] for r in results}["web"] is True
    assert (settings.data_dir / "flaky.json").read_text() == flaky_log  # the channel was not called again
    with store.session() as s:
        after = {d.channel: (d.state, d.attempts) for d in s.scalars(select(Delivery).where(
            Delivery.item_id == "harvest", Delivery.action == "publish"))}
    assert after["web"] == before["web"] and after["flaky"] == before["flaky"]

    results = retract_item_everywhere(store, settings, "harvest", "数据有误，撤稿核实", "cli:test")
    assert {r.channel: r.state for r in results} == {"web": "succeeded", "flaky": "succeeded"}  # broken never had it
    page = (settings.site_dir / "articles" / "harvest" / "index.html").read_text(encoding="utf-8")
    assert "撤稿" in page and "数据有误" in page and "今年秋粮产量" not in page
    assert "/articles/harvest/" not in (settings.site_dir / "index.html").read_text(encoding="utf-8")
    assert "/articles/harvest/" not in (settings.site_dir / "feed.xml").read_text(encoding="utf-8")
    with store.session() as s:
        assert ledger.verify(s).ok
        assert s.scalars(select(LedgerEntry).where(LedgerEntry.action == "item_retracted",
                                                   LedgerEntry.item_id == "harvest")).one().details["reason"]
