"""The target interface: where published files go, as keys with the same guarantees on every target.

Every channel writes through a `Target`, so the web site, manifests, playlists and media land in the same
place with the same guarantees: a reader never sees a half-written file, and keys are '/'-separated paths
relative to the public root (e.g. 'articles/abc/index.html', 'media/<sha256>.mp3').

Withdrawal (retraction, "Every door guarded"): `withdraw(key)` removes a key for good. The directory target
also leaves a tombstone under `WITHDRAWN_DIR` (a dot-directory of the root, which the distribution server
never serves), and the server answers 410 Gone for that key while the file stays absent; writing the key
again (another live item uses the same blob) removes the tombstone and serves it again.
"""

from __future__ import annotations

import mimetypes
from abc import ABC, abstractmethod
from pathlib import Path, PurePosixPath

from rongmei.core.errors import PublishError

__all__ = [
    "CACHE_MEDIA", "CACHE_SHORT", "WITHDRAWN_DIR", "Target", "cache_control_for", "clean_key", "clean_prefix",
    "content_type_for"
]

mimetypes.add_type("application/vnd.apple.mpegurl", ".m3u8")
mimetypes.add_type("application/rss+xml", ".rss")
mimetypes.add_type("image/webp", ".webp")

# Manifests and pages change: every use revalidates (ETag → 304, cheap).
CACHE_SHORT = "no-cache"
# Media are content-addressed, so their bytes never change under one key, but a retraction withdraws them:
# with a year-long `immutable` header a withdrawn file stayed in browser and CDN caches for a year. An hour
# bounds that, and costs little: after it, a cached copy is revalidated with its ETag (304, no body), and
# terminals keep their own verified copies anyway. No stale-while-revalidate: it would serve past the hour.
CACHE_MEDIA = "public, max-age=3600"
WITHDRAWN_DIR = ".withdrawn"  # tombstones of withdrawn keys, under the site root


def content_type_for(key: str) -> str:
    if key.endswith((".json",)):
        return "application/json; charset=utf-8"
    if key.endswith(".xml"):
        return "application/xml; charset=utf-8"
    guessed, _ = mimetypes.guess_type(key)
    if guessed and guessed.startswith("text/"):
        return f"{guessed}; charset=utf-8"
    return guessed or "application/octet-stream"


def cache_control_for(key: str) -> str:
    return CACHE_MEDIA if key.startswith("media/") else CACHE_SHORT


def clean_key(key: str) -> str:
    path = PurePosixPath(key)
    if path.is_absolute() or ".." in path.parts or not key or key.endswith("/"):
        raise PublishError(f"refusing to write outside the public root: {key!r}")
    return str(path)


def clean_prefix(prefix: str) -> str:
    """A key prefix for `Target.keys`: '' (everything), a folder ('media/') or the start of a key."""
    stripped = prefix.rstrip("/")
    if not stripped:
        return ""
    cleaned = clean_key(stripped)
    return cleaned + "/" if prefix.endswith("/") else cleaned


class Target(ABC):
    """A place published files are written to. Writes are atomic per key."""

    @abstractmethod
    def write_bytes(self, key: str, data: bytes) -> None: ...

    @abstractmethod
    def write_file(self, key: str, source: Path) -> None: ...

    @abstractmethod
    def read_bytes(self, key: str) -> bytes | None:
        """The stored bytes, or None when the key does not exist."""

    @abstractmethod
    def exists(self, key: str) -> bool: ...

    @abstractmethod
    def delete(self, key: str) -> None:
        """Remove a key; removing a missing key is not an error."""

    @abstractmethod
    def withdraw(self, key: str) -> None:
        """Remove a key because what it holds must no longer be served (a retracted item's media).

        Unlike `delete` (a file replaced by another, e.g. a page moving), readers who ask for the key are
        told it is gone where the target can say so (410). Withdrawing a missing key is not an error."""

    @abstractmethod
    def keys(self, prefix: str = "") -> list[str]:
        """Every stored key starting with `prefix`, sorted (e.g. `keys("media/<sha256>")`: that blob in any
        extension). Temporary and tombstone files are not keys."""

    def write_text(self, key: str, text: str) -> None:
        self.write_bytes(key, text.encode("utf-8"))
