"""The embedded default target: files under a directory (data_dir/site), each written to a temporary name
and renamed into place, with tombstones for withdrawn keys that the distribution server answers 410 for."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from rongmei.targets.base import WITHDRAWN_DIR, Target, clean_key, clean_prefix

__all__ = ["DirectoryTarget"]


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
