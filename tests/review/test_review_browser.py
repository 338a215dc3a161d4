"""A reviewer signs 初审 in the real Prefect UI (headless Chromium driven by Playwright)."""

from __future__ import annotations

import pytest

from flows.ingest import ingest
from rongmei.review.reviewers import enroll
from rongmei.storage.store import Store
from tests.support.drops import write_drop
from tests.support.environment import PREFECT_AUTH
from tests.support.paths import ARTIFACTS
from tests.support.review import await_pause, code_for, review_run_id
from tests.support.waiting import PATIENCE

pytestmark = [pytest.mark.prefect, pytest.mark.browser]
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--no-first-run", "--disable-sync", "--disable-quic"]


def test_sign_first_stage_in_prefect_ui(prefect_stack):
    from playwright.sync_api import sync_playwright

    settings = prefect_stack.settings
    enroll(Store.from_settings(settings), settings, "ui-editor", "界面编辑", ["editor"])
    write_drop(settings.inbox, "ui-item", "title: 界面签字测试\nauthor: 张三\nsummary: 用浏览器签字\nchannels: [web]")
    ingest()
    run_id = review_run_id("ui-item")
    await_pause(run_id, "first-0")
    ui = prefect_stack.api_url.removesuffix("/api")
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(PATIENCE * 1000)  # Playwright's 30 s is not enough on a busy machine
        # The UI asks for the shared login first. (Prefect's UI answers a deep link opened before logging in
        # with its 404 page, so a reviewer logs in on the runs page and then opens the run.)
        page.goto(f"{ui}/runs")
        login = page.get_by_placeholder("admin:pass")
        login.wait_for()
        page.screenshot(path=str(ARTIFACTS / "prefect-ui-login.png"))
        login.fill(PREFECT_AUTH)
        page.get_by_role("button", name="Login").click()
        page.wait_for_url("**/runs**")
        page.goto(f"{ui}/runs/flow-run/{run_id}")
        page.get_by_role("button", name="Resume").first.click()
        dialog = page.locator(".p-modal")
        dialog.get_by_text("界面签字测试").first.wait_for()  # the form's description shows the item
        field = lambda label: dialog.locator(".schema-form-property", has_text=label).locator("textarea")  # noqa: E731
        field("Reviewer").fill("ui-editor")
        field("Code").fill(code_for(settings, "ui-editor"))
        field("Comment").fill("同意，请复审")
        page.screenshot(path=str(ARTIFACTS / "prefect-ui-signoff-form.png"))
        dialog.get_by_role("button", name="Submit").click()
        try:
            dialog.wait_for(state="hidden")  # the UI closes the dialog once the API took it
        except Exception:
            page.screenshot(path=str(ARTIFACTS / "prefect-ui-submit-pending.png"))
            raise
        run = await_pause(run_id, "second-0")
        page.reload()
        page.wait_for_timeout(1500)
        page.screenshot(path=str(ARTIFACTS / "prefect-ui-after-signoff.png"))
        browser.close()
    assert "stage:second" in run.tags
