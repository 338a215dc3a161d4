"""A feed entry as a reprint drop: its id, kind, front matter and Markdown body (`build_reprint`), written into
the inbox atomically and never over a drop already there (`write_drop`).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

import yaml

from rongmei.core.errors import RongmeiError
from rongmei.core.model import SHANGHAI, Kind
from rongmei.core.settings import FeedSourceConfig
from rongmei.intake.feeds.html2md import html_to_markdown, markdown_url, plain_text

__all__ = [
    "SUMMARY_LIMIT", "Reprint", "build_reprint", "entry_key", "entry_kind", "published_at", "reprint_id",
    "write_drop"
]

SUMMARY_LIMIT = 120  # WeChat's enforced digest limit (the wechat channel's precheck)


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
    media = markdown_url(urljoin(link or base_url, media)) if media else ""
    # The ingest requires an audio/video item to carry its media file (rongmei.intake.bundles), and a
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
    parts.append(f"本文转载自{source_name}，原文链接：[{original}]({markdown_url(original)})")

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


