"""The web channel: a static news site generated from approved versions (issue 3 item 4, issue 7 items 2-3).

Layout on the target (DESIGN.md): `index.html` (+ `page/<n>/index.html` beyond 50 items), `articles/<id>/`,
`tags/<tag>/`, `feed.xml` (RSS 2.0), `sitemap.xml`, `static/site.css`, and media at
`media/<sha256>.<ext>` (content-addressed, so a page and its media never disagree).

Rendering is kept apart from delivery: what the channel knows per item (title, times, the sanitised body,
corrections, retraction) lives in `data_dir/channels/web/<item_id>.json`, and every page is rendered from
those records, so the aggregates (index, tags, feed, sitemap) are rebuilt from all items on each change and a
retraction or expiry needs no access to the store. Every key is written atomically by the target.
"""

from __future__ import annotations

import json
import logging
import os
import re
import tempfile
from collections.abc import Iterable, Mapping
from datetime import datetime
from pathlib import Path, PurePosixPath
from typing import Any, ClassVar
from urllib.parse import quote, unquote, urlsplit
from xml.sax.saxutils import escape as xml_escape

import markdown
import nh3
from feedgen.feed import FeedGenerator
from jinja2 import Environment, FileSystemLoader, select_autoescape

from publishers.base import Capabilities, Correction, Receipt, Release
from publishers.channel_state import AggregatePublisher, Clock, iso, local_zone, parse_time, utc_now
from rongmei.core.errors import PublishError
from rongmei.core.files import MIME_EXTENSIONS
from rongmei.core.model import Kind
from rongmei.core.settings import Settings
from rongmei.targets.base import Target
from rongmei.targets.directory import DirectoryTarget

__all__ = ["WebPublisher", "article_key", "article_url", "refresh", "render_preview"]

log = logging.getLogger(__name__)

ASSETS = Path(__file__).resolve().parent.parent / "assets" / "web"
STYLESHEET_KEY = "static/site.css"
PAGE_SIZE = 50  # items per index page
FEED_SIZE = 50  # newest live items in feed.xml
ARTICLE_ROOT = "../../"  # from articles/<id>/ back to the site root; pages link relatively so previews work
SITE_STATE = ".site-state"  # which index pages and tag pages exist, to delete stale ones (not *.json on purpose)
PREVIEW_TOKEN = re.compile(r"^[A-Za-z0-9_\-]{8,128}$")
KIND_LABELS = {"article": "文章", "video": "视频", "audio": "音频", "notice": "公告"}

# Files an article may reference and we are willing to serve; SVG is left out because it can carry script.
MEDIA_EXTENSIONS = {
    ".jpg": "jpg", ".jpeg": "jpg", ".png": "png", ".gif": "gif", ".webp": "webp",
    ".mp4": "mp4", ".webm": "webm", ".mp3": "mp3", ".m4a": "m4a", ".aac": "aac", ".ogg": "ogg",
    ".pdf": "pdf",
}
VIDEO_EXTENSIONS = (".mp4", ".webm")
AUDIO_EXTENSIONS = (".mp3", ".m4a", ".aac", ".ogg")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".gif")

# Editors' raw HTML is sanitised with nh3's defaults (no <script>, no on* attributes, only safe URL schemes)
# plus the few things Markdown itself produces: heading ids from `toc`, footnote ids and classes from `extra`.
ALLOWED_ATTRIBUTES: dict[str, set[str]] = {
    **{tag: set(attrs) for tag, attrs in nh3.ALLOWED_ATTRIBUTES.items()},
    **{f"h{n}": {"id"} for n in range(1, 7)},
    "li": {"id"}, "sup": {"id"}, "div": {"class"}, "code": {"class"},
    "a": {"href", "hreflang", "title", "class"}, "img": {"src", "alt", "title", "width", "height"},
}
URL_SCHEMES = {"http", "https", "mailto", "tel"}


# Keys and URLs ---------------------------------------------------------------------------------------------
def article_key(item_id: str) -> str:
    return f"articles/{item_id}/index.html"


def article_url(settings: Settings, item_id: str) -> str:
    return f"{settings.public_url.rstrip('/')}/articles/{quote(item_id)}/"


def tag_slug(tag: str) -> str:
    """A tag as one safe path segment (Chinese stays readable; separators and leading dots do not survive)."""
    slug = re.sub(r"[/\\?#%\s]+", "-", tag.strip()).strip("-")
    return ("_" + slug) if slug.startswith(".") or not slug else slug


def tag_key(tag: str) -> str:
    return f"tags/{tag_slug(tag)}/index.html"


def index_key(page: int) -> str:
    return "index.html" if page == 1 else f"page/{page}/index.html"


def media_key_for_name(sha256: str, name: str) -> str | None:
    ext = MEDIA_EXTENSIONS.get(PurePosixPath(name).suffix.lower())
    return f"media/{sha256}.{ext}" if ext else None


def media_key_for_mime(sha256: str, mime: str) -> str | None:
    ext = MIME_EXTENSIONS.get(mime)
    return f"media/{sha256}.{ext}" if ext else None


def safe_http_url(url: str) -> str:
    """Only http(s) links go into pages from front matter (source_url); anything else is dropped."""
    return url if urlsplit(url.strip()).scheme in ("http", "https") else ""


# Rendering the article body ----------------------------------------------------------------------------------
class ArticleMedia:
    """The media one article needs: target key -> local source path, collected while rendering."""

    def __init__(self, release: Release) -> None:
        self.release = release
        self.files: dict[str, Path] = {}

    def from_file(self, relative: str) -> str | None:
        facts = self.release.files.get(relative)
        if facts is None:
            return None
        sha = str(facts["sha256"])
        key = media_key_for_name(sha, relative)
        if key:
            self.files[key] = self.release.blob_path(sha)
        return key

    def from_rendition(self, name: str) -> str | None:
        facts = self.release.renditions.get(name)
        if not facts:
            return None
        sha = str(facts["sha256"])
        key = media_key_for_mime(sha, str(facts.get("mime") or "")) or media_key_for_name(sha, str(facts.get("path", "")))
        if key:
            self.files[key] = self.release.blob_path(sha)
        return key

    def first_file(self, suffixes: tuple[str, ...], preferred: Iterable[str] = ()) -> str | None:
        for name in preferred:
            if name in self.release.files:
                return self.from_file(name)
        for name in sorted(self.release.files):
            if name.lower().endswith(suffixes):
                return self.from_file(name)
        return None


def drop_relative(url: str) -> str | None:
    """The drop-relative path a link in the body means, or None for external links and anchors."""
    parts = urlsplit(url)
    if parts.scheme or parts.netloc or not parts.path or parts.path.startswith("/"):
        return None
    path = PurePosixPath(unquote(parts.path))
    cleaned = [p for p in path.parts if p not in (".", "")]
    if ".." in cleaned:
        return None
    return "/".join(cleaned)


def render_body(release: Release, media: ArticleMedia, root: str) -> str:
    """Markdown -> HTML, sanitised, with links to files of the drop rewritten to `<root>media/<sha256>.<ext>`."""
    converted = markdown.markdown(release.body, extensions=["extra", "sane_lists", "toc"],
                                  output_format="html")

    def rewrite(tag: str, attribute: str, value: str) -> str | None:
        if attribute not in ("src", "href"):
            return value
        relative = drop_relative(value)
        if relative is None:
            return value
        key = media.from_file(relative)
        if key is None:
            log.warning("item %s links %r, which is not a servable file of the drop; link removed",
                        release.item_id, value)
            return None
        return root + key

    return nh3.clean(converted, attributes=ALLOWED_ATTRIBUTES, attribute_filter=rewrite, url_schemes=URL_SCHEMES,
                     set_tag_attribute_values={"img": {"loading": "lazy"}})


def item_record(release: Release, media: ArticleMedia, root: str) -> dict[str, Any]:
    """What the channel keeps about one item: everything the pages and aggregates need, nothing else."""
    meta = release.meta
    kind = str(meta.kind)
    video = media.from_rendition("video_web") or (
        media.first_file(VIDEO_EXTENSIONS, ("video.mp4",)) if meta.kind is Kind.video else None)
    audio = media.from_rendition("audio_web") or (
        media.first_file(AUDIO_EXTENSIONS, ("audio.mp3",)) if meta.kind is Kind.audio else None)
    cover = (media.first_file((), ("cover.jpg", "cover.jpeg", "cover.png", "cover.webp"))
             or media.from_rendition("share_image") or media.first_file(IMAGE_EXTENSIONS))
    share = media.from_rendition("share_image") or cover
    body = render_body(release, media, root)
    return {
        "item_id": release.item_id, "version": release.version, "content_hash": release.content_hash,
        "kind": kind, "title": meta.title, "author": meta.author, "summary": meta.summary,
        "tags": [t for t in meta.tags if t.strip()], "source": meta.source,
        "source_url": safe_http_url(meta.source_url), "expires": iso(meta.expires),
        "video": video, "audio": audio, "cover": cover, "share_image": share, "body_html": body,
        "media": sorted(media.files),
    }


# Templates ---------------------------------------------------------------------------------------------------
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


def is_expired(record: Mapping[str, Any], now: datetime) -> bool:
    expires = parse_time(record.get("expires"))
    return expires is not None and now >= expires


def is_listed(record: Mapping[str, Any], now: datetime) -> bool:
    return not record.get("retracted") and not is_expired(record, now)


def newest_first(records: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    return sorted(records, key=lambda r: (str(r["published_at"]), str(r["item_id"])), reverse=True)


# The channel -------------------------------------------------------------------------------------------------
class WebPublisher(AggregatePublisher):
    """Static site channel. Pages update in place; a retraction leaves a notice at the same URL."""

    name: ClassVar[str] = "web"
    label = "网站"
    color = "#1f77b4"
    default_kinds = ("article", "video", "audio", "notice")
    capabilities: ClassVar[Capabilities] = Capabilities(
        can_update=True,
        can_retract=True,
        correction=Correction.in_place,
        renditions=("share_image", "video_web"),
        note="Static pages, RSS and sitemap on the distribution target; retraction leaves a notice page.",
    )

    def __init__(self, settings: Settings, now: Clock | None = None, target: Target | None = None) -> None:
        super().__init__(settings, now, target)
        self.site = Site(settings)

    def publish(self, release: Release) -> Receipt:
        return self._put(release, correction_note=None)

    def update(self, release: Release, previous: Receipt) -> Receipt:
        now = self.now()
        note = str(release.extra.get("correction_note") or "").strip() or (
            f"本文已于{self.site.local_time(now)}更正，以此版本为准。")
        return self._put(release, correction_note=note)

    def retract(self, item_id: str, previous: Receipt, reason: str) -> Receipt:
        now = self.now()
        with self.state.locked():
            record = self.state.load(item_id) or {"item_id": item_id, "title": item_id, "kind": "article",
                                                  "published_at": iso(now), "tags": []}
            record.pop("body_html", None)  # the withdrawn text must not be re-rendered from our state
            record["retracted"] = {"at": iso(now), "reason": reason}
            record["updated_at"] = iso(now)
            self._write(article_key(item_id), self.site.article(record, now=now).encode("utf-8"))
            self.state.save(record)
            self._rebuild(now)
        url = article_url(self.settings, item_id)
        return Receipt(remote_id=item_id, url=url, message=f"网站已撤稿，原链接显示撤稿说明：{url}",
                       details={"retracted_at": iso(now)})

    def refresh(self, now: datetime | None = None) -> None:
        """Re-apply expiry: mark expired pages and rebuild index, tags, feed and sitemap."""
        moment = now or self.now()
        with self.state.locked():
            self._rebuild(moment)

    # internals ---------------------------------------------------------------------------------------------
    def _put(self, release: Release, correction_note: str | None) -> Receipt:
        now = self.now()
        media = ArticleMedia(release)
        fresh = item_record(release, media, ARTICLE_ROOT)
        for key, source in media.files.items():
            self._copy(key, source, release)
        with self.state.locked():
            old = self.state.load(release.item_id) or {}
            record = {
                **fresh,
                "published_at": old.get("published_at") or iso(now),
                "updated_at": iso(now),
                "corrections": list(old.get("corrections", [])),
                "retracted": None,
                "page_expired": is_expired(fresh, now),
            }
            if correction_note:
                record["corrections"].append({"at": iso(now), "note": correction_note,
                                              "version": release.version})
            self._write(STYLESHEET_KEY, (ASSETS / "site.css").read_bytes())
            self._write(article_key(release.item_id), self.site.article(record, now=now).encode("utf-8"))
            self.state.save(record)
            self._rebuild(now)
        url = article_url(self.settings, release.item_id)
        verb = "已更正" if correction_note else "已发布"
        return Receipt(remote_id=release.item_id, url=url, message=f"网站{verb}：{url}",
                       details={"version": release.version, "media": record["media"]})

    def _copy(self, key: str, source: Path, release: Release) -> None:
        if not Path(source).is_file():
            raise PublishError(f"{key} of {release.item_id} v{release.version} is missing from the blob store "
                               f"({source}); re-run the review preparation", retryable=False)
        try:
            self.target.write_file(key, Path(source))
        except OSError as exc:  # disk full, permissions: after the fix a retry writes the same bytes
            raise PublishError(f"could not write {key}: {exc}", retryable=True) from exc

    def _write(self, key: str, data: bytes) -> None:
        try:
            self.target.write_bytes(key, data)
        except OSError as exc:
            raise PublishError(f"could not write {key}: {exc}", retryable=True) from exc

    def _rebuild(self, now: datetime) -> None:
        """Regenerate every aggregate from all item records. Caller holds the state lock."""
        records = self.state.all()
        for record in records:  # pages whose expiry mark is out of date (issue 7 item 2)
            expired = is_expired(record, now)
            if not record.get("retracted") and bool(record.get("page_expired")) != expired:
                record["page_expired"] = expired
                self._write(article_key(str(record["item_id"])), self.site.article(record, now=now).encode())
                self.state.save(record)
        live = newest_first(r for r in records if is_listed(r, now))
        pages = max(1, -(-len(live) // PAGE_SIZE))
        for page in range(1, pages + 1):
            chunk = live[(page - 1) * PAGE_SIZE:page * PAGE_SIZE]
            root = "" if page == 1 else "../../"
            self._write(index_key(page), self.site.listing(chunk, root=root, page=page, pages=pages).encode())
        tags: dict[str, tuple[str, list[Mapping[str, Any]]]] = {}
        for record in live:
            for tag in record.get("tags", []):
                tags.setdefault(tag_slug(tag), (tag, []))[1].append(record)
        for slug, (tag, entries) in tags.items():
            self._write(f"tags/{slug}/index.html",
                        self.site.listing(entries, root="../../", heading=f"标签：{tag}").encode())
        self._write("feed.xml", self.site.feed(live))
        self._write("sitemap.xml", self.site.sitemap(
            newest_first(r for r in records if not r.get("retracted")), now))
        self._drop_stale(pages, set(tags))

    def _drop_stale(self, pages: int, tags: set[str]) -> None:
        """Delete index pages and tag pages that no longer have items (after retraction or expiry)."""
        path = self.state.root / SITE_STATE
        before: dict[str, Any] = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
        for page in range(pages + 1, int(before.get("pages", 1)) + 1):
            self.target.delete(index_key(page))
        for slug in set(before.get("tags", [])) - tags:
            self.target.delete(f"tags/{slug}/index.html")
        now_present = {"pages": pages, "tags": sorted(tags)}
        if before != now_present:
            fd, tmp = tempfile.mkstemp(dir=self.state.root, prefix=".tmp-")
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                json.dump(now_present, out, ensure_ascii=False)
            os.replace(tmp, path)

    # Reach (传播监测) ---------------------------------------------------------------------------------------
    reach_columns = (("web_views", "网站浏览"),)
    reach_order = 10
    reach_page = re.compile(r"^/articles/([^/]+)/(?:index\.html)?$")  # an item's page, as this channel writes it

    @classmethod
    def reach(cls, window: Any) -> Any:
        """Page views of an item's page (`/articles/<id>/`, or its index.html) per item and local day. A 304 is
        a reader coming back with the page cached, still a view; previews, media, feeds and bots never count.

        `window` is a publishers.reach.ReachWindow, the answer a ChannelReach."""
        from publishers.reach import page_reach

        return page_reach(window, "/articles/", cls.reach_page)


# Entry points for flows --------------------------------------------------------------------------------------
def refresh(settings: Settings, now: datetime | None = None) -> None:
    """Re-apply expiry on the site (called by the expiry flow on a schedule)."""
    WebPublisher(settings).refresh(now or utc_now())


def render_preview(release: Release, settings: Settings, token: str, now: datetime | None = None) -> str:
    """Render the reviewers' preview of `release` into `data_dir/preview/<token>/`; returns `/preview/<token>/`.

    Same template as the public page, marked 预览/未发布 and `noindex`, with its own copy of the media and
    stylesheet so the preview is self-contained and nothing touches the public site.
    """
    if not PREVIEW_TOKEN.match(token):
        raise PublishError(f"preview token {token!r} is not URL-safe (8-128 of A-Z a-z 0-9 _ -); "
                           "create it with secrets.token_urlsafe()", retryable=False)
    moment = now or utc_now()
    target = DirectoryTarget(Path(settings.data_dir) / "preview" / token)
    media = ArticleMedia(release)
    record = {**item_record(release, media, ""), "published_at": iso(release.approved_at or moment),
              "corrections": [], "retracted": None}
    for key, source in media.files.items():
        if not Path(source).is_file():
            raise PublishError(f"{key} of {release.item_id} v{release.version} is missing from the blob store "
                               f"({source}); re-run the review preparation", retryable=False)
        target.write_file(key, Path(source))
    target.write_bytes(STYLESHEET_KEY, (ASSETS / "site.css").read_bytes())
    target.write_text("index.html", Site(settings).article(record, now=moment, root="", preview=True))
    return f"/preview/{token}/"

