"""Feed HTML made fit for a drop: plain text for titles and summaries, and a small HTML -> Markdown converter
that keeps the structure reviewers need while upstream text can never turn into markup or a link.
"""

from __future__ import annotations

import html
import re
from html.parser import HTMLParser
from typing import ClassVar

import nh3

__all__ = ["MARKDOWN_SPECIALS", "html_to_markdown", "markdown_url", "plain_text"]


def plain_text(markup: str) -> str:
    """Text of an HTML fragment (titles, summaries): tags dropped, entities decoded, whitespace collapsed."""
    text = html.unescape(nh3.clean(markup, tags=set()))
    return re.sub(r"\s+", " ", text).strip()


MARKDOWN_SPECIALS = re.compile(r"[\\`*_\[\]]")


class _MarkdownWriter(HTMLParser):
    """A small HTML -> Markdown converter for feed content: paragraphs, headings, lists, links, images.

    Feed HTML has already been sanitised by feedparser (no scripts, styles or event handlers) and its
    relative URLs resolved, so this only has to keep the structure readers and reviewers need.
    """

    BLOCKS = frozenset(
        ("p", "div", "section", "article", "header", "footer", "aside", "figure", "figcaption", "blockquote",
         "pre", "table", "tr", "ul", "ol", "li", "h1", "h2", "h3", "h4", "h5", "h6", "hr")
    )
    EMPHASIS: ClassVar[dict[str, str]] = {"strong": "**", "b": "**", "em": "*", "i": "*"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.blocks: list[str] = []
        self.line: list[str] = []
        self.prefix = ""
        self.links: list[str | None] = []
        self.skip = 0

    def flush(self) -> None:
        text = re.sub(r"[ \t\r\n]+", " ", "".join(self.line)).strip()
        if text:
            self.blocks.append(self.prefix + text)
        self.line, self.prefix = [], ""

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attr = {k: v or "" for k, v in attrs}
        if tag in ("script", "style"):
            self.skip += 1
        elif tag in self.BLOCKS:
            self.flush()
            if tag[0] == "h" and tag[1:].isdigit():
                self.prefix = "## " if tag in ("h1", "h2") else "### "
            elif tag == "li":
                self.prefix = "- "
            elif tag == "blockquote":
                self.prefix = "> "
        elif tag == "br":
            self.flush()
        elif tag in self.EMPHASIS:
            self.line.append(self.EMPHASIS[tag])
        elif tag == "a":
            href = markdown_url(attr.get("href", ""))
            keep = bool(re.match(r"^(https?:|mailto:)", href, re.I))
            self.links.append(href if keep else None)
            if keep:
                self.line.append("[")
        elif tag == "img" and re.match(r"^https?:", attr.get("src", ""), re.I):
            alt = re.sub(r"[\[\]]", "", attr.get("alt", ""))
            self.line.append(f"![{alt}]({markdown_url(attr['src'])})")

    def handle_endtag(self, tag: str) -> None:
        if tag in ("script", "style"):
            self.skip = max(0, self.skip - 1)
        elif tag in self.BLOCKS:
            self.flush()
        elif tag in self.EMPHASIS:
            marker = self.EMPHASIS[tag]
            if self.line and self.line[-1] == marker:
                self.line.pop()  # emphasis around nothing would leave a stray "**"
            else:
                self.line.append(marker)
        elif tag == "a" and self.links:
            href = self.links.pop()
            if href is not None:
                self.line.append(f"]({href})")

    def handle_data(self, data: str) -> None:
        if not self.skip:
            # Text stays text: an escaped "&lt;script&gt;" or a literal "[x](javascript:…)" in the upstream
            # text must not turn into HTML or a link when the Markdown is rendered for a channel.
            self.line.append(MARKDOWN_SPECIALS.sub(r"\\\g<0>", data).replace("<", "&lt;").replace(">", "&gt;"))


def markdown_url(url: str) -> str:
    # Spaces and parentheses would end a Markdown link target early.
    return url.strip().replace(" ", "%20").replace("(", "%28").replace(")", "%29")


def html_to_markdown(markup: str) -> str:
    """Markdown for an entry's HTML content; plain text passes through as paragraphs."""
    if not markup.strip():
        return ""
    writer = _MarkdownWriter()
    writer.feed(markup)
    writer.close()
    writer.flush()
    return "\n\n".join(writer.blocks)


