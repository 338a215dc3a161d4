"""Moving an editor's drop out of the inbox, and writing our reports beside it, without ever deleting or
replacing a file: a taken name gets `-2`, `-3`…, and a drop is never left half moved."""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import tempfile
from pathlib import Path

from rongmei.core.files import unique_path
from rongmei.intake.drops import Drop

__all__ = ["move_drop", "set_aside", "write_report"]


def write_report(folder: Path, text: str, name: str = "REJECTED.md") -> Path:
    """Write our report into a drop we set aside, never through whatever the editor left under that name.

    An earlier report (a plain file) is replaced by a rename, which never writes into the file it replaces;
    a link or anything else under that name is kept, and the report goes to REJECTED-2.md … instead."""
    stem, suffix = os.path.splitext(name)
    target, n = folder / name, 2
    while os.path.lexists(target) and not stat.S_ISREG(target.lstat().st_mode):
        target, n = folder / f"{stem}-{n}{suffix}", n + 1
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{stem}-", suffix=".tmp")  # O_EXCL: a name of its own
    try:
        os.fchmod(fd, 0o644)  # editors read it over the share, as any file we put there
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return target


def set_aside(drop: Drop, wanted: Path) -> Path:
    """Move the drop to `wanted` or the next free `wanted-N`; returns where it went."""
    wanted.parent.mkdir(parents=True, exist_ok=True)
    for _ in range(100):
        destination = unique_path(wanted)
        try:
            move_drop(drop, destination)
        except OSError as exc:
            # Another run took that name between our look and the move: take the next one.
            if exc.errno in (errno.EEXIST, errno.ENOTEMPTY) and drop.path.exists():
                continue
            raise
        return destination
    raise FileExistsError(errno.EEXIST, "no free name found", str(wanted))


def move_drop(drop: Drop, destination: Path) -> None:
    """Move every member of the drop under `destination` without ever replacing an existing file."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    if drop.shape == "folder":
        os.rename(drop.path, destination)  # fails rather than replace a non-empty directory
        return
    # Renamed, not linked and unlinked: a crash in between would leave the file with two names, which the
    # next pass would have to refuse as a hard link.
    destination.mkdir()  # a fresh directory: nothing in it can be replaced
    moved: list[tuple[Path, Path]] = []
    try:
        for member in drop.members:
            if not os.path.lexists(member):
                continue
            target = destination / member.name
            if os.path.lexists(target):
                raise FileExistsError(errno.EEXIST, "already there", str(target))
            os.rename(member, target)
            moved.append((member, target))
    except BaseException:
        for member, target in reversed(moved):  # a drop is never left half here, half there
            if not os.path.lexists(member):
                with contextlib.suppress(OSError):
                    os.rename(target, member)
        with contextlib.suppress(OSError):
            destination.rmdir()  # only when empty again
        raise
