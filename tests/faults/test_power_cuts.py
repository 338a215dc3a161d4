"""SIGKILL the whole `rongmei up` (its process group, everything it started, Prefect's PostgreSQL) as a power cut
does, then start it again on the same data dir: during a sign-off wait (an item paused at 复审), during a
publish (WeChat's draft made, not yet submitted), and during the ingest of 200 drops."""

from __future__ import annotations

import hashlib

import pytest
from sqlalchemy import func, select

from rongmei.storage.tables import Version
from tests.support.faults import FaultSystem, wait_until
from tests.support.invariants import check_invariants, wechat_articles
from tests.support.media import make_image

# The first scenario on a server pays for starting it (and the desk) on top of its own work: minutes when loaded.
pytestmark = [pytest.mark.prefect, pytest.mark.faults, pytest.mark.timeout(2400)]


@pytest.fixture(scope="module")
def cut_while_waiting_and_publishing(county: FaultSystem, desk, newsroom) -> None:
    """One cut for two scenarios (a restart costs most of a minute): s-wait paused at 复审, c-publish held
    after its WeChat draft was made."""
    newsroom.waiting_form("s-wait", "second-0")
    county.arm("wechat.after_draft", "hold")
    newsroom.sign("c-publish", "final")
    county.await_reached("wechat.after_draft")
    county.power_cut()
    county.start()


def test_power_cut_during_a_signoff_wait(county, desk, newsroom, wechat, cut_while_waiting_and_publishing):
    assert newsroom.signed_stages("s-wait") == {"first"}
    newsroom.sign("s-wait", "second")  # the form waited through the cut, in Prefect's database
    newsroom.sign("s-wait", "final")
    newsroom.await_published("s-wait", ["web", "wechat"])
    submitted, articles = wechat_articles(wechat.state)
    assert (submitted["复审等待时断电"], articles["复审等待时断电"]) == (1, 1)
    check_invariants(county, wechat.state)


def test_power_cut_during_a_publish(county, desk, newsroom, wechat, cut_while_waiting_and_publishing):
    newsroom.await_leases_expired("c-publish")
    # The dead publish run still shows as running until the reconciler judges it dead (no heartbeat); passes
    # by hand until the delivery is finished (under `rongmei up` the scheduled reconciler does this).
    wait_until(lambda: county.cli("reconcile").returncode == 0 and all(
        state == "succeeded" for state, _ in newsroom.deliveries("c-publish").values()) and
        len(newsroom.deliveries("c-publish")) == 2, "c-publish delivered after the cut", 600, every=10,
        diagnose=lambda: newsroom.describe("c-publish"))
    title = desk.items["c-publish"].title
    submitted, articles = wechat_articles(wechat.state)
    assert (submitted[title], articles[title]) == (1, 1)
    drafts = [d for d in wechat.state.snapshot()["drafts"] if d["articles"][0]["title"] == title]
    assert drafts == []  # the draft made before the cut was the one submitted: no second draft left behind
    check_invariants(county, wechat.state)


BULK = 200


def bulk_ids() -> list[str]:
    return [f"bulk-{n:03d}" for n in range(BULK)]


def test_power_cut_during_ingest_of_200_drops(county, newsroom, wechat, tmp_path):
    settings = county.settings
    for n, item_id in enumerate(bulk_ids()):
        photo = make_image(tmp_path / f"{item_id}.png", (64, 48), color=(n % 256, 80, 160))
        county.drop(item_id, f"id: {item_id}\ntitle: 批量稿件 {n}\nauthor: 故障演练\nchannels: [web]",
                    f"第 {n} 篇。\n\n![图](photo.png)", {"photo.png": photo.read_bytes()})

    def archived() -> int:
        return sum(1 for p in settings.archive.glob("bulk-*") if p.is_dir())

    wait_until(lambda: archived() >= 50, "a quarter of the drops archived", 600, every=0.2)
    county.arm("ingest.before_archive_move", "hold")
    county.await_reached("ingest.before_archive_move")  # one version committed, its original not yet moved
    county.power_cut()
    in_flight = archived()
    assert 0 < in_flight < BULK, "the cut did not land during the ingest"
    county.start()

    def all_in() -> bool:
        left = [p for p in settings.inbox.iterdir() if p.name.startswith("bulk-")]
        return not left and versions() == {item_id: 1 for item_id in bulk_ids()}

    def versions() -> dict[str, int]:
        with newsroom.store.session() as session:
            rows = session.execute(select(Version.item_id, func.count()).where(Version.item_id.like("bulk-%"))
                                   .group_by(Version.item_id))
            return dict(rows.all())

    # Ingest resumes once the run the cut left "running" is judged dead; the reconciler (scheduled under `rongmei
    # up`, here also by hand) does that and starts the reviews the killed run never asked for.
    wait_until(lambda: all_in() or (county.cli("reconcile") and False), "all 200 drops ingested once", 900,
               every=15, diagnose=lambda: f"versions {len(versions())}, inbox "
               f"{sorted(p.name for p in settings.inbox.iterdir())[:10]}\n{county.log_tail()}")
    assert not any(settings.rejected.glob("bulk-*")), "a drop was rejected because of the cut"
    for item_id in bulk_ids():  # each original exactly once, in its version's archive folder
        assert [p.name for p in (settings.archive / item_id).iterdir()] == ["v1"]
    originals = {hashlib.sha256((settings.archive / i / "v1" / "photo.png").read_bytes()).hexdigest()
                 for i in bulk_ids()}
    assert len(originals) == BULK
    check_invariants(county, wechat.state)
