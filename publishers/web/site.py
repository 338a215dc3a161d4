"""The web channel's templates: article and listing pages from item records (assets/web/), the RSS feed and
the sitemap. One `Site` per settings; it renders, it never writes.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote
from xml.sax.saxutils import escape as xml_escape

from feedgen.feed import FeedGenerator
from jinja2 import Environment, FileSystemLoader, select_autoescape

from publishers.channel_state import iso, local_zone, parse_time
from publishers.web.records import ARTICLE_ROOT, article_url, is_expired, tag_slug
from rongmei.core.settings import Settings

__all__ = ["ASSETS", "FEED_SIZE", "KIND_LABELS", "STYLESHEET_KEY", "Site"]

ASSETS = Path(__file__).resolve().parent.parent.parent / "assets" / "web"
STYLESHEET_KEY = "static/site.css"
FEED_SIZE = 50  # newest live items in feed.xml
KIND_LABELS = {"article": "文章", "video": "视频", "audio": "音频", "notice": "公告"}


class Site:
    """Renders pages from item records. One instance per settings; templates come from assets/web/."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.zone = local_zone(settings)
        self.env = Environment(loader=FileSystemLoader(ASSETS), autoescape=select_autoescape(["html"]),
                               trim_blocks=True, lstrip_blocks=True)
        self.env.filters["localtime"] = self.local_time
        self.env.filters["urlq"] = lambda value: quote(str(value))
        self.env.filters["tagslug"] = tag_slug

    def local_time(self, value: str | datetime | None) -> str:
        moment = parse_time(value) if isinstance(value, str) else value
        if moment is None:
            return ""
        return moment.astimezone(self.zone).strftime("%Y年%m月%d日 %H:%M")

    def _common(self, root: str) -> dict[str, Any]:
        return {"center_name": self.settings.center_name, "root": root, "kind_labels": KIND_LABELS}

    def article(self, record: Mapping[str, Any], *, now: datetime, root: str = ARTICLE_ROOT,
                preview: bool = False) -> str:
        base = self.settings.public_url.rstrip("/")
        share = record.get("share_image")
        return self.env.get_template("article.html").render(
            **self._common(root), item=record, body=record.get("body_html", ""), preview=preview,
            noindex=preview, expired=is_expired(record, now),
            canonical="" if preview else article_url(self.settings, str(record["item_id"])),
            share_image=f"{base}/{share}" if share and not preview else "",
        )

    def listing(self, entries: list[Mapping[str, Any]], *, root: str, heading: str = "", page: int = 1,
                pages: int = 1) -> str:
        return self.env.get_template("list.html").render(
            **self._common(root), entries=entries, heading=heading, page=page, pages=pages, preview=False,
            noindex=False)

    def feed(self, entries: list[Mapping[str, Any]]) -> bytes:
        base = self.settings.public_url.rstrip("/")
        generator = FeedGenerator()
        generator.title(self.settings.center_name)
        generator.link(href=f"{base}/", rel="alternate")
        generator.description(f"{self.settings.center_name}最新稿件")
        generator.language("zh-CN")
        for record in entries[:FEED_SIZE]:
            url = article_url(self.settings, str(record["item_id"]))
            entry = generator.add_entry(order="append")
            entry.guid(url, permalink=True)
            entry.title(str(record["title"]))
            entry.link(href=url)
            entry.description(str(record.get("summary") or record["title"]))
            entry.pubDate(parse_time(record["published_at"]))
            for tag in record.get("tags", []):
                entry.category(term=tag)
        return generator.rss_str(pretty=True)

    def sitemap(self, records: list[Mapping[str, Any]], now: datetime) -> bytes:
        base = self.settings.public_url.rstrip("/")
        urls = [(f"{base}/", iso(now))]
        urls += [(article_url(self.settings, str(r["item_id"])), r.get("updated_at") or r["published_at"])
                 for r in records]
        body = "".join(f"<url><loc>{xml_escape(loc)}</loc><lastmod>{xml_escape(str(mod))}</lastmod></url>\n"
                       for loc, mod in urls)
        return ('<?xml version="1.0" encoding="UTF-8"?>\n'
                '<urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">\n'
                f"{body}</urlset>\n").encode()
