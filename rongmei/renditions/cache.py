"""The rendition cache: key → facts, one small JSON file per key under data_dir/renditions-cache/.

A key is the sha256 of everything that decides a rendition's bytes (input hashes, text, settings,
recipe version), so re-running the review step returns at once instead of re-encoding. One file per key
keeps concurrent workers from fighting over one index file; writes are atomic (write, then rename).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

__all__ = ["RenditionCache", "cache_key", "canonical_json"]


def canonical_json(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str).encode()


def cache_key(recipe: str, inputs: dict[str, Any]) -> str:
    return hashlib.sha256(canonical_json({"recipe": recipe, "inputs": inputs})).hexdigest()


class RenditionCache:
    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def _path(self, key: str) -> Path:
        return self.folder / key[:2] / f"{key}.json"

    def get(self, key: str) -> dict[str, Any] | None:
        try:
            return json.loads(self._path(key).read_text(encoding="utf-8"))
        except (FileNotFoundError, json.JSONDecodeError):
            return None

    def put(self, key: str, facts: dict[str, Any]) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        with os.fdopen(fd, "wb") as handle:
            handle.write(canonical_json(facts))
        os.replace(tmp, path)
