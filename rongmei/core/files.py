"""File naming shared by every floor: the one MIME → extension table, and names that never overwrite."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = [
    "ASSETS_DIR", "MIME_EXTENSIONS", "PROJECT_ROOT", "extension_for", "fit_name", "name_max", "unique_path"
]

# The checkout (or installed tree) holding flows/, publishers/, assets/ and prefect.yaml.
PROJECT_ROOT = Path(__file__).resolve().parents[2]
ASSETS_DIR = PROJECT_ROOT / "assets"

# What we serve and store is one of these; a rendition's or a file's extension is always taken from here.
MIME_EXTENSIONS = {
    "image/jpeg": "jpg", "image/png": "png", "image/webp": "webp", "image/gif": "gif",
    "video/mp4": "mp4", "video/webm": "webm", "audio/mpeg": "mp3", "audio/mp4": "m4a", "audio/aac": "aac",
}


def extension_for(mime: object, default: str = "bin") -> str:
    """The file extension for a MIME type (`image/jpeg` → `jpg`), or `default` for a type we do not know."""
    return MIME_EXTENSIONS.get(str(mime or ""), default)


def name_max(directory: Path) -> int:
    """Longest file name, in bytes, the file system takes in `directory` (or the nearest existing parent)."""
    for candidate in (directory, *directory.parents):
        try:
            limit = os.pathconf(candidate, "PC_NAME_MAX")
        except FileNotFoundError:
            continue
        except (OSError, ValueError):
            break
        return limit if limit > 0 else 255
    return 255


def fit_name(name: str, limit: int) -> str:
    """`name` cut to at most `limit` bytes (UTF-8), on a character boundary."""
    out, used = [], 0
    for ch in name:
        size = len(ch.encode("utf-8", "surrogateescape"))
        if used + size > limit:
            break
        out.append(ch)
        used += size
    return "".join(out)


def unique_path(path: Path) -> Path:
    """`path`, or `path-2`, `path-3`… so an earlier archived or rejected drop is never overwritten.

    Names are kept within the file system's limit (NAME_MAX, in bytes): a long name is cut on a character
    boundary, always keeping the `-N` suffix, so a drop named near 255 bytes still finds a place."""
    limit = name_max(path.parent)
    candidate = path.with_name(fit_name(path.name, limit))
    n = 2
    while os.path.lexists(candidate):
        suffix = f"-{n}"
        candidate = path.with_name(fit_name(path.name, limit - len(suffix)) + suffix)
        n += 1
    return candidate
