"""Public screens: manifest shape, files-before-schedule, tickers, retraction and expiry; terminal simulator
against a real HTTP server for both channels (ETag/304, sha256 verification, proof of play).

Plays count only for what a terminal was given, so where a test publishes without the delivery layer it
records the receipt's grants itself (`granted`), as rongmei.delivery.deliveries does in the delivery's transaction."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from publishers.base import Receipt, Release
from publishers.loudspeakers import LoudspeakerPublisher
from publishers.screens import PLAYER_ASSET, ScreenPublisher
from rongmei.core.errors import PublishError
from rongmei.core.settings import Settings
from rongmei.delivery.grants import replace_grants
from rongmei.distribution.terminal_sim import (
    TerminalState,
    active_schedule,
    play_due,
    play_schedule,
    poll_group,
    poll_zone,
    report_plays,
)
from rongmei.distribution.terminals import enroll_terminal
from rongmei.storage.store import Store
from tests.channels.support import (
    BAYAN,
    HONGQI,
    Clock,
    Site,
    audio_rendition,
    card_rendition,
    channel_settings,
    make_release,
    running_site,
)


@pytest.fixture
def site(settings: Settings, store: Store) -> Iterator[Site]:
    with running_site(settings, store) as running:
        yield running


@pytest.fixture
def sc_settings(settings: Settings, site: Site) -> Settings:
    return channel_settings(settings, public_url=site.url)


@pytest.fixture
def publisher(sc_settings: Settings, clock: Clock) -> ScreenPublisher:
    return ScreenPublisher(sc_settings, now=clock)


def granted(store: Store, channel: str, release: Release, receipt: Receipt, now: datetime) -> Receipt:
    with store.session() as session:
        replace_grants(session, item_id=release.item_id, version_id=release.version_id, channel=channel,
                       playables=receipt.playables, now=now, until=release.meta.expires)
    return receipt


def manifest(settings: Settings, group: str) -> dict[str, Any]:
    return json.loads((settings.site_dir / "screens" / group / "manifest.json").read_text(encoding="utf-8"))


def test_manifest_lists_files_before_the_schedule(sc_settings, publisher, blobs) -> None:
    release = make_release(blobs, "hall-card", {"screen_card": card_rendition(blobs, "A"),
                                                "screen_card_mn": card_rendition(blobs, "MN", (90, 20, 20))},
                           screens=["hall"], language="zh+mn")
    receipt = publisher.publish(release)
    assert receipt.url == f"{sc_settings.public_url}/screens/hall/player.html"

    raw = (sc_settings.site_dir / "screens" / "hall" / "manifest.json").read_text(encoding="utf-8")
    assert raw.index('"files"') < raw.index('"schedule"')  # a reader streaming the JSON meets files first
    body = json.loads(raw)
    assert body["manifest_version"] == 1 and body["display_group"] == "hall" and body["design_size"] == [1920, 1080]
    assert body["report"]["stats_url"] == f"{sc_settings.public_url}/api/plays"
    files = {f["id"]: f for f in body["files"]}
    (entry,) = body["schedule"]
    assert entry["id"] == "hall-card" and entry["play_days"] == [1, 2, 3, 4, 5, 6, 7]
    assert set(entry["dependents"]) == set(files)
    assert [i["type"] for i in entry["items"]] == ["card", "card"]
    for f in files.values():
        key = f["url"].removeprefix(sc_settings.public_url + "/")
        assert (sc_settings.site_dir / key).read_bytes() == blobs.path(f["sha256"]).read_bytes()
        assert f["mime"] == "image/png" and f["bytes"] == blobs.path(f["sha256"]).stat().st_size
    assert (sc_settings.site_dir / "screens" / "hall" / "player.html").read_bytes() == PLAYER_ASSET.read_bytes()
    assert not (sc_settings.site_dir / "screens" / "square" / "manifest.json").exists()


def test_item_is_listed_only_when_all_its_files_are_on_the_target(sc_settings, publisher, blobs, clock) -> None:
    release = make_release(blobs, "v", {"screen_card": card_rendition(blobs, "V")}, screens=["hall"])
    publisher.publish(release)
    sha = release.renditions["screen_card"]["sha256"]
    (sc_settings.site_dir / "media" / f"{sha}.png").unlink()  # e.g. a bucket that lost an object
    publisher.refresh(clock.advance(minutes=1))
    body = manifest(sc_settings, "hall")
    assert body["schedule"] == [] and body["files"] == []
    publisher.publish(release)  # re-upload puts it back
    assert [e["id"] for e in manifest(sc_settings, "hall")["schedule"]] == ["v"]


def test_urgent_notice_gets_a_ticker_and_all_groups_by_default(sc_settings, publisher, blobs) -> None:
    publisher.publish(make_release(blobs, "road", {"screen_card": card_rendition(blobs, "R")}, kind="notice",
                                   priority="urgent", title="G110 国道封闭", summary="请绕行",
                                   expires="2025-06-03T18:00:00"))
    for group in ("hall", "square"):
        body = manifest(sc_settings, group)
        assert body["overlays"] == [{"id": "road", "type": "ticker", "region": "bottom",
                                     "text": "G110 国道封闭：请绕行", "from": "2025-06-02T09:00:00+08:00",
                                     "to": "2025-06-03T18:00:00+08:00", "priority": 100}]
        assert body["schedule"][0]["to"] == "2025-06-03T18:00:00+08:00"
        assert body["deadline"] == "2025-06-03T18:00:00+08:00"


def test_retract_and_expiry_remove_items(sc_settings, publisher, blobs, clock) -> None:
    keep = publisher.publish(make_release(blobs, "keep", {"screen_card": card_rendition(blobs, "K")},
                                          screens=["hall"], expires="2025-06-02T12:00:00"))
    gone = publisher.publish(make_release(blobs, "gone", {"screen_card": card_rendition(blobs, "G")},
                                          screens=["hall", "square"]))
    assert {e["id"] for e in manifest(sc_settings, "hall")["schedule"]} == {"keep", "gone"}
    publisher.retract("gone", Receipt(details=gone.details), "撤稿")
    assert [e["id"] for e in manifest(sc_settings, "hall")["schedule"]] == ["keep"]
    assert manifest(sc_settings, "square")["schedule"] == []
    assert len(manifest(sc_settings, "hall")["files"]) == 1
    publisher.refresh(clock.advance(hours=4))
    assert manifest(sc_settings, "hall")["schedule"] == [] and keep.details["groups"] == ["hall"]


def test_unknown_group_and_missing_card_fail_clearly(publisher, blobs) -> None:
    with pytest.raises(PublishError, match="lobby"):
        publisher.publish(make_release(blobs, "x", {"screen_card": card_rendition(blobs, "X")}, screens=["lobby"]))
    with pytest.raises(PublishError, match="screen_card"):
        publisher.publish(make_release(blobs, "y", {}, screens=["hall"]))


# Terminal simulator over HTTP ---------------------------------------------------------------------------------
def test_screen_terminal_polls_verifies_plays_and_reports(sc_settings, publisher, blobs, site, clock) -> None:
    release = make_release(blobs, "a", {"screen_card": card_rendition(blobs, "A")}, screens=["hall"])
    granted(site.store, "screens", release, publisher.publish(release), clock())
    terminal = TerminalState(token=enroll_terminal(site.store, "hall-01", group="hall"))
    first = poll_group(site.url, "hall", terminal)
    assert (first.status, first.downloaded, first.failed) == (200, 1, [])
    assert poll_group(site.url, "hall", terminal).status == 304  # ETag / If-None-Match

    plays = play_schedule(terminal, clock())
    sha = manifest(sc_settings, "hall")["files"][0]["sha256"]
    assert [(p["item"], p["sha256"]) for p in plays] == [("a", sha)]
    assert report_plays(site.url, terminal) == 1 and terminal.backlog == []
    assert [(p.terminal_id, p.item_id, p.sha256, p.group) for p in site.plays()] == [("hall-01", "a", sha, "hall")]
    terminal.backlog = [dict(plays[0])]  # a backlog flushed twice is counted once
    assert report_plays(site.url, terminal) == 1 and len(site.plays()) == 1

    # A file whose bytes do not match the manifest never goes on air.
    publisher.publish(make_release(blobs, "b", {"screen_card": card_rendition(blobs, "B")}, screens=["hall"]))
    tampered = manifest(sc_settings, "hall")["files"][-1]
    (sc_settings.site_dir / "media" / f"{tampered['sha256']}.png").write_bytes(b"not the card")
    result = poll_group(site.url, "hall", terminal)
    assert result.status == 200 and result.failed == [tampered["url"]]
    assert terminal.etag == ""  # retried on the next poll instead of trusting the ETag
    assert {p["item"] for p in play_schedule(terminal, clock.advance(minutes=1))} == {"a"}
    assert {e["id"] for e in active_schedule(terminal.manifest, clock())} == {"a", "b"}


def test_loudspeaker_terminal_keeps_plays_while_the_server_is_down(sc_settings, blobs, site, clock) -> None:
    release = make_release(blobs, "alert", {"loudspeaker_audio": audio_rendition(blobs)}, zones=[BAYAN],
                           priority="emergency")
    granted(site.store, "loudspeakers", release, LoudspeakerPublisher(sc_settings, now=clock).publish(release),
            clock())
    terminal = TerminalState(token=enroll_terminal(site.store, "hongqi-01", zone=HONGQI))
    assert poll_zone(site.url, HONGQI, terminal).downloaded == 1
    assert play_due(terminal, clock())["id"] == "alert"
    site.down()
    assert poll_zone(site.url, HONGQI, terminal).status == 0
    assert play_due(terminal, clock.advance(minutes=5))["id"] == "alert"  # still airs what it has
    assert report_plays(site.url, terminal) == 0 and len(terminal.backlog) == 2
    site.up()
    assert report_plays(site.url, terminal) == 2 and terminal.backlog == []
    assert [(p.item_id, p.zone) for p in site.plays()] == [("alert", HONGQI), ("alert", HONGQI)]
    bad = TerminalState(token="not-a-token", backlog=[dict(terminal_play(site))])
    assert report_plays(site.url, bad) == 0 and len(bad.backlog) == 1  # 401: kept, not dropped


def terminal_play(site: Site) -> dict[str, Any]:
    play = site.plays()[0]
    return {"item": play.item_id, "sha256": play.sha256, "started_at": "2025-06-02T09:00:00+08:00",
            "ended_at": "2025-06-02T09:00:01+08:00"}


def test_terminal_sim_command_polls_airs_and_reports_once(sc_settings, blobs, site) -> None:
    from rongmei.distribution.terminal_sim import main

    release = make_release(blobs, "now", {"loudspeaker_audio": audio_rendition(blobs)}, zones=[HONGQI],
                           priority="emergency")
    granted(site.store, "loudspeakers", release, LoudspeakerPublisher(sc_settings).publish(release),
            datetime.now(UTC))
    token = enroll_terminal(site.store, "hongqi-02", zone=HONGQI)
    assert main(["--zone", HONGQI, "--base-url", site.url, "--token", token, "--once"]) == 0
    assert [(p.terminal_id, p.item_id) for p in site.plays()] == [("hongqi-02", "now")]
    assert main(["--group", "nowhere", "--base-url", site.url, "--once"]) == 1  # 404 manifest
