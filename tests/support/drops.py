"""Editors' drops as the tests make them: a folder with index.md and files, aged so that it counts as settled."""

from __future__ import annotations

import os
import time
from pathlib import Path


def write_drop(inbox: Path, name: str, front: str, body: str = "正文。", files: dict[str, bytes] | None = None,
               age: float = 60.0) -> Path:
    """Create a folder drop whose files look settled (mtime `age` seconds ago)."""
    folder = inbox / name
    folder.mkdir(parents=True)
    (folder / "index.md").write_text(f"---\n{front.strip()}\n---\n{body}\n", encoding="utf-8")
    for rel, data in (files or {}).items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_bytes(data)
    age_tree(folder, age)
    return folder


def age_tree(path: Path, age: float = 60.0) -> None:
    stamp = time.time() - age
    paths = [path, *path.rglob("*")] if path.is_dir() else [path]
    for p in paths:
        os.utime(p, (stamp, stamp), follow_symlinks=False)


def ingest_staged(settings, store, name: str, front: str, body: str = "正文。",  # type: ignore[no-untyped-def]
                  files: dict[str, bytes] | None = None) -> int:
    """Ingest one drop from a staging folder (so that no review run starts for it); returns its version id."""
    from rongmei.intake.drops import find_drops
    from rongmei.intake.ingest import ingest_drop

    staging = settings.content_dir / "staging"
    write_drop(staging, name, front, body, files)
    [drop] = [d for d in find_drops(staging) if d.name == name]
    outcome = ingest_drop(drop, settings, store)
    assert outcome.status == "ingested", [p.message for p in outcome.problems]
    return outcome.version_id
