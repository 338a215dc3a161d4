"""Taking a settled drop into the store: read → check → store blobs → record version → archive original.

The order is what makes a crash harmless: the original stays in the inbox until its version is committed,
and a re-run that finds a drop whose content equals the item's latest version only finishes the move.
Nothing an editor dropped is ever deleted: it ends in archive/, rejected/ or (later) returned/.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from sqlalchemy import select

from rongmei import ledger
from rongmei.bundles import Bundle, Drop, find_drops, is_settled, read_bundle
from rongmei.checks import run_checks
from rongmei.model import SHANGHAI, CheckResult, ItemState
from rongmei.settings import Settings
from rongmei.store import Item, Store, Version

log = logging.getLogger(__name__)
SYSTEM = "system:ingest"


@dataclass
class Outcome:
    drop: str
    status: str  # "ingested" | "unchanged" | "rejected"
    item_id: str = ""
    version: int = 0
    version_id: int = 0
    moved_to: str = ""
    problems: list[CheckResult] = field(default_factory=list)
    warnings: list[CheckResult] = field(default_factory=list)


def settled_drops(settings: Settings, now: float | None = None) -> list[Drop]:
    now = time.time() if now is None else now
    return [d for d in find_drops(settings.inbox) if is_settled(d, now, settings.settle_seconds)]


def content_hash(meta: dict, body: str, file_hashes: dict[str, str]) -> str:
    """Identity of a version: front matter, body and every file's sha256."""
    canonical = json.dumps(
        {"meta": meta, "body": body, "files": file_hashes}, ensure_ascii=False, sort_keys=True, separators=(",", ":")
    )
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def ingest_drop(drop: Drop, settings: Settings, store: Store) -> Outcome:
    bundle = read_bundle(drop, max_file_bytes=settings.max_upload_bytes)
    checks: list[CheckResult] = list(bundle.notes)
    if bundle.meta is not None and not bundle.problems:
        checks += run_checks(bundle.meta, bundle.body, bundle.files, settings)
    problems = bundle.problems + [c for c in checks if c.blocking]
    if problems:
        return reject(bundle, problems, checks, settings, store)
    return accept(bundle, checks, settings, store)


def accept(bundle: Bundle, checks: list[CheckResult], settings: Settings, store: Store) -> Outcome:
    assert bundle.meta is not None
    meta = bundle.meta
    files = {rel: dict(zip(("sha256", "bytes"), store.put_file(path), strict=True)) for rel, path in bundle.files.items()}
    meta_json = meta.to_json()
    digest = content_hash(meta_json, bundle.body, {rel: f["sha256"] for rel, f in files.items()})
    with store.session() as session:
        item = session.get(Item, meta.id)
        latest = store.latest_version(session, meta.id) if item else None
        if latest is not None and latest.content_hash == digest:
            # Either a crash after the commit below (finish the move) or the same content dropped again.
            outcome = Outcome(bundle.drop.name, "unchanged", meta.id, latest.number, latest.id)
        else:
            if item is None:
                item = Item(id=meta.id, drop_name=bundle.drop.name)
                session.add(item)
            number = (latest.number + 1) if latest else 1
            version = Version(
                item_id=meta.id,
                number=number,
                content_hash=digest,
                drop_name=bundle.drop.name,
                meta=meta_json,
                body=bundle.body,
                files=files,
                checks=[c.model_dump(mode="json") for c in checks],
                state=ItemState.in_review,
            )
            for older in session.scalars(
                select(Version).where(
                    Version.item_id == meta.id, Version.state == ItemState.in_review, Version.number != number
                )
            ):
                older.state = ItemState.superseded  # approvals of older versions no longer count
            session.add(version)
            item.current_version = number
            item.state = ItemState.in_review
            item.drop_name = bundle.drop.name
            session.flush()
            ledger.record(
                session,
                "ingested",
                actor=SYSTEM,
                item_id=meta.id,
                version=number,
                content_hash=digest,
                details={"drop": bundle.drop.name, "title": meta.title, "files": len(files)},
            )
            ledger.record(
                session,
                "checked",
                actor="system:checks",
                item_id=meta.id,
                version=number,
                content_hash=digest,
                details={
                    "blocking": 0,
                    "warnings": [c.code for c in checks],
                },
            )
            outcome = Outcome(bundle.drop.name, "ingested", meta.id, number, version.id)
    outcome.warnings = checks
    destination = archive_destination(settings, bundle.drop, meta.id, outcome.version)
    move_drop(bundle.drop, destination)
    outcome.moved_to = str(destination)
    with store.session() as session:
        version = session.get(Version, outcome.version_id)
        if version is not None and not version.archived_to:
            version.archived_to = str(destination)
    return outcome


def reject(
    bundle: Bundle, problems: list[CheckResult], checks: list[CheckResult], settings: Settings, store: Store
) -> Outcome:
    warnings = [c for c in checks if not c.blocking]
    destination = unique_path(settings.rejected / bundle.drop.name)
    move_drop(bundle.drop, destination)
    (destination / "REJECTED.md").write_text(rejected_report(bundle, problems, warnings), encoding="utf-8")
    item_id = bundle.meta.id if bundle.meta else str(bundle.raw_meta.get("id", ""))[:100]
    with store.session() as session:
        ledger.record(
            session,
            "rejected",
            actor=SYSTEM,
            item_id=item_id,
            details={
                "drop": bundle.drop.name,
                "moved_to": str(destination),
                "problems": [{"code": p.code, "message": p.message} for p in problems],
            },
        )
    return Outcome(bundle.drop.name, "rejected", item_id, moved_to=str(destination), problems=problems, warnings=warnings)


def rejected_report(bundle: Bundle, problems: list[CheckResult], warnings: list[CheckResult]) -> str:
    stamp = datetime.now(SHANGHAI).strftime("%Y-%m-%d %H:%M")
    lines = [
        f"# 稿件未被接收：{bundle.drop.name}",
        "",
        f"系统于 {stamp} 检查了这份稿件，发现下列问题。请逐条修改后，把整个稿件重新放回 `content/inbox/`。",
        "原稿的所有文件都在本文件夹中，没有被修改或删除。",
        "",
        f"## 必须修改（{len(problems)} 项）",
        "",
    ]
    for n, problem in enumerate(problems, 1):
        lines.append(f"{n}. {problem.message}")
        if problem.fix:
            lines.append(f"   - 修改方法：{problem.fix}")
    if warnings:
        lines += ["", f"## 提醒（{len(warnings)} 项，不影响接收）", ""]
        for n, note in enumerate(warnings, 1):
            lines.append(f"{n}. {note.message}" + (f"（{note.fix}）" if note.fix else ""))
    return "\n".join(lines) + "\n"


def archive_destination(settings: Settings, drop: Drop, item_id: str, version: int) -> Path:
    return unique_path(settings.archive / item_id / f"v{version}")


def unique_path(path: Path) -> Path:
    """`path`, or `path-2`, `path-3`… so an earlier archived or rejected drop is never overwritten."""
    if not path.exists():
        return path
    n = 2
    while (candidate := path.with_name(f"{path.name}-{n}")).exists():
        n += 1
    return candidate


def move_drop(drop: Drop, destination: Path) -> None:
    """Move every member of the drop under `destination` without ever replacing an existing file."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    if drop.shape == "folder":
        os.rename(drop.path, destination)  # fails rather than replace a non-empty directory
        return
    destination.mkdir(parents=True, exist_ok=True)
    for member in drop.members:
        if not member.exists() and not member.is_symlink():
            continue
        target = destination / member.name
        if member.is_symlink():
            os.rename(member, target)  # a link is never replaced: destination is a fresh directory
            continue
        os.link(member, target)  # raises FileExistsError instead of overwriting
        os.unlink(member)


def ingest_inbox(settings: Settings, store: Store, now: float | None = None) -> list[Outcome]:
    """Take in every settled drop; one bad drop never stops the others."""
    outcomes = []
    for drop in settled_drops(settings, now):
        try:
            outcomes.append(ingest_drop(drop, settings, store))
        except FileNotFoundError:
            log.info("drop %s vanished while being taken in (another run took it)", drop.name)
    return outcomes
