"""Keeping the service's own files to the service's own OS user.

The data dir holds what must not leak before publication or at all: the database (unpublished items, the
ledger), blobs and previews of items still in review, logs, reviewers' TOTP secrets, the Prefect API login,
the WeChat token and the ledger key. Every directory in it is made 0700 and every file at its top 0600 (they
are created ahead, so nothing new lands in an open one). The data dir itself is 0700 too; only a data dir
that still holds a Prefect cluster run by the `postgres` user (`prefect-pg/`, made by a release that kept it
there when started as root) stays 0711, so that `postgres` may pass through to it but nobody may list it. New
clusters of root's live outside the data dir (rongmei.runtime.pgcluster). The published site in `site/` is
public anyway. The editors' drop tree (`content/`)
is deliberately left alone: editors, perhaps as other users over a share, must write into it.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from rongmei.core.settings import Settings

__all__ = ["PRIVATE_DIRS", "SHARED_DIRS", "make_private", "private_file"]

PRIVATE_DIRS = ("secrets", "logs", "blobs", "preview", "run", "ledger", "prefect", "work", "progress", "channels",
                "renditions-cache", "reports")
SHARED_DIRS = ("site", "prefect-pg")  # public output; the cluster's own modes (rongmei.runtime.pgcluster)


def make_private(settings: Settings) -> None:
    data = Path(settings.data_dir)
    data.mkdir(parents=True, exist_ok=True)
    _chmod(data, 0o711 if _postgres_runs_a_cluster_in(data) else 0o700)
    for name in PRIVATE_DIRS:
        (data / name).mkdir(mode=0o700, exist_ok=True)
    for entry in data.iterdir():
        if entry.is_symlink() or entry.name in SHARED_DIRS:
            continue
        _chmod(entry, 0o700 if entry.is_dir() else 0o600)
    for folder in ("logs", "secrets", "ledger"):
        for path in (data / folder).iterdir():
            if path.is_file() and not path.is_symlink():
                _chmod(path, 0o600)


def private_file(path: Path, mode: str = "ab"):  # type: ignore[no-untyped-def]
    """Open a file for writing that is created 0600 (a log, say) whatever the process's umask."""
    path.parent.mkdir(parents=True, exist_ok=True)
    flags = os.O_WRONLY | os.O_CREAT | (os.O_APPEND if "a" in mode else os.O_TRUNC)
    return os.fdopen(os.open(path, flags, 0o600), mode, **({} if "b" in mode else {"encoding": "utf-8"}))


def _postgres_runs_a_cluster_in(data: Path) -> bool:
    version = data / "prefect-pg" / "data" / "PG_VERSION"
    try:
        return os.geteuid() == 0 and version.stat().st_uid != 0  # root starts it as `postgres`, which owns it
    except OSError:
        return False


def _chmod(path: Path, mode: int) -> None:
    with contextlib.suppress(PermissionError):  # not ours (a shared mount): nothing we can do from here
        os.chmod(path, mode)
