"""The ledger's chain: how an entry is hashed (keyed HMAC, or the plain sha256 of the previous release), how a
chain is walked, and how one entry is appended under the appenders' lock. The lowest ledger module: the keeper,
the checkpoints and `rongmei.storage.ledger` all build on these and on nothing of each other's here.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select, text
from sqlalchemy.orm import Session

from rongmei.storage.tables import LedgerEntry

__all__ = [
    "GENESIS", "KEYED_ACTION", "Verdict", "append_entry", "canonical", "hmac_hex", "keyed_hasher",
    "link_problem", "lock_appenders", "plain_hash", "subkey", "walk_chain"
]

GENESIS = "0" * 64
KEYED_ACTION = "ledger_keyed"  # the entry the migration of an unkeyed ledger appends
_ADVISORY_LOCK = 7345001  # PostgreSQL: serialises appenders (and the migration) until commit


@dataclass(frozen=True)
class Verdict:
    """What a walk of the chain or `rongmei.storage.ledger.verify` found: OK, or the first thing that is wrong."""

    ok: bool
    entries: int
    first_bad_seq: int | None = None  # None when the problem is an anchor, not an entry
    reason: str = ""
    anchored_seq: int | None = None  # the newest checkpoint the database matched
    anchored_at: str = ""
    s3_seq: int | None = None  # the newest S3 checkpoint, when an S3 anchor is configured and has one
    inconclusive: bool = False  # an anchor could not be read: nothing is known to be wrong, nothing proven


def canonical(entry: Any) -> bytes:
    fields = [entry.seq, entry.at, entry.actor, entry.action, entry.item_id, entry.version, entry.content_hash,
              entry.details, entry.prev_hash]
    return json.dumps(fields, ensure_ascii=False, sort_keys=True, separators=(",", ":")).encode("utf-8")


def plain_hash(entry: Any) -> str:
    """The unkeyed sha256 of the previous release: anyone with database access can recompute it."""
    return hashlib.sha256(canonical(entry)).hexdigest()


def subkey(key: bytes, purpose: str) -> bytes:
    # One key file, separate MAC keys for entries and checkpoints: a MAC of one never passes for the other.
    return hmac.new(key, f"rongmei ledger {purpose} v1".encode(), hashlib.sha256).digest()


def hmac_hex(key: bytes, payload: bytes) -> str:
    return hmac.new(key, payload, hashlib.sha256).hexdigest()


def walk_chain(entries: Any, hasher: Any) -> Verdict:
    """Walk entries in seq order with one hash function; the first entry that does not fit, or OK."""
    prev, expected, walked = GENESIS, 1, 0
    for entry in entries:
        walked += 1
        if problem := link_problem(entry, expected, prev, hasher):
            return Verdict(False, walked, entry.seq, problem)
        prev, expected = entry.hash, expected + 1
    return Verdict(True, walked)


def keyed_hasher(entry_key: bytes) -> Any:
    return lambda entry: hmac_hex(entry_key, canonical(entry))


def link_problem(entry: Any, expected: int, prev: str, hasher: Any) -> str:
    if entry.seq != expected:
        return f"entry {expected} is missing (found {entry.seq} next)"
    if entry.prev_hash != prev:
        return f"entry {entry.seq} does not follow entry {expected - 1} (its prev_hash is not that entry's hash)"
    if not hmac.compare_digest(hasher(entry), entry.hash):
        return (f"entry {entry.seq} was altered after it was written, or written by someone without the ledger "
                "key (its hash is not the key's HMAC of its content)")
    return ""


def lock_appenders(session: Session) -> None:
    if session.bind is not None and session.bind.dialect.name == "postgresql":
        session.execute(text(f"SELECT pg_advisory_xact_lock({_ADVISORY_LOCK})"))
    else:
        session.connection()  # SQLite: the transaction starts with BEGIN IMMEDIATE, the write lock


def append_entry(session: Session, entry_key: bytes, action: str, *, actor: str, item_id: str = "",
                 version: int = 0, content_hash: str = "", details: dict[str, Any] | None = None,
                 at: datetime | None = None) -> LedgerEntry:
    """The next entry, keyed and linked to the head, added and flushed; the caller holds the appenders' lock."""
    last = session.scalars(select(LedgerEntry).order_by(LedgerEntry.seq.desc()).limit(1)).first()
    stamp = (at or datetime.now(UTC)).astimezone(UTC).isoformat(timespec="microseconds")
    entry = LedgerEntry(
        seq=(last.seq + 1) if last else 1,
        at=stamp,
        actor=actor,
        action=action,
        item_id=item_id,
        version=version,
        content_hash=content_hash,
        details=json.loads(json.dumps(details or {}, ensure_ascii=False, default=str)),
        prev_hash=last.hash if last else GENESIS,
    )
    entry.hash = hmac_hex(entry_key, canonical(entry))
    session.add(entry)
    session.flush()
    return entry
