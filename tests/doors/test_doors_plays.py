"""Every door guarded: what a terminal holding a valid token, and the public, try against the distribution
server, over real HTTP on 127.0.0.1 with the real loudspeaker and screen publishers.

Where a test publishes, it records the receipt's grants as the delivery layer (rongmei.delivery.deliveries) does in
the transaction of a successful delivery (`World.deliver`), so the checks run against what was given.
"""

from __future__ import annotations

import contextlib
import json
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import requests
from sqlalchemy import event, select

from publishers.base import Playable, Publisher, Receipt, Release
from publishers.loudspeakers import LoudspeakerPublisher
from publishers.screens import ScreenPublisher
from rongmei.core.settings import Settings
from rongmei.delivery.grants import end_grants, replace_grants
from rongmei.distribution.plays import MAX_BATCH_BYTES
from rongmei.distribution.terminals import enroll_terminal
from rongmei.reach.sources import play_counts
from rongmei.storage.store import Store
from rongmei.storage.tables import Play, RefusedPlay
from rongmei.targets.base import CACHE_MEDIA, WITHDRAWN_DIR
from rongmei.targets.directory import DirectoryTarget
from tests.channels.support import (
    BAYAN,
    HONGQI,
    XINHUA,
    Blobs,
    Clock,
    Site,
    at,
    audio_rendition,
    card_rendition,
    channel_settings,
    make_release,
)
from tests.support.waiting import ANSWER_TIMEOUT

HEADER_TIMEOUT = 1.0  # small in the tests; the waits below allow 30 s for what it should cause
CLOSE_DEADLINE = 30.0


# The world: two channels, three terminals, real HTTP -------------------------------------------------------
@dataclass
class World:
    settings: Settings
    store: Store
    site: Site
    blobs: Blobs
    clock: Clock
    speakers: LoudspeakerPublisher
    screens: ScreenPublisher
    tokens: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return self.site.url

    def deliver(self, publisher: Publisher, release: Release, *, update: bool = False) -> Receipt:
        """Publish (or update) and record the receipt's grants, as the delivery layer does."""
        receipt = publisher.update(release, Receipt()) if update else publisher.publish(release)
        with self.store.session() as session:
            replace_grants(session, item_id=release.item_id, version_id=release.version_id,
                           channel=publisher.name, playables=receipt.playables, now=self.clock(),
                           until=release.meta.expires)
        return receipt

    def retract(self, publisher: Publisher, item_id: str, receipt: Receipt) -> None:
        publisher.retract(item_id, receipt, "撤稿")
        with self.store.session() as session:
            end_grants(session, item_id=item_id, channel=publisher.name, now=self.clock())

    def report(self, terminal: str, *plays: dict[str, Any]) -> dict[str, Any]:
        answer = requests.post(f"{self.url}/api/plays", json={"plays": list(plays)}, timeout=ANSWER_TIMEOUT,
                               headers={"Authorization": f"Bearer {self.tokens[terminal]}"})
        assert answer.status_code == 200, answer.text
        return answer.json()

    def counted(self) -> list[tuple[str, str]]:
        with self.store.session() as session:
            return [(p.terminal_id, p.item_id) for p in session.scalars(select(Play).order_by(Play.id))]

    def refused_rows(self) -> list[RefusedPlay]:
        with self.store.session() as session:
            return list(session.scalars(select(RefusedPlay).order_by(RefusedPlay.id)))


def play(item: str, sha256: str, start: datetime, seconds: float = 60) -> dict[str, str]:
    return {"item": item, "sha256": sha256, "started_at": start.isoformat(),
            "ended_at": (start + timedelta(seconds=seconds)).isoformat()}


def sha_of(release: Release, rendition: str) -> str:
    return str(release.renditions[rendition]["sha256"])


@pytest.fixture
def world(settings: Settings, tmp_path: Path) -> Iterator[World]:
    guarded = channel_settings(settings, server_header_timeout=HEADER_TIMEOUT)
    store = Store.from_settings(guarded)
    site = Site(guarded, store)
    clock = Clock(at("2025-06-02T09:00:00"))
    here = World(guarded, store, site, Blobs(tmp_path / "blobs"), clock,
                 LoudspeakerPublisher(guarded, now=clock), ScreenPublisher(guarded, now=clock))
    here.tokens = {
        "hall-01": enroll_terminal(store, "hall-01", group="hall"),
        "hongqi-01": enroll_terminal(store, "hongqi-01", zone=HONGQI),
        "xinhua-01": enroll_terminal(store, "xinhua-01", zone=XINHUA),
        # A screen installed in Hongqi village: its zone must not open the village loudspeakers' items to it.
        "hall-hongqi": enroll_terminal(store, "hall-hongqi", group="hall", zone=HONGQI),
    }
    try:
        yield here
    finally:
        site.stop()


@pytest.fixture
def radio(world: World) -> Release:
    """A loudspeaker-only item for Hongqi village, delivered at 09:00."""
    release = make_release(world.blobs, "ls-only", {"loudspeaker_audio": audio_rendition(world.blobs)},
                           kind="audio", zones=[HONGQI])
    world.deliver(world.speakers, release)
    return release


# Play reports: a terminal with a valid token -------------------------------------------------------------
def test_screen_terminal_reporting_a_loudspeaker_only_item_is_not_counted(world, radio):
    report = play("ls-only", sha_of(radio, "loudspeaker_audio"), world.clock() + timedelta(minutes=5))
    answer = world.report("hall-01", report)
    assert answer["accepted"] == 0 and answer["duplicates"] == 0
    assert [(r["index"], r["item"]) for r in answer["refused"]] == [(0, "ls-only")]
    assert "从未下发" in answer["refused"][0]["reason"] and "大屏分组 hall" in answer["refused"][0]["reason"]
    # The same report from the village it was given to counts: the refusal above is the grant check.
    assert world.report("hongqi-01", report)["accepted"] == 1
    assert world.counted() == [("hongqi-01", "ls-only")]
    (kept,) = world.refused_rows()
    assert (kept.terminal_id, kept.item_id, kept.sha256) == ("hall-01", "ls-only", report["sha256"])
    assert "从未下发" in kept.reason


def test_screen_terminal_enrolled_with_a_village_zone_cannot_report_its_loudspeaker_items(world, radio):
    answer = world.report("hall-hongqi", play("ls-only", sha_of(radio, "loudspeaker_audio"), world.clock()))
    assert answer["accepted"] == 0 and len(answer["refused"]) == 1
    assert world.counted() == []


def test_loudspeaker_terminal_reporting_another_villages_item_is_not_counted(world, radio):
    answer = world.report("xinhua-01", play("ls-only", sha_of(radio, "loudspeaker_audio"), world.clock()))
    assert answer["accepted"] == 0 and answer["refused"][0]["item"] == "ls-only"
    assert world.counted() == []


def test_terminal_reporting_a_file_it_was_not_given_is_refused(world, radio):
    card = make_release(world.blobs, "hall-card", {"screen_card": card_rendition(world.blobs, "C")},
                        screens=["hall"])
    world.deliver(world.screens, card)
    wrong = play("ls-only", sha_of(card, "screen_card"), world.clock())  # the item it has, another file
    right = play("ls-only", sha_of(radio, "loudspeaker_audio"), world.clock() + timedelta(minutes=1))
    answer = world.report("hongqi-01", wrong, right)
    assert answer["accepted"] == 1 and [r["index"] for r in answer["refused"]] == [0]
    assert "不是下发给本终端" in answer["refused"][0]["reason"]


def test_terminal_reporting_a_ten_year_play_is_refused(world, radio):
    sha = sha_of(radio, "loudspeaker_audio")
    ten_years = play("ls-only", sha, world.clock(), seconds=10 * 365 * 86400)
    normal = play("ls-only", sha, world.clock() + timedelta(minutes=1))
    answer = world.report("hongqi-01", ten_years, normal)
    assert answer["accepted"] == 1 and [r["index"] for r in answer["refused"]] == [0]
    assert "结束时间" in answer["refused"][0]["reason"]
    assert len(world.counted()) == 1


def test_terminal_reporting_a_play_from_before_the_item_was_given_is_refused(world, radio):
    sha = sha_of(radio, "loudspeaker_audio")
    skew = timedelta(seconds=world.settings.play_clock_skew_seconds)
    too_early = play("ls-only", sha, world.clock() - skew - timedelta(minutes=1))
    within_skew = play("ls-only", sha, world.clock() - skew + timedelta(seconds=5))  # a clock a little fast
    answer = world.report("hongqi-01", too_early, within_skew)
    assert answer["accepted"] == 1 and [r["index"] for r in answer["refused"]] == [0]
    assert "不在稿件 ls-only 下发给本终端的时段内" in answer["refused"][0]["reason"]


def test_terminal_reporting_a_play_in_the_future_is_refused(world, radio):
    tomorrow = datetime.now(UTC) + timedelta(days=1)
    answer = world.report("hongqi-01", play("ls-only", sha_of(radio, "loudspeaker_audio"), tomorrow))
    assert answer["accepted"] == 0 and "开始时间" in answer["refused"][0]["reason"]
    assert "校准终端时钟" in answer["refused"][0]["reason"]


def test_terminal_reporting_plays_after_retraction_is_refused(world):
    release = make_release(world.blobs, "wrong", {"loudspeaker_audio": audio_rendition(world.blobs)},
                           zones=[HONGQI])
    receipt = world.deliver(world.speakers, release)
    sha, given = sha_of(release, "loudspeaker_audio"), world.clock()
    world.clock.advance(hours=1)
    world.retract(world.speakers, "wrong", receipt)
    before = play("wrong", sha, given + timedelta(minutes=30))  # aired while it was given: a late flush counts
    after = play("wrong", sha, given + timedelta(hours=2))  # a terminal that kept airing its cached copy
    answer = world.report("hongqi-01", before, after)
    assert answer["accepted"] == 1 and [r["index"] for r in answer["refused"]] == [1]
    assert world.counted() == [("hongqi-01", "wrong")]


def test_terminal_reporting_plays_after_the_item_expired_is_refused(world):
    release = make_release(world.blobs, "market", {"loudspeaker_audio": audio_rendition(world.blobs)},
                           zones=[HONGQI], expires="2025-06-02T15:00:00")
    world.deliver(world.speakers, release)
    sha = sha_of(release, "loudspeaker_audio")
    answer = world.report("hongqi-01", play("market", sha, at("2025-06-02T12:00:00")),
                          play("market", sha, at("2025-06-03T12:00:00")))
    assert answer["accepted"] == 1 and [r["index"] for r in answer["refused"]] == [1]


def test_terminal_reporting_after_a_correction_narrowed_its_village_is_refused(world):
    first = make_release(world.blobs, "notice", {"loudspeaker_audio": audio_rendition(world.blobs)},
                         zones=[BAYAN])
    world.deliver(world.speakers, first)
    world.clock.advance(hours=1)
    narrowed = make_release(world.blobs, "notice", {"loudspeaker_audio": audio_rendition(world.blobs, 1, 700)},
                            version=2, zones=[XINHUA])
    world.deliver(world.speakers, narrowed, update=True)
    old_sha, new_sha = sha_of(first, "loudspeaker_audio"), sha_of(narrowed, "loudspeaker_audio")
    answer = world.report("hongqi-01", play("notice", old_sha, at("2025-06-02T09:10:00")),
                          play("notice", old_sha, at("2025-06-02T12:00:00")),
                          play("notice", new_sha, at("2025-06-02T12:05:00")))
    assert answer["accepted"] == 1 and [r["index"] for r in answer["refused"]] == [1, 2]
    # Xinhua now has the corrected file only.
    answer = world.report("xinhua-01", play("notice", new_sha, at("2025-06-02T12:00:00")),
                          play("notice", old_sha, at("2025-06-02T12:10:00")))
    assert answer["accepted"] == 1 and [r["index"] for r in answer["refused"]] == [1]


def test_terminal_play_across_a_correction_with_the_same_file_counts(world):
    audio = audio_rendition(world.blobs, 2.0)
    world.deliver(world.speakers, make_release(world.blobs, "n", {"loudspeaker_audio": audio}, zones=[HONGQI]))
    world.clock.advance(hours=1)  # 10:00: the title is corrected, the audio stays the same
    world.deliver(world.speakers, make_release(world.blobs, "n", {"loudspeaker_audio": audio}, version=2,
                                               zones=[HONGQI], title="更正"), update=True)
    # 09:50 to 10:10: longer than twice the clock skew, so only the two grants taken together cover it.
    answer = world.report("hongqi-01", play("n", audio["sha256"], at("2025-06-02T09:50:00"), seconds=1200))
    assert answer["accepted"] == 1 and answer["refused"] == []


def test_terminal_resending_refused_plays_stores_them_once(world, radio):
    report = play("ls-only", sha_of(radio, "loudspeaker_audio"), world.clock())
    first = world.report("hall-01", report, report)
    assert first["duplicates"] == 1 and len(first["refused"]) == 1  # repeated within the batch: as today
    again = world.report("hall-01", report)
    assert again["accepted"] == 0 and len(again["refused"]) == 1  # still told why
    assert len(world.refused_rows()) == 1


def test_refused_plays_never_reach_the_reach_report(world, radio):
    sha = sha_of(radio, "loudspeaker_audio")
    world.report("hongqi-01", play("ls-only", sha, world.clock()))
    world.report("hall-01", play("ls-only", sha, world.clock() + timedelta(minutes=1)))
    world.report("xinhua-01", play("ls-only", sha, world.clock() + timedelta(minutes=2)))
    world.report("hongqi-01", play("never-given", sha, world.clock() + timedelta(minutes=3)))
    assert len(world.refused_rows()) == 3
    counts = play_counts(world.store, world.settings, date(2025, 6, 2), date(2025, 6, 2))
    assert [(c.item_id, c.group, c.plays) for c in counts] == [("ls-only", "", 1)]  # a loudspeaker: no group


def test_channels_declare_exactly_what_each_audience_was_given(world):
    speakers = world.deliver(world.speakers, make_release(
        world.blobs, "town", {"loudspeaker_audio": audio_rendition(world.blobs)}, zones=[BAYAN]))
    sha = speakers.details["media"].removeprefix("media/").removesuffix(".mp3")
    assert speakers.playables == (Playable(f"zone:{HONGQI}", sha), Playable(f"zone:{XINHUA}", sha))
    card = make_release(world.blobs, "card", {"screen_card": card_rendition(world.blobs, "A"),
                                              "screen_card_mn": card_rendition(world.blobs, "M", (9, 9, 9))},
                        screens=["hall"], language="zh+mn")
    screens = world.deliver(world.screens, card)
    assert set(screens.playables) == {Playable("group:hall", sha_of(card, "screen_card")),
                                      Playable("group:hall", sha_of(card, "screen_card_mn"))}
    # A correction that moves the card to the square gives the square, and no longer the hall, its files.
    moved = make_release(world.blobs, "card", {"screen_card": card_rendition(world.blobs, "B")}, version=2,
                         screens=["square"])
    assert world.deliver(world.screens, moved, update=True).playables == (
        Playable("group:square", sha_of(moved, "screen_card")),)


def test_terminal_batch_is_checked_without_a_query_per_play_or_grant(world, radio):
    sha = sha_of(radio, "loudspeaker_audio")
    batch = [play("ls-only", sha, world.clock() + timedelta(minutes=i)) for i in range(200)]
    batch += [play(f"other-{i}", sha, world.clock()) for i in range(50)]
    statements: list[str] = []

    def seen(_conn, _cursor, statement, *_args) -> None:  # type: ignore[no-untyped-def]
        statements.append(statement)

    event.listen(world.store.engine, "before_cursor_execute", seen)
    try:
        answer = world.report("hongqi-01", *batch)
    finally:
        event.remove(world.store.engine, "before_cursor_execute", seen)
    assert answer["accepted"] == 200 and len(answer["refused"]) == 50
    # The server's grant cache is filled once; the refusals are checked once more against the database.
    assert sum("FROM grants" in s for s in statements) == 2
    # One multi-row insert for the accepted plays, one for the refused, a few for the rest: none per play.
    assert len(statements) <= 8, len(statements)
    statements.clear()
    event.listen(world.store.engine, "before_cursor_execute", seen)
    try:
        again = world.report("hongqi-01", *[play("ls-only", sha, world.clock() + timedelta(minutes=300 + i))
                                            for i in range(20)])
    finally:
        event.remove(world.store.engine, "before_cursor_execute", seen)
    assert again["accepted"] == 20 and not any("FROM grants" in s for s in statements)  # served from the cache


# Malformed bodies: any shape answers 4xx with a JSON error, never 500 ---------------------------------------
def raw_exchange(port: int, data: bytes, *, deadline: float = CLOSE_DEADLINE) -> tuple[list[tuple[int, bytes]], bool]:
    """Send raw bytes; read answers until the server closes or `deadline`. Returns [(status, body)], closed."""
    answers: list[tuple[int, bytes]] = []
    buffer, closed = b"", False
    end = time.monotonic() + deadline
    with socket.create_connection(("127.0.0.1", port), timeout=ANSWER_TIMEOUT) as conn:
        # Answered (413) and closed before all of it was sent: the answer may still be readable.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            conn.sendall(data)
        while time.monotonic() < end:
            conn.settimeout(max(0.05, end - time.monotonic()))
            try:
                chunk = conn.recv(65536)
            except TimeoutError:
                break
            except ConnectionResetError:
                closed = True
                break
            if not chunk:
                closed = True
                break
            buffer += chunk
            while (head := buffer.find(b"\r\n\r\n")) >= 0:
                lines = buffer[:head].split(b"\r\n")
                length = next((int(line.split(b":", 1)[1]) for line in lines[1:]
                               if line.lower().startswith(b"content-length:")), 0)
                if len(buffer) < head + 4 + length:
                    break
                answers.append((int(lines[0].split()[1]), buffer[head + 4:head + 4 + length]))
                buffer = buffer[head + 4 + length:]
    return answers, closed


def plays_request(token: str, body: bytes, *, length: int | None = None,
                  extra: bytes = b"Connection: close\r\n") -> bytes:
    size = len(body) if length is None else length
    return (b"POST /api/plays HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer " + token.encode() +
            b"\r\nContent-Type: application/json\r\nContent-Length: " + str(size).encode() + b"\r\n" + extra +
            b"\r\n" + body)


GOOD = {"item": "ls-only", "sha256": "a" * 64, "started_at": "2025-06-02T09:00:00+08:00",
        "ended_at": "2025-06-02T09:01:00+08:00"}


def _plays(*entries: Any) -> bytes:
    return json.dumps({"plays": list(entries)}).encode()


HOSTILE_BODIES: dict[str, bytes] = {
    "deep-arrays": b"[" * 200_000 + b"]" * 200_000,
    "deep-objects": b'{"a":' * 100_000 + b"1" + b"}" * 100_000,
    "deep-inside-plays": b'{"plays": [' + b"[" * 100_000 + b"]" * 100_000 + b"]}",
    "deep-inside-an-ignored-key": b'{"plays": [], "x": ' + b'{"y":[' * 50_000 + b"]}" * 50_000 + b"}",
    "plays-is-a-dict": b'{"plays": {"0": ' + json.dumps(GOOD).encode() + b"}}",
    "plays-is-a-string": b'{"plays": "ls-only"}',
    "plays-is-a-number": b'{"plays": 7}',
    "plays-is-null": b'{"plays": null}',
    "plays-missing": b'{"batch_id": "b"}',
    "body-is-a-list": b"[" + json.dumps(GOOD).encode() + b"]",
    "body-is-a-string": b'"plays"',
    "body-is-a-number": b"1",
    "body-is-null": b"null",
    "entry-is-a-list": _plays([GOOD]),
    "entry-is-null": _plays(None),
    "entry-is-a-number": _plays(1),
    "entry-is-empty": _plays({}),
    "invalid-utf8": b'{"plays": [{"item": "\xff\xfe\xfa", "sha256": "' + b"a" * 64 + b'"}]}',
    "lone-surrogate": b'{"plays": [], "batch_id": "\\ud800"}',
    "nul-in-item": _plays(dict(GOOD, item="ls\u0000only")),
    "newline-after-item": _plays(dict(GOOD, item="ls-only\n")),
    "huge-integer": b'{"plays": [], "n": ' + b"9" * 5000 + b"}",
    "huge-float": b'{"plays": [], "n": 1e999}',
    "huge-time-number": _plays(dict(GOOD, started_at=10**30)),
    "nan": b'{"plays": [], "n": NaN}',
    "infinity": b'{"plays": [], "n": -Infinity}',
    "time-before-year-one-in-utc": _plays(dict(GOOD, started_at="0001-01-01T00:00:00+01:00")),
    "time-after-year-9999-in-utc": _plays(dict(GOOD, ended_at="9999-12-31T23:59:59-14:00")),
    "long-item": _plays(dict(GOOD, item="x" * 100_000)),
    "long-batch-id": json.dumps({"plays": [], "batch_id": "b" * 100_000}).encode(),
    "long-string-over-the-limit": b'{"plays": [], "pad": "' + b"x" * (MAX_BATCH_BYTES + 64) + b'"}',
    "batch-id-is-an-object": b'{"plays": [], "batch_id": {"a": 1}}',
    "duplicate-keys": b'{"plays": [], "plays": [' + json.dumps(GOOD).encode() + b"]}",
    "empty-body": b"",
    "whitespace-body": b" \r\n\t ",
    "truncated": _plays(GOOD)[:-5],
    "trailing-garbage": _plays() + b"{}",
}


@pytest.mark.parametrize("name", list(HOSTILE_BODIES))
def test_public_hostile_play_bodies_get_4xx_json_not_500(world, name):
    answers, _ = raw_exchange(world.site.port, plays_request(world.tokens["hongqi-01"], HOSTILE_BODIES[name]))
    assert answers, f"{name}: no answer"
    status, body = answers[0]
    assert 400 <= status < 500, (name, status, body[:300])
    assert json.loads(body)["error"], name
    assert requests.get(f"{world.url}/api/plays", timeout=ANSWER_TIMEOUT).status_code == 405  # still serving
    assert world.counted() == []


def test_public_deeply_nested_json_gets_400_not_500(world):
    for body in (b"[" * 100_000, b'{"plays": ' * 100_000, b'{"plays": [' + b"[" * 100_000 + b"]" * 100_000 + b"]}"):
        answer = requests.post(f"{world.url}/api/plays", data=body, timeout=ANSWER_TIMEOUT,
                               headers={"Authorization": f"Bearer {world.tokens['hall-01']}"})
        assert answer.status_code == 400, answer.text[:300]
        assert answer.json()["error"] == "malformed" and "嵌套" in answer.json()["message"]
    assert requests.get(f"{world.url}/api/plays", timeout=ANSWER_TIMEOUT).status_code == 405


@pytest.mark.parametrize(
    ("name", "request_bytes"),
    [
        ("content-length-not-a-number", b"POST /api/plays HTTP/1.1\r\nHost: t\r\nContent-Length: abc\r\n\r\n{}"),
        ("content-length-negative", b"POST /api/plays HTTP/1.1\r\nHost: t\r\nContent-Length: -5\r\n\r\n{}"),
        ("content-length-twice", b"POST /api/plays HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n"
                                 b"Content-Length: 9\r\n\r\n{}"),
        ("bad-chunk-size", b"POST /api/plays HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n{}"),
        ("garbage-request-line", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03 hello\r\n\r\n"),
        ("header-without-colon", b"GET / HTTP/1.1\r\nHost t\r\n\r\n"),
    ],
)
def test_public_unparseable_http_gets_a_json_400(world, name, request_bytes):
    answers, closed = raw_exchange(world.site.port, request_bytes)
    assert [status for status, _ in answers] == [400], (name, answers)
    assert json.loads(answers[0][1])["error"] == "bad_request"
    assert closed
    assert requests.get(f"{world.url}/api/plays", timeout=ANSWER_TIMEOUT).status_code == 405


@pytest.mark.parametrize("head", [
    b"GET /screens/hall/manifest.json HTTP/1.1\r\nHost: t\r\nX-Pad: " + b"a" * (1024 * 1024),  # one endless header
    b"GET /screens/hall/manifest.json HTTP/1.1\r\nHost: t\r\n" + b"X-Pad: a\r\n" * 100_000,  # many of them
    b"GET /" + b"a" * (1024 * 1024),  # an endless request line
], ids=["endless-header", "many-headers", "endless-url"])
def test_public_huge_request_head_gets_431_not_buffered(world, head):
    answers, closed = raw_exchange(world.site.port, head)
    assert [status for status, _ in answers] == [431] and closed, answers
    assert json.loads(answers[0][1])["error"] == "headers_too_large"
    assert requests.get(f"{world.url}/api/plays", timeout=ANSWER_TIMEOUT).status_code == 405


def test_terminal_large_batch_sent_with_its_headers_is_not_mistaken_for_a_huge_head(world, radio):
    sha = sha_of(radio, "loudspeaker_audio")
    body = json.dumps({"plays": [play("ls-only", sha, world.clock() + timedelta(seconds=i)) for i in range(1000)]})
    answers, _ = raw_exchange(world.site.port, plays_request(world.tokens["hongqi-01"], body.encode()))
    assert len(body) > 64 * 1024 and answers[0][0] == 200, answers
    assert json.loads(answers[0][1])["accepted"] == 1000


def test_terminal_content_length_shorter_than_the_body_gets_4xx_json(world):
    body = _plays(GOOD)
    answers, closed = raw_exchange(world.site.port,  # kept alive, so what follows is read as the next request
                                   plays_request(world.tokens["hongqi-01"], body, length=len(body) - 9, extra=b""))
    # The declared part is malformed JSON and what follows it is not HTTP. When both arrive in one segment the
    # parser meets the second before the app answers the first, and only the second is answered: either way
    # every answer is a JSON 400, and the connection is closed.
    assert answers and all(status == 400 for status, _ in answers) and closed, answers
    assert {json.loads(b)["error"] for _, b in answers} <= {"malformed", "bad_request"}


def test_terminal_content_length_longer_than_the_body_gets_408_not_a_hang(world):
    body = _plays(GOOD)
    started = time.monotonic()
    answers, closed = raw_exchange(world.site.port,
                                   plays_request(world.tokens["hongqi-01"], body, length=len(body) + 100))
    assert [status for status, _ in answers] == [408] and closed, answers
    assert json.loads(answers[0][1])["error"] == "body_timeout"
    assert time.monotonic() - started < CLOSE_DEADLINE


# Slow clients -------------------------------------------------------------------------------------------
def read_response(conn: socket.socket) -> bytes:
    """One whole response on a kept-alive connection (head and body may come in separate segments)."""
    conn.settimeout(ANSWER_TIMEOUT)
    data = b""
    while (head := data.find(b"\r\n\r\n")) < 0 or len(data) < head + 4 + int(
            next((line.split(b":", 1)[1] for line in data[:head].split(b"\r\n")
                  if line.lower().startswith(b"content-length:")), b"0")):
        chunk = conn.recv(65536)
        assert chunk, f"the server closed the connection after {data!r}"
        data += chunk
    return data

def wait_for_close(conn: socket.socket, deadline: float = CLOSE_DEADLINE, drip: bytes = b"") -> tuple[bool, bytes]:
    """Wait until the server closes `conn` (True) or `deadline` passes (False); with `drip`, send one more of
    its bytes whenever nothing arrives for a moment (the recv timeout paces the drip, it does not wait for
    any state of the server)."""
    received, end, position = b"", time.monotonic() + deadline, 0
    while time.monotonic() < end:
        conn.settimeout(0.25 if drip else max(0.05, end - time.monotonic()))
        try:
            chunk = conn.recv(65536)
        except TimeoutError:
            if drip:
                try:
                    conn.sendall(drip[position % len(drip):position % len(drip) + 1])
                except (BrokenPipeError, ConnectionResetError):
                    return True, received
                position += 1
            continue
        except ConnectionResetError:
            return True, received
        if not chunk:
            return True, received
        received += chunk
    return False, received


def test_public_slow_headers_connection_is_closed(world):
    with socket.create_connection(("127.0.0.1", world.site.port), timeout=ANSWER_TIMEOUT) as conn:
        conn.sendall(b"GET /screens/hall/manifest.json HTTP/1.1\r\nHost: t\r\nX-Slow: ")
        closed, received = wait_for_close(conn)
    assert closed, "a connection that never finished its headers was kept open"
    assert received.startswith(b"HTTP/1.1 408 ") and b"header_timeout" in received


def test_public_dripping_header_bytes_does_not_keep_the_connection_open(world):
    with socket.create_connection(("127.0.0.1", world.site.port), timeout=ANSWER_TIMEOUT) as conn:
        conn.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n")
        closed, _ = wait_for_close(conn, drip=b"X-a: b\r\n")
    assert closed, "dripping a header byte now and then kept the connection open"


def test_public_connection_that_sends_nothing_is_closed(world):
    with socket.create_connection(("127.0.0.1", world.site.port), timeout=ANSWER_TIMEOUT) as conn:
        closed, received = wait_for_close(conn)
    assert closed and received == b""  # nothing was asked, so nothing is answered


def test_public_slow_headers_on_a_kept_alive_connection_are_closed(world):
    with socket.create_connection(("127.0.0.1", world.site.port), timeout=ANSWER_TIMEOUT) as conn:
        conn.sendall(b"GET /api/plays HTTP/1.1\r\nHost: t\r\n\r\n")
        assert read_response(conn).startswith(b"HTTP/1.1 405 ")
        conn.sendall(b"GET /api/plays HTTP/1.1\r\nHo")  # the next request starts and stalls
        closed, received = wait_for_close(conn)
    assert closed and received.startswith(b"HTTP/1.1 408 ")


def test_terminal_polling_on_a_kept_alive_connection_is_served_beyond_the_header_timeout(world):
    request = b"GET /api/plays HTTP/1.1\r\nHost: t\r\nUser-Agent: rongmei-terminal\r\n\r\n"
    with socket.create_connection(("127.0.0.1", world.site.port), timeout=ANSWER_TIMEOUT) as terminal:
        terminal.sendall(request)
        assert read_response(terminal).startswith(b"HTTP/1.1 405 ")
        idle_since = time.monotonic()
        # A slowloris connection opened after the terminal's answer: once the server has closed it, at least
        # the header timeout has passed on the terminal's idle kept-alive connection too.
        with socket.create_connection(("127.0.0.1", world.site.port), timeout=ANSWER_TIMEOUT) as slow:
            slow.sendall(b"GET / HTTP/1.1\r\n")
            assert wait_for_close(slow)[0]
        assert time.monotonic() - idle_since >= HEADER_TIMEOUT
        for _ in range(3):  # the terminal's next polls on the same connection are served
            terminal.sendall(request)
            assert read_response(terminal).startswith(b"HTTP/1.1 405 ")
        # Headers sent in two parts, each quick, are one request: served, not cut off.
        terminal.sendall(request[:20])
        terminal.sendall(request[20:])
        assert read_response(terminal).startswith(b"HTTP/1.1 405 ")


# Media of a retracted item -------------------------------------------------------------------------------
def test_public_gets_410_for_withdrawn_media(world, radio):
    key = f"media/{sha_of(radio, 'loudspeaker_audio')}.mp3"
    url = f"{world.url}/{key}"
    served = requests.get(url, timeout=ANSWER_TIMEOUT)
    assert served.status_code == 200 and served.headers["cache-control"] == CACHE_MEDIA
    target = DirectoryTarget(world.settings.site_dir)
    assert target.keys(key.removesuffix(".mp3")) == [key]

    target.withdraw(key)
    gone = requests.get(url, timeout=ANSWER_TIMEOUT)
    assert gone.status_code == 410 and gone.headers["cache-control"] == "no-store"
    assert "撤回" in gone.text
    assert requests.head(url, timeout=ANSWER_TIMEOUT).status_code == 410
    assert requests.get(url, headers={"Range": "bytes=0-9"}, timeout=ANSWER_TIMEOUT).status_code == 410
    assert requests.get(f"{world.url}/media/{'0' * 64}.mp3", timeout=ANSWER_TIMEOUT).status_code == 404  # never existed
    assert target.keys(key.removesuffix(".mp3")) == [] and target.keys("media/") == []
    # The tombstone sits in a dot-directory: it is not a key, and never served.
    assert (world.settings.site_dir / WITHDRAWN_DIR / key).is_file()
    assert requests.get(f"{world.url}/{WITHDRAWN_DIR}/{key}", timeout=ANSWER_TIMEOUT).status_code == 404


def test_public_gets_withdrawn_media_again_once_another_live_item_uses_it(world, radio):
    key = f"media/{sha_of(radio, 'loudspeaker_audio')}.mp3"
    DirectoryTarget(world.settings.site_dir).withdraw(key)
    assert requests.get(f"{world.url}/{key}", timeout=ANSWER_TIMEOUT).status_code == 410
    # Another item with the very same audio is published: the blob is written again and served again.
    again = make_release(world.blobs, "same-audio", {"loudspeaker_audio": dict(radio.renditions["loudspeaker_audio"])},
                         zones=[XINHUA])
    world.deliver(world.speakers, again)
    served = requests.get(f"{world.url}/{key}", timeout=ANSWER_TIMEOUT)
    assert served.status_code == 200 and served.content == world.blobs.path(sha_of(radio, "loudspeaker_audio")).read_bytes()
    assert not (world.settings.site_dir / WITHDRAWN_DIR / key).exists()


def test_public_caches_keep_media_for_an_hour_not_a_year(world, radio):
    answer = requests.get(f"{world.url}/media/{sha_of(radio, 'loudspeaker_audio')}.mp3", timeout=ANSWER_TIMEOUT)
    assert answer.headers["cache-control"] == "public, max-age=3600"
    assert "immutable" not in answer.headers["cache-control"]


def test_public_cannot_fetch_withdrawn_media_from_the_bucket(tmp_path, monkeypatch):
    import boto3

    from rongmei.targets.s3 import S3Target
    from tests.support.s3 import fake_aws_credentials, s3_server

    fake_aws_credentials(monkeypatch)
    with s3_server() as endpoint:
        boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket="doors")
        target = S3Target("doors", endpoint_url=endpoint, prefix="county")
        audio = tmp_path / "a.mp3"
        audio.write_bytes(b"ID3" + bytes(100))
        key, other = f"media/{'ab' * 32}.mp3", f"media/{'ab' * 32}.jpg"
        target.write_file(key, audio)
        target.write_bytes(other, b"\xff\xd8")
        target.write_bytes(f"media/{'cd' * 32}.mp3", b"ID3")
        head = boto3.client("s3", endpoint_url=endpoint).head_object(Bucket="doors", Key=f"county/{key}")
        assert head["CacheControl"] == CACHE_MEDIA
        assert target.keys(f"media/{'ab' * 32}") == [other, key]
        target.withdraw(key)
        target.withdraw(key)  # withdrawing twice is not an error
        assert target.keys(f"media/{'ab' * 32}") == [other]
        assert requests.get(f"{endpoint}/doors/county/{key}", timeout=ANSWER_TIMEOUT).status_code == 404


def test_retraction_cannot_withdraw_or_list_outside_the_root(world):
    from rongmei.core.errors import PublishError

    (world.settings.data_dir / "secret.txt").write_text("keep")
    target = DirectoryTarget(world.settings.site_dir)
    with pytest.raises(PublishError, match="outside the public root"):
        target.withdraw("../data/secret.txt")
    with pytest.raises(PublishError, match="outside the public root"):
        target.keys("../")
    assert (world.settings.data_dir / "secret.txt").read_text() == "keep"
