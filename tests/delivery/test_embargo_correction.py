"""Embargo (publish_at) across a restart, and a correction (更正) reaching every channel that had the item."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from sqlalchemy import select

from flows.ingest import ingest
from rongmei.core.model import SHANGHAI
from rongmei.delivery.plan import embargoed_until
from rongmei.review.reviewers import enroll
from rongmei.storage import ledger
from rongmei.storage.snapshots import load_version
from rongmei.storage.store import Store
from rongmei.storage.tables import Delivery, LedgerEntry
from tests.support.drops import write_drop
from tests.support.review import await_final, code_for, fresh_code, review_run_id, sign
from tests.support.waiting import wait_until

pytestmark = pytest.mark.prefect
EMBARGO_LEAD_SECONDS = 240  # the test waits it out, so it costs CI time only when the machine is quick


def sign_all(settings, item_id, suffix, key_suffix="0"):
    run = review_run_id(item_id)
    sign(run, f"first-{key_suffix}", f"e-{suffix}", fresh_code(settings, f"e-{suffix}"))
    sign(run, f"second-{key_suffix}", f"d-{suffix}", fresh_code(settings, f"d-{suffix}"))
    sign(run, f"final-{key_suffix}", f"c-{suffix}", fresh_code(settings, f"c-{suffix}"))
    return await_final(run)


@pytest.fixture(scope="module")
def people(prefect_stack):
    settings = prefect_stack.settings
    store = Store.from_settings(settings)
    for suffix in ("emb", "cor1", "cor2"):
        for prefix, role in (("e", "editor"), ("d", "desk_head"), ("c", "chief_editor")):
            enroll(store, settings, f"{prefix}-{suffix}", f"{prefix}-{suffix}", [role])
    return settings, store


def test_embargo_holds_until_publish_at_even_across_a_restart(people, prefect_stack):
    settings, store = people
    # The lead time covers ingest, three sign-offs and a restart on a busy CI machine; the test waits it out.
    publish_at = datetime.now(SHANGHAI).replace(microsecond=0) + timedelta(seconds=EMBARGO_LEAD_SECONDS)
    write_drop(settings.inbox, "embargoed", f"title: 定时发布稿件\nauthor: 张三\nchannels: [web]\n"
                                            f"publish_at: {publish_at.isoformat()}")
    ingest()
    assert sign_all(settings, "embargoed", "emb").state.is_completed()
    assert datetime.now(SHANGHAI) < publish_at, (
        f"signing took longer than the embargo's lead time: raise EMBARGO_LEAD_SECONDS ({EMBARGO_LEAD_SECONDS})")
    page = settings.site_dir / "articles" / "embargoed" / "index.html"
    assert not page.exists(), "published before its embargo"
    with store.session() as s:
        scheduled = s.scalars(select(LedgerEntry).where(LedgerEntry.action == "scheduled",
                                                        LedgerEntry.item_id == "embargoed")).one()
    assert datetime.fromisoformat(scheduled.details["publish_at"]) == publish_at
    prefect_stack.restart_all()
    # However long the restart took: the page, once there, was written no sooner than publish_at.
    wait_until(page.exists, interval=0.5, max_interval=1, message="embargoed item never went live")
    assert page.stat().st_mtime >= publish_at.timestamp(), "published before its embargo"


def test_embargo_rule_ignores_emergencies(store, settings):
    future = datetime.now(SHANGHAI).replace(microsecond=0) + timedelta(hours=2)
    write_drop(settings.inbox, "emer", f"title: 应急\nauthor: 张三\nchannels: [web]\npriority: emergency\n"
                                       f"publish_at: {future.isoformat()}")
    write_drop(settings.inbox, "held", f"title: 定时\nauthor: 张三\nchannels: [web]\npublish_at: {future.isoformat()}")
    from rongmei.intake.ingest import ingest_inbox

    versions = {o.item_id: load_version(store, o.version_id) for o in ingest_inbox(settings, store)}
    assert embargoed_until(versions["emer"]) is None
    assert embargoed_until(versions["held"]) == future
    assert embargoed_until(versions["held"], now=future + timedelta(seconds=1)) is None


def test_correction_reaches_every_channel_that_had_the_item(people, prefect_stack):
    settings, store = people
    write_drop(settings.inbox, "corr", "title: 旗里新建学校\nauthor: 张三\nchannels: [web, flaky]", "学校可容纳 500 名学生。")
    ingest()
    assert sign_all(settings, "corr", "cor1").state.is_completed()
    # The new version names only the web: the correction still goes to flaky, which had the old one.
    write_drop(settings.inbox, "corr", "title: 旗里新建学校\nauthor: 张三\nchannels: [web]", "学校可容纳 800 名学生。")
    ingest()
    assert sign_all(settings, "corr", "cor2").state.is_completed()
    page = (settings.site_dir / "articles" / "corr" / "index.html").read_text(encoding="utf-8")
    assert "800 名学生" in page and "500 名学生" not in page and "更正" in page
    with store.session() as s:
        v2 = store.latest_version(s, "corr")
        actions = {(d.channel, d.action, d.state) for d in s.scalars(select(Delivery).where(Delivery.version_id == v2.id))}
        assert ledger.verify(s).ok
        updated = s.scalars(select(LedgerEntry).where(LedgerEntry.action == "updated",
                                                      LedgerEntry.item_id == "corr")).all()
    assert actions == {("web", "update", "succeeded"), ("flaky", "update", "succeeded")}
    assert {e.details["channel"] for e in updated} == {"web", "flaky"}


def test_retract_flow_needs_a_desk_heads_code(people, prefect_stack):
    from flows.retract import retract
    from rongmei.core.errors import SignOffRefused

    settings, store = people
    with pytest.raises(SignOffRefused):
        retract("corr", "核实后撤稿", "e-cor2", code_for(settings, "e-cor2", 1))  # an editor may not retract
    results = retract("corr", "核实后撤稿", "d-cor2", code_for(settings, "d-cor2", 1))
    assert {r["channel"]: r["state"] for r in results} == {"web": "succeeded", "flaky": "succeeded"}
    page = (settings.site_dir / "articles" / "corr" / "index.html").read_text(encoding="utf-8")
    assert "核实后撤稿" in page
    with store.session() as s:
        actions = [e.action for e in s.scalars(select(LedgerEntry).where(LedgerEntry.item_id == "corr"))]
        assert ledger.verify(s).ok
    assert "retract_refused" in actions and actions[-1] == "item_retracted"
