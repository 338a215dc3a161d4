"""Delivery leases and write-ahead: nothing stranded, nothing twice (issue 13, items 2 and 3).

A delivery killed at each named step (a real SIGKILL of a real process, against the WeChat stand-in over HTTP)
is taken over by the next run once its lease has expired, which resumes at the next step: one draft, one cover
material, each image uploaded once, one submit, one article. A live lease makes a second run skip.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import ClassVar

import pytest
import requests
from PIL import Image
from sqlalchemy import select

from publishers import Registry
from publishers.base import Publisher, Receipt, Release
from rongmei.core.settings import Settings
from rongmei.delivery.deliveries import deliver
from rongmei.delivery.grants import as_utc
from rongmei.delivery.leases import LeaseKeeper, claim, lease_is_live
from rongmei.storage.snapshots import load_version
from rongmei.storage.store import Store
from rongmei.storage.tables import Delivery, LedgerEntry
from standins.wechat import StandIn, start_standin
from tests.support.deliver_once import quick_registry
from tests.support.drops import ingest_staged
from tests.support.paths import ROOT
from tests.support.review import sign_all_stages

KILL_POINTS = ["delivery.after_claim", "wechat.after_draft", "wechat.before_submit", "wechat.after_submit",
               "wechat.poll", "delivery.before_record"]


def jpeg(color: tuple[int, int, int]) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (40, 30), color).save(out, "JPEG")
    return out.getvalue()


@pytest.fixture
def standin() -> Iterator[StandIn]:
    server = start_standin(app_id="wxlease01", secret="lease-secret", publish_seconds=0)
    yield server
    server.stop()


@pytest.fixture
def wechat_settings(settings: Settings, standin: StandIn, tmp_path: Path) -> Settings:
    settings.wechat = {"app_id": "wxlease01", "app_secret": "lease-secret", "base_url": standin.base_url}
    settings.delivery_lease_seconds = 1.0  # a dead run's delivery is taken over a second later
    (tmp_path / "faults").mkdir()
    return settings


def standin_state(standin: StandIn) -> dict:
    return requests.get(f"{standin.base_url}/_standin/state", timeout=30).json()


def calls(state: dict, endpoint: str) -> int:
    return sum(n for key, n in state["calls"].items() if key.endswith(f" {endpoint}"))


def signed_article(settings: Settings, store: Store, name: str) -> int:
    version_id = ingest_staged(
        settings, store, name, f"title: 乡村振兴新图景{name[-4:]}\nauthor: 张三\nchannels: [wechat]",
        "田野里一派丰收景象。\n\n![玉米](images/corn.jpg)\n\n![大豆](images/beans.jpg)\n",
        files={"images/corn.jpg": jpeg((200, 180, 40)), "images/beans.jpg": jpeg((120, 90, 30))})
    sign_all_stages(store, settings, version_id, prefix=name)
    return version_id


def deliver_in_a_process_killed_at(point: str, settings: Settings, version_id: int, faults: Path) -> int:
    (faults / point).write_text("kill", encoding="utf-8")
    fields = {"content_dir": str(settings.content_dir), "data_dir": str(settings.data_dir),
              "wechat": settings.wechat, "delivery_lease_seconds": settings.delivery_lease_seconds}
    env = {**os.environ, "RONGMEI_FAULTS_DIR": str(faults), "PYTHONPATH": str(ROOT)}
    process = subprocess.run(
        [sys.executable, "-m", "tests.support.deliver_once",
         json.dumps({"settings": fields, "version_id": version_id, "channel": "wechat"})],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert not (faults / point).exists(), f"{point} was never reached: {process.stdout}{process.stderr}"
    return process.returncode


def delivery_row(store: Store, version_id: int) -> Delivery:
    with store.session() as session:
        return session.scalars(select(Delivery).where(Delivery.version_id == version_id)).one()


def wait_for_lease_to_expire(store: Store, version_id: int, deadline: float = 120.0) -> None:
    give_up = time.monotonic() + deadline
    while lease_is_live(delivery_row(store, version_id)):
        assert time.monotonic() < give_up, "the dead run's lease never expired"
        time.sleep(0.2)


def ledger_actions(store: Store, item_id: str) -> list[str]:
    with store.session() as session:
        return list(session.scalars(select(LedgerEntry.action).where(LedgerEntry.item_id == item_id)
                                    .order_by(LedgerEntry.seq)))


@pytest.mark.parametrize("point", KILL_POINTS)
def test_a_publish_killed_at_any_step_is_taken_over_and_never_repeats_a_remote_step(
        point, wechat_settings, store, standin, tmp_path):
    settings = wechat_settings
    name = f"lease-{KILL_POINTS.index(point)}-kill"
    version_id = signed_article(settings, store, name)

    assert deliver_in_a_process_killed_at(point, settings, version_id, tmp_path / "faults") == -9
    left = delivery_row(store, version_id)
    assert left.state == "in_progress" and left.lease_holder  # stranded, but owned by a (dead) run

    wait_for_lease_to_expire(store, version_id)
    result = deliver(store, settings, load_version(store, version_id), "wechat", registry=quick_registry(settings))

    assert result.state == "succeeded", result.message
    seen = standin_state(standin)
    assert len(seen["publishes"]) == 1 and len(seen["articles"]) == 1  # one submit, one article
    assert calls(seen, "draft/add") == 1
    assert calls(seen, "material/add_material") == 1  # the cover: a permanent material, made once
    assert calls(seen, "media/uploadimg") == 2  # each body image once
    row = delivery_row(store, version_id)
    assert row.attempts == 2 and row.lease_holder == "" and row.remote_id == seen["articles"][0]["article_id"]
    actions = ledger_actions(store, name)
    assert actions.count("delivery_taken_over") == 1 and actions.count("published") == 1


def test_a_second_run_skips_a_delivery_another_live_run_holds(wechat_settings, store, standin):
    settings = wechat_settings
    version_id = signed_article(settings, store, "lease-busy")
    version = load_version(store, version_id)
    held = claim(store, version, "wechat", "publish", holder="run-a/host/1/abcd", lease_seconds=600)
    assert held.previous_attempt == {} and not held.busy_with

    result = deliver(store, settings, version, "wechat", registry=quick_registry(settings))

    assert result.state == "in_progress" and "另一个发布任务正在发送" in result.message
    assert calls(standin_state(standin), "draft/add") == 0  # the channel was not called
    assert delivery_row(store, version_id).lease_holder == "run-a/host/1/abcd"


def test_a_run_presumed_dead_stops_at_its_next_record_and_does_not_overwrite_the_outcome(settings, store):
    version_id = ingest_staged(settings, store, "lease-lost", "title: 租约丢失\nauthor: 张三\nchannels: [web]")
    sign_all_stages(store, settings, version_id, prefix="lease-lost")
    version = load_version(store, version_id)
    first = claim(store, version, "web", "publish", holder="slow/host/1/aaaa", lease_seconds=0)  # over at once
    keeper = LeaseKeeper(store, first.delivery.id, "slow/host/1/aaaa", 600)  # not started: it only records
    second = claim(store, version, "web", "publish", holder="new/host/2/bbbb", lease_seconds=600)
    assert second.taken_over and not second.busy_with

    from publishers.base import LeaseLost

    with pytest.raises(LeaseLost):
        keeper.record(media_id="from-the-slow-run")
    row = delivery_row(store, version_id)
    assert row.lease_holder == "new/host/2/bbbb" and "media_id" not in (row.details or {})


class TakenOverMidCall(Publisher):
    """Answers after another run has taken its delivery over (as when this process stalled past its lease)."""

    name = "stalled"
    calls: ClassVar[list[str]] = []

    def publish(self, release: Release) -> Receipt:
        store = Store.from_settings(self.settings)
        with store.session() as session:
            row = session.scalars(select(Delivery).where(Delivery.version_id == release.version_id)).one()
            row.lease_holder, row.lease_expires = "thief/host/9/cccc", datetime.now(UTC) + timedelta(hours=1)
        TakenOverMidCall.calls.append(release.item_id)
        return Receipt(remote_id="late-answer")


def test_an_answer_that_arrives_after_a_takeover_does_not_settle_the_delivery(settings, store):
    from rongmei.storage.tables import Item

    version_id = ingest_staged(settings, store, "lease-late", "title: 迟到的答复\nauthor: 张三\nchannels: [web]")
    sign_all_stages(store, settings, version_id, prefix="lease-late")
    result = deliver(store, settings, load_version(store, version_id), "stalled",
                     registry=Registry({"stalled": TakenOverMidCall}))
    assert TakenOverMidCall.calls == ["lease-late"]
    assert "另一个发布任务已接手" in result.message
    row = delivery_row(store, version_id)
    assert row.state == "in_progress" and row.lease_holder == "thief/host/9/cccc" and row.remote_id == ""
    assert "published" not in ledger_actions(store, "lease-late")
    with store.session() as session:
        assert session.get(Item, "lease-late").state == "approved"


def test_a_dead_runs_lease_expires_and_a_live_one_does_not(settings, store):
    version_id = ingest_staged(settings, store, "lease-clock", "title: 租约时钟\nauthor: 张三\nchannels: [web]")
    sign_all_stages(store, settings, version_id, prefix="lease-clock")
    version = load_version(store, version_id)
    claimed = claim(store, version, "web", "publish", holder="h/host/1/dddd", lease_seconds=600)
    row = delivery_row(store, version_id)
    assert lease_is_live(row) and as_utc(row.lease_expires) > datetime.now(UTC) + timedelta(seconds=500)
    assert not lease_is_live(row, now=datetime.now(UTC) + timedelta(seconds=601))
    with LeaseKeeper(store, claimed.delivery.id, "h/host/1/dddd", 600) as keeper:
        keeper.record(step="one")
    assert delivery_row(store, version_id).details["step"] == "one"
