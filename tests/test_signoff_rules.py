"""Sign-off rules on plain functions: approvals cover the renditions; a changed rendition voids them."""

from __future__ import annotations

import pyotp

from conftest import write_drop
from rongmei.ingest import ingest_inbox
from rongmei.prepare import prepare_renditions
from rongmei.review import apply_signoff, stage_position
from rongmei.reviewers import _load_secrets, enroll
from rongmei.settings import Zone


def code(settings, reviewer_id):
    return pyotp.TOTP(_load_secrets(settings)[reviewer_id]["secret"]).now()


def test_changed_rendition_voids_earlier_approvals(settings, store):
    settings.zones = [Zone(code="150121", name="示例旗")]
    write_drop(settings.inbox, "spoken", "title: 有声新闻\nauthor: 张三\nchannels: [loudspeakers]",
               "今天是2026年11月26日，全旗秋粮产量达到12.5万吨。")
    (outcome,) = ingest_inbox(settings, store)
    assert outcome.status == "ingested"
    enroll(store, settings, "ed", "编辑", ["editor"])
    assert prepare_renditions(store, settings, outcome.version_id) is False  # first time: nothing to void
    first = settings.stages[0]
    result = apply_signoff(store, settings, outcome.version_id, first, "first-0",
                           {"decision": "approve", "reviewer": "ed", "code": code(settings, "ed")})
    assert result.status == "approved"
    assert stage_position(store, settings, outcome.version_id).name == "second"

    assert prepare_renditions(store, settings, outcome.version_id) is False  # same inputs: reused, still valid
    assert stage_position(store, settings, outcome.version_id).name == "second"

    settings.media.loudness_lufs = -20.0  # the loudspeaker audio comes out different
    assert prepare_renditions(store, settings, outcome.version_id) is True
    assert stage_position(store, settings, outcome.version_id).name == "first"  # 初审 must be signed again


def test_render_progress_shows_in_status(settings, store):
    from rongmei.status import collect, format_table

    settings.zones = [Zone(code="150121", name="示例旗")]
    write_drop(settings.inbox, "progress", "title: 进度测试\nauthor: 张三\nchannels: [loudspeakers]", "广播稿正文。")
    (outcome,) = ingest_inbox(settings, store)
    seen = []

    def watch(label, fraction):
        seen.append((format_table(collect(store, None, settings)), collect(store, "progress", settings)))

    prepare_renditions(store, settings, outcome.version_id, watch)
    assert seen, "rendering reported no progress"
    table, detail = seen[-1]
    assert "渲染中" in table and "rendering" in detail[0]["versions"][0]
    assert "rendering" not in collect(store, "progress", settings)[0]["versions"][0]  # gone when done
