"""The WeChat Official Account channel (公众号, issue 4): WeChat-flavoured HTML, then draft → publish → poll.

Rendering: WeChat's editor keeps inline `style` attributes and little else: no `<style>`, no classes, no
scripts, no external images, no external links. So the theme in `assets/wechat/theme.css` is inlined with
css_inline, external links become numbered notes at the end (links to mp.weixin.qq.com stay links), fragment
links are unwrapped, list items get a `<section>` and no whitespace between tags (the editor turns whitespace
into empty bullets), and code keeps its line breaks and indentation as `<br>` and `&nbsp;`.

Delivery: every inline image goes up with media/uploadimg, the cover with material/add_material, then
draft/add, freepublish/submit exactly once per delivery, and freepublish/get polled slowly. The API client is
`publishers.wechat_client`; the local stand-in of the service is `standins.wechat`.
"""

from __future__ import annotations

import dataclasses
import io
import logging
import posixpath
import re
import sys
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from functools import lru_cache
from html import unescape
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import css_inline
import markdown
import nh3
import requests
from markdown.extensions import Extension
from markdown.treeprocessors import Treeprocessor
from PIL import Image, ImageDraw, ImageFont

from publishers.base import Capabilities, Condition, Correction, Publisher, Receipt, Release, RenditionNeed
from publishers.wechat_client import (
    DailyBudget,
    WeChatClient,
    WeChatError,
    WeChatLimitError,
    WeChatMediaError,
    WeChatPublishFailed,
    WeChatQuotaExceeded,
    WeChatUnauthorized,
    file_lock,
)
from rongmei.core.model import CheckResult, ItemMeta, Severity
from rongmei.core.settings import Settings

__all__ = ["WeChatPublisher", "link_footnotes", "make_digest", "prepare_image", "wechat_checks", "wechat_html"]
log = logging.getLogger(__name__)

THEME = Path(__file__).resolve().parent.parent / "assets" / "wechat" / "theme.css"
ALLOWED_TAGS = {
    "section", "p", "br", "span", "strong", "b", "em", "i", "u", "del", "s", "sup", "sub", "a", "img",
    "h1", "h2", "h3", "h4", "h5", "h6", "ul", "ol", "li", "blockquote", "pre", "code", "hr",
    "table", "thead", "tbody", "tr", "th", "td",
}
BLOCK_TAGS = "section|p|ul|ol|li|table|thead|tbody|tr|th|td|h[1-6]|pre|blockquote|hr"
DIGEST_LIMIT = 120  # documented 128; users report 120 is what the editor accepts
SENTENCE_END = re.compile(r"(?<=[。！？!?；])")


def is_wechat_link(href: str) -> bool:
    """Links WeChat lets readers follow from an article: its own articles."""
    host = (urlsplit(href).hostname or "").lower()
    return host == "mp.weixin.qq.com"


def is_external(href: str) -> bool:
    return urlsplit(href).scheme in ("http", "https", "mailto", "ftp")


def link_footnotes(root: ET.Element, notes: list[str], footnotes: dict[str, str] | None = None) -> None:
    """Turn the links under `root` into what WeChat accepts, appending note texts to `notes` (1-based = index+1).

    External links become their text plus a superscript `[n]`; links to mp.weixin.qq.com stay; fragment and
    relative links keep only their text. `footnotes` maps Markdown footnote anchors (`#fn:x`) to their text:
    their references share the numbering with the links, in document order.
    """
    footnotes = footnotes or {}
    numbers: dict[str, int] = {}
    parents = {child: parent for parent in root.iter() for child in parent}
    for anchor in [a for a in root.iter("a")]:
        href = anchor.get("href", "").strip()
        parent = parents[anchor]
        if "footnote-ref" in anchor.get("class", "") and href in footnotes:
            if href not in numbers:
                notes.append(footnotes[href])
                numbers[href] = len(notes)
            parent.text = f"[{numbers[href]}]"  # the <sup> around the reference stays
            parent.remove(anchor)
            continue
        if href and is_wechat_link(href):
            anchor.attrib = {"href": href}
            continue
        text = "".join(anchor.itertext()).strip()
        note = None
        if href and is_external(href):
            url = href.removeprefix("mailto:")
            note = url if text in ("", url, href) else f"{text}：{url}"
        _unwrap(parent, anchor, suffix=None if note is None else _note_mark(notes, note))


def _note_mark(notes: list[str], note: str) -> ET.Element:
    notes.append(note)
    mark = ET.Element("sup")
    mark.text = f"[{len(notes)}]"
    return mark


def _unwrap(parent: ET.Element, element: ET.Element, suffix: ET.Element | None = None) -> None:
    """Replace `element` by its content (text and children), optionally followed by `suffix`."""
    index = list(parent).index(element)
    children = list(element)
    tail = element.tail or ""
    parent.remove(element)
    if suffix is not None:
        children.append(suffix)
    _append_text(parent, index, element.text or "")
    for offset, child in enumerate(children):
        parent.insert(index + offset, child)
    if children:
        children[-1].tail = (children[-1].tail or "") + tail
    else:
        _append_text(parent, index, tail)


def _append_text(parent: ET.Element, index: int, text: str) -> None:
    if not text:
        return
    if index == 0:
        parent.text = (parent.text or "") + text
    else:
        before = parent[index - 1]
        before.tail = (before.tail or "") + text


class WeChatTreeprocessor(Treeprocessor):
    """Runs after inline parsing and the footnotes extension, before unescaping (priority 1)."""

    def __init__(self, md: markdown.Markdown, image_url: Callable[[str], str]) -> None:
        super().__init__(md)
        self.image_url = image_url

    def run(self, root: ET.Element) -> None:
        footnotes = self._take_footnotes(root)
        self._images(root)
        notes: list[str] = []
        link_footnotes(root, notes, footnotes)
        self._lists(root)
        self._tables(root)
        if notes:
            box = ET.SubElement(root, "section", {"class": "rm-notes"})
            ET.SubElement(box, "p", {"class": "rm-notes-title"}).text = "注释"
            for number, note in enumerate(notes, 1):
                ET.SubElement(box, "p", {"class": "rm-note"}).text = f"[{number}] {note}"

    def _take_footnotes(self, root: ET.Element) -> dict[str, str]:
        """Detach the footnotes extension's list; return '#fn:x' -> plain text with link URLs spelled out."""
        found: dict[str, str] = {}
        for div in [d for d in root.iter("div") if d.get("class") == "footnote"]:
            for item in div.iter("li"):
                for holder in list(item.iter()):
                    for anchor in [a for a in holder if a.tag == "a"]:
                        if "footnote-backref" in anchor.get("class", ""):
                            holder.remove(anchor)  # its tail is empty: the extension puts it last
                        else:
                            href = anchor.get("href", "")
                            anchor.tail = (f"（{href}）" if is_external(href) and not is_wechat_link(href) else "") + (
                                anchor.tail or "")
                text = "".join(item.itertext()).replace("\xa0", " ").replace("&#160;", " ").strip()
                found[f"#{item.get('id', '')}"] = re.sub(r"\s+", " ", text)
            root.remove(div)
        return found

    def _images(self, root: ET.Element) -> None:
        parents = {child: parent for parent in root.iter() for child in parent}
        for image in list(root.iter("img")):
            parent = parents[image]
            src = image.get("src", "")
            url = self.image_url(src) if src else ""
            if not url:  # external or unknown: WeChat would strip it anyway
                _unwrap(parent, image)
                continue
            alt = image.get("alt", "")
            image.attrib = {"src": url, "alt": alt}
            alone = parent.tag == "p" and len(parent) == 1 and not (parent.text or "").strip() and not (
                image.tail or "").strip()
            if alone:
                parent.set("class", "rm-figure")
                if alt:
                    caption = ET.Element("p", {"class": "rm-caption"})
                    caption.text = alt
                    grand = parents[parent]
                    grand.insert(list(grand).index(parent) + 1, caption)

    @staticmethod
    def _lists(root: ET.Element) -> None:
        """Each item's own content goes into one <section>; nested lists follow it inside the <li>."""
        for item in list(root.iter("li")):
            nested = [c for c in item if c.tag in ("ul", "ol")]
            content = [c for c in item if c.tag not in ("ul", "ol")]
            section = ET.Element("section")
            section.text = item.text
            for child in content:
                item.remove(child)
                if child.tag == "p":  # loose lists: paragraphs would bring WeChat's big margins
                    child.tag = "section"
                section.append(child)
            item.text = None
            if (section.text or "").strip() or len(section):
                item.insert(0, section)
            for child in nested:
                child.tail = None

    @staticmethod
    def _tables(root: ET.Element) -> None:
        """Tables scroll sideways inside a <section> instead of squeezing Chinese text into slivers."""
        for parent in list(root.iter()):
            for index, child in enumerate(list(parent)):
                if child.tag == "table":
                    wrapper = ET.Element("section", {"class": "rm-table"})
                    wrapper.tail, child.tail = child.tail, None
                    parent.remove(child)
                    wrapper.append(child)
                    parent.insert(index, wrapper)


class WeChatExtension(Extension):
    def __init__(self, image_url: Callable[[str], str]) -> None:
        super().__init__()
        self.image_url = image_url

    def extendMarkdown(self, md: markdown.Markdown) -> None:
        # Raw HTML in a drop is shown as text: it could carry scripts, styles or external images.
        md.preprocessors.deregister("html_block")
        md.inlinePatterns.deregister("html")
        md.treeprocessors.register(WeChatTreeprocessor(md, self.image_url), "wechat", 1)


@lru_cache(maxsize=1)
def theme_css() -> str:
    return THEME.read_text(encoding="utf-8")


def wechat_html(markdown_text: str, *, image_url: Callable[[str], str], source_line: str = "") -> str:
    """The article body as WeChat's editor keeps it: inline styles only, every image via `image_url`.

    `image_url(src)` gets each Markdown image source and returns the URL to use (the uploaded mmbiz URL),
    or "" to leave the image out. `source_line` (plain text) is shown first, for reprints (转载).
    """
    md = markdown.Markdown(extensions=["tables", "fenced_code", "sane_lists", "footnotes",
                                       WeChatExtension(image_url)])
    body = md.convert(markdown_text)
    source = f'<section class="rm-source">{_escape(source_line)}</section>' if source_line else ""
    html = f'<section class="rm-article">{source}{body}</section>'
    html = css_inline.inline_fragment(html, theme_css())
    html = nh3.clean(html, tags=ALLOWED_TAGS, clean_content_tags={"script", "style"},
                     attributes={"*": {"style"}, "a": {"href"}, "img": {"src", "alt"}},
                     url_schemes={"http", "https"}, link_rel=None, strip_comments=True)
    html = _code_blocks(html)
    html = re.sub(r"<p\b[^>]*>[ \t\r\n]*</p>", "", html)  # left behind by images WeChat would not show
    # Whitespace next to block tags is what WeChat's editor turns into empty paragraphs and bullets.
    return re.sub(rf"[ \t\r\n]*(</?(?:{BLOCK_TAGS})\b[^>]*>)[ \t\r\n]*", r"\1", html).strip()


def _code_blocks(html: str) -> str:
    def keep_layout(match: re.Match[str]) -> str:
        code = match.group(2).rstrip("\n").replace("\t", "    ")
        lines = [re.sub(r" ", "&nbsp;", line) for line in code.split("\n")]
        return match.group(1) + "<br>".join(lines) + match.group(3)

    return re.sub(r"(<pre\b[^>]*>\s*<code\b[^>]*>)(.*?)(</code>\s*</pre>)", keep_layout, html, flags=re.DOTALL)


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def plain_text(markdown_text: str) -> str:
    """The body's paragraphs as plain text (no headings, images, code or tables): for the digest."""
    md = markdown.Markdown(extensions=["tables", "fenced_code", "sane_lists", "footnotes"])
    html = re.sub(r'<div class="footnote">.*?</div>|<sup\b.*?</sup>', "", md.convert(markdown_text), flags=re.DOTALL)
    paragraphs = re.findall(r"<p>(.*?)</p>", html, flags=re.DOTALL)
    texts = [unescape(re.sub(r"<[^>]+>", "", p)).strip() for p in paragraphs]
    return "".join(re.sub(r"\s+", " ", t) for t in texts if t and "\x02" not in t)


def make_digest(summary: str, markdown_text: str, limit: int = DIGEST_LIMIT) -> str:
    """The summary, or the body's first whole sentences, within `limit` characters."""
    text = summary.strip() or plain_text(markdown_text)
    if len(text) <= limit:
        return text
    digest = ""
    for sentence in SENTENCE_END.split(text):
        if len(digest) + len(sentence) > limit:
            break
        digest += sentence
    return digest or text[: limit - 1] + "…"


# Images ------------------------------------------------------------------------------------------------
IMAGE_LIMIT = 1024 * 1024 - 1  # media/uploadimg: JPG/PNG under 1 MB
MAX_WIDTH = 1280  # WeChat shows articles ~680 px wide; wider only costs bytes
COVER_SIZE = (900, 383)
COVER_NAMES = ("cover.jpg", "cover.jpeg", "cover.png", "cover.webp")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp")
CJK_FONTS = ("/usr/share/fonts/opentype/noto/NotoSansCJK-Bold.ttc", "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc")


def prepare_image(data: bytes, *, limit: int = IMAGE_LIMIT) -> tuple[bytes, str, str]:
    """An image WeChat accepts: JPEG or PNG under `limit` bytes (WebP, GIF, BMP converted) -> (bytes, ext, mime)."""
    try:
        image = Image.open(io.BytesIO(data))
        image.load()
    except (OSError, Image.DecompressionBombError) as exc:
        raise WeChatMediaError(f"图片无法读取（{exc}），请换一张 JPG/PNG 图片") from exc
    if image.format in ("JPEG", "PNG") and len(data) <= limit and image.width <= MAX_WIDTH:
        return data, ("jpg" if image.format == "JPEG" else "png"), Image.MIME[image.format]
    if image.width > MAX_WIDTH:
        image = image.resize((MAX_WIDTH, round(image.height * MAX_WIDTH / image.width)), Image.Resampling.LANCZOS)
    if image.format == "PNG" and image.mode in ("RGBA", "LA", "P"):
        out = io.BytesIO()
        image.save(out, "PNG", optimize=True)
        if out.tell() <= limit:
            return out.getvalue(), "png", "image/png"
    image = image.convert("RGB")  # JPEG from here on: transparency goes, size comes down
    for quality in (88, 80, 70, 60, 50):
        out = io.BytesIO()
        image.save(out, "JPEG", quality=quality, optimize=True, progressive=True)
        if out.tell() <= limit:
            return out.getvalue(), "jpg", "image/jpeg"
        image = image.resize((int(image.width * 0.8), int(image.height * 0.8)), Image.Resampling.LANCZOS)
    raise WeChatMediaError("图片压缩后仍超过 1 MB，请换一张较小的图片")


def plain_cover(title: str, center: str = "") -> bytes:
    """A plain 900×383 cover (title on a calm colour) for articles without any picture."""
    image = Image.new("RGB", COVER_SIZE, (176, 42, 48))
    draw = ImageDraw.Draw(image)
    font_path = next((p for p in CJK_FONTS if Path(p).exists()), None)
    if font_path:
        font = ImageFont.truetype(font_path, 44)
        small = ImageFont.truetype(font_path, 24)
        lines = [title[i:i + 16] for i in range(0, min(len(title), 32), 16)]
        for row, line in enumerate(lines):
            draw.text((60, 120 + row * 64), line, font=font, fill=(255, 255, 255))
        if center:
            draw.text((60, 300), center, font=small, fill=(255, 225, 225))
    out = io.BytesIO()
    image.save(out, "JPEG", quality=88)
    return out.getvalue()


# Pre-checks ----------------------------------------------------------------------------------------
TITLE_LIMIT = 32  # documented; users report 64 works, but 32 is what WeChat promises
AUTHOR_LIMIT = 16
CONTENT_CHARS = 20000
CONTENT_BYTES = 1024 * 1024
RAW_TAG = re.compile(r"</?[a-zA-Z][a-zA-Z0-9]*(\s[^>]*)?/?>")


def _markdown_images(body: str) -> list[str]:
    return re.findall(r"!\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)", body)


def _local_path(src: str) -> str:
    return posixpath.normpath(unquote(src.split("#")[0].split("?")[0])).lstrip("/").removeprefix("./")


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
    names = {_local_path(f) for f in files}
    for src in _markdown_images(body):
        if is_external(src):
            add("external_image", Severity.warning, f"外链图片 {src} 会被微信过滤，不会出现在文章里",
                "把图片放进稿件文件夹，用相对路径引用")
        elif files and _local_path(src) not in names:
            add("missing_image", Severity.blocking, f"正文引用的图片 {src} 不在稿件文件夹里", "补上图片或改正路径")
    if RAW_TAG.search(re.sub(r"```.*?```|`[^`]*`", "", body, flags=re.DOTALL)):
        add("raw_html", Severity.warning, "正文里有 HTML 标签，公众号版本会把它们原样显示为文字",
            "改用 Markdown 写法（加粗用 **文字**，换行用空行）")
    html = wechat_html(body, image_url=lambda src: "" if is_external(src) else "http://mmbiz.qpic.cn/x/0")
    if len(html) >= CONTENT_CHARS or len(html.encode("utf-8")) >= CONTENT_BYTES:
        add("content_too_long", Severity.blocking, f"排版后的正文有 {len(html)} 字符，公众号要求少于 {CONTENT_CHARS}",
            "删减正文或拆成两篇")
    return found


# Publisher ---------------------------------------------------------------------------------------------
PUBLISH_FAILURES = {
    2: "原创声明失败",
    3: "常规失败",
    4: "平台审核不通过",
    5: "文章已被删除",
    6: "文章已被封禁",
}
DRAFT_READY = "草稿已就绪，请在公众号后台 mp.weixin.qq.com 发表"
DEFAULT_POLL_DELAYS = (3.0, 5.0, 10.0, 20.0, 30.0, 60.0, 60.0, 120.0, 120.0, 300.0)  # ~12 min in 10 calls
NETWORK_ERRORS = (requests.Timeout, requests.ConnectionError)


class WeChatPublisher(Publisher):
    """Publishes an article to a WeChat Official Account: draft/add → freepublish/submit (once) → poll.

    The submit is irreversible. If its answer is lost, the delivery is left "unconfirmed" with the draft's
    media_id; the next attempt (given those details as `release.extra["previous_attempt"]`) looks for the
    article with freepublish/batchget and submits again only if the draft is still in the draft box.
    """

    name = "wechat"
    label = "微信公众号"
    color = "#2ca02c"
    default_kinds = ("article", "video")
    capabilities = Capabilities(
        can_update=False, can_retract=True, retract_is_final=True, correction=Correction.new_article,
        renditions=("cover_900x383", "cover_1x1", RenditionNeed("video_web", Condition.has_video)),
        note="微信不能修改已发表的文章：更正会另发一篇链接原文的新文章；删除不可恢复。",
    )
    order = 20

    def __init__(self, settings: Settings, *, client: WeChatClient | None = None,
                 poll_delays: Sequence[float] = DEFAULT_POLL_DELAYS, submit_timeout: float = 30.0,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        super().__init__(settings)
        self._client = client
        self.poll_delays = tuple(poll_delays)
        self.submit_timeout = submit_timeout
        self.sleep = sleep
        self.budget = DailyBudget(settings.data_dir, "poll", settings.wechat.daily_poll_budget)

    @property
    def client(self) -> WeChatClient:
        if self._client is None:
            self._client = WeChatClient(self.settings.wechat, self.settings.data_dir)
        return self._client

    # Publish -------------------------------------------------------------------------------------
    def publish(self, release: Release) -> Receipt:
        earlier = dict(release.extra.get("previous_attempt") or {})
        if earlier.get("publish_id"):
            return self._await_publish(earlier)  # submitted before: only the outcome is missing
        if earlier.get("media_id") and earlier.get("submit_sent"):
            found = self._reconcile(earlier)
            if found is not None:
                return found
            return self._submit(earlier)  # the draft is still there: the earlier submit never took effect
        blocking = [c for c in wechat_checks(release.meta, release.body, release.files) if c.blocking]
        if blocking:
            raise WeChatLimitError("；".join(f"{c.message}（{c.fix}）" for c in blocking))
        details = self._create_draft(release)
        if self.settings.wechat.draft_only:
            return self._draft_ready(details, "draft_only")
        return self._submit(details)

    def _create_draft(self, release: Release) -> dict[str, Any]:
        client, meta = self.client, release.meta
        uploaded: dict[str, str] = {}

        def image_url(src: str) -> str:
            path = _local_path(src)
            if is_external(src) or path not in release.files:
                log.warning("wechat: leaving out image %s of %s (external or not in the drop)", src, meta.id)
                return ""
            if path not in uploaded:
                data, ext, mime = prepare_image(release.file_path(path).read_bytes())
                uploaded[path] = client.upload_image(data, f"{Path(path).stem}.{ext}", mime)
            return uploaded[path]

        source_line = str(release.extra.get("correction_line", ""))
        if meta.is_reprint:
            source_line += f"转载自：{meta.source or urlsplit(meta.source_url).hostname or meta.source_url}"
        content = wechat_html(release.body, image_url=image_url, source_line=source_line)
        cover, cover_name = self._cover(release)
        data, ext, mime = prepare_image(cover)
        thumb_media_id, _ = client.add_image_material(data, f"cover.{ext}", mime)
        article = {
            "article_type": "news", "title": meta.title, "author": meta.author,
            "digest": make_digest(meta.summary, release.body), "content": content,
            "content_source_url": meta.source_url, "thumb_media_id": thumb_media_id,
            "need_open_comment": 0, "only_fans_can_comment": 0,
        }
        media_id = client.add_draft(article)
        log.info("wechat: draft %s for %s v%s (%d images, cover %s)", media_id, meta.id, release.version,
                 len(uploaded), cover_name)
        return {"app_id": client.app_id, "media_id": media_id, "thumb_media_id": thumb_media_id,
                "title": meta.title, "images": len(uploaded), "cover": cover_name}

    def _cover(self, release: Release) -> tuple[bytes, str]:
        """The 900×383 rendition, else the drop's cover, else its first image, else a plain generated one."""
        rendition = release.renditions.get("cover_900x383")
        if rendition:
            return release.blob_path(str(rendition["sha256"])).read_bytes(), "cover_900x383"
        for name in COVER_NAMES:
            if name in release.files:
                return release.file_path(name).read_bytes(), name
        referenced = [_local_path(s) for s in _markdown_images(release.body) if not is_external(s)]
        images = [p for p in referenced if p in release.files]
        images += sorted(p for p in release.files if p.lower().endswith(IMAGE_SUFFIXES))
        if images:
            return release.file_path(images[0]).read_bytes(), images[0]
        return plain_cover(release.meta.title, self.settings.center_name), "generated"

    def _draft_ready(self, details: dict[str, Any], why: str) -> Receipt:
        return Receipt(state="draft_ready", remote_id=details["media_id"], message=DRAFT_READY,
                       details={**details, "draft_only": why})

    def _submit(self, details: dict[str, Any]) -> Receipt:
        try:
            with self._submit_slot():
                ids = self.client.submit(details["media_id"], timeout=self.submit_timeout)
        except WeChatUnauthorized:
            log.warning("wechat: 48001 on freepublish/submit, account %s can only make drafts", details["app_id"])
            return self._draft_ready(details, "48001")
        except NETWORK_ERRORS as exc:
            raise WeChatError(
                f"已请求微信发表，但没有收到答复（{type(exc).__name__}）：不能确定是否已发表。"
                "下次重试会先在已发表列表中核对，不会重复发表。",
                state="unconfirmed", details={**details, "submit_sent": True},
            ) from exc
        return self._await_publish({**details, **ids, "submit_sent": True})

    @contextmanager
    def _submit_slot(self) -> Iterator[None]:
        """One submit at a time per account.

        A file lock covers the processes sharing this data_dir. Inside a Prefect run (the publish flow, on
        workers that may sit on several machines) the Prefect global concurrency limit `wechat-<appid>`
        (1 slot, created on first use) covers the rest. Outside a run (tests, scripts) there is no Prefect
        to coordinate with, so only the file lock applies: no waiting on an API that is not there. If Prefect
        refuses the slot, nothing has been submitted yet, so the error is retryable.
        """
        app_id = self.client.app_id
        with file_lock(self.settings.data_dir / f"wechat-submit-{app_id}.lock"):
            if not _in_prefect_run():
                yield
                return
            from prefect.concurrency.sync import concurrency

            name = f"wechat-{app_id}"
            try:
                _ensure_limit(name)
                slot = concurrency(name, occupy=1, timeout_seconds=300, strict=True)
                slot.__enter__()
            except Exception as exc:  # Prefect's own errors vary (httpx, timeouts, acquisition errors)
                raise WeChatError(f"Prefect 并发限制 {name} 不可用（{exc}），尚未提交发表，稍后重试",
                                  retryable=True) from exc
            try:
                yield
            finally:
                slot.__exit__(None, None, None)

    def _await_publish(self, details: dict[str, Any]) -> Receipt:
        """Poll freepublish/get slowly (100 calls a day for the whole account) until the outcome shows."""
        app_id = self.client.app_id
        for delay in self.poll_delays:
            self.sleep(delay)
            if not self.budget.take(app_id):
                raise WeChatQuotaExceeded(
                    f"今天查询发表结果的额度（{self.budget.limit} 次）已用完：文章已提交，明天会继续查询结果",
                    state="unconfirmed", details=details)
            try:
                status = self.client.publish_status(details["publish_id"])
            except (WeChatError, *NETWORK_ERRORS) as exc:
                raise WeChatError(f"文章已提交，查询发表结果失败：{exc}。稍后会继续查询，不会重复发表",
                                  state="unconfirmed", details=details,
                                  code=getattr(exc, "code", 0)) from exc
            code = int(status.get("publish_status", 1))
            if code == 1:
                continue
            if code == 0:
                items = (status.get("article_detail") or {}).get("item") or [{}]
                article_id = str(status.get("article_id", ""))
                url = str(items[0].get("article_url", ""))
                log.info("wechat: published %s as %s", details.get("title"), article_id)
                return Receipt(state="succeeded", remote_id=article_id, url=url, message="已在公众号发表",
                               details={**details, "article_id": article_id, "article_url": url})
            reason = PUBLISH_FAILURES.get(code, f"未知状态 {code}")
            raise WeChatPublishFailed(f"公众号发表失败：{reason}（状态 {code}），请在公众号后台查看原因后修改重发",
                                      details={**details, "publish_status": code,
                                               "fail_idx": status.get("fail_idx", [])})
        raise WeChatError("文章已提交，微信仍在处理（审核中）；稍后会继续查询结果，不会重复发表",
                          state="unconfirmed", details=details)

    def _reconcile(self, earlier: dict[str, Any]) -> Receipt | None:
        """After a lost submit answer: the article, if WeChat published it; None if the draft was never taken."""
        client = self.client
        for offset in range(0, 60, 20):  # the newest 60 articles are far more than a lost answer's window
            page = client.published(offset=offset, count=20)
            for entry in page.get("item", []):
                for news in (entry.get("content") or {}).get("news_item", []):
                    if news.get("title") == earlier.get("title") and \
                            news.get("thumb_media_id") == earlier.get("thumb_media_id"):
                        article_id = str(entry.get("article_id", ""))
                        log.info("wechat: reconciled lost submit of %s as %s", earlier.get("title"), article_id)
                        return Receipt(state="succeeded", remote_id=article_id, url=str(news.get("url", "")),
                                       message="已在公众号发表（已核对）",
                                       details={**earlier, "article_id": article_id,
                                                "article_url": str(news.get("url", "")), "reconciled": True})
            if offset + 20 >= int(page.get("total_count", 0)):
                break
        try:
            client.get_draft(earlier["media_id"])
        except WeChatMediaError as exc:  # the draft left the draft box: the submit was taken, still running
            raise WeChatError("文章已提交，微信仍在处理中；稍后会继续核对，不会重复发表",
                              state="unconfirmed", details=earlier) from exc
        return None

    def reconcile(self, item_id: str, attempt: Receipt) -> Receipt | None:
        """What became of an unconfirmed delivery, never submitting anything: the published article, the
        draft still in the draft box (draft_ready: it can be deleted), None, or an error while WeChat works."""
        details = dict(attempt.details or {})
        media_id = str(details.get("media_id", ""))
        if details.get("publish_id"):
            status = self.client.publish_status(details["publish_id"])
            code = int(status.get("publish_status", 1))
            if code == 0:
                items = (status.get("article_detail") or {}).get("item") or [{}]
                article_id, url = str(status.get("article_id", "")), str(items[0].get("article_url", ""))
                return Receipt(state="succeeded", remote_id=article_id, url=url, message="已在公众号发表（已核对）",
                               details={**details, "article_id": article_id, "article_url": url})
            if code == 1:
                raise WeChatError("文章已提交，微信仍在处理中，暂时无法删除；请稍后再撤稿一次",
                                  state="unconfirmed", retryable=True, details=details)
            found = None  # 2/3/4/5/6: not (or no longer) published
        elif media_id and details.get("submit_sent"):
            found = self._reconcile(details)
        else:
            found = None
        if found is not None:
            return found
        if media_id:  # nothing published, but the draft may still be there for someone to publish by hand
            return Receipt(state="draft_ready", remote_id=media_id, message="草稿仍在草稿箱", details=details)
        return None

    # Retract -----------------------------------------------------------------------------------
    @classmethod
    def precheck(cls, meta: ItemMeta, body: str, files: Mapping[str, Path], settings: Settings) -> list[CheckResult]:
        return wechat_checks(meta, body, files)

    def update(self, release: Release, previous: Receipt) -> Receipt:
        """WeChat cannot edit a published article: a correction (更正) is a new article that links the old one."""
        link = f"原文：{previous.url}" if previous.url else ""
        title = f"更正：{release.meta.title}"[:TITLE_LIMIT]
        corrected = dataclasses.replace(
            release,
            meta=release.meta.model_copy(update={"title": title}),
            extra={**release.extra, "correction_line": f"更正说明：本文更正此前发布的《{release.meta.title}》。{link} "},
        )
        receipt = self.publish(corrected)
        receipt.details = {**receipt.details, "corrects": previous.remote_id, "corrects_url": previous.url}
        return receipt

    def retract(self, item_id: str, previous: Receipt, reason: str) -> Receipt:
        """freepublish/delete of the whole article: final, WeChat cannot bring it back."""
        if previous.state == "draft_ready":
            return self._delete_draft(item_id, previous, reason)
        article_id = previous.remote_id or str(previous.details.get("article_id", ""))
        if not article_id:
            raise WeChatError(f"{item_id} 在公众号上没有已发表文章的记录，无法删除；请在公众号后台核对")
        try:
            self.client.delete_article(article_id, index=0)
        except WeChatError as exc:
            if exc.code != 53600:
                raise
            message = "公众号上已找不到这篇文章（可能已在后台删除）"
        else:
            message = "已从公众号删除（不可恢复）"
        log.info("wechat: deleted article %s of %s (%s)", article_id, item_id, reason)
        return Receipt(state="succeeded", remote_id=article_id, url=previous.url, message=message,
                       details={"article_id": article_id, "reason": reason, "final": True})


    def _delete_draft(self, item_id: str, previous: Receipt, reason: str) -> Receipt:
        """A draft-only delivery: take the draft out of the draft box before anyone publishes it by hand."""
        media_id = previous.remote_id or str(previous.details.get("media_id", ""))
        try:
            self.client.delete_draft(media_id)
        except WeChatMediaError:  # 40007: already gone, or published by hand from the backend
            message = "草稿已不在草稿箱：如已在后台手动发表，请在 mp.weixin.qq.com 删除该文章"
        else:
            message = "已删除公众号草稿"
        log.info("wechat: deleted draft %s of %s (%s)", media_id, item_id, reason)
        return Receipt(state="succeeded", remote_id=media_id, message=message,
                       details={"media_id": media_id, "reason": reason, "final": True})


def _in_prefect_run() -> bool:
    if "prefect" not in sys.modules:  # never imported: certainly not inside a run (and importing costs ~1 s)
        return False
    from prefect.context import FlowRunContext, TaskRunContext

    return FlowRunContext.get() is not None or TaskRunContext.get() is not None


def _ensure_limit(name: str) -> None:
    """Create the account's limit (1 slot) the first time: Prefect ignores limits that do not exist."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
    from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            client.read_global_concurrency_limit_by_name(name)
        except ObjectNotFound:
            with suppress(ObjectAlreadyExists):
                client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=1))
