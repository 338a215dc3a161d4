"""Automatic pre-checks, run before any human sees an item.

Each finding is blocking (the drop is sent back to the editor) or a warning (shown to reviewers). A channel's
limits live in the channel (`Publisher.precheck`, `Publisher.check_front_matter`) and run here, so an over-long
WeChat title is caught at the door, not by the API.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from publishers import channels_of, registry_for
from rongmei.core.model import CheckResult, ItemMeta, Severity
from rongmei.core.settings import Lexicon, Settings
from rongmei.intake.drops import AUDIO_EXTENSIONS, IMAGE_EXTENSIONS, VIDEO_EXTENSIONS

MD_LINK = re.compile(r"(!?)\[([^\]]*)\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
HTML_SRC = re.compile(r"<(?:img|video|audio|source)\b[^>]*?\bsrc\s*=\s*[\"']([^\"']+)[\"']", re.I)

__all__ = [
    "CHECKS", "HTML_SRC", "MD_LINK", "Check", "blocking", "check_channels", "check_fields", "check_lexicon",
    "check_media", "check_references", "check_targets", "local_references", "media_problems", "run_checks",
    "warning"
]

Check = Callable[[ItemMeta, str, Mapping[str, Path], Settings], Iterable[CheckResult]]


def blocking(code: str, message: str, fix: str = "", channel: str | None = None) -> CheckResult:
    return CheckResult(code=code, severity=Severity.blocking, message=message, fix=fix, channel=channel)


def warning(code: str, message: str, fix: str = "", channel: str | None = None) -> CheckResult:
    return CheckResult(code=code, severity=Severity.warning, message=message, fix=fix, channel=channel)


def check_fields(meta: ItemMeta, body: str, files: Mapping[str, Path], settings: Settings) -> Iterable[CheckResult]:
    if not meta.summary:
        yield warning("summary.missing", "没有摘要（summary），微信摘要将取正文开头。", "建议写一句 60 字以内的摘要。")
    if meta.kind.value in ("article", "notice") and not body.strip():
        yield blocking("body.empty", "正文是空的。", "在稿件信息（--- 之间）下面写正文。")
    if meta.expires and meta.publish_at and meta.expires <= meta.publish_at:
        yield blocking("time.order", "下线时间（expires）早于定时发布时间（publish_at）。", "请检查两个时间。")
    if meta.source_url and not re.match(r"^https?://", meta.source_url):
        yield blocking("source_url.invalid", f"转载来源链接“{meta.source_url}”不是网址。", "以 https:// 开头。")


def check_channels(meta: ItemMeta, body: str, files: Mapping[str, Path], settings: Settings) -> Iterable[CheckResult]:
    """Every channel the item goes to exists, and the item fits it (the channel's own `precheck`)."""
    registry = registry_for(settings)
    for channel in channels_of(meta, settings):
        if channel in registry.publishers:
            yield from registry.publishers[channel].precheck(meta, body, files, settings)
        else:
            why = registry.errors.get(channel)
            yield blocking(
                "channel.unknown",
                f"发布渠道“{channel}”不存在" + (f"（渠道模块加载失败：{why}）" if why else "") + "。",
                "可用渠道：" + "、".join(sorted(registry.publishers)) + "；请改正 channels。",
            )


def _find_terms(text: str, terms: Iterable[str]) -> dict[str, int]:
    return {term: text.count(term) for term in terms if term and term in text}


def check_lexicon(meta: ItemMeta, body: str, files: Mapping[str, Path], settings: Settings) -> Iterable[CheckResult]:
    lexicon: Lexicon = settings.merged_lexicon()
    text = "\n".join([meta.title, meta.summary, body])
    for term, n in _find_terms(text, lexicon.forbidden).items():
        yield blocking("lexicon.forbidden", f"出现禁用词“{term}”（{n} 处）。", "请删除或改写这些地方。")
    for term, n in _find_terms(text, lexicon.sensitive).items():
        yield warning("lexicon.sensitive", f"出现敏感词“{term}”（{n} 处），请审核人员留意。", "确认用法是否妥当。")
    for right, wrongs in lexicon.exact.items():
        # A wrong form that is part of the right form (e.g. a shortened name) must not flag correct text.
        scrubbed = text.replace(right, "\0")
        for wrong, n in _find_terms(scrubbed, wrongs).items():
            yield blocking(
                "lexicon.exact",
                f"“{wrong}”写法不规范（{n} 处），规范写法是“{right}”。",
                f"把“{wrong}”改为“{right}”。",
            )


def local_references(body: str) -> list[tuple[str, str]]:
    """(kind, target) for each local link or image in the Markdown; kind is 'image' or 'link'."""
    refs: list[tuple[str, str]] = []
    for bang, _text, target in MD_LINK.findall(body):
        refs.append(("image" if bang else "link", target))
    refs += [("image", src) for src in HTML_SRC.findall(body)]
    return [(k, t) for k, t in refs if not re.match(r"^([a-z][a-z0-9+.-]*:|#|//)", t, re.I)]


def check_references(meta: ItemMeta, body: str, files: Mapping[str, Path], settings: Settings) -> Iterable[CheckResult]:
    for kind, target in local_references(body):
        rel = target.split("#", 1)[0].split("?", 1)[0].removeprefix("./")
        label = "图片" if kind == "image" else "链接的文件"
        if rel not in files:
            yield blocking(
                f"{kind}.missing",
                f"正文引用的{label}“{target}”不在稿件文件夹里。",
                "把该文件放进稿件文件夹（与 index.md 同一层或其子文件夹），或改正文件名（区分大小写）。",
            )
    for rel, path in files.items():
        if Path(rel).suffix.lower() in IMAGE_EXTENSIONS:
            yield from _image_problems(rel, path)


def _image_problems(rel: str, path: Path) -> Iterable[CheckResult]:
    try:
        with Image.open(path) as image:
            image.verify()
    except Image.DecompressionBombError:
        yield blocking("image.bomb", f"图片 {rel} 像素数大得异常，可能是恶意文件。", "请换一张正常尺寸的图片。")
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        yield blocking("image.broken", f"图片 {rel} 已损坏或不是图片文件。", "请重新导出该图片（JPG 或 PNG）。")


def check_media(meta: ItemMeta, body: str, files: Mapping[str, Path], settings: Settings) -> Iterable[CheckResult]:
    for rel, path in files.items():
        suffix = Path(rel).suffix.lower()
        if suffix not in VIDEO_EXTENSIONS | AUDIO_EXTENSIONS:
            continue
        if path.stat().st_size == 0:
            yield blocking("media.empty", f"文件 {rel} 是空的（0 字节），可能没有复制完整。", "请重新复制该文件。")
            continue
        role = "video" if suffix in VIDEO_EXTENSIONS else "audio"
        yield from media_problems(path, role, settings, rel)


def media_problems(path: Path, role: str, settings: Settings, rel: str) -> Iterable[CheckResult]:
    """Probe a media file; the media package (issue 5) knows the details."""
    try:
        from rongmei.renditions.probe import media_problems as probe_problems
    except ImportError:
        return []
    results = list(probe_problems(path, role, settings))
    for result in results:
        if rel not in result.message:
            result.message = f"{rel}：{result.message}"
    return results


def check_targets(meta: ItemMeta, body: str, files: Mapping[str, Path], settings: Settings) -> Iterable[CheckResult]:
    """The front-matter fields channels own (zones, screen groups), for every item whatever its channels."""
    for channel in registry_for(settings).publishers.values():
        yield from channel.check_front_matter(meta, settings)


CHECKS: tuple[Check, ...] = (
    check_fields,
    check_channels,
    check_lexicon,
    check_references,
    check_media,
    check_targets,
)


def run_checks(meta: ItemMeta, body: str, files: Mapping[str, Path], settings: Settings) -> list[CheckResult]:
    results: list[CheckResult] = []
    for check in CHECKS:
        results.extend(check(meta, body, files, settings))
    return results
