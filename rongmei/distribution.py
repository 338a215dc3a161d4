"""Where published files go: a local directory (embedded default) or an S3-compatible bucket.

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
import os
import shutil
import tempfile
from abc import ABC, abstractmethod
from pathlib import Path, PurePosixPath

from rongmei.errors import ConfigError, PublishError
from rongmei.settings import Settings

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


class DirectoryTarget(Target):
    """Files under a directory, written to a temporary name and renamed into place."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def path(self, key: str) -> Path:
        return self.root / clean_key(key)

    def tombstone(self, key: str) -> Path:
        return self.root / WITHDRAWN_DIR / clean_key(key)

    def _replace_into(self, key: str, fill) -> None:  # type: ignore[no-untyped-def]
        target = self.path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as out:
                fill(out)
            os.chmod(tmp_name, 0o644)
            os.replace(tmp_name, target)
        except BaseException:
            if os.path.exists(tmp_name):
                os.unlink(tmp_name)
            raise
        # After the file is in place, so a reader never sees "gone" for a key that is being written again.
        self.tombstone(key).unlink(missing_ok=True)

    def write_bytes(self, key: str, data: bytes) -> None:
        self._replace_into(key, lambda out: out.write(data))

    def write_file(self, key: str, source: Path) -> None:
        if key.startswith("media/") and self.path(key).exists():
            return  # content-addressed: the same key always holds the same bytes
        with open(source, "rb") as src:
            self._replace_into(key, lambda out: shutil.copyfileobj(src, out, 1024 * 1024))

    def read_bytes(self, key: str) -> bytes | None:
        path = self.path(key)
        return path.read_bytes() if path.is_file() else None

    def exists(self, key: str) -> bool:
        return self.path(key).is_file()

    def delete(self, key: str) -> None:
        self.path(key).unlink(missing_ok=True)

    def withdraw(self, key: str) -> None:
        # Tombstone first: between the two steps a reader gets the file or 410, never a plain 404.
        stone = self.tombstone(key)
        stone.parent.mkdir(parents=True, exist_ok=True)
        stone.touch()
        self.path(key).unlink(missing_ok=True)

    def keys(self, prefix: str = "") -> list[str]:
        prefix = clean_prefix(prefix)
        # Walk only the folder the prefix names: keys("media/<sha>") must not scan the whole site.
        folder = self.root / prefix.rpartition("/")[0] if "/" in prefix else self.root
        found = []
        for directory, subdirs, files in os.walk(folder):
            subdirs[:] = [d for d in subdirs if not d.startswith(".")]  # tombstones, half-written uploads
            base = Path(directory).relative_to(self.root).as_posix()
            for name in files:
                key = name if base == "." else f"{base}/{name}"
                if not name.startswith(".") and key.startswith(prefix):
                    found.append(key)
        return sorted(found)


def target_from_settings(settings: Settings) -> Target:
    if settings.s3_bucket:
        try:
            from rongmei.s3 import S3Target
        except ImportError as exc:  # pragma: no cover - only when the S3 module is missing
            raise ConfigError("s3_bucket is set but the S3 target is not available") from exc
        return S3Target(settings.s3_bucket, endpoint_url=settings.s3_endpoint_url or None)
    return DirectoryTarget(settings.site_dir)
