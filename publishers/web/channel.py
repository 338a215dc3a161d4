"""The web channel: delivery of the static news site (issue 3 item 4, issue 7 items 2-3).

Layout on the target (DESIGN.md): `index.html` (+ `page/<n>/index.html` beyond 50 items), `articles/<id>/`,
`tags/<tag>/`, `feed.xml` (RSS 2.0), `sitemap.xml`, `static/site.css`, and media at
`media/<sha256>.<ext>` (content-addressed, so a page and its media never disagree).

What the channel knows per item lives in `data_dir/channels/web/<item_id>.json` (publishers.web.records), every
page is rendered from those records (publishers.web.site), so the aggregates (index, tags, feed, sitemap) are
rebuilt from all items on each change and a retraction or expiry needs no access to the store. Every key is
written atomically by the target.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any, ClassVar

from publishers.base import Capabilities, Condition, Correction, Receipt, Release, RenditionNeed
from publishers.channel_state import AggregatePublisher, Clock, iso, utc_now
from publishers.prechecks import too_long
from publishers.reach import ChannelReach, ReachWindow, page_reach
from publishers.web.preview import render_preview
from publishers.web.records import (
    ARTICLE_ROOT,
    ArticleMedia,
    article_key,
    article_url,
    index_key,
    is_expired,
    is_listed,
    item_record,
    newest_first,
    tag_slug,
)
from publishers.web.site import ASSETS, STYLESHEET_KEY, Site
from rongmei.core.errors import PublishError
from rongmei.core.model import CheckResult, ItemMeta
from rongmei.core.settings import Settings
from rongmei.targets.base import Target

__all__ = ["LIMITS", "PAGE_SIZE", "SITE_STATE", "WebPublisher", "refresh"]

PAGE_SIZE = 50  # items per index page
SITE_STATE = ".site-state"  # which index pages and tag pages exist, to delete stale ones (not *.json on purpose)
LIMITS = {"title": 80}  # lengths that make a poor fit on the site; blocking at the door


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
        renditions=(RenditionNeed("share_image"), RenditionNeed("video_web", Condition.has_video)),
        note="Static pages, RSS and sitemap on the distribution target; retraction leaves a notice page.",
    )
    order = 10

    def __init__(self, settings: Settings, now: Clock | None = None, target: Target | None = None) -> None:
        super().__init__(settings, now, target)
        self.site = Site(settings)

    @classmethod
    def precheck(cls, meta: ItemMeta, body: str, files: Mapping[str, Path], settings: Settings) -> list[CheckResult]:
        return too_long(cls.name, cls.label, meta, LIMITS)

    @classmethod
    def preview(cls, release: Release, settings: Settings, token: str) -> str | None:
        """The article page as it would go out, marked 预览/未发布 (publishers.web.preview)."""
        return render_preview(release, settings, token)

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
    reach_page = re.compile(r"^/articles/([^/]+)/(?:index\.html)?$")  # an item's page, as this channel writes it

    @classmethod
    def reach(cls, window: ReachWindow) -> ChannelReach:
        """Page views of an item's page (`/articles/<id>/`, or its index.html) per item and local day. A 304 is
        a reader coming back with the page cached, still a view; previews, media, feeds and bots never count."""
        return page_reach(window, "/articles/", cls.reach_page)


def refresh(settings: Settings, now: datetime | None = None) -> None:
    """Re-apply expiry on the site (called by the expiry flow on a schedule)."""
    WebPublisher(settings).refresh(now or utc_now())
