"""The ledger key and who holds it: a `LedgerKeeper` per Store loads the key from the secrets directory or
creates it, keying the unkeyed chain of the previous release in the same step, and anchors the head after
every commit that appended entries. Sessions find their keeper in `session.info` (`keeper_of`).

Keyed state lives outside the database: the ledger counts as keyed once the key file or any anchor exists, so
nothing a database writer can delete turns verification back to the unkeyed chain.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import threading
from pathlib import Path
from typing import Any

from sqlalchemy import inspect, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from rongmei.core.errors import LedgerTampered, StoreError
from rongmei.storage.ledger_chain import (
    GENESIS,
    KEYED_ACTION,
    Verdict,
    append_entry,
    canonical,
    hmac_hex,
    keyed_hasher,
    lock_appenders,
    plain_hash,
    subkey,
    walk_chain,
)
from rongmei.storage.ledger_checkpoints import LedgerAnchors, fsync_dir
from rongmei.storage.tables import LedgerEntry

__all__ = ["APPENDED", "KEY_BYTES", "KEY_FILE", "SESSION_INFO", "LedgerKeeper", "LedgerRefused", "keeper_of"]

log = logging.getLogger(__name__)

KEY_FILE = "ledger.key"
KEY_BYTES = 32
SESSION_INFO = "rongmei.storage.ledger"  # session.info: the LedgerKeeper of the Store that opened the session
APPENDED = "rongmei.storage.ledger.appended"  # session.info: entries appended in the open transaction


class LedgerRefused(LedgerTampered):
    """Raised when the ledger cannot be keyed: the unkeyed chain of the previous release does not verify, or the
    key is missing although the ledger was keyed before. Nothing was changed; `verdict` names the entry."""

    def __init__(self, message: str, verdict: Verdict) -> None:
        super().__init__(message)
        self.verdict = verdict


class LedgerKeeper:
    """The ledger key and the anchors of one Store: created by the Store, handed to its sessions (session.info)."""

    def __init__(self, engine: Engine, *, secrets_dir: Path, checkpoint_file: Path, s3_bucket: str = "",
                 s3_endpoint_url: str = "") -> None:
        self.engine = engine
        self.key_path = Path(secrets_dir) / KEY_FILE
        self.anchors = LedgerAnchors(checkpoint_file, s3_bucket=s3_bucket, s3_endpoint_url=s3_endpoint_url)
        self.refusal: LedgerRefused | None = None
        # Set by the Store: a store whose SQLite commits are not synced (the distribution server's) neither
        # writes entries nor creates the key (keying an old ledger writes entries).
        self.durable = True
        self._entry_key: bytes | None = None
        self._checkpoint_key = b""
        self._lock = threading.Lock()

    def session_info(self) -> dict[str, Any]:
        """What Store.session() puts into `session.info`: how `record`, `verify` and `authentic` find the key."""
        return {SESSION_INFO: self}

    # The key -----------------------------------------------------------------------------------------
    @property
    def pending_key_path(self) -> Path:
        return self.key_path.with_name(KEY_FILE + ".pending")

    def open(self) -> None:
        """Load the key, creating it (and migrating an unkeyed ledger) on first use. Called by Store.session().

        A refusal (tampered unkeyed ledger, lost key) is kept in `refusal` instead of raised: sessions that only
        read keep working, `record` raises it and `verify` reports it. It is final for this process: restart
        the services once the database or the key is restored.
        """
        if self._entry_key is not None or self.refusal is not None:
            return
        with self._lock:
            if self._entry_key is not None or self.refusal is not None:
                return
            try:
                key = _read_key(self.key_path)
            except FileNotFoundError:
                if not self.durable:
                    return  # reads need no key; a durable store of the same data dir creates it
                try:
                    key = self._create_key()
                except LedgerRefused as refusal:
                    log.error("%s", refusal)
                    self.refusal = refusal
                    return
            self._checkpoint_key = subkey(key, "checkpoint")
            self._entry_key = subkey(key, "entry")

    def entry_key(self) -> bytes:
        self.open()
        if self.refusal is not None:
            raise self.refusal
        assert self._entry_key is not None
        return self._entry_key

    def checkpoint_key(self) -> bytes:
        """The MAC key of the checkpoints; like `entry_key`, raises the refusal of a ledger that was not keyed."""
        self.entry_key()
        return self._checkpoint_key

    def _create_key(self) -> bytes:
        """Create the key once for all processes, keying an unkeyed ledger in the same step.

        Under the appenders' lock (BEGIN IMMEDIATE / advisory lock) the key is made as `ledger.key.pending`,
        the old chain is verified and re-hashed with it and committed, the head is anchored, and only then is
        the key linked into place. A crash at any point leaves either no key (nothing keyed yet) or a pending
        key that the next process finds and finishes with: the key never exists without its keyed ledger.
        """
        secrets = self.key_path.parent
        secrets.mkdir(parents=True, exist_ok=True, mode=0o700)
        with Session(self.engine) as session, session.begin():
            lock_appenders(session)
            key = _try_read_key(self.pending_key_path)
            if key is None and (key := _try_read_key(self.key_path)) is not None:
                return key  # another process finished while we waited for the lock
            if key is None:
                if anchored := self.anchors.exist():
                    verdict = Verdict(False, 0, None, f"the ledger key {self.key_path} is missing, but the "
                                      f"ledger was keyed before ({anchored} exists)")
                    raise LedgerRefused(f"{verdict.reason}: restore {self.key_path} from the backup of the secrets "
                                        "directory. A new key would make every existing entry unverifiable, so "
                                        "none was made and nothing was changed", verdict)
                key = _link_new_key(self.pending_key_path)
            entry_key = subkey(key, "entry")
            has_table = inspect(session.connection()).has_table(LedgerEntry.__tablename__)
            entries = list(session.scalars(select(LedgerEntry).order_by(LedgerEntry.seq))) if has_table else []
            if entries and not walk_chain(entries, keyed_hasher(entry_key)).ok:
                # Not keyed with this key yet (a keyed chain means a predecessor crashed after its commit).
                if anchored := self.anchors.exist():
                    # Anchors are written only after the migration committed: this chain was keyed and then
                    # rewritten. Migrating it again would launder that.
                    verdict = walk_chain(entries, keyed_hasher(entry_key))
                    raise LedgerRefused(f"the ledger does not verify with the key being created although it was "
                                        f"keyed before ({anchored} exists): {verdict.reason}. Nothing was changed: "
                                        "restore the database from a backup", verdict)
                self._migrate(session, entry_key, entries)
            head = session.scalars(select(LedgerEntry).order_by(LedgerEntry.seq.desc()).limit(1)).first() \
                if has_table else None
            head_seq, head_hash = (head.seq, head.hash) if head else (0, GENESIS)
        # The first line of the checkpoint file marks where the ledger was keyed (seq 0, or the ledger_keyed
        # entry); verify insists on it, so a deleted and restarted file shows. Raises rather than logs: the key
        # goes into place only with its first anchor written.
        checkpoint = self.anchors.append(subkey(key, "checkpoint"), head_seq, head_hash)
        if checkpoint is not None and self.anchors.s3_bucket:
            self.anchors.put_s3(checkpoint)
        try:
            os.link(self.pending_key_path, self.key_path)
        except (FileExistsError, FileNotFoundError):
            # A process that took the lock after our commit found the same pending key and finished first
            # (linked it, and maybe removed the pending file already).
            if _read_key(self.key_path) != key:
                raise StoreError(f"{self.key_path} appeared with another key while the ledger was being keyed "
                                 f"with {self.pending_key_path}; keep the one the ledger verifies with") from None
        fsync_dir(secrets)
        self.pending_key_path.unlink(missing_ok=True)
        return key

    def _migrate(self, session: Session, entry_key: bytes, entries: list[LedgerEntry]) -> None:
        """Re-hash an unkeyed (previous release) chain with the key, in the caller's transaction."""
        plain = walk_chain(entries, plain_hash)
        if not plain.ok:
            verdict = Verdict(False, plain.entries, plain.first_bad_seq,
                              f"the unkeyed ledger of the previous release does not verify: {plain.reason}")
            raise LedgerRefused(f"{verdict.reason}. It was not keyed (that would launder the tampering) and nothing "
                                "was changed: restore the database from a backup taken before the change, then "
                                "restart the services", verdict)
        old_head = entries[-1].hash
        prev = GENESIS
        for entry in entries:
            entry.prev_hash = prev
            entry.hash = prev = hmac_hex(entry_key, canonical(entry))
        append_entry(session, entry_key, KEYED_ACTION, actor="system:ledger",
                details={"previous_head": old_head, "previous_entries": len(entries),
                         "previous_format": "sha256 chain without a key"})
        log.warning("ledger keyed: %d entries re-hashed with %s (previous head %s)", len(entries), self.key_path,
                    old_head)

    # Anchoring ---------------------------------------------------------------------------------------
    def watch(self, sessions: sessionmaker[Session]) -> None:
        """Anchor the head after every commit of the Store's sessions that appended entries."""
        from sqlalchemy import event

        event.listen(sessions, "after_commit", self._after_commit)

    def _after_commit(self, session: Session) -> None:
        if session.in_nested_transaction():
            return  # a released savepoint: nothing is committed until the outer transaction is
        appended = session.info.pop(APPENDED, None)
        # An entry appended in a rolled-back transaction or savepoint is no longer persistent: never committed.
        live = [entry for entry in appended or () if inspect(entry).persistent]
        if not live:
            return
        head = max(live, key=lambda entry: entry.seq)
        try:
            # The commit is durable before its anchor: SQLite runs with synchronous=FULL (rongmei.storage.store), so a
            # power cut cannot lose a commit whose checkpoint was already fsynced (verify would call that a
            # deleted tail). Opening the WAL ourselves to fsync it would be wrong: closing any descriptor of a
            # file drops every POSIX lock this process holds on it, SQLite's included.
            checkpoint = self.anchors.append(self._checkpoint_key, head.seq, head.hash)
        except OSError as exc:
            # The transaction is committed and must stay so; verify accepts the unanchored tail and the next
            # batch anchors it. Loud, because until then a deletion of this tail would go unnoticed.
            log.error("ledger entry %d is committed but its checkpoint could not be written to %s: %s",
                      head.seq, self.anchors.checkpoint_file, exc)
            return
        if checkpoint is not None and self.anchors.s3_bucket:
            self.anchors.put_s3(checkpoint)


def _read_key(path: Path) -> bytes:
    key = path.read_bytes()
    if len(key) != KEY_BYTES:
        raise StoreError(f"{path} holds {len(key)} bytes, not a {KEY_BYTES}-byte ledger key: restore it from the "
                         "backup of the secrets directory (a new key cannot verify the existing ledger)")
    return key


def _try_read_key(path: Path) -> bytes | None:
    try:
        return _read_key(path)
    except FileNotFoundError:
        return None


def _link_new_key(target: Path) -> bytes:
    """Put 32 random bytes at `target` (0600) atomically; if another process got there first, use its key."""
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".ledger-key-")  # mkstemp: mode 0600
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(os.urandom(KEY_BYTES))
            out.flush()
            os.fsync(out.fileno())
        with contextlib.suppress(FileExistsError):  # lost the race: the winner's key is read below
            os.link(tmp, target)  # unlike a rename, never replaces a key another process linked first
    finally:
        os.unlink(tmp)
    fsync_dir(target.parent)
    return _read_key(target)


def keeper_of(session: Session) -> LedgerKeeper:
    keeper = session.info.get(SESSION_INFO)
    if not isinstance(keeper, LedgerKeeper):
        raise StoreError("this database session carries no ledger key, so no ledger entry can be written or "
                         "checked in it: open it with `Store.session()` (which hands the key to the session) "
                         "instead of a bare SQLAlchemy Session")
    return keeper
