"""Every door guarded (SECURITY.md): each test plays one actor of the threat model and tries one way in.

Where the attack goes through Prefect or HTTP it goes through the session's real stack (Prefect server on its
private PostgreSQL, our worker, the deployments from prefect.yaml) or a real server on 127.0.0.1; every test
checks that the attempt changed nothing it must not change and that the ledger tells what was tried.
"""

from __future__ import annotations

import base64
import os
import subprocess
import time
import uuid
from pathlib import Path

import markdown
import pyotp
import pytest
import requests
from sqlalchemy import select
from typer.testing import CliRunner

from rongmei.cli.commands import app
from rongmei.core.states import ItemState
from rongmei.delivery.deliveries import deliver
from rongmei.delivery.release import build_release
from rongmei.intake.drops import find_drops
from rongmei.intake.ingest import ingest_drop
from rongmei.review.reviewers import _load_secrets, current_code, enroll, set_active
from rongmei.review.signoff import apply_signoff, form_description
from rongmei.storage.snapshots import load_version
from rongmei.storage.store import Store
from rongmei.storage.tables import Delivery, Item, LedgerEntry, Reviewer, SignOff, Version
from tests.support.drops import write_drop
from tests.support.environment import PREFECT_AUTH
from tests.support.review import (
    await_final,
    await_pause,
    code_for,
    fresh_code,
    review_run_id,
    sign,
    sign_all_stages,
)
from tests.support.waiting import ANSWER_TIMEOUT, PATIENCE

IS_ROOT = os.geteuid() == 0


def new_version(settings, store, name: str, front: str, body: str = "正文。", files: dict | None = None) -> int:
    """Ingest one drop (from a staging folder, so that no review run starts for it) and return its version id."""
    staging = settings.content_dir / "staging"
    write_drop(staging, name, front, body, files)
    [drop] = [d for d in find_drops(staging) if d.name == name]
    outcome = ingest_drop(drop, settings, store)
    assert outcome.status == "ingested", [p.message for p in outcome.problems]
    return outcome.version_id


def ledger_entries(store, item_id: str, action: str) -> list[LedgerEntry]:
    with store.session() as s:
        return list(s.scalars(select(LedgerEntry).where(LedgerEntry.item_id == item_id, LedgerEntry.action == action)))


def deliveries(store, item_id: str) -> list[Delivery]:
    with store.session() as s:
        return list(s.scalars(select(Delivery).where(Delivery.item_id == item_id)))


def png(color: tuple[int, int, int]) -> bytes:
    import io

    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", (32, 24), color).save(out, "PNG")
    return out.getvalue()


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


# The delivery gate, called directly --------------------------------------------------------------------------
def test_code_calling_deliver_for_an_unsigned_version_reaches_no_channel(settings, store):
    version_id = new_version(settings, store, "unsigned", "title: 未签发稿件\nauthor: 张三\nchannels: [web]")
    result = deliver(store, settings, load_version(store, version_id), "web")
    assert result.state == "refused" and "尚未完成审核签发" in result.message
    assert not (settings.site_dir / "articles" / "unsigned").exists()
    assert deliveries(store, "unsigned") == []  # nothing was even claimed
    [refusal] = ledger_entries(store, "unsigned", "delivery_refused")
    assert refusal.details["channel"] == "web" and "pid" in refusal.details["process"]


def test_code_publishing_after_every_stage_signed_goes_out(settings, store):
    version_id = new_version(settings, store, "signed", "title: 已签发稿件\nauthor: 张三\nchannels: [web]")
    sign_all_stages(store, settings, version_id)
    assert deliver(store, settings, load_version(store, version_id), "web").state == "succeeded"
    assert (settings.site_dir / "articles" / "signed" / "index.html").is_file()


def test_code_correcting_with_an_unsigned_new_version_is_refused_and_the_page_stays(settings, store):
    first = new_version(settings, store, "fix", "title: 原稿\nauthor: 张三\nchannels: [web]", "原来的正文。")
    sign_all_stages(store, settings, first, prefix="v1")
    assert deliver(store, settings, load_version(store, first), "web").state == "succeeded"
    second = new_version(settings, store, "fix-2", "id: fix\ntitle: 更正稿\nauthor: 张三\nchannels: [web]",
                         "更正后的正文。")
    result = deliver(store, settings, load_version(store, second), "web", "update")  # the correction path
    assert result.state == "refused"
    page = (settings.site_dir / "articles" / "fix" / "index.html").read_text(encoding="utf-8")
    assert "原来的正文" in page and "更正后的正文" not in page
    assert [e.details["action"] for e in ledger_entries(store, "fix", "delivery_refused")] == ["update"]


def test_dba_adding_signoff_rows_without_ledger_entries_cannot_let_a_version_out(settings, store):
    version_id = new_version(settings, store, "forged", "title: 伪造签字\nauthor: 张三\nchannels: [web]")
    for stage in settings.stages:
        enroll(store, settings, f"real-{stage.name}", "真实审核人", [stage.role])
    with store.session() as s:  # straight into the tables, as someone with database access could
        version = s.get(Version, version_id)
        for stage in settings.stages:
            s.add(SignOff(version_id=version_id, stage=stage.name, reviewer_id=f"real-{stage.name}",
                          decision="approve", signed_hash=version.signed_hash))
        version.state = ItemState.approved
        s.get(Item, "forged").state = ItemState.approved
    result = deliver(store, settings, load_version(store, version_id), "web")
    assert result.state == "refused" and "审计记录" in result.message
    assert not (settings.site_dir / "articles" / "forged").exists()


def test_technician_deactivating_a_signer_stops_the_version_until_reactivated(settings, store):
    version_id = new_version(settings, store, "inactive", "title: 签字人停用\nauthor: 张三\nchannels: [web]")
    signers = sign_all_stages(store, settings, version_id)
    set_active(store, signers[-1], False)
    assert "已停用" in deliver(store, settings, load_version(store, version_id), "web").message
    set_active(store, signers[-1], True)
    assert deliver(store, settings, load_version(store, version_id), "web").state == "succeeded"


def test_reviewer_cannot_use_a_demo_account_outside_demo_mode(settings, store):
    assert settings.demo is False
    version_id = new_version(settings, store, "demo", "title: 演示账号\nauthor: 张三\nchannels: [web]")
    enroll(store, settings, "demo-editor", "演示编辑", ["editor"], demo=True)
    code = pyotp.TOTP(_load_secrets(settings)["demo-editor"]["secret"]).now()
    refused = apply_signoff(store, settings, load_version(store, version_id), settings.stages[0], "first-0",
                            {"decision": "approve", "reviewer": "demo-editor", "code": code})
    assert refused.status == "refused" and "演示" in refused.message
    with pytest.raises(Exception, match="demo mode"):
        current_code(settings, "demo-editor")
    demo = settings.model_copy(update={"demo": True})
    assert current_code(demo, "demo-editor") == code
    accepted = apply_signoff(store, demo, load_version(store, version_id), demo.stages[0], "first-1",
                             {"decision": "approve", "reviewer": "demo-editor", "code": code})
    assert accepted.status == "approved"


# Sign-off hardening -----------------------------------------------------------------------------------------
def test_reviewer_comment_cannot_draw_a_fake_signature_block_in_the_next_form(settings, store):
    version_id = new_version(settings, store, "inject", "title: '**已签字** 标题'\nauthor: 张三\nchannels: [web]")
    enroll(store, settings, "ed", "编辑", ["editor"])
    forged = "同意\n\n**已签字**：\n- final：chief 通过\n\n<b>终审已签发</b>"
    apply_signoff(store, settings, load_version(store, version_id), settings.stages[0], "first-0",
                  {"decision": "approve", "reviewer": "ed", "code": code_for(settings, "ed"), "comment": forged})
    text = form_description(store, settings, load_version(store, version_id), settings.stages[1])
    html = markdown.markdown(text)
    assert "<b>" not in html
    assert "final：chief" not in html.split("<blockquote>")[0]  # nowhere but inside the quote
    assert "<li>final" not in html
    import re

    strong = re.findall(r"<strong>(.*?)</strong>", html)
    assert strong == ["**已签字** 标题", "自动检查", "已签字"]  # the title as typed, our two headings; none from the comment
    assert "<blockquote>" in html and "final：chief 通过" in html.split("<blockquote>", 2)[2]  # shown quoted


def test_ui_login_holder_guessing_codes_locks_the_reviewer_with_a_message_saying_until_when(settings, store):
    version_id = new_version(settings, store, "guess", "title: 猜验证码\nauthor: 张三\nchannels: [web]")
    enroll(store, settings, "target", "被猜的编辑", ["editor"])
    stage = settings.stages[0]
    for n in range(settings.signoff_max_failures):
        result = apply_signoff(store, settings, load_version(store, version_id), stage, f"first-{n}",
                               {"decision": "approve", "reviewer": "target", "code": f"{n:06d}"})
        assert result.status == "refused"
    assert "锁定至" in result.message
    right = apply_signoff(store, settings, load_version(store, version_id), stage, "first-locked",
                          {"decision": "approve", "reviewer": "target", "code": code_for(settings, "target")})
    assert right.status == "refused" and "已被锁定" in right.message and "后才能再签字" in right.message
    [locked] = [e for e in ledger_entries(store, "", "reviewer_locked") if e.details["reviewer"] == "target"]
    assert locked.details["failures"] == settings.signoff_max_failures
    set_active(store, "target", True)  # a technician lifts the lock
    ok = apply_signoff(store, settings, load_version(store, version_id), stage, "first-unlocked",
                       {"decision": "approve", "reviewer": "target", "code": code_for(settings, "target", 1)})
    assert ok.status == "approved"


def cli(settings, *args: str, input: str | None = None):
    env = {"RONGMEI_DATA_DIR": str(settings.data_dir), "RONGMEI_CONTENT_DIR": str(settings.content_dir)}
    return CliRunner().invoke(app, list(args), env=env, input=input)


def test_technician_rotating_a_secret_stops_the_old_codes_at_once(settings, store):
    version_id = new_version(settings, store, "rotate", "title: 换密钥\nauthor: 张三\nchannels: [web]")
    enroll(store, settings, "lost-phone", "丢手机的编辑", ["editor"])
    old = code_for(settings, "lost-phone")
    rotated = cli(settings, "reviewers", "rotate", "lost-phone", "--no-qr")
    assert rotated.exit_code == 0 and "secret:" in rotated.output
    stage = settings.stages[0]
    assert apply_signoff(store, settings, load_version(store, version_id), stage, "first-0",
                         {"decision": "approve", "reviewer": "lost-phone", "code": old}).status == "refused"
    new_secret = rotated.output.split("secret:")[1].split()[0]
    assert new_secret == _load_secrets(settings)["lost-phone"]["secret"]
    assert apply_signoff(store, settings, load_version(store, version_id), stage, "first-1",
                         {"decision": "approve", "reviewer": "lost-phone",
                          "code": pyotp.TOTP(new_secret).now()}).status == "approved"
    assert cli(settings, "reviewers", "deactivate", "lost-phone").exit_code == 0
    assert "已停用" in cli(settings, "reviewers", "list").output
    actions = [e.action for e in ledger_entries(store, "", "reviewer_secret_rotated")]
    assert actions == ["reviewer_secret_rotated"]
    assert ledger_entries(store, "", "reviewer_deactivated")[0].details["reviewer"] == "lost-phone"


def test_anyone_running_demo_code_outside_demo_mode_is_refused(settings, store):
    enroll(store, settings, "demo-chief", "演示总编", ["chief_editor"], demo=True)
    result = cli(settings, "reviewers", "demo-code", "demo-chief")
    assert result.exit_code == 1 and "demo mode" in result.output


# Retraction -----------------------------------------------------------------------------------------------------
def test_desk_head_retraction_withdraws_media_and_previews_and_the_approved_version(settings, store):
    from rongmei.delivery.retraction import retract_item_everywhere
    from rongmei.distribution.server import serve_in_thread
    from rongmei.review.prepare import prepare_preview

    shared, own = png((10, 120, 200)), png((200, 40, 40))
    settings.settle_seconds = 0
    front = "title: {t}\nauthor: 张三\nchannels: [web]"
    body = "![图](shared.png)\n\n![图](own.png)"
    first = new_version(settings, store, "gone", front.format(t="将撤稿"), body, {"shared.png": shared, "own.png": own})
    other = new_version(settings, store, "stays", front.format(t="继续发布"), "![图](shared.png)",
                        {"shared.png": shared})
    for version_id, prefix in ((first, "a"), (other, "b")):
        sign_all_stages(store, settings, version_id, prefix=prefix)
        assert deliver(store, settings, load_version(store, version_id), "web").state == "succeeded"
    shown = load_version(store, first)
    token = prepare_preview(store, settings, shown, build_release(store, shown))
    later = new_version(settings, store, "gone-2", "id: gone\ntitle: 定时的新版本\nauthor: 张三\nchannels: [web]\n"
                        "publish_at: 2099-01-01T08:00")
    sign_all_stages(store, settings, later, prefix="c")  # approved, waiting for its embargo

    server = serve_in_thread(settings, port=0)
    try:
        media = sorted(k.name for k in (settings.site_dir / "media").iterdir())
        assert len(media) == 2
        before = {name: requests.get(f"{server.url}/media/{name}", timeout=ANSWER_TIMEOUT).status_code for name in media}
        assert set(before.values()) == {200}
        assert requests.get(f"{server.url}/preview/{token}/", timeout=ANSWER_TIMEOUT).status_code == 200
        results = retract_item_everywhere(store, settings, "gone", "内容有误", "reviewer:desk")
        assert [(r.channel, r.state) for r in results] == [("web", "succeeded")]
        after = {name: requests.get(f"{server.url}/media/{name}", timeout=ANSWER_TIMEOUT).status_code for name in media}
        import hashlib

        own_name = next(n for n in media if n.startswith(hashlib.sha256(own).hexdigest()))
        shared_name = next(n for n in media if n != own_name)
        assert after == {own_name: 410, shared_name: 200}  # the other item still uses the shared picture
        assert requests.get(f"{server.url}/preview/{token}/", timeout=ANSWER_TIMEOUT).status_code == 404
    finally:
        server.stop()
    with store.session() as s:
        assert s.get(Version, later).state == ItemState.retracted
    assert deliver(store, settings, load_version(store, later), "web").state == "refused"  # its embargo day will find nothing to send
    [done] = ledger_entries(store, "gone", "item_retracted")
    assert done.details["media_withdrawn"] == [f"media/{own_name}"] and done.details["previews_removed"] == 1


def test_desk_head_retraction_that_died_after_its_first_step_is_completed_by_a_rerun(settings, store):
    from rongmei.delivery.retraction import retract_item_everywhere, withdraw_from_store

    version_id = new_version(settings, store, "halfway", "title: 撤稿中断\nauthor: 张三\nchannels: [web]", "原文。")
    sign_all_stages(store, settings, version_id)
    assert deliver(store, settings, load_version(store, version_id), "web").state == "succeeded"
    withdraw_from_store(store, "halfway", "内容有误", "reviewer:desk")  # the process dies right after this commit
    page = settings.site_dir / "articles" / "halfway" / "index.html"
    assert "原文" in page.read_text(encoding="utf-8")  # still on the channel…
    assert deliver(store, settings, load_version(store, version_id), "web").state == "refused"  # …but nothing can send it again
    first = retract_item_everywhere(store, settings, "halfway", "内容有误", "reviewer:desk")  # the re-run
    again = retract_item_everywhere(store, settings, "halfway", "内容有误", "reviewer:desk")
    assert [(r.channel, r.state, r.already_done) for r in first] == [("web", "succeeded", False)]
    assert [(r.channel, r.already_done) for r in again] == [("web", True)]  # the channel was not called twice
    assert "原文" not in page.read_text(encoding="utf-8")
    retracts = [d for d in deliveries(store, "halfway") if d.action == "retract"]
    assert len(retracts) == 1 and retracts[0].attempts == 1


def test_retraction_settles_an_unconfirmed_wechat_submit_then_deletes_the_article(settings, store):
    from publishers import Registry
    from publishers.wechat import WeChatPublisher
    from rongmei.delivery.retraction import retract_item_everywhere
    from standins.wechat import start_standin

    class QuickWeChat(WeChatPublisher):
        def __init__(self, settings):  # type: ignore[no-untyped-def]
            super().__init__(settings, poll_delays=(0.01, 0.01))

    standin = start_standin(app_id="wxdoors01", secret="doors-secret", publish_seconds=0)
    try:
        settings.wechat = {"app_id": "wxdoors01", "app_secret": "doors-secret", "base_url": standin.base_url}
        version_id = new_version(settings, store, "wx", "title: 公众号稿件\nauthor: 张三\nchannels: [wechat]",
                                 "公众号正文。")
        sign_all_stages(store, settings, version_id)
        standin.set_faults(quota={"freepublish/get": 0})  # submitted, but its outcome cannot be read today
        result = deliver(store, settings, load_version(store, version_id), "wechat", registry=Registry({"wechat": QuickWeChat}))
        assert result.state == "unconfirmed"
        standin.set_faults(quota={"freepublish/get": 100})  # the next day
        results = retract_item_everywhere(store, settings, "wx", "撤稿测试", "reviewer:chief")
        assert [(r.channel, r.state) for r in results] == [("wechat", "succeeded")]
        seen = requests.get(f"{standin.base_url}/_standin/state", timeout=ANSWER_TIMEOUT).json()
        assert len(seen["publishes"]) == 1  # never submitted twice
        assert all(a.get("is_deleted") or a.get("deleted") for a in seen["articles"]), seen["articles"]
        states = {(d.action, d.state) for d in deliveries(store, "wx")}
        assert states == {("publish", "succeeded"), ("retract", "succeeded")}  # the unconfirmed one was settled
        assert ledger_entries(store, "wx", "reconciled")[0].details["state"] == "succeeded"
    finally:
        standin.stop()


def test_technician_retracting_from_the_shell_needs_a_desk_heads_code(settings, store):
    version_id = new_version(settings, store, "shell", "title: 命令行撤稿\nauthor: 张三\nchannels: [web]")
    sign_all_stages(store, settings, version_id)
    assert deliver(store, settings, load_version(store, version_id), "web").state == "succeeded"
    enroll(store, settings, "junior", "编辑", ["editor"])
    enroll(store, settings, "head", "主任", ["desk_head"])
    missing = cli(settings, "retract", "shell", "--reason", "测试")
    assert missing.exit_code != 0 and "reviewer" in missing.output
    wrong = cli(settings, "retract", "shell", "--reason", "测试", "--reviewer", "head", "--code", "000000")
    assert wrong.exit_code == 1 and "不正确" in wrong.output
    junior = cli(settings, "retract", "shell", "--reason", "测试", "--reviewer", "junior",
                 "--code", code_for(settings, "junior"))
    assert junior.exit_code == 1 and "没有撤稿权限" in junior.output
    with store.session() as s:
        assert s.get(Item, "shell").state != ItemState.retracted
    ok = cli(settings, "retract", "shell", "--reason", "测试", "--reviewer", "head", input=code_for(settings, "head") + "\n")
    assert ok.exit_code == 0, ok.output
    with store.session() as s:
        assert s.get(Item, "shell").state == ItemState.retracted
    assert len(ledger_entries(store, "shell", "retract_refused")) == 2
    [requested] = ledger_entries(store, "shell", "retract_requested")
    assert requested.actor == "reviewer:head" and requested.details["via"].startswith("cli:")


# Through the real stack --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def stack(prefect_stack):
    return prefect_stack, Store.from_settings(prefect_stack.settings)


def run_publish_deployment(version_id: int):
    from prefect.deployments import run_deployment

    return run_deployment("publish/publish", parameters={"version_id": version_id}, timeout=PATIENCE,
                          as_subflow=False)


def versions_in_state(settings, store, state: str) -> tuple[str, int]:
    """An item whose version is in `state`, made the way the pipeline makes it."""
    from rongmei.delivery.retraction import retract_item_everywhere

    item = unique(state)
    front = f"title: 状态{state}\nauthor: 张三\nchannels: [web]"
    version_id = new_version(settings, store, item, front)
    stage = settings.stages[0]
    if state in ("returned", "rejected"):
        reviewer = unique("ed")
        enroll(store, settings, reviewer, "编辑", ["editor"])
        decision = "return" if state == "returned" else "reject"
        assert apply_signoff(store, settings, load_version(store, version_id), stage, "first-0",
                             {"decision": decision, "reviewer": reviewer, "code": code_for(settings, reviewer)}
                             ).status == state
    elif state == "superseded":
        new_version(settings, store, f"{item}-v2", f"id: {item}\n{front}", "第二稿。")
    elif state == "retracted":
        sign_all_stages(store, settings, version_id, prefix=item)
        assert deliver(store, settings, load_version(store, version_id), "web").state == "succeeded"
        retract_item_everywhere(store, settings, item, "测试撤稿", "reviewer:test")
    with store.session() as s:
        assert s.get(Version, version_id).state == state
    return item, version_id


@pytest.mark.prefect
@pytest.mark.parametrize("state", ["in_review", "returned", "rejected", "superseded", "retracted"])
def test_ui_login_holder_running_the_publish_deployment_for_an_unsigned_version_is_refused(stack, state):
    prefect_stack, store = stack
    settings = prefect_stack.settings
    item, version_id = versions_in_state(settings, store, state)
    page = settings.site_dir / "articles" / item / "index.html"
    before = page.read_text(encoding="utf-8") if page.exists() else None
    run = run_publish_deployment(version_id)
    assert run.state.is_failed() and "拒绝发布" in run.state.message, run.state
    after = page.read_text(encoding="utf-8") if page.exists() else None
    assert after == before  # nothing reached the channel (a retracted item keeps its notice page)
    assert {(d.action, d.state) for d in deliveries(store, item)} <= {("publish", "succeeded"),
                                                                      ("retract", "succeeded")}
    [refusal] = ledger_entries(store, item, "delivery_refused")
    assert refusal.details["flow_run_id"] == str(run.id)


@pytest.mark.prefect
def test_ui_login_holder_cannot_get_a_retracted_embargoed_item_out(stack):
    from prefect.client.orchestration import get_client

    from flows.review import start_publication
    from rongmei.delivery.retraction import retract_item_everywhere
    from rongmei.runtime.orchestration import cancel_item_runs

    prefect_stack, store = stack
    settings = prefect_stack.settings
    item = unique("embargo")
    version_id = new_version(settings, store, item, "title: 定时稿\nauthor: 张三\nchannels: [web]\n"
                             "publish_at: 2099-01-01T08:00")
    sign_all_stages(store, settings, version_id, prefix=item)
    start_publication(load_version(store, version_id), settings)  # what the final approval does: a scheduled run at publish_at
    with get_client(sync_client=True) as client:
        [scheduled] = [r for r in client.read_flow_runs() if f"item:{item}" in (r.tags or [])]
        assert scheduled.state.is_scheduled()
    retract_item_everywhere(store, settings, item, "撤稿", "reviewer:chief", cancel_runs=cancel_item_runs)
    with get_client(sync_client=True) as client:
        assert client.read_flow_run(scheduled.id).state.is_cancelled()
    run = run_publish_deployment(version_id)  # the embargo run, had it escaped cancellation
    assert run.state.is_failed() and "撤稿" in run.state.message
    assert not (settings.site_dir / "articles" / item).exists()
    assert ledger_entries(store, item, "delivery_refused")[0].details["flow_run_id"] == str(run.id)


@pytest.mark.prefect
def test_anonymous_api_caller_is_refused_and_the_login_is_required(stack):
    prefect_stack, _ = stack
    api = prefect_stack.api_url
    attempts = [("post", "/flow_runs/filter", {}), ("post", "/deployments/filter", {}),
                ("post", "/block_documents/filter", {}), ("get", "/work_pools/rongmei", None)]
    for method, path, body in attempts:
        anonymous = requests.request(method, f"{api}{path}", json=body, timeout=ANSWER_TIMEOUT)
        assert anonymous.status_code == 401, (path, anonymous.status_code)
        wrong = requests.request(method, f"{api}{path}", json=body, timeout=ANSWER_TIMEOUT,
                                 headers={"Authorization": "Basic " + base64.b64encode(b"admin:pass").decode()})
        assert wrong.status_code == 401
        right = requests.request(method, f"{api}{path}", json=body, timeout=ANSWER_TIMEOUT, auth=tuple(PREFECT_AUTH.split(":", 1)))
        assert right.status_code == 200, (path, right.text)
    assert requests.get(f"{api}/health", timeout=ANSWER_TIMEOUT).status_code == 200  # probes stay open
    ui = requests.get(f"{api.removesuffix('/api')}/ui-settings", timeout=ANSWER_TIMEOUT).json()
    assert ui["auth"] == "BASIC"  # the UI shows its login page


@pytest.mark.prefect
def test_ui_login_holder_cannot_run_a_shell_command_through_job_variables(stack, tmp_path):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolUpdate
    from prefect.exceptions import PrefectHTTPStatusError

    from rongmei.runtime.workpool import base_job_template

    marker = tmp_path / "pwned"
    evil = {"command": f"sh -c 'touch {marker}'", "env": {"PYTHONPATH": str(tmp_path)}, "working_dir": str(tmp_path)}
    with get_client(sync_client=True) as client:
        publish = client.read_deployment_by_name("publish/publish")
        with pytest.raises(PrefectHTTPStatusError) as refused:
            client.create_flow_run_from_deployment(publish.id, parameters={"version_id": 10**9}, job_variables=evil)
        assert refused.value.response.status_code == 422
        # The login also lets them rewrite the pool's template to take those variables: the worker ignores it.
        loose = base_job_template()
        loose["job_configuration"].update(command="{{ command }}", env="{{ env }}", working_dir="{{ working_dir }}")
        loose["variables"]["properties"].update({k: {} for k in ("command", "env", "working_dir")})
        loose["variables"].pop("additionalProperties")
        client.update_work_pool("rongmei", WorkPoolUpdate(base_job_template=loose))
        try:
            run = client.create_flow_run_from_deployment(publish.id, parameters={"version_id": 10**9},
                                                         job_variables=evil)
            final = await_final(run.id)
        finally:
            client.update_work_pool("rongmei", WorkPoolUpdate(base_job_template=base_job_template()))
    assert not marker.exists()
    assert final.state.is_failed() and "no version with id" in (final.state.message or ""), final.state  # ours ran
    _, store = stack
    with store.session() as s:
        noted = s.scalars(select(LedgerEntry).where(LedgerEntry.action == "job_variables_ignored",
                                                    LedgerEntry.actor == f"prefect:flow-run/{final.id}")).one()
    assert "touch" in noted.details["asked"]["command"] and noted.details["asked"]["env"]["PYTHONPATH"]


@pytest.mark.prefect
def test_ui_login_holder_cannot_run_code_through_a_deployment_of_their_own_or_a_changed_one(stack, tmp_path):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import DeploymentUpdate

    _, store = stack
    marker = tmp_path / "pwned"
    shell = [{"prefect.deployments.steps.run_shell_script": {"script": f"touch {marker}"}}]
    with get_client(sync_client=True) as client:
        flow_id = client.create_flow_from_name("tools")
        rogue = client.create_deployment(flow_id, "rogue", work_pool_name="rongmei", pull_steps=shell,
                                         entrypoint="flows/housekeeping.py:housekeeping")
        refused = await_final(client.create_flow_run_from_deployment(rogue).id)
        publish = client.read_deployment_by_name("publish/publish")
        original = {"pull_steps": publish.pull_steps, "entrypoint": publish.entrypoint}
        client.update_deployment(publish.id, DeploymentUpdate(pull_steps=shell, entrypoint="evil.py:main"))
        try:
            changed = await_final(client.create_flow_run_from_deployment(
                publish.id, parameters={"version_id": 10**9}).id)
        finally:
            client.update_deployment(publish.id, DeploymentUpdate(**original))
    assert refused.state.is_failed() and "拒绝执行" in refused.state.message
    assert changed.state.is_failed() and "no version with id" in (changed.state.message or "")  # our flow, not theirs
    assert not marker.exists()
    with store.session() as s:
        entries = s.scalars(select(LedgerEntry).where(LedgerEntry.action == "flow_run_refused")).all()
    assert any(e.actor == f"prefect:flow-run/{refused.id}" and "tools/rogue" in e.details["reason"] for e in entries)


def prefect_database(prefect_stack):
    import psycopg

    socket_dir = prefect_stack.cluster.socket_dir
    return psycopg.connect(host=str(socket_dir), port=5432, dbname="prefect", user="postgres", autocommit=True)


def plant_answer(prefect_stack, run_id, key: str, form: dict, minutes_ago: float) -> None:
    """Create a run input the way any API caller can, then age it (the test plays the passing of time)."""
    import json

    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        client.create_flow_run_input(run_id, key, json.dumps(form))
    with prefect_database(prefect_stack) as db:
        db.execute("UPDATE flow_run_input SET created = created - make_interval(secs => %s) "
                   "WHERE flow_run_id = %s AND key = %s", (minutes_ago * 60, str(run_id), key))


def waiting_at_first_review(prefect_stack, store, prefix: str):
    """A new item whose review run waits at 初审 on the real stack, and an editor of its own to sign it."""
    from flows.review import request_review

    settings = prefect_stack.settings
    item = unique(prefix)
    version_id = new_version(settings, store, item, f"title: 签字测试 {item}\nauthor: 张三\nchannels: [web]")
    reviewer = unique("ed")
    enroll(store, settings, reviewer, "编辑", ["editor"])
    request_review(version_id, settings)
    run_id = review_run_id(item)
    await_pause(run_id, "first-0")
    return item, reviewer, run_id


@pytest.mark.prefect
def test_ui_login_holder_planting_a_form_answer_cannot_revive_an_expired_code(stack):
    from prefect.client.orchestration import get_client
    from prefect.flow_runs import resume_flow_run
    from prefect.states import Scheduled

    prefect_stack, store = stack
    settings = prefect_stack.settings
    item, reviewer, run_id = waiting_at_first_review(prefect_stack, store, "planted")
    totp = pyotp.TOTP(_load_secrets(settings)[reviewer]["secret"])
    old_code = totp.at(time.time() - 300)  # a code seen five minutes ago (over a shoulder, in a screenshot)
    form = {"decision": "approve", "reviewer": reviewer, "code": old_code, "comment": ""}
    # 1. An input whose key only starts like the answer's, planted when the code was valid, then a real answer.
    plant_answer(prefect_stack, run_id, "suspended-first-0-response-x", form, minutes_ago=5)
    resume_flow_run(run_id, run_input=form)
    await_pause(run_id, "first-1")
    # 2. The exact answer key planted early, and the run pushed on without the form.
    plant_answer(prefect_stack, run_id, "suspended-first-1-response", form, minutes_ago=5)
    with get_client(sync_client=True) as client:
        client.set_flow_run_state(run_id, Scheduled(), force=True)
    await_pause(run_id, "first-2")
    refusals = ledger_entries(store, item, "signoff_refused")
    assert len(refusals) == 2 and all("不正确或已过期" in e.details["reason"] for e in refusals)
    sign(run_id, "first-2", reviewer, fresh_code(settings, reviewer))  # the reviewer's real, current code
    await_pause(run_id, "second-0")
    assert len(ledger_entries(store, item, "signed")) == 1


@pytest.mark.prefect
def test_ui_login_holder_guessing_codes_in_the_ui_form_gets_the_reviewer_locked(stack):
    prefect_stack, store = stack
    settings = prefect_stack.settings
    item, reviewer, run_id = waiting_at_first_review(prefect_stack, store, "brute")
    for n in range(settings.signoff_max_failures):
        sign(run_id, f"first-{n}", reviewer, f"{(n * 7919) % 1000000:06d}")
    sign(run_id, f"first-{settings.signoff_max_failures}", reviewer, fresh_code(settings, reviewer))
    await_pause(run_id, f"first-{settings.signoff_max_failures + 1}")
    refusals = ledger_entries(store, item, "signoff_refused")
    assert "已被锁定" in refusals[-1].details["reason"]
    with store.session() as s:
        assert s.get(Reviewer, reviewer).locked_until is not None


@pytest.mark.prefect
def test_other_local_user_cannot_read_the_service_files_or_its_prefect_database(stack):
    prefect_stack, _ = stack
    data = prefect_stack.settings.data_dir
    assert data.stat().st_mode & 0o077 == 0  # the Prefect cluster lives outside it: nobody else even passes
    private = [data / "rongmei.db", *sorted((data / "logs").glob("*.log"))[:2], *sorted((data / "secrets").iterdir())]
    private += [next(p for p in (data / "blobs").rglob("*") if p.is_file())]
    for path in private:
        assert path.exists(), path
    if not IS_ROOT:
        return  # without root there is no other user to try as; the modes above are what protects
    for path in [data, *private]:
        tried = subprocess.run(["runuser", "-u", "nobody", "--", "cat" if path.is_file() else "ls", str(path)],
                               capture_output=True, text=True)
        assert tried.returncode != 0 and "Permission denied" in tried.stderr, (path, tried)
    socket_dir = prefect_stack.cluster.socket_dir
    assert socket_dir.stat().st_mode & 0o077 == 0
    psql = subprocess.run(["runuser", "-u", "nobody", "--", "psql", "-h", str(socket_dir), "-U", "postgres", "-d",
                           "prefect", "-tAc", "select 1"], capture_output=True, text=True)
    assert psql.returncode != 0, psql


def test_make_private_closes_an_older_data_dir(settings, store):
    from rongmei.storage.privacy import make_private

    for path in (settings.data_dir, settings.data_dir / "logs"):
        path.mkdir(parents=True, exist_ok=True)
        path.chmod(0o755)
    log = settings.data_dir / "logs" / "server.log"
    log.write_text("x")
    log.chmod(0o644)
    make_private(settings)
    assert settings.data_dir.stat().st_mode & 0o777 == 0o700
    assert (settings.data_dir / "logs").stat().st_mode & 0o777 == 0o700
    assert log.stat().st_mode & 0o777 == 0o600
    assert Path(settings.data_dir / "rongmei.db").stat().st_mode & 0o077 == 0


def test_operator_setting_prefects_own_auth_string_is_honoured(settings, monkeypatch):
    from rongmei.runtime.up import api_auth

    monkeypatch.delenv("PREFECT_API_AUTH_STRING", raising=False)
    generated, where = api_auth(settings)
    assert where.endswith("prefect-api-auth") and generated.startswith("rongmei:") and len(generated) > 30
    assert api_auth(settings)[0] == generated  # generated once, kept
    monkeypatch.setenv("PREFECT_SERVER_API_AUTH_STRING", "ops:their-own")
    assert api_auth(settings) == ("ops:their-own", "the environment (PREFECT_SERVER_API_AUTH_STRING)")
