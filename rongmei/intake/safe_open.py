"""Opening a drop's file without trusting whoever put it there ("Every door guarded").

Whoever can write into the inbox is not trusted with anything beyond their own drop: every file is opened below
the inbox one path component at a time without following a link (`open_inside`), must be a regular file with a
single name, and is identified by device, inode and ctime so that what is stored is what was checked.
"""

from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from rongmei.core.errors import DropError

__all__ = ["FileRef", "UnsafeFile", "file_identity", "open_inside"]


class UnsafeFile(DropError):
    """Raised when a file of a drop may not be read: not a regular file, more than one name, or a link."""

    def __init__(self, code: str, message: str, fix: str) -> None:
        super().__init__(message)
        self.code, self.message, self.fix = code, message, fix


@dataclass(frozen=True)
class FileRef:
    """Where a checked file lies (`inner`, relative to the inbox, internal links resolved) and which file it was."""

    inbox: Path
    inner: str
    identity: tuple[int, int, int]  # device, inode, ctime: any write, rename or replacement changes it
    size: int


_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer, and the worker with it.
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


def open_inside(inbox: Path, inner: str, label: str) -> tuple[int, os.stat_result]:
    """Open `inbox/inner` for reading, every component below the inbox without following a link; the file
    must be a regular file with one name. Returns the descriptor and its `fstat`. Raises UnsafeFile."""
    parts = PurePosixPath(inner).parts
    dir_fd = os.open(inbox, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)  # the inbox is the admin's
    try:
        for part in parts[:-1]:
            next_fd = os.open(part, _DIR_FLAGS, dir_fd=dir_fd)
            os.close(dir_fd)
            dir_fd = next_fd
        fd = os.open(parts[-1], _FILE_FLAGS, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            raise UnsafeFile(
                "path.symlink",
                f"文件 {label} 在读取时变成了快捷方式（符号链接），或它所在的文件夹是快捷方式，出于安全原因不能接收。",
                "请放入真实的文件和文件夹，不要放快捷方式；放好后不要再改动。",
            ) from exc
        raise
    finally:
        os.close(dir_fd)
    info = os.fstat(fd)
    try:
        _check_regular(info, label)
    except UnsafeFile:
        os.close(fd)
        raise
    return fd, info


def file_identity(info: os.stat_result) -> tuple[int, int, int]:
    return info.st_dev, info.st_ino, info.st_ctime_ns


def _check_regular(info: os.stat_result, label: str) -> None:
    if stat.S_ISDIR(info.st_mode):
        raise UnsafeFile(
            "path.not_a_file",
            f"{label} 是一个指向文件夹的快捷方式，不能接收。",
            "请把文件直接放进稿件文件夹，不要放指向文件夹的快捷方式。",
        )
    if not stat.S_ISREG(info.st_mode):
        raise UnsafeFile(
            "path.not_a_file",
            f"{label} 不是普通文件（而是管道、设备等特殊文件），不能接收。",
            "请只放入普通的文件。",
        )
    if info.st_nlink > 1:
        raise UnsafeFile(
            "path.hardlink",
            f"文件 {label} 是硬链接（同一份文件在别处还有 {info.st_nlink - 1} 个名字），出于安全原因不能接收。",
            "请复制一份真实文件放入，而不是硬链接。",
        )

