"""The audit ledger (追责): an append-only, hash-chained record of every state change.

Each entry carries the hash of the one before it, so an edited, removed or reordered entry breaks the
chain at that point and `rongmei audit verify` names it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from rongmei.store import LedgerEntry

GENESIS = "0" * 64


def entry_hash(
    *,
    seq: int,
    at: str,
    actor: str,
    action: str,
    item_id: str,
    version: int,
    content_hash: str,
    details: dict[str, Any],
    prev_hash: str,
) -> str:
    canonical = json.dumps(
        [seq, at, actor, action, item_id, version, content_hash, details, prev_hash],
        ensure_ascii=False,
        sort_keys=True,
        separators=(",", ":"),
    )
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def record(
    session: Session,
    action: str,
    *,
    actor: str,
    item_id: str = "",
    version: int = 0,
    content_hash: str = "",
    details: dict[str, Any] | None = None,
    at: datetime | None = None,
) -> LedgerEntry:
    """Append one entry inside the caller's transaction, so the change and its record commit together."""
    if session.bind is not None and session.bind.dialect.name == "postgresql":
        # Serialise appenders until commit; SQLite already holds its write lock (BEGIN IMMEDIATE).
        session.execute(text("SELECT pg_advisory_xact_lock(7345001)"))
    last = session.scalars(select(LedgerEntry).order_by(LedgerEntry.seq.desc()).limit(1)).first()
    seq = (last.seq + 1) if last else 1
    prev = last.hash if last else GENESIS
    stamp = (at or datetime.now(UTC)).astimezone(UTC).isoformat(timespec="microseconds")
    clean = json.loads(json.dumps(details or {}, ensure_ascii=False, default=str))
    entry = LedgerEntry(
        seq=seq,
        at=stamp,
        actor=actor,
        action=action,
        item_id=item_id,
        version=version,
        content_hash=content_hash,
        details=clean,
        prev_hash=prev,
    )
    entry.hash = entry_hash(
        seq=seq,
        at=stamp,
        actor=actor,
        action=action,
        item_id=item_id,
        version=version,
        content_hash=content_hash,
        details=clean,
        prev_hash=prev,
    )
    session.add(entry)
    session.flush()
    return entry


@dataclass(frozen=True)
class Verdict:
    ok: bool
    entries: int
    first_bad_seq: int | None = None
    reason: str = ""


def verify(session: Session) -> Verdict:
    """Walk the chain from the first entry; report the first entry that does not fit."""
    prev = GENESIS
    expected_seq = 1
    count = 0
    for entry in session.scalars(select(LedgerEntry).order_by(LedgerEntry.seq)):
        count += 1
        if entry.seq != expected_seq:
            return Verdict(False, count, entry.seq, f"entry {expected_seq} is missing (found {entry.seq} next)")
        if entry.prev_hash != prev:
            return Verdict(False, count, entry.seq, f"entry {entry.seq} does not follow entry {entry.seq - 1}")
        recomputed = entry_hash(
            seq=entry.seq,
            at=entry.at,
            actor=entry.actor,
            action=entry.action,
            item_id=entry.item_id,
            version=entry.version,
            content_hash=entry.content_hash,
            details=entry.details,
            prev_hash=entry.prev_hash,
        )
        if recomputed != entry.hash:
            return Verdict(False, count, entry.seq, f"entry {entry.seq} was altered after it was written")
        prev = entry.hash
        expected_seq += 1
    return Verdict(True, count)


def count(session: Session) -> int:
    return session.scalar(select(func.count()).select_from(LedgerEntry)) or 0
