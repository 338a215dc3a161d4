"""SIGKILL one flow run of the worker at a named point (renditions, a sign-off, a publish, WeChat's poll); the
rest of `rongmei up` keeps running. After one reconciler pass the work goes on, and nothing is sent twice."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from rongmei.renditions.probe import probe
from rongmei.storage.tables import LedgerEntry, SignOff
from tests.support.faults import FaultSystem, wait_until
from tests.support.invariants import check_invariants, wechat_articles
from tests.support.newsroom import Newsroom

# The first scenario on a server pays for starting it (and the desk) on top of its own work: minutes when loaded.
pytestmark = [pytest.mark.prefect, pytest.mark.faults, pytest.mark.timeout(2400)]


def reconcile(system: FaultSystem) -> None:
    done = system.cli("reconcile")
    assert done.returncode == 0, f"rongmei reconcile failed:\n{done.stdout}\n{done.stderr}"


def sign_through(newsroom: Newsroom, item_id: str, stages: tuple[str, ...] = ("first", "second", "final")) -> None:
    for stage in stages:
        newsroom.sign(item_id, stage)


def test_killed_during_the_transcode_no_encoder_is_left_and_the_video_goes_out(county, desk, newsroom, wechat):
    run, encoders = desk.transcoding_run, desk.encoders
    assert run is not None and encoders, "the review run held in the transcode has no ffmpeg child: nothing to check"
    county.kill(run)
    # The encoder of a dead run must not go on writing (for a long video: minutes of CPU, and a file the next
    # run writes too). It is frozen, so only the kernel's parent-death signal can end it.
    wait_until(lambda: not any(p.same() for p in encoders), "the killed run's ffmpeg gone", 60)
    newsroom.await_run_ended("r-video")
    reconcile(county)  # the version waits in review with no live review run: a new one starts
    sign_through(newsroom, "r-video")
    newsroom.await_published("r-video", ["web"])
    with newsroom.store.session() as session:
        video = newsroom.store.latest_version(session, "r-video").renditions["video_web"]
    made = probe(newsroom.store.blob_path(video["sha256"]))
    assert made.duration_s == pytest.approx(20.0, abs=0.5), "the re-made web video is not the whole clip"
    check_invariants(county, wechat.state)


def test_killed_while_a_signoff_is_committed_the_stage_asks_again_and_counts_once(county, desk, newsroom, wechat):
    county.arm("review.before_signoff_commit", "kill")
    newsroom.sign("k-signoff", "first")
    county.await_fired("review.before_signoff_commit")
    newsroom.await_run_ended("k-signoff")
    assert newsroom.signed_stages("k-signoff") == set()  # nothing of the half-made sign-off was kept
    reconcile(county)
    sign_through(newsroom, "k-signoff")  # the new run asks 初审 again, under the same form key
    newsroom.await_published("k-signoff", ["web"])
    with newsroom.store.session() as session:
        version = newsroom.store.latest_version(session, "k-signoff")
        stages = [s.stage for s in session.scalars(select(SignOff).where(SignOff.version_id == version.id))]
        entries = session.scalars(select(LedgerEntry).where(LedgerEntry.item_id == "k-signoff",
                                                            LedgerEntry.action.in_(("signed", "approved")))
                                  .order_by(LedgerEntry.seq)).all()
    assert sorted(stages) == ["final", "first", "second"]  # 初审 counted once, not twice
    assert [e.details["stage"] for e in entries] == ["first", "second", "final"]
    check_invariants(county, wechat.state)


@pytest.mark.parametrize(("item_id", "point", "channels"), [
    ("p-claim", "delivery.after_claim", ["web", "wechat"]),  # claimed, the channel not yet called
    ("p-record", "delivery.before_record", ["web", "wechat"]),  # the channel answered, nothing recorded
    ("w-poll", "wechat.poll", ["wechat"]),  # submitted, the article out, during freepublish/get
    ("w-submit", "wechat.after_submit", ["wechat"]),  # submit answered, its publish_id not yet recorded
])
def test_killed_during_a_publish_each_channel_gets_it_once(county, desk, newsroom, wechat, item_id, point, channels):
    county.arm(point, "kill")
    newsroom.sign(item_id, "final")
    county.await_fired(point)
    newsroom.await_run_ended(item_id)
    newsroom.await_leases_expired(item_id)  # the dead run's claim runs out; then it may be taken over
    reconcile(county)
    newsroom.await_published(item_id, channels)
    submitted, articles = wechat_articles(wechat.state)
    title = desk.items[item_id].title
    if "wechat" in channels:
        assert (submitted[title], articles[title]) == (1, 1)
    check_invariants(county, wechat.state)
