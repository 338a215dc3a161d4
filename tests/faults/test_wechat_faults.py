"""The WeChat stand-in misbehaving mid-publish, as the real API does: tokens that expire or are replaced
(42001, 40001), the daily quota of freepublish/get spent (45009), a submit whose answer never comes in time,
and an article that fails WeChat's own review. Each time: at most one article, a message an editor
understands, and nothing left for nobody to finish."""

from __future__ import annotations

import pytest

from tests.support.faults import wait_until
from tests.support.invariants import check_invariants, wechat_articles

# The first scenario on a server pays for starting it (and the desk) on top of its own work: minutes when loaded.
pytestmark = [pytest.mark.prefect, pytest.mark.faults, pytest.mark.timeout(2400)]


def delivery_row(newsroom, item_id: str):  # type: ignore[no-untyped-def]
    from sqlalchemy import select

    from rongmei.storage.tables import Delivery

    with newsroom.store.session() as session:
        return session.scalars(select(Delivery).where(Delivery.item_id == item_id, Delivery.channel == "wechat",
                                                      Delivery.action == "publish")).first()


def settled(newsroom, item_id: str, states: tuple[str, ...]):  # type: ignore[no-untyped-def]
    """The WeChat delivery once it is in one of `states`."""
    def resting():  # type: ignore[no-untyped-def]
        row = delivery_row(newsroom, item_id)
        return row if row is not None and row.state in states else None

    return wait_until(resting, f"{item_id}: WeChat delivery in {states}", 300, every=0.5,
                      diagnose=lambda: newsroom.describe(item_id))


def test_tokens_replaced_and_expiring_mid_publish_are_renewed(county, desk, newsroom, wechat):
    state = wechat.state
    issued = state.tokens_issued
    with state.lock:
        state.tokens.clear()  # every token we hold is unknown now: 40001 on the next call
    wechat.set_faults(token_expire_after_calls=3)  # and the new one expires a few calls later: 42001
    newsroom.sign("t-token", "final")
    newsroom.await_published("t-token", ["wechat"])
    assert state.tokens_issued >= issued + 2  # renewed twice, never given up
    submitted, articles = wechat_articles(state)
    assert (submitted[desk.items["t-token"].title], articles[desk.items["t-token"].title]) == (1, 1)
    check_invariants(county, wechat.state)


def test_poll_quota_spent_the_result_is_asked_again_later_not_submitted_again(county, desk, newsroom, wechat):
    title = desk.items["t-quota"].title
    wechat.set_faults(quota={"freepublish/get": 0})
    newsroom.sign("t-quota", "final")
    row = settled(newsroom, "t-quota", ("unconfirmed",))
    assert "不会重复发表" in row.message, row.message  # the editor is told it is out there and will be checked
    newsroom.await_run_ended("t-quota")
    wechat.set_faults(quota={"freepublish/get": 100})  # the next day
    wait_until(lambda: county.cli("reconcile").returncode == 0 and delivery_row(newsroom, "t-quota").state
               == "succeeded", "t-quota settled by the reconciler once the quota is back", 600, every=5)
    submitted, articles = wechat_articles(wechat.state)
    assert (submitted[title], articles[title]) == (1, 1)
    check_invariants(county, wechat.state)


def test_a_submit_answer_that_times_out_is_reconciled_not_submitted_again(county, desk, newsroom, wechat):
    title = desk.items["t-timeout"].title
    wechat.set_faults(submit_delay=40.0)  # the submit takes effect; its answer comes after our 30 s timeout
    newsroom.sign("t-timeout", "final")
    newsroom.await_published("t-timeout", ["wechat"])
    submitted, articles = wechat_articles(wechat.state)
    assert (submitted[title], articles[title]) == (1, 1)
    check_invariants(county, wechat.state)


def test_an_article_wechat_refuses_is_failed_with_the_reason_and_not_resubmitted(county, desk, newsroom, wechat):
    title = desk.items["t-audit"].title
    wechat.set_faults(publish_outcome=4)  # 平台审核不通过: WeChat's own review refused it
    newsroom.sign("t-audit", "final")
    row = settled(newsroom, "t-audit", ("failed",))
    assert "发表失败" in row.message, row.message
    newsroom.await_run_ended("t-audit")
    submitted, articles = wechat_articles(wechat.state)
    assert (submitted[title], articles[title]) == (1, 0)
    check_invariants(county, wechat.state)
