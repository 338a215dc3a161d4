"""Markdown → the HTML WeChat's editor keeps, and the digest: pure functions, no network.

WeChat's editor keeps inline `style` attributes and little else: no `<style>`, no classes, no scripts, no
external images, no external links. So the theme in `assets/wechat/theme.css` is inlined with css_inline,
external links become numbered notes at the end (links to mp.weixin.qq.com stay links), fragment links are
unwrapped, list items get a `<section>` and no whitespace between tags (the editor turns whitespace into empty
bullets), and code keeps its line breaks and indentation as `<br>` and `&nbsp;`.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Callable
from functools import lru_cache
from html import unescape
from pathlib import Path
from urllib.parse import urlsplit

import css_inline
import markdown
import nh3
from markdown.extensions import Extension
from markdown.treeprocessors import Treeprocessor

__all__ = [
    "ALLOWED_TAGS", "BLOCK_TAGS", "DIGEST_LIMIT", "SENTENCE_END", "THEME", "WeChatExtension",
    "WeChatTreeprocessor", "is_external", "is_wechat_link", "link_footnotes", "make_digest", "plain_text",
    "theme_css", "wechat_html"
]

THEME = Path(__file__).resolve().parents[2] / "assets" / "wechat" / "theme.css"
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
