"""Sign-off rules on plain functions: approvals cover the renditions; a changed rendition voids them."""

from __future__ import annotations

import pyotp

from rongmei.core.settings import Zone
from rongmei.intake.ingest import ingest_inbox
from rongmei.review.prepare import prepare_renditions
from rongmei.review.reviewers import _load_secrets, enroll
from rongmei.review.signoff import apply_signoff, stage_position
from rongmei.storage.snapshots import load_version
from tests.support.drops import write_drop
from tests.support.paths import ROOT


def code(settings, reviewer_id):
    return pyotp.TOTP(_load_secrets(settings)[reviewer_id]["secret"]).now()


def test_changed_rendition_voids_earlier_approvals(settings, store):
    settings.zones = [Zone(code="150121", name="示例旗")]
    write_drop(settings.inbox, "spoken", "title: 有声新闻\nauthor: 张三\nchannels: [loudspeakers]",
               "今天是2026年11月26日，全旗秋粮产量达到12.5万吨。")
    (outcome,) = ingest_inbox(settings, store)
    assert outcome.status == "ingested"
    enroll(store, settings, "ed", "编辑", ["editor"])

    def version():  # read again after each rendering: what a sign-off covers may have changed
        return load_version(store, outcome.version_id)

    assert prepare_renditions(store, settings, version()) is False  # first time: nothing to void
    first = settings.stages[0]
    result = apply_signoff(store, settings, version(), first, "first-0",
                           {"decision": "approve", "reviewer": "ed", "code": code(settings, "ed")})
    assert result.status == "approved"
    assert stage_position(store, settings, version()).name == "second"

    assert prepare_renditions(store, settings, version()) is False  # same inputs: reused, still valid
    assert stage_position(store, settings, version()).name == "second"

    settings.media.loudness_lufs = -20.0  # the loudspeaker audio comes out different
    assert prepare_renditions(store, settings, version()) is True
    assert stage_position(store, settings, version()).name == "first"  # 初审 must be signed again


def test_render_progress_shows_in_status(settings, store):
    from rongmei.cli.status import collect, format_table

    settings.zones = [Zone(code="150121", name="示例旗")]
    write_drop(settings.inbox, "progress", "title: 进度测试\nauthor: 张三\nchannels: [loudspeakers]", "广播稿正文。")
    (outcome,) = ingest_inbox(settings, store)
    seen = []

    def watch(label, fraction):
        seen.append((format_table(collect(store, None, settings)), collect(store, "progress", settings)))

    prepare_renditions(store, settings, load_version(store, outcome.version_id), watch)
    assert seen, "rendering reported no progress"
    table, detail = seen[-1]
    assert "渲染中" in table and "rendering" in detail[0]["versions"][0]
    assert "rendering" not in collect(store, "progress", settings)[0]["versions"][0]  # gone when done


def test_sample_video_and_audio_get_every_rendition_and_reviewers_see_them(settings, store):
    import shutil

    import imageio_ffmpeg  # noqa: F401 - the ffmpeg the renditions use

    from rongmei.core.settings import ScreenGroup
    from rongmei.delivery.release import build_release
    from rongmei.review.prepare import prepare_preview
    from rongmei.review.signoff import form_description
    from tests.support.drops import age_tree

    samples = ROOT / "content" / "samples"
    settings.zones = [Zone(code="150121", name="示例旗"), Zone(code="150121101", name="巴彦镇", parent="150121")]
    settings.screen_groups = [ScreenGroup(id="square", name="文化广场")]
    shutil.copytree(samples / "video-market", settings.inbox / "video-market")
    for name in ("morning-news.mp3", "morning-news.yaml"):
        shutil.copy2(samples / name, settings.inbox / name)
    for p in settings.inbox.iterdir():
        age_tree(p)
    outcomes = {o.item_id: o for o in ingest_inbox(settings, store)}
    assert {o.status for o in outcomes.values()} == {"ingested"}, [o.problems for o in outcomes.values()]

    expected = {
        "video-market": {"video_web", "video_screen", "thumbnail", "cover_900x383", "cover_1x1", "share_image",
                         "screen_card"},
        "morning-news": {"loudspeaker_audio", "share_image"},
    }
    for item_id, keys in expected.items():
        version_id = outcomes[item_id].version_id
        prepare_renditions(store, settings, load_version(store, version_id))
        rendered = load_version(store, version_id)
        token = prepare_preview(store, settings, rendered, build_release(store, rendered))
        renditions = rendered.renditions
        assert keys <= set(renditions), (item_id, sorted(renditions))
        description = form_description(store, settings, load_version(store, version_id), settings.stages[0])
        assert f"/preview/{token}/" in description
        for key in keys & {"cover_900x383", "screen_card", "thumbnail", "share_image"}:
            assert f"/preview/{token}/renditions/{key}." in description
            assert list((settings.data_dir / "preview" / token / "renditions").glob(f"{key}.*"))
    with store.session() as s:
        audio = store.latest_version(s, "morning-news").renditions["loudspeaker_audio"]
        video = store.latest_version(s, "video-market").renditions
    assert audio["source"] == "recording" and audio["channels"] == 1 and abs(audio["integrated_lufs"] + 16) <= 1
    assert video["video_screen"]["width"] == 1920 and video["video_screen"]["height"] == 1080
    assert video["video_web"]["pix_fmt"] == "yuv420p"


def test_code_is_checked_at_submission_time_not_when_the_worker_gets_to_it(settings, store):
    import time

    write_drop(settings.inbox, "late", "title: 迟到的签字\nauthor: 张三\nchannels: [web]")
    (outcome,) = ingest_inbox(settings, store)
    enroll(store, settings, "ed", "编辑", ["editor"])
    submitted = time.time() - 300  # the form was submitted five minutes before the run resumed
    totp = pyotp.TOTP(_load_secrets(settings)["ed"]["secret"])
    form = {"decision": "approve", "reviewer": "ed", "code": totp.at(submitted)}
    stage = settings.stages[0]
    version = load_version(store, outcome.version_id)
    stale = apply_signoff(store, settings, version, stage, "first-0", form)
    assert stale.status == "refused"  # checked against "now", the code has long expired
    on_time = apply_signoff(store, settings, version, stage, "first-1", form, at=submitted)
    assert on_time.status == "approved"
