"""Shared plumbing of the aggregate channels (the site, playlists, screen manifests).

Their outputs (one playlist per zone, one manifest per display group) are aggregates over every live item,
so each channel keeps what it knows per item in `data_dir/channels/<channel>/<item_id>.json` and rebuilds
the affected outputs from all of them. A file lock serializes rebuilds: the publish flow delivers items in
parallel, and two rebuilds racing on one playlist would lose an item.
"""

from __future__ import annotations

import fcntl
import json
import os
import tempfile
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from publishers.base import Publisher, Release
from rongmei.core.errors import PublishError
from rongmei.core.files import MIME_EXTENSIONS
from rongmei.core.settings import Settings
from rongmei.targets.base import Target
from rongmei.targets.selection import target_from_settings

__all__ = [
    "VOLATILE_FIELDS", "AggregatePublisher", "ChannelState", "Clock", "iso", "local_zone", "media_key",
    "parse_time", "public_url", "upload_rendition", "utc_now", "window_end", "write_manifest"
]

Clock = Callable[[], datetime]
# Fields that change on every write and so must not count as "the manifest changed".
VOLATILE_FIELDS = ("manifest_version", "generated_at")


def utc_now() -> datetime:
    return datetime.now(UTC)


def iso(moment: datetime | None) -> str | None:
    return moment.isoformat(timespec="seconds") if moment else None


def parse_time(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


class ChannelState:
    """What one channel knows per item, one JSON file each, written atomically."""

    def __init__(self, settings: Settings, channel: str) -> None:
        self.root = Path(settings.data_dir) / "channels" / channel
        self.root.mkdir(parents=True, exist_ok=True)

    def path(self, item_id: str) -> Path:
        return self.root / f"{item_id}.json"

    @contextmanager
    def locked(self) -> Iterator[None]:
        with open(self.root / ".lock", "a+") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def load(self, item_id: str) -> dict[str, Any] | None:
        path = self.path(item_id)
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None

    def save(self, record: Mapping[str, Any]) -> None:
        data = json.dumps(record, ensure_ascii=False, indent=1, sort_keys=True).encode("utf-8")
        fd, tmp = tempfile.mkstemp(dir=self.root, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(data)
            os.replace(tmp, self.path(str(record["item_id"])))
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def all(self) -> list[dict[str, Any]]:
        return [json.loads(p.read_text(encoding="utf-8")) for p in sorted(self.root.glob("*.json"))]


def write_manifest(target: Target, key: str, body: dict[str, Any], now: datetime,
                   companions: Mapping[str, Callable[[int], bytes]] | None = None) -> tuple[int, bool]:
    """Write `body` as JSON under `key` with the next manifest_version, unless nothing changed.

    Returns (manifest_version, written). An unchanged manifest keeps its bytes, so terminals keep getting
    304 for it. `companions` (key -> render(version)) are written before the manifest, so the manifest a
    terminal reads never announces something its companions do not have yet.
    """
    old_version = 0
    raw = target.read_bytes(key)
    if raw:
        try:
            old = json.loads(raw)
            old_version = int(old.get("manifest_version", 0))
            if _comparable(old) == _comparable(body):
                return old_version, False
        except (ValueError, TypeError):
            old_version = 0  # a damaged manifest is simply replaced
    version = old_version + 1
    for companion_key, render in (companions or {}).items():
        target.write_bytes(companion_key, render(version))
    full = {"manifest_version": version, "generated_at": iso(now), **body}
    target.write_bytes(key, json.dumps(full, ensure_ascii=False, indent=1).encode("utf-8"))
    return version, True


def _comparable(body: Mapping[str, Any]) -> str:
    return json.dumps({k: v for k, v in body.items() if k not in VOLATILE_FIELDS}, sort_keys=True,
                      ensure_ascii=False)


def media_key(sha256: str, mime: str) -> str:
    ext = MIME_EXTENSIONS.get(mime)
    if not ext:
        raise PublishError(f"unsupported media type {mime!r} for sha256 {sha256[:12]}…; expected one of "
                           f"{sorted(MIME_EXTENSIONS)}", retryable=False)
    return f"media/{sha256}.{ext}"


def public_url(settings: Settings, key: str) -> str:
    return f"{settings.public_url.rstrip('/')}/{key}"


def upload_rendition(target: Target, release: Release, key_name: str) -> dict[str, Any]:
    """Copy one rendition to `media/<sha256>.<ext>` (content-addressed) and return its description."""
    rendition = release.renditions[key_name]
    sha = str(rendition["sha256"])
    mime = str(rendition.get("mime") or "")
    key = media_key(sha, mime)
    source = release.blob_path(sha)
    if not Path(source).is_file():
        raise PublishError(f"rendition {key_name} of {release.item_id} v{release.version} is missing from the "
                           f"blob store ({source}); re-run the review preparation", retryable=False)
    try:
        target.write_file(key, Path(source))
    except OSError as exc:  # disk full, permissions: a retry after the fix writes the same bytes
        raise PublishError(f"could not upload {key}: {exc}", retryable=True) from exc
    return {**dict(rendition), "key": key, "url": ""}


def local_zone(settings: Settings) -> ZoneInfo:
    return ZoneInfo(settings.timezone)


def window_end(now: datetime, settings: Settings) -> datetime:
    """End of tomorrow (local): how far ahead terminals may cache. Stable within a day, so rebuilds at
    different moments of one day produce the same manifest and terminals keep getting 304."""
    local = now.astimezone(local_zone(settings))
    midnight = local.replace(hour=0, minute=0, second=0, microsecond=0)
    return midnight + timedelta(days=2)


class AggregatePublisher(Publisher):
    """Base of channels whose outputs (index, playlists, manifests) are rebuilt from per-item state files
    and written to the distribution target. `now` and `target` can be injected (tests, previews)."""

    def __init__(self, settings: Settings, now: Clock | None = None, target: Target | None = None) -> None:
        super().__init__(settings)
        self.now = now or utc_now
        self.target = target or target_from_settings(settings)
        self.state = ChannelState(settings, self.name)
