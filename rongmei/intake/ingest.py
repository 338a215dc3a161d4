"""Taking a settled drop into the store: read → check → store blobs → record version → archive original.

The order is what makes a crash harmless: the original stays in the inbox until its version is committed,
and a re-run that finds a drop whose content equals the item's latest version only finishes the move.
Nothing an editor dropped is ever deleted: it ends in archive/, rejected/ or (later) returned/.

One bad drop never stops the others ("Every door guarded"): `ingest_drop` turns any error a drop causes into
an outcome. A full disk under the data dir is no fault of the drop: it stays in the inbox (StoreFull, with what
to do), like a store that cannot be reached, and the pass after space is freed takes it in. An unexpected error before the commit rejects the drop with the error in REJECTED.md; a drop that
cannot even be moved to rejected/ (or, once committed, to archive/) stays where it is and is reported in the
ledger once per state of the drop, not on every pass of the 15-second schedule; the next pass tries again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from rongmei.core.faults import fault_point
from rongmei.core.files import name_max
from rongmei.core.model import SHANGHAI, CheckResult, Severity
from rongmei.core.settings import Settings
from rongmei.core.states import ItemState
from rongmei.intake.bundles import Bundle, read_bundle
from rongmei.intake.checks import run_checks
from rongmei.intake.drops import Drop, Limits, drop_state, find_drops, is_settled
from rongmei.intake.moves import set_aside, write_report
from rongmei.intake.names import escape_name, safe_name
from rongmei.intake.outages import STORE_DOWN, StoreFull, disk_full, one_line, store_full
from rongmei.storage import ledger
from rongmei.storage.store import Store
from rongmei.storage.tables import Item, LedgerEntry, Version
from rongmei.storage.transitions import LedgerNote, transition

__all__ = [
    "STUCK", "SYSTEM", "Outcome", "archive", "content_hash", "ingest_drop", "ingest_inbox", "limits_for",
    "record_version", "reject", "rejected_report", "report_stuck", "settled_drops", "system_error"
]

log = logging.getLogger(__name__)
SYSTEM = "system:ingest"
STUCK = "ingest_stuck"  # ledger action: a drop left in the inbox because it could not be moved



@dataclass
class Outcome:
    drop: str
    status: str  # "ingested" | "unchanged" | "rejected" | "stuck" (left in the inbox, see `repeat`)
    item_id: str = ""
    version: int = 0
    version_id: int = 0
    moved_to: str = ""
    problems: list[CheckResult] = field(default_factory=list)
    warnings: list[CheckResult] = field(default_factory=list)
    repeat: bool = False  # stuck in the same state as already reported: nothing new to tell anyone


def settled_drops(settings: Settings, now: float | None = None) -> list[Drop]:
    now = time.time() if now is None else now
    settled = []
    for drop in find_drops(settings.inbox):
        try:
            if is_settled(drop, now, settings.settle_seconds):
                settled.append(drop)
        except OSError as exc:
            # Not a copy in motion (that reads as unsettled): the drop's own run says what is wrong with it.
            log.warning("cannot tell whether drop %s has settled (%s); taking it in to report it", drop.label, exc)
            settled.append(drop)
    return settled


def content_hash(meta: dict, body: str, file_hashes: dict[str, str]) -> str:
    """Identity of a version: front matter, body and every file's sha256."""
    canonical = json.dumps(
        {"meta": meta, "body": body, "files": file_hashes}, ensure_ascii=False, sort_keys=True, separators=(",", ":")
    )
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def limits_for(settings: Settings) -> Limits:
    # The item id becomes a folder name under archive/ and under the data dir (site, renditions).
    return Limits.from_settings(settings, name_bytes=min(name_max(settings.archive), name_max(settings.data_dir)))


def ingest_drop(drop: Drop, settings: Settings, store: Store) -> Outcome | None:
    """Take one settled drop in: a new version (original archived), or rejected with REJECTED.md.

    Never raises because of the drop (see the module docstring). Returns None when the drop is gone or
    changed while it was read (another run took it, or the editor is still at it): the next pass looks again.
    Raises only when the store is unreachable or its disk is full (STORE_DOWN), leaving the drop in the inbox.
    """
    try:
        state = drop_state(drop)
    except FileNotFoundError:
        log.info("drop %s vanished before it was taken in (another run took it)", drop.label)
        return None
    bundle = Bundle(drop=drop)
    checks: list[CheckResult] = []
    try:
        bundle = read_bundle(drop, limits_for(settings))
        checks = list(bundle.notes)
        if bundle.ok:
            checks += run_checks(bundle.meta, bundle.body, bundle.files, settings)  # type: ignore[arg-type]
        problems = bundle.problems + [c for c in checks if c.blocking]
        recorded = None if problems else record_version(bundle, checks, store)
    except STORE_DOWN as exc:
        if disk_full(exc) and not isinstance(exc, StoreFull):
            raise store_full(settings, drop, exc) from exc
        raise
    except IntegrityError:
        # Another run committed this version first; the next pass finds it unchanged and finishes the move.
        log.info("drop %s was taken in by another run meanwhile", drop.label)
        return None
    except Exception as exc:  # anything at all: reported to the editor and the log, never lost
        if disk_full(exc):  # no fault of the drop: it must not be rejected for it
            raise store_full(settings, drop, exc) from exc
        if _changed(drop, state):
            log.info("drop %s changed while it was taken in (%s); looking again next pass", drop.label, exc)
            return None
        log.exception("unexpected error while taking in drop %s", drop.label)
        problems, checks, recorded = [system_error(exc)], [], None
    if recorded is not None:
        return archive(bundle, recorded, settings, store, state)
    return reject(bundle, problems, checks, settings, store, state)


def system_error(exc: BaseException) -> CheckResult:
    return CheckResult(
        code="system.error",
        severity=Severity.blocking,
        message=f"系统在处理这份稿件时出错，没能完成收稿（不一定是稿件本身的问题）。技术信息：{one_line(exc)}",
        fix="原稿的文件都在本文件夹中，没有丢失。请把整个稿件原样放回 content/inbox/ 再试一次；"
        "如果还是出现这条提示，请把本文件转给技术人员。",
    )


def _changed(drop: Drop, state: str) -> bool:
    try:
        return drop_state(drop) != state
    except FileNotFoundError:
        return True


def record_version(bundle: Bundle, checks: list[CheckResult], store: Store) -> Outcome:
    """Store the blobs, then the version and its ledger entries in one transaction (nothing is moved yet)."""
    assert bundle.meta is not None
    meta = bundle.meta
    files = {}
    for rel in bundle.files:
        with bundle.open(rel) as source:  # the very file that was checked, never a link put there since
            sha256, size = store.put_stream(source)
        files[rel] = {"sha256": sha256, "bytes": size}
    fault_point("ingest.after_blobs")  # blobs stored, no version yet: a re-run stores nothing twice
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
                item = Item(id=meta.id, drop_name=bundle.drop.name, state=ItemState.in_review)
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
            older = session.scalars(
                select(Version).where(
                    Version.item_id == meta.id, Version.state == ItemState.in_review, Version.number != number
                )
            ).all()
            session.add(version)
            item.current_version = number
            item.drop_name = bundle.drop.name
            session.flush()
            transition(
                session,
                # approvals of older versions no longer count; the item is back in review, whatever it was
                [*((v, ItemState.superseded) for v in older), (item, ItemState.in_review)],
                LedgerNote(
                    "ingested",
                    actor=SYSTEM,
                    item_id=meta.id,
                    version=number,
                    content_hash=digest,
                    details={"drop": bundle.drop.name, "title": meta.title, "files": len(files)},
                ),
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
    return outcome


def archive(bundle: Bundle, outcome: Outcome, settings: Settings, store: Store, state: str) -> Outcome:
    """Move the original of a committed version to archive/<id>/v<N>/ and note where it went.

    The version stands whatever happens here: if the move fails the original stays in the inbox, the failure
    is reported once, and the next pass (finding the content unchanged) tries the move again."""
    try:
        fault_point("ingest.before_archive_move")  # the version is committed, the original still in the inbox
        destination = set_aside(bundle.drop, settings.archive / outcome.item_id / f"v{outcome.version}")
    except Exception as exc:  # the version is committed: its review must start all the same
        if not _changed(bundle.drop, state):
            problem = CheckResult(
                code="system.archive_failed",
                severity=Severity.blocking,
                message=f"稿件已收稿（第 {outcome.version} 版），但原稿无法移到 archive/（{one_line(exc)}），仍留在收稿箱中。",
                fix="请技术人员检查 content/archive/ 是否可写、磁盘是否已满；修好后系统会自动完成归档。",
            )
            report_stuck(bundle, [problem], exc, store, state, version=outcome.version)
        return outcome
    outcome.moved_to = str(destination)
    try:
        with store.session() as session:
            version = session.get(Version, outcome.version_id)
            if version is not None and not version.archived_to:
                version.archived_to = str(destination)
    except STORE_DOWN as exc:  # the version and the move stand; only where the original went is not noted
        log.warning("drop %s archived to %s, but the store could not note it: %s", bundle.drop.label, destination,
                    one_line(exc))
    return outcome


def reject(
    bundle: Bundle,
    problems: list[CheckResult],
    checks: list[CheckResult],
    settings: Settings,
    store: Store,
    state: str,
) -> Outcome | None:
    """Move the drop to rejected/<name>/ with REJECTED.md; a drop that cannot be moved stays in the inbox."""
    drop = bundle.drop
    warnings = [c for c in checks if not c.blocking]
    item_id = _item_id(bundle)
    try:
        destination = set_aside(drop, settings.rejected / safe_name(drop.name))
    except Exception as exc:  # whatever stops the move, the drop stays where it is and the others go on
        if _changed(drop, state):
            return None
        problem = CheckResult(
            code="system.reject_failed",
            severity=Severity.blocking,
            message=f"这份稿件未被接收，但无法移到 rejected/（{one_line(exc)}），仍留在收稿箱中。",
            fix="请技术人员检查 content/rejected/ 是否可写、磁盘是否已满；修好后系统会自动重试。",
        )
        problems = [*problems, problem]
        repeat = report_stuck(bundle, problems, exc, store, state)
        return Outcome(drop.name, "stuck", item_id, problems=problems, warnings=warnings, repeat=repeat)
    try:
        write_report(destination, rejected_report(bundle, problems, warnings, destination))
    except OSError:
        log.exception("cannot write REJECTED.md into %s", destination)
    with store.session() as session:
        ledger.record(
            session,
            "rejected",
            actor=SYSTEM,
            item_id=item_id,
            details={
                "drop": drop.label,
                "moved_to": str(destination),
                "problems": [{"code": p.code, "message": p.message} for p in problems],
            },
        )
    return Outcome(drop.name, "rejected", item_id, moved_to=str(destination), problems=problems, warnings=warnings)


def _item_id(bundle: Bundle) -> str:
    """The item a rejected drop meant to be, for the ledger (the id as given, escaped: it may be anything)."""
    return bundle.meta.id if bundle.meta else escape_name(str(bundle.raw_meta.get("id", "")))[:100]


def report_stuck(
    bundle: Bundle, problems: list[CheckResult], exc: BaseException, store: Store, state: str, version: int = 0
) -> bool:
    """Record a drop that stays in the inbox, once per state of the drop (the schedule passes every 15 s);
    True when this state was reported before."""
    drop = bundle.drop
    item_id = _item_id(bundle)
    with store.session() as session:
        seen = session.scalars(
            select(LedgerEntry.seq).where(LedgerEntry.action == STUCK, LedgerEntry.details["state"].as_string() == state)
        ).first()
        if seen is None:
            ledger.record(
                session,
                STUCK,
                actor=SYSTEM,
                item_id=item_id,
                version=version,
                details={
                    "drop": drop.label,
                    "state": state,
                    "error": one_line(exc),
                    "problems": [{"code": p.code, "message": p.message} for p in problems],
                },
            )
    if seen is None:
        log.error("drop %s stays in the inbox: %s", drop.label, one_line(exc), exc_info=exc)
    else:
        log.info("drop %s still stays in the inbox (reported before): %s", drop.label, one_line(exc))
    return seen is not None


def rejected_report(
    bundle: Bundle, problems: list[CheckResult], warnings: list[CheckResult], destination: Path | None = None
) -> str:
    stamp = datetime.now(SHANGHAI).strftime("%Y-%m-%d %H:%M")
    name = bundle.drop.label
    lines = [f"# 稿件未被接收：{name}", ""]
    if destination is not None and not destination.name.startswith(bundle.drop.name):
        lines += [
            f"原稿件名：`{name}`。原名含有特殊字符或太长，本文件夹改名为 `{destination.name}`；"
            "改正后请用正常的名字重新放入。",
            "",
        ]
    lines += [
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


def ingest_inbox(settings: Settings, store: Store, now: float | None = None) -> list[Outcome]:
    """Take in every settled drop; one bad drop never stops the others."""
    outcomes = []
    for drop in settled_drops(settings, now):
        try:
            outcome = ingest_drop(drop, settings, store)
        except STORE_DOWN:
            log.exception("store unavailable: drop %s stays in the inbox until the next pass", drop.label)
            continue
        if outcome is not None:
            outcomes.append(outcome)
    return outcomes
