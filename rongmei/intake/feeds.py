"""Upstream feeds (issue 7, item 1): RSS/Atom sources pulled on a schedule and turned into reprint drops.

A pull never publishes anything: each new entry becomes an ordinary drop in `content/inbox/` (front matter
with `source` and `source_url`), so it goes through the same ingest, checks and three-stage sign-off as an
editor's own work. What this module owns is the conversation with the upstream server (conditional GET),
turning a feed entry into a drop, and remembering which entries it has already taken (`FeedEntry`), so a
re-published or edited entry upstream never comes in twice.
"""

from __future__ import annotations

import hashlib
import html
import logging
import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from html.parser import HTMLParser
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import urljoin

import feedparser
import nh3
import requests
import yaml
from sqlalchemy import ForeignKey, Integer, String, Text, UniqueConstraint, func, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from rongmei.core.errors import RongmeiError
from rongmei.core.model import SHANGHAI, Kind
from rongmei.core.settings import FeedSourceConfig
from rongmei.storage import ledger
from rongmei.storage.store import Base, Store, utcnow

log = logging.getLogger(__name__)

USER_AGENT = "rongmei-feeds/0.1 (RSS/Atom reprint ingest of a county media center; conditional GET)"
CONNECT_TIMEOUT = 5.0
READ_TIMEOUT = 20.0
MAX_FEED_BYTES = 10 * 1024 * 1024  # a feed bigger than this is a misconfigured URL, not a feed
SUMMARY_LIMIT = 120  # WeChat's enforced digest limit (the wechat channel's precheck)
XML_ENCODING_DECL = re.compile(rb"^(?:\xef\xbb\xbf)?\s*<\?xml[^>]*\bencoding\s*=\s*[\"']([A-Za-z0-9_.:-]+)[\"']")


class FeedFetchError(RongmeiError):
    """Raised when a feed cannot be fetched (the source's health records why; the next pull tries again)."""

    def __init__(self, message: str, *, http_status: int = 0) -> None:
        super().__init__(message)
        self.http_status = http_status


# FeedSourceConfig lives with the rest of the configuration (rongmei.core.settings).



# State ---------------------------------------------------------------------------------------------------
class FeedSource(Base):
    """What we know about one upstream source between pulls: validators for conditional GET, and health."""

    __tablename__ = "feed_sources"
    url: Mapped[str] = mapped_column(String(1000), primary_key=True)
    name: Mapped[str] = mapped_column(String(200), default="")
    etag: Mapped[str] = mapped_column(Text, default="")
    last_modified: Mapped[str] = mapped_column(Text, default="")
    last_status: Mapped[str] = mapped_column(String(20), default="")  # ok | not_modified | warning | error
    last_http_status: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str] = mapped_column(Text, default="")  # also holds the bozo reason of a warning
    last_checked: Mapped[datetime | None] = mapped_column(default=None)
    last_success: Mapped[datetime | None] = mapped_column(default=None)
    last_new: Mapped[int] = mapped_column(Integer, default=0)


class FeedEntry(Base):
    """An upstream entry already turned into a drop; the (source, key) pair is what deduplicates."""

    __tablename__ = "feed_entries"
    __table_args__ = (UniqueConstraint("source", "key", name="uq_feed_entry"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    source: Mapped[str] = mapped_column(ForeignKey("feed_sources.url"), index=True)
    key: Mapped[str] = mapped_column(String(1000))
    item_id: Mapped[str] = mapped_column(String(100))
    link: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


def ensure_tables(store: Store) -> None:
    """Create the feed tables if this database predates them (Store.create_schema only knows imported models)."""
    Base.metadata.create_all(store.engine, tables=[FeedSource.__table__, FeedEntry.__table__])


# Configuration -------------------------------------------------------------------------------------------
def configured_sources(settings: Any) -> list[FeedSourceConfig]:
    """Enabled sources from `[[feeds]]` in the configuration."""
    return [s for s in settings.feeds if s.enabled]


# Fetching ------------------------------------------------------------------------------------------------
@dataclass
class Fetched:
    status: int
    url: str
    content: bytes = b""
    content_type: str = ""
    etag: str = ""
    last_modified: str = ""


def fetch(url: str, etag: str = "", last_modified: str = "", *, timeout: float = READ_TIMEOUT) -> Fetched:
    """GET the feed, conditionally when we hold validators; 304 comes back as a Fetched with no content."""
    headers = {
        "User-Agent": USER_AGENT,
        "Accept": "application/rss+xml, application/atom+xml, application/xml;q=0.9, text/xml;q=0.8, */*;q=0.5",
    }
    if etag:
        headers["If-None-Match"] = etag
    if last_modified:
        headers["If-Modified-Since"] = last_modified
    try:
        with requests.get(url, headers=headers, timeout=(CONNECT_TIMEOUT, timeout), stream=True) as response:
            if response.status_code == 304:
                return Fetched(304, response.url, etag=etag, last_modified=last_modified)
            if response.status_code >= 400:
                raise FeedFetchError(
                    f"源站返回 HTTP {response.status_code}（{response.reason}）：{url}；请确认订阅地址仍然有效。",
                    http_status=response.status_code,
                )
            body = bytearray()
            for chunk in response.iter_content(64 * 1024):
                body += chunk
                if len(body) > MAX_FEED_BYTES:
                    raise FeedFetchError(f"订阅源超过 {MAX_FEED_BYTES // 1024 // 1024} MB，不像是 RSS/Atom：{url}")
            return Fetched(
                response.status_code,
                response.url,
                bytes(body),
                response.headers.get("Content-Type", ""),
                response.headers.get("ETag", ""),
                response.headers.get("Last-Modified", ""),
            )
    except requests.Timeout as exc:
        raise FeedFetchError(f"连接源站超时（{timeout:g} 秒内无响应）：{url}（{exc.__class__.__name__}）") from exc
    except requests.ConnectionError as exc:
        # requests nests the reason deep in its message; the errno text ("Connection refused") is what helps.
        reason = re.search(r"\[Errno -?\d+\] [^'\")]+", str(exc))
        raise FeedFetchError(
            f"无法连接源站：{url}（{reason.group(0) if reason else _short(exc)}）；请确认地址和网络，下次抓取会重试。"
        ) from exc
    except requests.RequestException as exc:
        raise FeedFetchError(f"抓取失败：{url}（{_short(exc)}）") from exc


def _short(exc: BaseException) -> str:
    text = str(exc)
    return text if len(text) <= 200 else text[:197] + "..."


def parse(fetched: Fetched) -> feedparser.FeedParserDict:
    """Parse the raw bytes, so an encoding declared in the XML prolog (GB2312, GBK…) is honoured."""
    declared = XML_ENCODING_DECL.match(fetched.content[:200])
    # Chinese sites often send `text/xml` (RFC 3023: us-ascii) or a wrong charset next to a correct prolog;
    # when the document names its encoding, let that decide. The header's charset counts only otherwise.
    content_type = "application/xml" if declared or not fetched.content_type else fetched.content_type
    return feedparser.parse(
        fetched.content,
        response_headers={"content-location": fetched.url, "content-type": content_type},
        resolve_relative_uris=True,
        sanitize_html=True,
    )


# HTML -> text and Markdown ------------------------------------------------------------------------------
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
            href = _markdown_url(attr.get("href", ""))
            keep = bool(re.match(r"^(https?:|mailto:)", href, re.I))
            self.links.append(href if keep else None)
            if keep:
                self.line.append("[")
        elif tag == "img" and re.match(r"^https?:", attr.get("src", ""), re.I):
            alt = re.sub(r"[\[\]]", "", attr.get("alt", ""))
            self.line.append(f"![{alt}]({_markdown_url(attr['src'])})")

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


def _markdown_url(url: str) -> str:
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


# Entries -> drops ----------------------------------------------------------------------------------------
@dataclass
class Reprint:
    """One feed entry, ready to be written as a drop."""

    key: str
    item_id: str
    meta: dict[str, Any]
    body: str
    link: str


def entry_key(entry: Any) -> str:
    """GUID if the feed gives one, else the link; empty when the entry has neither (it is skipped)."""
    return str(entry.get("id") or entry.get("guid") or entry.get("link") or "").strip()


def reprint_id(source_url: str, key: str) -> str:
    # The source URL is part of the hash because RSS GUIDs are only unique within their feed ("12345").
    return "reprint-" + hashlib.sha256(f"{source_url}\n{key}".encode()).hexdigest()[:12]


def entry_kind(entry: Any, default: Kind) -> tuple[Kind, str]:
    """(kind, media URL): an audio or video enclosure makes the entry audio or video."""
    candidates = list(entry.get("enclosures") or []) + list(entry.get("media_content") or [])
    for enclosure in candidates:
        mime = str(enclosure.get("type") or "")
        href = str(enclosure.get("href") or enclosure.get("url") or "")
        if mime.startswith("audio/"):
            return Kind.audio, href
        if mime.startswith("video/"):
            return Kind.video, href
    return default, ""


def published_at(entry: Any) -> datetime | None:
    stamp = entry.get("published_parsed") or entry.get("updated_parsed")
    if not stamp:
        return None
    return datetime(*stamp[:6], tzinfo=UTC).astimezone(SHANGHAI)


def build_reprint(entry: Any, source: FeedSourceConfig, base_url: str) -> Reprint | None:
    """Turn one parsed entry into front matter + Markdown body; None when it has nothing to key it by."""
    key = entry_key(entry)
    if not key:
        return None
    source_name = source.name
    link = urljoin(base_url, str(entry.get("link") or "")) if entry.get("link") else ""
    media_kind, media = entry_kind(entry, source.kind)
    media = _markdown_url(urljoin(link or base_url, media)) if media else ""
    # The ingest requires an audio/video item to carry its media file (bundles._check_kind_has_media), and a
    # pull downloads nothing but the feed: such an entry comes in as an article linking the original media,
    # tagged so the desk sees what it is. Switch to `media_kind` once enclosures are fetched into the drop.
    kind = Kind.article if media_kind in (Kind.audio, Kind.video) else media_kind
    media_tag = {Kind.audio: "音频", Kind.video: "视频"}.get(media_kind)
    title = plain_text(str(entry.get("title") or "")) or "（无标题）"
    content_html = ""
    if entry.get("content"):
        content_html = str(entry.content[0].get("value") or "")
    summary_html = str(entry.get("summary") or "")
    body_md = html_to_markdown(content_html or summary_html)
    summary = plain_text(summary_html) or plain_text(content_html)
    if len(summary) > SUMMARY_LIMIT:
        summary = summary[: SUMMARY_LIMIT - 1].rstrip() + "…"
    author = plain_text(str(entry.get("author") or "")) or source_name

    header = f"来源：{source_name}"
    when = published_at(entry)
    if when is not None:
        header += f" · 原文发布于 {when:%Y-%m-%d %H:%M}（北京时间）"
    parts = [header]
    if media:
        label = "收听原音频" if media_kind is Kind.audio else "观看原视频"
        parts.append(f"[{label}]({media})")
    if body_md:
        parts.append(body_md)
    original = link or source.url
    parts.append(f"本文转载自{source_name}，原文链接：[{original}]({_markdown_url(original)})")

    item_id = reprint_id(source.url, key)
    meta: dict[str, Any] = {
        "id": item_id,
        "title": title,
        "author": author,
        "kind": kind.value,
        "summary": summary,
        "source": source_name,
        "source_url": link or source.url,
        "tags": [*source.tags, *([media_tag] if media_tag and media_tag not in source.tags else [])],
    }
    if source.channels:
        meta["channels"] = list(source.channels)
    return Reprint(key=key, item_id=item_id, meta=meta, body="\n\n".join(parts) + "\n", link=link)


def write_drop(inbox: Path, reprint: Reprint) -> Path | None:
    """Write `inbox/<id>/index.md` atomically (hidden temp dir, then rename); None if it is already there."""
    final = inbox / reprint.item_id
    if final.exists():
        return None
    try:
        inbox.mkdir(parents=True, exist_ok=True)
        temp = Path(tempfile.mkdtemp(prefix=".feed-tmp-", dir=inbox))
    except OSError as exc:
        raise RongmeiError(f"无法在收稿箱 {inbox} 写入转载稿：{exc}；请检查该目录是否存在、可写，磁盘是否已满。") from exc
    try:
        front = yaml.safe_dump(reprint.meta, allow_unicode=True, sort_keys=False, width=1000)
        (temp / "index.md").write_text(f"---\n{front}---\n\n{reprint.body}", encoding="utf-8")
        os.chmod(temp, 0o755)  # mkdtemp makes it 0700; the ingest may run as another user
        os.rename(temp, final)
    except FileExistsError:
        return None
    except OSError as exc:
        if final.exists():  # another pull renamed the same entry in first (rename onto a non-empty dir)
            return None
        raise RongmeiError(f"无法在收稿箱写入转载稿 {final}：{exc}；请检查该目录的写权限和磁盘空间。") from exc
    finally:
        if temp.exists():
            shutil.rmtree(temp, ignore_errors=True)
    return final


# One pull ------------------------------------------------------------------------------------------------
@dataclass
class PullResult:
    """What one pull of one source did; `status` is ok | not_modified | warning | error."""

    name: str
    url: str
    status: str
    new_items: list[str] = field(default_factory=list)
    entries: int = 0
    message: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "url": self.url,
            "status": self.status,
            "new": len(self.new_items),
            "new_items": list(self.new_items),
            "entries": self.entries,
            "message": self.message,
        }


def _state(session: Session, source: FeedSourceConfig) -> FeedSource:
    state = session.get(FeedSource, source.url)
    if state is None:
        state = FeedSource(url=source.url, name=source.name)
        session.add(state)
    state.name = source.name
    return state


def pull_source(
    source: FeedSourceConfig, inbox: Path, store: Store, *, timeout: float = READ_TIMEOUT
) -> PullResult:
    """Pull one source and write a drop per new entry. Never raises for upstream trouble: it goes to health."""
    ensure_tables(store)
    with store.session() as session:
        state = _state(session, source)
        etag, last_modified = state.etag, state.last_modified
    checked = utcnow()
    try:
        fetched = fetch(source.url, etag, last_modified, timeout=timeout)
    except FeedFetchError as exc:
        log.warning("feed %s: %s", source.url, exc)
        return _record_failure(store, source, checked, str(exc), exc.http_status)
    if fetched.status == 304:
        with store.session() as session:
            state = _state(session, source)
            # Unchanged content is still as malformed as last time: a warning stays until the feed changes.
            still_malformed = state.last_status == "warning"
            state.last_status = "warning" if still_malformed else "not_modified"
            state.last_error = state.last_error if still_malformed else ""
            state.last_http_status = 304
            state.last_checked = state.last_success = checked
            state.last_new = 0
            message = state.last_error
        return PullResult(source.name, source.url, "not_modified", message=message)

    parsed = parse(fetched)
    warning = ""
    if parsed.bozo:
        reason = f"{parsed.bozo_exception.__class__.__name__}: {_short(parsed.bozo_exception)}"
        if not parsed.entries:
            return _record_failure(
                store, source, checked, f"内容不是有效的 RSS/Atom，未能读出任何条目（{reason}）", fetched.status
            )
        warning = f"订阅源格式有误，已尽量读出 {len(parsed.entries)} 条（{reason}）"

    result = PullResult(source.name, source.url, "warning" if warning else "ok", entries=len(parsed.entries),
                        message=warning)
    try:
        with store.session() as session:
            state = _state(session, source)
            known = set(session.scalars(select(FeedEntry.key).where(FeedEntry.source == source.url)))
            for entry in parsed.entries:
                reprint = build_reprint(entry, source, fetched.url)
                if reprint is None or reprint.key in known:
                    continue
                known.add(reprint.key)
                # The drop goes first: if the transaction then fails, the next pull writes it again and the
                # ingest sees the same id and content ("unchanged"); the other order could lose an entry.
                written = write_drop(inbox, reprint)
                session.add(FeedEntry(source=source.url, key=reprint.key, item_id=reprint.item_id, link=reprint.link))
                if written is not None:
                    result.new_items.append(reprint.item_id)
                    ledger.record(
                        session,
                        "reprint.dropped",
                        actor=f"feed:{source.name}",
                        item_id=reprint.item_id,
                        details={"source": source.url, "key": reprint.key, "link": reprint.link, "drop": written.name},
                    )
            state.etag, state.last_modified = fetched.etag, fetched.last_modified
            state.last_status, state.last_http_status, state.last_error = result.status, fetched.status, warning
            state.last_checked = state.last_success = checked
            state.last_new = len(result.new_items)
    except RongmeiError as exc:  # the inbox cannot be written: nothing of this pull is recorded as taken
        log.error("feed %s: %s", source.url, exc)
        return _record_failure(store, source, checked, str(exc))
    log.info("feed %s: %d entries, %d new", source.url, result.entries, len(result.new_items))
    return result


def _record_failure(
    store: Store, source: FeedSourceConfig, checked: datetime, message: str, http_status: int = 0
) -> PullResult:
    # Validators are kept: the next pull may still be answered with 304 once the source is back.
    with store.session() as session:
        state = _state(session, source)
        state.last_status, state.last_http_status, state.last_error = "error", http_status, message
        state.last_checked = checked
        state.last_new = 0
    return PullResult(source.name, source.url, "error", message=message)


def pull_all(
    sources: list[FeedSourceConfig], inbox: Path, store: Store, *, timeout: float = READ_TIMEOUT
) -> list[PullResult]:
    """Pull every source in turn (the Prefect flow runs them as separate tasks instead)."""
    return [pull_source(source, inbox, store, timeout=timeout) for source in sources]


# Health --------------------------------------------------------------------------------------------------
def feed_health(store: Store) -> list[dict[str, Any]]:
    """Per-source health for `rongmei status`: one dict per source ever pulled, sorted by name."""
    ensure_tables(store)
    with store.session() as session:
        seen = dict(
            session.execute(select(FeedEntry.source, func.count(FeedEntry.id)).group_by(FeedEntry.source)).all()
        )
        rows = session.scalars(select(FeedSource).order_by(FeedSource.name, FeedSource.url)).all()
        return [
            {
                "name": row.name,
                "url": row.url,
                "last_status": row.last_status,
                "last_http_status": row.last_http_status,
                "last_error": row.last_error,
                "last_checked": _local_iso(row.last_checked),
                "last_success": _local_iso(row.last_success),
                "last_new": row.last_new,
                "entries_seen": int(seen.get(row.url, 0)),
            }
            for row in rows
        ]


def _local_iso(stamp: datetime | None) -> str | None:
    # SQLite hands back naive datetimes; we only ever store UTC.
    if stamp is None:
        return None
    aware = stamp if stamp.tzinfo else stamp.replace(tzinfo=UTC)
    return aware.astimezone(SHANGHAI).isoformat(timespec="seconds")


STATUS_LABELS = {"ok": "正常", "not_modified": "无更新", "warning": "格式有误", "error": "失败", "": "未抓取"}


def health_markdown(health: list[dict[str, Any]]) -> str:
    """The health table as Markdown (Prefect artifact, CLI)."""
    rows = ["| 来源 | 状态 | 本次新增 | 累计条目 | 最近检查 | 问题 |", "|---|---|---|---|---|---|"]
    for h in health:
        problem = (h["last_error"] or "—").replace("|", "\\|").replace("\n", " ")
        rows.append(
            f"| [{h['name']}]({h['url']}) | {STATUS_LABELS.get(h['last_status'], h['last_status'])} | "
            f"{h['last_new']} | {h['entries_seen']} | {h['last_checked'] or '—'} | {problem} |"
        )
    return "\n".join(rows)
