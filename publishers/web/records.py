"""What the web channel keeps about one item and how its body becomes safe HTML: target keys and URLs, the
media an article links (content-addressed), the sanitised body, and the expiry rules the pages follow.

Kept apart from the templates (publishers.web.site) and the delivery (publishers.web.channel): every page is
rendered from these records, so the aggregates can be rebuilt without the store.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping
from datetime import datetime
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import quote, unquote, urlsplit

import markdown
import nh3

from publishers.base import Release
from publishers.channel_state import iso, parse_time
from rongmei.core.files import MIME_EXTENSIONS
from rongmei.core.model import Kind
from rongmei.core.settings import Settings

__all__ = [
    "ALLOWED_ATTRIBUTES", "ARTICLE_ROOT", "AUDIO_EXTENSIONS", "IMAGE_EXTENSIONS", "MEDIA_EXTENSIONS",
    "URL_SCHEMES", "VIDEO_EXTENSIONS", "ArticleMedia", "article_key", "article_url", "drop_relative",
    "index_key", "is_expired", "is_listed", "item_record", "media_key_for_mime", "media_key_for_name",
    "newest_first", "render_body", "safe_http_url", "tag_key", "tag_slug"
]

log = logging.getLogger(__name__)

ARTICLE_ROOT = "../../"  # from articles/<id>/ back to the site root; pages link relatively so previews work

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


def is_expired(record: Mapping[str, Any], now: datetime) -> bool:
    expires = parse_time(record.get("expires"))
    return expires is not None and now >= expires


def is_listed(record: Mapping[str, Any], now: datetime) -> bool:
    return not record.get("retracted") and not is_expired(record, now)


def newest_first(records: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    return sorted(records, key=lambda r: (str(r["published_at"]), str(r["item_id"])), reverse=True)
