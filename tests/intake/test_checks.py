"""Automatic pre-checks: channel lengths, lexicon, local references, media."""

from __future__ import annotations

from PIL import Image

from rongmei.core.model import ItemMeta
from rongmei.core.settings import Lexicon
from rongmei.intake.checks import run_checks


def meta(**kw):
    base = {"id": "x", "title": "标题", "author": "作者", "summary": "摘要"}
    base.update(kw)
    return ItemMeta.model_validate(base)


def codes(results, severity=None):
    return {r.code for r in results if severity is None or r.severity.value == severity}


def test_wechat_title_limit_is_blocking_only_for_wechat(settings):
    long_title = "关于进一步加强全旗农村牧区人居环境整治工作的实施意见及配套措施说明"
    assert len(long_title) > 32
    on_wechat = run_checks(meta(title=long_title, channels=["wechat"]), "正文", {}, settings)
    assert "wechat.title_too_long" in codes(on_wechat, "blocking")
    web_only = run_checks(meta(title=long_title, channels=["web"]), "正文", {}, settings)
    assert not {c for c in codes(web_only) if c.startswith("wechat.")}


def test_lexicon_forbidden_sensitive_and_exact(settings):
    settings.lexicon = Lexicon(forbidden=["赌博"], sensitive=["群体性事件"], exact={"内蒙古自治区": ["内蒙自治区", "内蒙古自治州"]})
    body = "某地发生赌博。处置群体性事件。内蒙自治区与内蒙古自治区。"
    results = run_checks(meta(channels=["web"]), body, {}, settings)
    assert "lexicon.forbidden" in codes(results, "blocking")
    assert "lexicon.sensitive" in codes(results, "warning")
    exact = [r for r in results if r.code == "lexicon.exact"]
    assert len(exact) == 1 and "内蒙自治区" in exact[0].message and "内蒙古自治区" in exact[0].fix


def test_correct_official_name_is_not_flagged(settings):
    settings.lexicon = Lexicon(exact={"内蒙古自治区": ["内蒙古"]})
    results = run_checks(meta(channels=["web"]), "内蒙古自治区人民政府", {}, settings)
    assert "lexicon.exact" not in codes(results)


def test_missing_and_broken_local_images(settings, tmp_path):
    good = tmp_path / "good.png"
    Image.new("RGB", (8, 8)).save(good)
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not an image at all")
    body = "![a](good.png) ![b](missing.jpg) ![c](broken.jpg) [附件](docs/plan.pdf) [外链](https://example.org)"
    results = run_checks(meta(channels=["web"]), body, {"good.png": good, "broken.jpg": broken}, settings)
    messages = " ".join(r.message for r in results)
    assert "missing.jpg" in messages and "docs/plan.pdf" in messages and "broken.jpg" in messages
    assert "good.png" not in messages and "example.org" not in messages


def test_empty_media_file_is_blocking(settings, tmp_path):
    empty = tmp_path / "video.mp4"
    empty.write_bytes(b"")
    results = run_checks(meta(kind="video", channels=["web"]), "", {"video.mp4": empty}, settings)
    assert "media.empty" in codes(results, "blocking")


def test_missing_summary_is_a_warning_not_blocking(settings):
    results = run_checks(meta(summary="", channels=["web"]), "正文", {}, settings)
    assert codes(results) == {"summary.missing"} and not any(r.blocking for r in results)
