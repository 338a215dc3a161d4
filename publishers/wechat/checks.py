"""WeChat's limits, found before anything is sent (issue 4: limits belong in the pre-checks).

The automatic pre-checks run these through `WeChatPublisher.precheck`, and the channel runs them again just
before creating a draft, so an over-long title is the editor's to fix, not an API error.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from publishers.wechat.formatting import DIGEST_LIMIT, is_external, wechat_html
from publishers.wechat.images import local_path, markdown_images
from rongmei.core.model import CheckResult, ItemMeta, Severity

__all__ = ["AUTHOR_LIMIT", "CONTENT_BYTES", "CONTENT_CHARS", "RAW_TAG", "TITLE_LIMIT", "wechat_checks"]

TITLE_LIMIT = 32  # documented; users report 64 works, but 32 is what WeChat promises
AUTHOR_LIMIT = 16
CONTENT_CHARS = 20000
CONTENT_BYTES = 1024 * 1024
RAW_TAG = re.compile(r"</?[a-zA-Z][a-zA-Z0-9]*(\s[^>]*)?/?>")


def wechat_checks(meta: ItemMeta, body: str, files: Iterable[str] = ()) -> list[CheckResult]:
    """WeChat's limits, found before anything is sent (issue 4: limits belong in the pre-checks)."""
    found: list[CheckResult] = []

    def add(code: str, severity: Severity, message: str, fix: str) -> None:
        found.append(CheckResult(code=f"wechat.{code}", severity=severity, message=message, fix=fix, channel="wechat"))

    if len(meta.title) > TITLE_LIMIT:
        add("title_too_long", Severity.blocking, f"标题有 {len(meta.title)} 字，公众号最多 {TITLE_LIMIT} 字",
            f"把标题缩短到 {TITLE_LIMIT} 字以内")
    if len(meta.author) > AUTHOR_LIMIT:
        add("author_too_long", Severity.blocking, f"作者有 {len(meta.author)} 字，公众号最多 {AUTHOR_LIMIT} 字",
            "缩短作者署名")
    if len(meta.summary) > DIGEST_LIMIT:
        add("summary_too_long", Severity.warning, f"摘要有 {len(meta.summary)} 字，公众号摘要最多 {DIGEST_LIMIT} 字，将被截断",
            f"把摘要缩短到 {DIGEST_LIMIT} 字以内")
    names = {local_path(f) for f in files}
    for src in markdown_images(body):
        if is_external(src):
            add("external_image", Severity.warning, f"外链图片 {src} 会被微信过滤，不会出现在文章里",
                "把图片放进稿件文件夹，用相对路径引用")
        elif files and local_path(src) not in names:
            add("missing_image", Severity.blocking, f"正文引用的图片 {src} 不在稿件文件夹里", "补上图片或改正路径")
    if RAW_TAG.search(re.sub(r"```.*?```|`[^`]*`", "", body, flags=re.DOTALL)):
        add("raw_html", Severity.warning, "正文里有 HTML 标签，公众号版本会把它们原样显示为文字",
            "改用 Markdown 写法（加粗用 **文字**，换行用空行）")
    html = wechat_html(body, image_url=lambda src: "" if is_external(src) else "http://mmbiz.qpic.cn/x/0")
    if len(html) >= CONTENT_CHARS or len(html.encode("utf-8")) >= CONTENT_BYTES:
        add("content_too_long", Severity.blocking, f"排版后的正文有 {len(html)} 字符，公众号要求少于 {CONTENT_CHARS}",
            "删减正文或拆成两篇")
    return found
