"""Village loudspeakers: targeting, dayparts, emergencies and their cancel, retraction, expiry, M3U8/RSS."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import feedparser
import pytest

from publishers.base import Receipt
from publishers.loudspeakers import LoudspeakerPublisher, numeric_priority
from publishers.screens import ScreenPublisher
from rongmei.core.errors import ConfigError, PublishError
from rongmei.core.model import CheckResult, ItemMeta, Severity
from rongmei.core.settings import Settings
from rongmei.core.zones import leaf_zones, resolve_zones
from rongmei.distribution.terminal_sim import due_now
from rongmei.intake.checks import run_checks
from tests.channels.support import (
    BAOLIGE,
    BAYAN,
    COUNTY,
    HONGQI,
    VILLAGES,
    WULAN,
    WULAN_GACHA,
    XINHUA,
    Clock,
    at,
    audio_rendition,
    channel_settings,
    make_release,
)


@pytest.fixture
def ls_settings(settings: Settings) -> Settings:
    return channel_settings(settings)


@pytest.fixture
def publisher(ls_settings: Settings, clock: Clock) -> LoudspeakerPublisher:
    return LoudspeakerPublisher(ls_settings, now=clock)


def playlist(settings: Settings, zone: str) -> dict[str, Any] | None:
    path = settings.site_dir / "loudspeakers" / zone / "playlist.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def ids_by_zone(settings: Settings) -> dict[str, set[str]]:
    out = {}
    for zone in VILLAGES:
        body = playlist(settings, zone) or {"items": [], "emergency": []}
        out[zone] = {e["id"] for e in [*body["items"], *body["emergency"]]}
    return out


# Zones ------------------------------------------------------------------------------------------------------
def test_zone_codes_resolve_to_the_villages_below_them(ls_settings: Settings) -> None:
    assert leaf_zones(ls_settings) == VILLAGES
    assert resolve_zones([BAYAN], ls_settings) == [HONGQI, XINHUA]
    assert resolve_zones([XINHUA], ls_settings) == [XINHUA]
    assert resolve_zones([COUNTY], ls_settings) == VILLAGES
    assert resolve_zones([], ls_settings) == VILLAGES  # default: everywhere
    assert resolve_zones([WULAN, HONGQI], ls_settings) == [HONGQI, BAOLIGE, WULAN_GACHA]
    with pytest.raises(ConfigError, match="150121999"):
        resolve_zones(["150121999"], ls_settings)


def zone_problems(meta: ItemMeta, settings: Settings) -> list[CheckResult]:
    """What the two channels that target by geography say about the item's zones and screen groups."""
    return [*LoudspeakerPublisher.check_front_matter(meta, settings),
            *ScreenPublisher.check_front_matter(meta, settings)]


def test_unknown_zone_or_group_is_a_blocking_pre_check(ls_settings: Settings) -> None:
    meta = ItemMeta(id="a", title="t", author="a", zones=[HONGQI, "150121999"], screens=["hall", "lobby"])
    problems = zone_problems(meta, ls_settings)
    assert [p.code for p in problems] == ["zones.unknown", "screens.unknown"]
    assert [p.channel for p in problems] == ["loudspeakers", "screens"]
    assert all(p.severity is Severity.blocking for p in problems)
    assert "150121999" in problems[0].message and "红旗村" in problems[0].fix
    assert "lobby" in problems[1].message and "hall" in problems[1].fix
    assert zone_problems(ItemMeta(id="b", title="t", author="a", zones=[BAYAN]), ls_settings) == []
    # Checked for every item, whatever its channels: a wrong code is a mistake in the drop either way.
    web_only = ItemMeta(id="c", title="t", author="a", channels=["web"], zones=["150121999"], screens=["lobby"])
    found = {c.code for c in run_checks(web_only, "正文", {}, ls_settings) if c.blocking}
    assert found == {"zones.unknown", "screens.unknown"}


# Targeting ----------------------------------------------------------------------------------------------------
def test_audio_item_and_article_reach_only_their_villages(ls_settings, publisher, blobs) -> None:
    audio = make_release(blobs, "morning-news", {"loudspeaker_audio": audio_rendition(blobs, 2.0)},
                         kind="audio", zones=[HONGQI])
    article = make_release(blobs, "grassland-fire", {"loudspeaker_audio": audio_rendition(blobs, 1.0, 660)},
                           kind="article", zones=[WULAN])
    receipt = publisher.publish(audio)
    publisher.publish(article)

    assert ids_by_zone(ls_settings) == {HONGQI: {"morning-news"}, XINHUA: set(),
                                        BAOLIGE: {"grassland-fire"}, WULAN_GACHA: {"grassland-fire"}}
    assert receipt.details["zones"] == [HONGQI]
    assert receipt.url == f"{ls_settings.public_url}/loudspeakers/{HONGQI}/playlist.json"

    body = playlist(ls_settings, HONGQI)
    entry = body["items"][0]
    sha = audio.renditions["loudspeaker_audio"]["sha256"]
    # Media are on the target before the playlist names them, at an absolute URL.
    assert entry["media"]["url"] == f"{ls_settings.public_url}/media/{sha}.mp3"
    assert (ls_settings.site_dir / "media" / f"{sha}.mp3").read_bytes() == blobs.path(sha).read_bytes()
    assert entry["media"]["integrated_lufs"] == -19.0 and entry["media"]["true_peak_dbtp"] == -1.5
    assert entry["media"]["codec"] == "mp3" and entry["media"]["channels"] == 1 and entry["media"]["kbps"] == 64
    assert entry["cue_out"] == 2.0 and entry["interrupt"] is False and body["emergency"] == []
    # Published at 09:00: today's 07:00 slot is past, so 12:00 and 18:30 today and all three tomorrow.
    assert [(e["slot"], e["start"]) for e in body["items"]] == [
        ("12:00", "2025-06-02T12:00:00+08:00"), ("18:30", "2025-06-02T18:30:00+08:00"),
        ("07:00", "2025-06-03T07:00:00+08:00"), ("12:00", "2025-06-03T12:00:00+08:00"),
        ("18:30", "2025-06-03T18:30:00+08:00")]
    assert body["valid_until"] == "2025-06-04T00:00:00+08:00"
    assert body["report_url"] == f"{ls_settings.public_url}/api/plays"


def test_township_targeting_reaches_all_its_villages(ls_settings, publisher, blobs) -> None:
    publisher.publish(make_release(blobs, "town-notice", {"loudspeaker_audio": audio_rendition(blobs)},
                                   kind="notice", zones=[BAYAN]))
    assert ids_by_zone(ls_settings) == {HONGQI: {"town-notice"}, XINHUA: {"town-notice"},
                                        BAOLIGE: set(), WULAN_GACHA: set()}


def test_dayparts_order_by_priority_then_time(ls_settings, publisher, blobs, clock) -> None:
    publisher.publish(make_release(blobs, "first", {"loudspeaker_audio": audio_rendition(blobs, 3.0)},
                                   zones=[HONGQI]))
    clock.advance(minutes=5)
    publisher.publish(make_release(blobs, "second", {"loudspeaker_audio": audio_rendition(blobs, 2.0)},
                                   zones=[HONGQI]))
    clock.advance(minutes=5)
    publisher.publish(make_release(blobs, "urgent", {"loudspeaker_audio": audio_rendition(blobs, 1.0)},
                                   zones=[HONGQI], priority="urgent"))
    noon = [e for e in playlist(ls_settings, HONGQI)["items"] if e["start"].startswith("2025-06-02T12")]
    assert [e["id"] for e in noon] == ["urgent", "first", "second"]
    # Back to back inside the slot.
    assert [e["start"][11:19] for e in noon] == ["12:00:00", "12:00:01", "12:00:04"]
    assert noon[0]["priority"] > noon[1]["priority"]


def test_missing_rendition_or_zones_fail_clearly(ls_settings, settings, publisher, blobs, clock) -> None:
    with pytest.raises(PublishError, match="loudspeaker_audio") as caught:
        publisher.publish(make_release(blobs, "no-audio", {}, zones=[HONGQI]))
    assert caught.value.retryable is False
    unconfigured = LoudspeakerPublisher(settings, now=clock)
    with pytest.raises(PublishError, match="zones"):
        unconfigured.publish(make_release(blobs, "x", {"loudspeaker_audio": audio_rendition(blobs)}))


# Emergencies ----------------------------------------------------------------------------------------------
def test_emergency_preempts_and_a_higher_one_preempts_a_lower(ls_settings, publisher, blobs, clock) -> None:
    publisher.publish(make_release(blobs, "routine", {"loudspeaker_audio": audio_rendition(blobs)},
                                   zones=[BAYAN]))
    noon = at("2025-06-02T12:00:00")
    assert due_now(playlist(ls_settings, HONGQI), noon)["id"] == "routine"

    clock.advance(minutes=1)
    publisher.publish(make_release(blobs, "flood-red", {"loudspeaker_audio": audio_rendition(blobs, 1.0, 880)},
                                   zones=[BAYAN], priority="emergency", tags=["暴雨红色预警"]))
    clock.advance(minutes=1)
    publisher.publish(make_release(blobs, "wind-blue", {"loudspeaker_audio": audio_rendition(blobs, 1.0, 990)},
                                   zones=[HONGQI], priority="emergency", tags=["大风蓝色预警"]))
    body = playlist(ls_settings, HONGQI)
    assert [e["id"] for e in body["emergency"]] == ["flood-red", "wind-blue"]
    assert all(e["interrupt"] for e in body["emergency"])
    assert body["emergency"][0]["priority"] > body["emergency"][1]["priority"] > body["items"][0]["priority"]
    assert "flood-red" not in {e["id"] for e in body["items"]}  # interrupts are not in the daypart queue
    # Emergencies take effect at once, not at the next daypart: a terminal at 09:02 airs red, not blue.
    assert due_now(body, clock())["id"] == "flood-red"
    assert due_now(body, noon)["id"] == "flood-red"  # and pre-empt the routine slot

    clock.advance(minutes=1)
    publisher.publish(make_release(blobs, "quake-1", {"loudspeaker_audio": audio_rendition(blobs, 1.0, 500)},
                                   zones=[HONGQI], priority="emergency", tags=["Ⅰ级"]))
    # Same level: the newest instruction goes first, and the list order is what terminals follow.
    body = playlist(ls_settings, HONGQI)
    assert [e["id"] for e in body["emergency"]] == ["quake-1", "flood-red", "wind-blue"]
    assert due_now(body, clock())["id"] == "quake-1"
    assert numeric_priority(ItemMeta(id="q", title="t", author="a", priority="emergency", tags=["III级"])) == 950
    assert numeric_priority(ItemMeta(id="q", title="t", author="a", priority="emergency", tags=["I级"])) == 1000


def test_retracting_an_emergency_issues_a_cancel(ls_settings, publisher, blobs, clock) -> None:
    publisher.publish(make_release(blobs, "routine", {"loudspeaker_audio": audio_rendition(blobs)},
                                   zones=[HONGQI]))
    receipt = publisher.publish(make_release(blobs, "flood", {"loudspeaker_audio": audio_rendition(blobs, 1, 880)},
                                             zones=[BAYAN], priority="emergency"))
    before = playlist(ls_settings, XINHUA)
    assert [e["id"] for e in before["emergency"]] == ["flood"] and before["cancelled"] == []

    clock.advance(minutes=30)
    result = publisher.retract("flood", receipt, "误报")
    assert result.details["cancelled"] is True and "取消" in result.message
    for zone in (HONGQI, XINHUA):
        body = playlist(ls_settings, zone)
        assert body["emergency"] == []
        assert body["cancelled"] == [{"id": "flood", "revision": 1, "title": "标题 flood",
                                      "cancelled_at": "2025-06-02T09:30:00+08:00"}]
        assert body["manifest_version"] > before["manifest_version"]
    assert due_now(playlist(ls_settings, HONGQI), at("2025-06-02T12:00:00"))["id"] == "routine"
    # A terminal holding the old playlist still must not air it once it sees the cancel.
    assert due_now({**before, "cancelled": playlist(ls_settings, XINHUA)["cancelled"]}, clock()) is None

    clock.advance(hours=25)
    publisher.refresh(clock())
    assert playlist(ls_settings, XINHUA)["cancelled"] == []  # old cancels age out


# Retraction, expiry, updates --------------------------------------------------------------------------------
def test_retracted_item_leaves_every_playlist(ls_settings, publisher, blobs) -> None:
    receipt = publisher.publish(make_release(blobs, "wrong", {"loudspeaker_audio": audio_rendition(blobs)},
                                             zones=[COUNTY]))
    assert all(ids == {"wrong"} for ids in ids_by_zone(ls_settings).values())
    publisher.retract("wrong", Receipt(details=receipt.details), "事实错误")
    assert all(ids == set() for ids in ids_by_zone(ls_settings).values())
    for zone in VILLAGES:
        folder = ls_settings.site_dir / "loudspeakers" / zone
        assert "wrong" not in (folder / "podcast.xml").read_text(encoding="utf-8")
        assert "/media/" not in (folder / "playlist.m3u8").read_text(encoding="utf-8")
        assert playlist(ls_settings, zone)["cancelled"] == []  # only emergencies announce a cancel


def test_expiry_with_an_injected_clock(ls_settings, publisher, blobs, clock) -> None:
    publisher.publish(make_release(blobs, "market-day", {"loudspeaker_audio": audio_rendition(blobs)},
                                   zones=[HONGQI], expires="2025-06-02T15:00:00+08:00"))
    publisher.publish(make_release(blobs, "keeps", {"loudspeaker_audio": audio_rendition(blobs, 1, 300)},
                                   zones=[HONGQI]))
    body = playlist(ls_settings, HONGQI)
    market = [e for e in body["items"] if e["id"] == "market-day"]
    assert [e["slot"] for e in market] == ["12:00"]  # no slot after it expires
    assert market[0]["expires"] == "2025-06-02T15:00:00+08:00"

    publisher.refresh(clock.advance(hours=7))  # 16:00
    after = playlist(ls_settings, HONGQI)
    assert {e["id"] for e in after["items"]} == {"keeps"}
    assert after["manifest_version"] == body["manifest_version"] + 1


def test_unchanged_rebuild_keeps_bytes_and_update_replaces_in_place(ls_settings, publisher, blobs, clock) -> None:
    first = publisher.publish(make_release(blobs, "n", {"loudspeaker_audio": audio_rendition(blobs)},
                                           zones=[HONGQI]))
    path = ls_settings.site_dir / "loudspeakers" / HONGQI / "playlist.json"
    before = path.read_bytes()
    publisher.refresh(clock.advance(minutes=10))
    assert path.read_bytes() == before  # same content -> same bytes -> terminals keep getting 304

    corrected = make_release(blobs, "n", {"loudspeaker_audio": audio_rendition(blobs, 1, 700)}, version=2,
                             zones=[XINHUA], title="更正后的标题")
    publisher.update(corrected, Receipt(details=first.details))
    assert ids_by_zone(ls_settings)[HONGQI] == set()  # narrowed targeting leaves the old village
    body = playlist(ls_settings, XINHUA)
    assert {(e["id"], e["revision"], e["title"]) for e in body["items"]} == {("n", 2, "更正后的标题")}
    # A correction keeps its place: it was published at 09:00, so it is still in today's 12:00 slot.
    assert body["items"][0]["start"] == "2025-06-02T12:00:00+08:00"


# Renditions for dumb terminals -------------------------------------------------------------------------------
def test_m3u8_and_podcast_are_valid(ls_settings, publisher, blobs, clock) -> None:
    publisher.publish(make_release(blobs, "news", {"loudspeaker_audio": audio_rendition(blobs, 2.0)},
                                   zones=[HONGQI], title="早间新闻, 六月二日"))
    publisher.publish(make_release(blobs, "alert", {"loudspeaker_audio": audio_rendition(blobs, 1.0, 880)},
                                   zones=[HONGQI], priority="emergency", title="山洪预警"))
    folder = ls_settings.site_dir / "loudspeakers" / HONGQI
    m3u = (folder / "playlist.m3u8").read_text(encoding="utf-8").splitlines()
    assert m3u[0] == "#EXTM3U"
    extinf = [line for line in m3u if line.startswith("#EXTINF:")]
    assert extinf == ["#EXTINF:1,山洪预警", "#EXTINF:2,早间新闻， 六月二日"]  # emergency first; no raw comma
    urls = [line for line in m3u if line and not line.startswith("#")]
    assert len(urls) == 2 and all(u.startswith(f"{ls_settings.public_url}/media/") for u in urls)

    feed = feedparser.parse((folder / "podcast.xml").read_bytes())
    assert feed.bozo == 0, feed.get("bozo_exception")
    assert "红旗村" in feed.feed.title
    assert [e.title for e in feed.entries] == ["山洪预警", "早间新闻, 六月二日"]
    enclosure = feed.entries[1].enclosures[0]
    assert enclosure.type == "audio/mpeg" and enclosure.href in urls
    assert int(enclosure.length) == (ls_settings.site_dir / "media" / enclosure.href.rsplit("/", 1)[1]).stat().st_size


def test_emergency_scheduled_for_later_is_not_due_yet(ls_settings, publisher, blobs, clock) -> None:
    publisher.publish(make_release(blobs, "drill", {"loudspeaker_audio": audio_rendition(blobs)},
                                   zones=[HONGQI], priority="emergency", publish_at="2025-06-02T10:00:00"))
    body = playlist(ls_settings, HONGQI)
    assert body["emergency"][0]["start"] == "2025-06-02T10:00:00+08:00"
    assert due_now(body, clock()) is None
    assert due_now(body, clock() + timedelta(hours=1))["id"] == "drill"
