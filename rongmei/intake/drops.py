"""Drops in the inbox: their three shapes, finding them, telling when a copy into the inbox has settled, and the
limits the door puts on what it accepts. Nothing here reads a file's content (rongmei.intake.bundles does).

A drop is one of (DESIGN.md):
- a folder `inbox/<name>/` with `index.md` and the item's files,
- a single Markdown file `inbox/<name>.md`,
- a lone video or audio file `inbox/<name>.mp4` with an optional `<name>.yaml` sidecar.
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rongmei.intake.names import escape_name

__all__ = [
    "AUDIO_EXTENSIONS", "IGNORED_NAMES", "IMAGE_EXTENSIONS", "IN_PROGRESS", "MEDIA_EXTENSIONS",
    "SIDECAR_EXTENSIONS", "VIDEO_EXTENSIONS", "Drop", "Limits", "drop_state", "find_drops", "is_settled"
]

VIDEO_EXTENSIONS = {".mp4", ".mov", ".m4v", ".mkv", ".avi", ".webm"}
AUDIO_EXTENSIONS = {".mp3", ".m4a", ".aac", ".wav", ".flac", ".ogg", ".opus"}
MEDIA_EXTENSIONS = VIDEO_EXTENSIONS | AUDIO_EXTENSIONS
IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".gif", ".webp", ".bmp", ".heic", ".tif", ".tiff"}
SIDECAR_EXTENSIONS = (".yaml", ".yml")
# Names that copy tools and browsers give files they are still writing.
IN_PROGRESS = re.compile(r"(\.part|\.partial|\.crdownload|\.download|\.tmp|\.filepart|~)$|^~\$|^\.~lock", re.I)
IGNORED_NAMES = {".DS_Store", "Thumbs.db", "desktop.ini", "REJECTED.md", "REVIEW.md"}


@dataclass(frozen=True)
class Limits:
    """What the door accepts, from the settings (`Limits.from_settings`); the defaults are the settings'."""

    file_bytes: int = 4 * 1024**3  # max_upload_bytes
    markdown_bytes: int = 2 * 1024**2  # max_markdown_bytes: index.md, a single .md drop, a .yaml sidecar
    image_pixels: int = 80_000_000  # media.max_image_pixels: renditions refuse larger images
    name_bytes: int = 255  # longest folder name the item id becomes (archive/<id>/), in bytes

    @classmethod
    def from_settings(cls, settings: Any, name_bytes: int = 255) -> Limits:
        return cls(
            file_bytes=settings.max_upload_bytes,
            markdown_bytes=settings.max_markdown_bytes,
            image_pixels=settings.media.max_image_pixels,
            name_bytes=name_bytes,
        )


@dataclass(frozen=True)
class Drop:
    """Something an editor put into the inbox, not yet read."""

    name: str
    path: Path  # the folder, the .md file, or the media file
    shape: str  # "folder" | "markdown" | "media"
    members: tuple[Path, ...]  # every path that belongs to the drop (moved together)

    @property
    def label(self) -> str:
        """The name as shown to people and in the ledger (unsafe characters escaped)."""
        return escape_name(self.name)

    def files(self) -> list[Path]:
        """All regular files and links inside the drop, sorted, hidden clutter left out.

        A link or anything else that is not a plain file under a name we ignore (REJECTED.md, REVIEW.md …) is
        listed all the same: we write files of those names later and must never write through a link."""
        if self.shape != "folder":
            return [m for m in self.members if m == self.path or not _ignored(m)]
        found: list[Path] = []
        for root, dirs, names in os.walk(self.path, followlinks=False):
            dirs.sort()
            for name in sorted(names):
                if not _ignored(Path(root) / name):
                    found.append(Path(root) / name)
            for name in dirs:
                if (Path(root) / name).is_symlink():
                    found.append(Path(root) / name)
        return found


def _ignored(path: Path) -> bool:
    if path.name not in IGNORED_NAMES:
        return False
    try:
        return stat.S_ISREG(path.lstat().st_mode)
    except FileNotFoundError:
        return True


def find_drops(inbox: Path) -> list[Drop]:
    """Every drop in the inbox, sorted by name. Hidden entries (work in progress of tools) are skipped."""
    if not inbox.is_dir():
        return []
    entries = sorted(p for p in inbox.iterdir() if not p.name.startswith("."))
    names = {p.name for p in entries}
    drops: list[Drop] = []
    for entry in entries:
        if entry.is_dir() and not entry.is_symlink():
            drops.append(Drop(entry.name, entry, "folder", (entry,)))
        elif entry.suffix.lower() == ".md":
            drops.append(Drop(entry.stem, entry, "markdown", (entry,)))
        elif entry.suffix.lower() in MEDIA_EXTENSIONS:
            members = [entry]
            members += [entry.with_suffix(ext) for ext in SIDECAR_EXTENSIONS if entry.stem + ext in names]
            drops.append(Drop(entry.stem, entry, "media", tuple(members)))
        elif entry.is_symlink() or entry.is_dir():
            drops.append(Drop(entry.name, entry, "folder", (entry,)))
    return drops


def is_settled(drop: Drop, now: float, settle_seconds: float) -> bool:
    """True once nothing in the drop has changed for `settle_seconds` and no file is still being copied."""
    newest = 0.0
    paths = [drop.path, *drop.files()] if drop.shape == "folder" else list(drop.members)
    try:
        for path in paths:
            if IN_PROGRESS.search(path.name):
                return False
            info = path.lstat()
            newest = max(newest, info.st_mtime)
            if stat.S_ISDIR(info.st_mode):
                # A directory's mtime moves when files are added or renamed inside it.
                for root, dirs, _ in os.walk(path):
                    for d in dirs:
                        newest = max(newest, (Path(root) / d).lstat().st_mtime)
    except FileNotFoundError:
        return False  # vanished while we looked: the copy is still in motion
    return now - newest >= settle_seconds


def drop_state(drop: Drop) -> str:
    """What the drop looks like in the inbox right now (names, sizes, newest change), as a short key.

    Equal keys mean nothing was added, removed or written in between: a failure is reported once per state,
    and a drop whose state moved while it was being read is looked at again instead of being judged.
    Raises FileNotFoundError when the drop itself is gone."""
    entries: list[tuple[str, int, int]] = []

    def add(path: Path) -> None:
        try:
            info = path.lstat()
        except FileNotFoundError:
            return
        entries.append((os.fsencode(path).hex(), info.st_size, info.st_mtime_ns))

    drop.path.lstat()
    for member in drop.members:
        add(member)
    if drop.shape == "folder" and not drop.path.is_symlink():
        for root, dirs, names in os.walk(drop.path):
            for name in sorted(dirs) + sorted(names):
                add(Path(root) / name)
    return hashlib.sha256(repr((drop.shape, sorted(entries))).encode()).hexdigest()
