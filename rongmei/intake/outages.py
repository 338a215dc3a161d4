"""When the store cannot take a drop in: the database unreachable, or the disk under the data dir full.

Neither is the drop's fault, so neither may reject it: the drop stays in the inbox, the run that met the
trouble says so (with what to do), and the next pass after the store is back takes the drop in. Any other
error a drop causes is the drop's outcome (rongmei.intake.ingest).
"""

from __future__ import annotations

import errno

from sqlalchemy.exc import InterfaceError, OperationalError

from rongmei.core.errors import StoreError
from rongmei.core.settings import Settings
from rongmei.intake.drops import Drop
from rongmei.intake.names import escape_name

__all__ = ["NO_SPACE", "STORE_DOWN", "StoreFull", "disk_full", "one_line", "store_full"]

NO_SPACE = frozenset({errno.ENOSPC, errno.EDQUOT})


class StoreFull(StoreError):
    """The disk under the data dir (blobs, database) is full: the drop was not taken in and waits in the inbox."""


# The store failing is no fault of the drop: the drop waits in the inbox and the caller hears of it.
STORE_DOWN = (OperationalError, InterfaceError, StoreFull)


def disk_full(exc: BaseException) -> bool:
    """Whether `exc`, or what caused it, says the disk is full: ENOSPC or EDQUOT, SQLite's "database or disk is
    full", PostgreSQL's disk_full (SQLSTATE 53100)."""
    seen: BaseException | None = exc
    for _ in range(20):  # a chain of causes is short; never follow a pathological one for ever
        if seen is None:
            return False
        if isinstance(seen, OSError) and seen.errno in NO_SPACE:
            return True
        orig = getattr(seen, "orig", None)
        if "disk is full" in str(orig if orig is not None else seen) or getattr(orig, "sqlstate", None) == "53100":
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def store_full(settings: Settings, drop: Drop, exc: BaseException) -> StoreFull:
    """The error a run reports for a drop the full disk kept out: what happened, that nothing is lost, the fix."""
    return StoreFull(
        f"数据目录所在的磁盘已满（{settings.data_dir.resolve()}）：稿件 {drop.label} 没有收进来，仍在收稿箱中，没有丢失。"
        f"请清理或扩大这块磁盘；腾出空间后，下一轮收稿（每 15 秒一次）会自动收下。技术信息：{one_line(exc)}")


def one_line(exc: BaseException, limit: int = 300) -> str:
    text = " ".join(f"{type(exc).__name__}: {exc}".split())
    return escape_name(text if len(text) <= limit else text[:limit] + "…")
