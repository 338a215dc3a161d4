"""Keeping the service's own files to the service's own OS user.

The data dir holds what must not leak before publication or at all: the database (unpublished items, the
ledger), blobs and previews of items still in review, logs, reviewers' TOTP secrets, the Prefect API login,
the WeChat token and the ledger key. Every directory in it is made 0700 and every file at its top 0600 (they
are created ahead, so nothing new lands in an open one). The data dir itself is 0711: others may pass through
it but not list it, because the Prefect server's PostgreSQL runs as the `postgres` user in `prefect-pg/`
(issue 13 moves it out); the published site in `site/` is public anyway. The editors' drop tree (`content/`)
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
    _chmod(data, 0o711)
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


def _chmod(path: Path, mode: int) -> None:
    with contextlib.suppress(PermissionError):  # not ours (a shared mount): nothing we can do from here
        os.chmod(path, mode)
