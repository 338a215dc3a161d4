"""The reviewers' preview of an item: its article page as it would go out, under an unguessable token, apart
from the public site (served at `/preview/<token>/`, never indexed).
"""

from __future__ import annotations

import re
from datetime import datetime
from pathlib import Path

from publishers.base import Release
from publishers.channel_state import iso, utc_now
from publishers.web.records import ArticleMedia, item_record
from publishers.web.site import ASSETS, STYLESHEET_KEY, Site
from rongmei.core.errors import PublishError
from rongmei.core.settings import Settings
from rongmei.targets.directory import DirectoryTarget

__all__ = ["PREVIEW_TOKEN", "render_preview"]

PREVIEW_TOKEN = re.compile(r"^[A-Za-z0-9_\-]{8,128}$")


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

