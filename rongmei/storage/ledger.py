"""The audit ledger (追责): an append-only, keyed, hash-chained record of every state change, anchored outside
the database ("A ledger that proves itself", security issue "Every door guarded").

Who it is built against: someone who can write the database but cannot read the secrets directory (a DBA with
PostgreSQL credentials, someone holding a copy of the SQLite file, a web-app bug that reaches SQL).

- Keyed entries. Each entry's `hash` is HMAC-SHA256, under a key in `secrets_dir/ledger.key`, of the entry and
  the hash of the one before it. Without the key nobody can write an entry (or recompute the chain) that
  verifies, so an edited, inserted, reordered or rewritten entry is named by `rongmei audit verify`.
- Anchored head. After every transaction that appended entries the new head (seq, hash) is appended to a
  checkpoint file outside the database (`data_dir/ledger/checkpoints.jsonl`, each line MACed) and, with
  `s3_bucket` set, put into the bucket as `ledger-checkpoints/<seq:012d>.json`. Deleting the newest entries
  leaves the database behind its anchors, which verify reports.
- Keyed state lives outside the database. The ledger counts as keyed once the key file or any anchor exists;
  nothing a database writer can delete turns verification back to the unkeyed chain of the previous release.
  That chain is migrated once, when the key is created, and only if it verifies (`LedgerKeeper.open`).

A crash between a commit and its checkpoint is harmless: entries after the newest checkpoint are accepted when
they chain and their HMACs are right, and the next append batch anchors them.

This module is what callers use: `record`, `authentic`, `verify`, `count`. The hashing and the chain are in
rongmei.storage.ledger_chain, the key and its migration in rongmei.storage.ledger_keeper, the checkpoint file
and its S3 copy in rongmei.storage.ledger_checkpoints.
"""

from __future__ import annotations

import hmac
import itertools
from collections import deque
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from rongmei.core.errors import StoreError
from rongmei.storage.ledger_chain import (
    GENESIS,
    KEYED_ACTION,
    Verdict,
    append_entry,
    canonical,
    hmac_hex,
    keyed_hasher,
    link_problem,
    lock_appenders,
)
from rongmei.storage.ledger_checkpoints import AnchorUnreadable, BadAnchor, Checkpoint
from rongmei.storage.ledger_keeper import APPENDED, keeper_of
from rongmei.storage.tables import LedgerEntry

__all__ = ["authentic", "count", "record", "verify"]


# Writing -----------------------------------------------------------------------------------------------
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
    """Append one entry inside the caller's transaction, so the change and its record commit together.

    The session must come from `Store.session()`: it carries the key, and its commit anchors the new head.
    """
    keeper = keeper_of(session)
    if not keeper.durable:
        raise StoreError("ledger entries need a durable store (Store(durable=True)): a commit a power cut can "
                         "lose would leave its anchor ahead of the database")
    entry_key = keeper.entry_key()
    # Serialise appenders until commit (PostgreSQL advisory lock; SQLite holds its write lock already).
    lock_appenders(session)
    entry = append_entry(session, entry_key, action, actor=actor, item_id=item_id, version=version,
                         content_hash=content_hash, details=details, at=at)
    session.info.setdefault(APPENDED, []).append(entry)
    return entry


def authentic(session: Session, entry: LedgerEntry) -> bool:
    """Whether this entry was written with the ledger key, as it is now (its HMAC matches its content)."""
    return hmac.compare_digest(hmac_hex(keeper_of(session).entry_key(), canonical(entry)), entry.hash)


# Verifying ---------------------------------------------------------------------------------------------
def verify(session: Session) -> Verdict:
    """Walk the chain from the first entry and hold it against the anchors; the first thing that does not fit.

    Checks every entry's seq, link and HMAC, that every checkpoint matches the entry at its seq, and that the
    newest checkpoint (file and S3) is not beyond the database's head.
    """
    keeper = keeper_of(session)
    keeper.open()
    if keeper.refusal is not None:
        return keeper.refusal.verdict
    entry_key, checkpoint_key = keeper.entry_key(), keeper.checkpoint_key()
    checkpoint_file = keeper.anchors.checkpoint_file
    walked = 0
    try:
        anchors = keeper.anchors.read(checkpoint_key)
        if anchors.file_size is None:
            return Verdict(False, count(session), None, f"the checkpoint file {checkpoint_file} is missing; "
                           "it is written when the ledger key is created and after every append, so it was deleted")
        checkpoints = keeper.anchors.checkpoints(anchors.file_size, checkpoint_key)
        first = next(checkpoints, None)
        if first is None:
            return Verdict(False, count(session), None, f"the checkpoint file {checkpoint_file} is empty; it "
                           "was emptied")
        if first.seq == 0 and first.hash != GENESIS:
            raise BadAnchor(f"line 1 of {checkpoint_file} anchors entry 0 with a hash other than genesis")
        pending = next(checkpoints, None) if first.seq == 0 else first
        anchored = first if first.seq == 0 else None
        prev, expected, hasher = GENESIS, 1, keyed_hasher(entry_key)
        entries = session.scalars(select(LedgerEntry).order_by(LedgerEntry.seq).execution_options(yield_per=1000))
        for entry in entries:
            walked += 1
            if problem := link_problem(entry, expected, prev, hasher):
                return Verdict(False, walked, entry.seq, problem)
            if entry.seq == first.seq and entry.action != KEYED_ACTION:
                return Verdict(False, walked, None, f"the checkpoint file {checkpoint_file} does not begin "
                               f"where the ledger was keyed (its first line anchors entry {entry.seq}, a "
                               f"{entry.action!r} entry): it was deleted or cut and started again")
            if pending is not None and pending.seq == entry.seq:
                if pending.hash != entry.hash:
                    reason = _rewritten(entry.seq, f"the checkpoint of {pending.at}")
                    return Verdict(False, walked, entry.seq, reason)
                anchored, pending = pending, next(checkpoints, None)
            if anchors.s3 is not None and anchors.s3.seq == entry.seq and anchors.s3.hash != entry.hash:
                reason = _rewritten(entry.seq, f"the S3 checkpoint of {anchors.s3.at}")
                return Verdict(False, walked, entry.seq, reason)
            prev, expected = entry.hash, expected + 1
        head = expected - 1
        if pending is not None:
            newest = deque(itertools.chain([pending], checkpoints), maxlen=1)[0]  # each MAC-checked on the way
            return Verdict(False, walked, head + 1, _cut(head, newest, f"the checkpoint of {newest.at}"))
        if anchors.s3 is not None and anchors.s3.seq > head:
            return Verdict(False, walked, head + 1, _cut(head, anchors.s3, f"the S3 checkpoint of {anchors.s3.at}"))
    except BadAnchor as bad:
        return Verdict(False, walked, None, str(bad))
    except AnchorUnreadable as unreadable:
        return Verdict(False, walked, None, str(unreadable), inconclusive=True)
    assert anchored is not None  # the first line is seq 0, or a ledger_keyed entry the walk matched
    return Verdict(True, walked, anchored_seq=anchored.seq, anchored_at=anchored.at,
                   s3_seq=anchors.s3.seq if anchors.s3 is not None else None)


def _rewritten(seq: int, anchor: str) -> str:
    return (f"entry {seq} is not the entry {anchor} recorded: the ledger was rewritten from there, or newer "
            "entries were deleted and others appended in their place")


def _cut(head: int, newest: Checkpoint, anchor: str) -> str:
    ends = f"ends at entry {head}" if head else "is empty"
    return (f"entries {head + 1}–{newest.seq} are missing: {anchor} anchors entry {newest.seq} but the "
            f"ledger {ends}")


def count(session: Session) -> int:
    return session.scalar(select(func.count()).select_from(LedgerEntry)) or 0
