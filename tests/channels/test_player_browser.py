"""The screen player page in headless Chromium against a real HTTP server: shows the current card,
switches to a new manifest, refuses a tampered file, keeps playing while the server is down, posts plays."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from publishers.base import Receipt
from publishers.screens import ScreenPublisher
from rongmei.core.settings import Settings
from rongmei.delivery.grants import replace_grants
from rongmei.distribution.terminals import enroll_terminal
from rongmei.storage.store import Store
from tests.channels.support import (
    Blobs,
    Site,
    card_rendition,
    channel_settings,
    make_release,
    running_site,
)
from tests.support.paths import ARTIFACTS
from tests.support.waiting import PATIENCE

pytestmark = pytest.mark.browser
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run", "--disable-sync"]
STATE = "window.rongmeiPlayer"


@pytest.fixture
def site(settings: Settings, store: Store) -> Iterator[Site]:
    with running_site(settings, store) as running:
        yield running


@pytest.fixture
def page(site: Site):  # type: ignore[no-untyped-def]
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 960, "height": 540})
            page.set_default_timeout(PATIENCE * 1000)  # Playwright's 30 s is not enough on a busy machine
            yield page
        finally:
            browser.close()


def granted(store: Store, release, receipt: Receipt) -> Receipt:  # type: ignore[no-untyped-def]
    """Record the receipt's grants, as the delivery layer does: plays count only for what a screen was given."""
    with store.session() as session:
        replace_grants(session, item_id=release.item_id, version_id=release.version_id, channel="screens",
                       playables=receipt.playables, now=datetime.now(UTC), until=release.meta.expires)
    return receipt


def wait_for(page, condition: str, timeout: float = PATIENCE * 1000) -> None:  # type: ignore[no-untyped-def]
    page.wait_for_function(condition, timeout=timeout)


def wait_for_next_card(page) -> None:  # type: ignore[no-untyped-def]
    """Until the player has moved on to its next card (or the same one again, in a loop of one)."""
    since = page.evaluate(f"{STATE}.current.since")
    wait_for(page, f"{STATE}.current.since !== {json.dumps(since)}")


def test_player_shows_switches_survives_outage_and_reports(settings: Settings, site: Site, page,
                                                           tmp_path: Path) -> None:
    settings = channel_settings(settings, public_url=site.url)
    blobs = Blobs(tmp_path / "blobs")
    publisher = ScreenPublisher(settings, card_seconds=1)
    first = make_release(blobs, "harvest", {"screen_card": card_rendition(blobs, "HARVEST", (20, 120, 40))},
                         screens=["hall"], title="秋收进度")
    receipt = granted(site.store, first, publisher.publish(first))
    first_sha = first.renditions["screen_card"]["sha256"]

    token = enroll_terminal(site.store, "hall-01", group="hall")
    page.goto(f"{site.url}/screens/hall/player.html?token={token}&poll=250&batch=1&flush=300")
    wait_for(page, f"{STATE}.current && {STATE}.current.item === 'harvest'")
    shown = page.locator("#stage > img")
    assert shown.get_attribute("data-item") == "harvest"
    assert shown.get_attribute("data-sha256") == first_sha
    assert page.evaluate(f"{STATE}.manifestVersion") == 1
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "player-first-card.png"))

    # Plays are reported with the terminal's token once an item completed.
    wait_for(page, f"{STATE}.playsSent >= 1")
    play = site.plays()[0]
    assert (play.terminal_id, play.item_id, play.sha256, play.group) == ("hall-01", "harvest", first_sha, "hall")
    assert play.started_at < play.ended_at

    # A new manifest: an urgent notice arrives and the first item is retracted -> the screen cuts over.
    urgent = make_release(blobs, "road", {"screen_card": card_rendition(blobs, "ROAD", (160, 30, 30))},
                          screens=["hall"], priority="urgent", title="国道封闭", summary="请绕行")
    granted(site.store, urgent, publisher.publish(urgent))
    publisher.retract("harvest", Receipt(details=receipt.details), "更正")
    wait_for(page, f"{STATE}.manifestVersion === 3 && {STATE}.current.item === 'road'")
    assert page.locator("#stage > img").get_attribute("data-sha256") == urgent.renditions["screen_card"]["sha256"]
    wait_for(page, "document.querySelector('#ticker').style.display === 'block'")
    assert page.locator("#ticker").inner_text().strip() == "国道封闭：请绕行"
    page.screenshot(path=str(ARTIFACTS / "player-urgent-ticker.png"))

    # A file whose bytes do not match its sha256 is never shown.
    bad = make_release(blobs, "tampered", {"screen_card": card_rendition(blobs, "BAD", (0, 0, 0))},
                       screens=["hall"])
    publisher.publish(bad)
    bad_sha = bad.renditions["screen_card"]["sha256"]
    (settings.site_dir / "media" / f"{bad_sha}.png").write_bytes(b"swapped on the server")
    wait_for(page, f"{STATE}.rejected.length >= 1 && {STATE}.manifestVersion === 4")
    wait_for_next_card(page)  # two more card loops, whatever time they take
    wait_for_next_card(page)
    seen = page.evaluate(f"{STATE}.current.item")
    assert seen == "road"
    assert not any(p.item_id == "tampered" for p in site.plays())

    # Server down: the player keeps looping what it has and buffers the plays.
    sent_before = page.evaluate(f"{STATE}.playsSent")
    site.down()
    wait_for(page, f"{STATE}.online === false && {STATE}.playsBuffered >= 2")
    wait_for_next_card(page)  # still looping
    assert page.evaluate(f"{STATE}.current.item") == "road"
    assert page.locator("#status").get_attribute("class") == "offline"
    page.screenshot(path=str(ARTIFACTS / "player-offline.png"))

    # Back up: the backlog is flushed.
    plays_before = len(site.plays())
    site.up()
    wait_for(page, f"{STATE}.online === true && {STATE}.playsBuffered === 0 && {STATE}.playsSent >= {sent_before + 2}")
    assert len(site.plays()) >= plays_before + 2
    assert {p.item_id for p in site.plays()[plays_before:]} == {"road"}


def test_player_sha256_fallback_matches_for_non_secure_contexts(settings: Settings, site: Site,
                                                                page) -> None:  # type: ignore[no-untyped-def]
    # Kiosks on a LAN address over plain http have no crypto.subtle; the built-in fallback must agree.
    ScreenPublisher(channel_settings(settings, public_url=site.url)).refresh(datetime.now(UTC))
    page.goto(f"{site.url}/screens/hall/player.html")
    samples = ["", "abc", "a" * 55, "b" * 56, "c" * 64, "d" * 119, "村村响应急广播" * 40]
    got = page.evaluate(f"(samples) => samples.map(s => {STATE}.sha256Fallback(s))", samples)
    assert got == [hashlib.sha256(s.encode("utf-8")).hexdigest() for s in samples]
