"""Proof of play: terminal tokens and POST /api/plays over real HTTP, idempotent on SQLite and PostgreSQL.

Plays count only for what a terminal was given (grants; the attacks are in test_doors_plays.py), so every
test here first grants its items to the terminals' audiences, as a delivery would."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone

import pytest
import requests
from sqlalchemy import func, select

from publishers.base import Playable
from rongmei.core.errors import StoreError
from rongmei.core.settings import Settings
from rongmei.delivery.grants import replace_grants
from rongmei.distribution.plays import MAX_PLAYS, PlayOutcome, parse_batch, record_plays
from rongmei.distribution.server import RunningServer, serve_in_thread
from rongmei.distribution.terminals import authenticate, enroll_terminal, hash_token
from rongmei.storage.store import Store
from rongmei.storage.tables import Play, Terminal

SHA = hashlib.sha256(b"audio").hexdigest()
T0 = datetime(2025, 6, 1, 7, 0, tzinfo=timezone(timedelta(hours=8)))


def play(item: str = "news-0700", minute: int = 0) -> dict:
    start = T0 + timedelta(minutes=minute)
    return {"item": item, "sha256": SHA, "started_at": start.isoformat(),
            "ended_at": (start + timedelta(seconds=270)).isoformat()}


def grant(store: Store, *audiences: str, items: tuple[str, ...] = ("news-0700", "notice-1")) -> None:
    """What a loudspeaker/screen delivery records: these items' file given to these audiences since before T0."""
    with store.session() as session:
        for item in items:
            replace_grants(session, item_id=item, version_id=1, channel="loudspeakers",
                           playables=[Playable(audience, SHA) for audience in audiences],
                           now=T0 - timedelta(days=1), until=None)


def count_plays(store: Store) -> int:
    with store.session() as session:
        return session.scalar(select(func.count()).select_from(Play)) or 0


@pytest.fixture
def server(settings: Settings, store: Store) -> Iterator[RunningServer]:
    running = serve_in_thread(settings, port=0, store=store)
    yield running
    running.stop()


def test_token_is_returned_once_and_only_its_hash_is_stored(store):
    token = enroll_terminal(store, "spk-001", zone="150102001001")
    with store.session() as session:
        row = session.get(Terminal, "spk-001")
        assert row.token_hash == hash_token(token) and token not in row.token_hash
    found = authenticate(store, token)
    assert found is not None and found.id == "spk-001" and found.zone == "150102001001"
    assert authenticate(store, token + "x") is None
    assert authenticate(store, "") is None
    # Re-enrolling replaces the token: a stolen old one stops working.
    new_token = enroll_terminal(store, "spk-001", zone="150102001001")
    assert authenticate(store, token) is None and authenticate(store, new_token).id == "spk-001"
    with pytest.raises(StoreError, match="--zone"):
        enroll_terminal(store, "spk-002")
    with pytest.raises(StoreError, match="终端编号"):
        enroll_terminal(store, "../evil", group="hall")


def test_assignment_is_checked_against_the_configuration(settings):
    from rongmei.core.errors import ConfigError
    from rongmei.core.settings import ScreenGroup, Zone
    from rongmei.distribution.terminals import check_assignment

    check_assignment(settings, zone="150102001001")  # nothing configured yet: accepted
    configured = settings.model_copy(update={
        "zones": [Zone(code="150102", name="示例镇"), Zone(code="150102001001", name="示例村", parent="150102")],
        "screen_groups": [ScreenGroup(id="hall", name="政务服务大厅")]})
    check_assignment(configured, zone="150102001001")
    check_assignment(configured, group="hall")
    with pytest.raises(ConfigError, match="150199"):
        check_assignment(configured, zone="150199")
    with pytest.raises(ConfigError, match="政务服务大厅"):
        check_assignment(configured, group="square")


def test_same_instant_in_another_offset_is_the_same_play(store):
    enroll_terminal(store, "scr-1", group="hall")
    terminal = authenticate(store, enroll_terminal(store, "scr-1", group="hall"))
    grant(store, "group:hall")
    local = parse_batch({"plays": [play()]}).plays
    in_utc = dict(play(), started_at=T0.astimezone(UTC).isoformat().replace("+00:00", "Z"))
    assert record_plays(store, terminal, local) == PlayOutcome(1, 0)
    assert record_plays(store, terminal, parse_batch({"plays": [in_utc]}).plays) == PlayOutcome(0, 1)
    with store.session() as session:
        stored = session.scalars(select(Play)).one()
        assert stored.group == "hall" and stored.terminal_id == "scr-1"


def test_good_batch_then_the_same_backlog_again_counts_once(server, store):
    token = enroll_terminal(store, "spk-001", zone="150102001001")
    grant(store, "zone:150102001001")
    batch = {"batch_id": "b-1", "plays": [play(minute=0), play(minute=5), play("notice-1", minute=0)]}
    url = f"{server.url}/api/plays"
    first = requests.post(url, json=batch, headers={"Authorization": f"Bearer {token}"})
    assert first.status_code == 200, first.text
    assert first.json() == {"accepted": 3, "duplicates": 0, "batch_id": "b-1", "refused": []}
    # The terminal lost the answer and flushes its backlog again, plus one new play.
    batch["plays"].append(play(minute=10))
    again = requests.post(url, json=batch, headers={"Authorization": f"Bearer {token}"})
    assert again.json() == {"accepted": 1, "duplicates": 3, "batch_id": "b-1", "refused": []}
    assert count_plays(store) == 4
    with store.session() as session:
        zones = set(session.scalars(select(Play.zone)))
    assert zones == {"150102001001"}


def test_bad_tokens_are_401(server, store):
    enroll_terminal(store, "spk-001", zone="150102001001")
    url = f"{server.url}/api/plays"
    for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": "Basic abc"}):
        answer = requests.post(url, json={"plays": [play()]}, headers=headers)
        assert answer.status_code == 401
        assert answer.json()["error"] == "bad_token" and "Bearer" in answer.json()["message"]
        assert answer.headers["www-authenticate"].startswith("Bearer")
    assert count_plays(store) == 0


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (b"{not json", "JSON"),
        (b"[]", "plays"),
        (json.dumps({"plays": [dict(play(), sha256="abc")]}).encode(), "plays.0.sha256"),
        (json.dumps({"plays": [dict(play(), started_at="2025-06-01T07:00:00")]}).encode(), "UTC offset"),
        (json.dumps({"plays": [dict(play(), ended_at="2025-06-01T06:00:00+08:00")]}).encode(), "ended_at"),
        (json.dumps({"plays": [{"item": "x"}]}).encode(), "started_at"),
        (json.dumps({"plays": "x"}).encode(), "plays"),
    ],
)
def test_malformed_batches_are_400_with_a_reason(server, store, body, fragment):
    token = enroll_terminal(store, "spk-001", zone="150102001001")
    answer = requests.post(f"{server.url}/api/plays", data=body,
                           headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    assert answer.status_code == 400
    assert answer.json()["error"] == "malformed" and fragment in answer.json()["message"]
    assert count_plays(store) == 0


def test_oversized_batches_are_413_and_wrong_method_405(server, store):
    token = enroll_terminal(store, "spk-001", zone="150102001001")
    grant(store, "zone:150102001001")
    auth = {"Authorization": f"Bearer {token}"}
    url = f"{server.url}/api/plays"
    too_many = requests.post(url, json={"plays": [play(minute=i) for i in range(MAX_PLAYS + 1)]}, headers=auth)
    assert too_many.status_code == 413 and too_many.json()["error"] == "batch_too_large"
    too_big = requests.post(url, data=b'{"plays": [], "pad": "' + b"x" * (1024 * 1024) + b'"}', headers=auth)
    assert too_big.status_code == 413

    def chunks() -> Iterator[bytes]:  # no Content-Length: the size limit must hold while reading
        yield b'{"plays": [], "pad": "'
        for _ in range(40):
            yield b"y" * 32768
        yield b'"}'

    streamed = requests.post(url, data=chunks(), headers=auth)
    assert streamed.status_code == 413
    assert count_plays(store) == 0
    exactly_max = requests.post(url, json={"plays": [play(minute=i) for i in range(MAX_PLAYS)]}, headers=auth)
    assert exactly_max.json()["accepted"] == MAX_PLAYS
    wrong = requests.get(url, headers=auth)
    assert wrong.status_code == 405 and wrong.headers["allow"] == "POST"
    assert requests.post(f"{server.url}/api/other", headers=auth).status_code == 404


def test_plays_are_logged_with_the_authenticated_terminal(server, store, settings):
    token = enroll_terminal(store, "scr-9", group="hall")
    requests.post(f"{server.url}/api/plays", json={"plays": [play()]}, headers={"Authorization": f"Bearer {token}"})
    server.stop()
    lines = (settings.data_dir / "logs" / "access.jsonl").read_text().splitlines()
    entry = json.loads(lines[-1])
    assert entry["terminal"] == "scr-9" and entry["kind"] == "api" and entry["status"] == 200


def test_record_plays_is_idempotent_on_postgresql(request, tmp_path):
    url = request.getfixturevalue("postgres_url")
    pg = Store(url, tmp_path / "blobs")
    pg.create_schema()
    token = enroll_terminal(pg, "pg-spk", zone="150102")
    terminal = authenticate(pg, token)
    grant(pg, "zone:150102")
    plays = parse_batch({"plays": [play(minute=1), play(minute=2), play(minute=1)]}).plays
    assert record_plays(pg, terminal, plays) == PlayOutcome(2, 1)
    assert record_plays(pg, terminal, plays) == PlayOutcome(0, 3)
    assert count_plays(pg) == 2


def test_players_on_another_origin_may_report_plays(server, store):
    """The screen player may be served from an S3 bucket's origin: the browser asks first (CORS preflight)."""
    token = enroll_terminal(store, "spk-001", zone="150102001001")
    grant(store, "zone:150102001001")
    url = f"{server.url}/api/plays"
    origin = {"Origin": "https://media.example-bucket.cn"}
    preflight = requests.options(url, headers={**origin, "Access-Control-Request-Method": "POST",
                                               "Access-Control-Request-Headers": "authorization, content-type"})
    assert preflight.status_code == 204
    assert preflight.headers["access-control-allow-origin"] == "*"
    assert "POST" in preflight.headers["access-control-allow-methods"]
    assert "authorization" in preflight.headers["access-control-allow-headers"]
    report = requests.post(url, json={"plays": [play()]}, headers={**origin, "Authorization": f"Bearer {token}"})
    assert report.status_code == 200 and report.headers["access-control-allow-origin"] == "*"
    refused = requests.post(url, json={"plays": [play()]}, headers={**origin, "Authorization": "Bearer wrong"})
    assert refused.status_code == 401 and refused.headers["access-control-allow-origin"] == "*"  # readable reason
    assert count_plays(store) == 1
