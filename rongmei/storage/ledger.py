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
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import hmac
import itertools
import json
import logging
import os
import tempfile
import threading
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import func, inspect, select, text
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from rongmei.core.errors import LedgerTampered, StoreError
from rongmei.storage.tables import LedgerEntry

log = logging.getLogger(__name__)

GENESIS = "0" * 64
KEY_FILE = "ledger.key"
KEY_BYTES = 32
KEYED_ACTION = "ledger_keyed"  # the entry the migration of an unkeyed ledger appends
S3_PREFIX = "ledger-checkpoints/"
SESSION_INFO = "rongmei.storage.ledger"  # session.info: the LedgerKeeper of the Store that opened the session
_APPENDED = "rongmei.storage.ledger.appended"  # session.info: entries appended in the open transaction
_ADVISORY_LOCK = 7345001  # PostgreSQL: serialises appenders (and the migration) until commit

__all__ = ["GENESIS", "KEYED_ACTION", "LedgerKeeper", "LedgerRefused", "Verdict", "authentic", "count",
           "record", "verify"]


class LedgerRefused(LedgerTampered):
    """Raised when the ledger cannot be keyed: the unkeyed chain of the previous release does not verify, or the
    key is missing although the ledger was keyed before. Nothing was changed; `verdict` names the entry."""

    def __init__(self, message: str, verdict: Verdict) -> None:
        super().__init__(message)
        self.verdict = verdict


class _BadAnchor(Exception):
    """A checkpoint line or object that is not what we wrote (internal: turned into a Verdict)."""


# Hashing -----------------------------------------------------------------------------------------------
def _canonical(entry: Any) -> bytes:
    fields = [entry.seq, entry.at, entry.actor, entry.action, entry.item_id, entry.version, entry.content_hash,
              entry.details, entry.prev_hash]
    return json.dumps(fields, ensure_ascii=False, sort_keys=True, separators=(",", ":")).encode("utf-8")


def plain_hash(entry: Any) -> str:
    """The unkeyed sha256 of the previous release: anyone with database access can recompute it."""
    return hashlib.sha256(_canonical(entry)).hexdigest()


def _subkey(key: bytes, purpose: str) -> bytes:
    # One key file, separate MAC keys for entries and checkpoints: a MAC of one never passes for the other.
    return hmac.new(key, f"rongmei ledger {purpose} v1".encode(), hashlib.sha256).digest()


def _mac(subkey: bytes, payload: bytes) -> str:
    return hmac.new(subkey, payload, hashlib.sha256).hexdigest()


def _chain(entries: Any, hasher: Any) -> Verdict:
    """Walk entries in seq order with one hash function; the first entry that does not fit, or OK."""
    prev, expected, walked = GENESIS, 1, 0
    for entry in entries:
        walked += 1
        if problem := _link_problem(entry, expected, prev, hasher):
            return Verdict(False, walked, entry.seq, problem)
        prev, expected = entry.hash, expected + 1
    return Verdict(True, walked)


def _keyed(entry_key: bytes) -> Any:
    return lambda entry: _mac(entry_key, _canonical(entry))


def _link_problem(entry: Any, expected: int, prev: str, hasher: Any) -> str:
    if entry.seq != expected:
        return f"entry {expected} is missing (found {entry.seq} next)"
    if entry.prev_hash != prev:
        return f"entry {entry.seq} does not follow entry {expected - 1} (its prev_hash is not that entry's hash)"
    if not hmac.compare_digest(hasher(entry), entry.hash):
        return (f"entry {entry.seq} was altered after it was written, or written by someone without the ledger "
                "key (its hash is not the key's HMAC of its content)")
    return ""


# Checkpoints ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Checkpoint:
    """The chain head at one moment: entry `seq` had hash `hash`; `mac` proves we wrote it."""

    seq: int
    hash: str
    at: str
    mac: str

    @staticmethod
    def payload(seq: int, hash_: str, at: str) -> bytes:
        return json.dumps([seq, hash_, at], separators=(",", ":")).encode()

    @classmethod
    def make(cls, subkey: bytes, seq: int, hash_: str) -> Checkpoint:
        at = datetime.now(UTC).isoformat(timespec="microseconds")
        return cls(seq, hash_, at, _mac(subkey, cls.payload(seq, hash_, at)))

    def line(self) -> bytes:
        data = {"seq": self.seq, "hash": self.hash, "at": self.at, "mac": self.mac}
        return json.dumps(data, separators=(",", ":")).encode() + b"\n"

    @classmethod
    def parse(cls, raw: bytes, subkey: bytes, where: str) -> Checkpoint:
        try:
            data = json.loads(raw)
        except ValueError:
            raise _BadAnchor(f"{where} is not a checkpoint (not JSON): it was edited") from None
        if (not isinstance(data, dict) or set(data) != {"seq", "hash", "at", "mac"} or not isinstance(data["seq"], int)
                or not all(isinstance(data[k], str) for k in ("hash", "at", "mac"))):
            raise _BadAnchor(f"{where} is not a checkpoint (fields seq, hash, at, mac expected): it was edited")
        checkpoint = cls(data["seq"], data["hash"], data["at"], data["mac"])
        if not hmac.compare_digest(_mac(subkey, cls.payload(checkpoint.seq, checkpoint.hash, checkpoint.at)),
                                   checkpoint.mac):
            raise _BadAnchor(f"{where} (for entry {checkpoint.seq}) was altered: its MAC does not match")
        return checkpoint


def _s3_key(seq: int) -> str:
    return f"{S3_PREFIX}{seq:012d}.json"  # zero-padded: the lexicographically last key is the newest seq


@dataclass(frozen=True)
class _Anchors:
    """What verify compares the database with, read before the database so that no anchor can be newer."""

    file_size: int | None  # None: the checkpoint file is missing
    s3: Checkpoint | None


class LedgerKeeper:
    """The ledger key and the anchors of one Store: created by the Store, handed to its sessions (session.info)."""

    def __init__(self, engine: Engine, *, secrets_dir: Path, checkpoint_file: Path, s3_bucket: str = "",
                 s3_endpoint_url: str = "") -> None:
        self.engine = engine
        self.key_path = Path(secrets_dir) / KEY_FILE
        self.checkpoint_file = Path(checkpoint_file)
        self.s3_bucket = s3_bucket
        self.s3_endpoint_url = s3_endpoint_url
        self.refusal: LedgerRefused | None = None
        # Set by the Store: a store whose SQLite commits are not synced (the distribution server's) neither
        # writes entries nor creates the key (keying an old ledger writes entries).
        self.durable = True
        self._entry_key: bytes | None = None
        self._checkpoint_key = b""
        self._lock = threading.Lock()
        self._s3: tuple[int, Any] | None = None  # (pid, client): a boto3 client is not shared across a fork

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
            self._checkpoint_key = _subkey(key, "checkpoint")
            self._entry_key = _subkey(key, "entry")

    def entry_key(self) -> bytes:
        self.open()
        if self.refusal is not None:
            raise self.refusal
        assert self._entry_key is not None
        return self._entry_key

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
            _lock_appenders(session)
            key = _try_read_key(self.pending_key_path)
            if key is None and (key := _try_read_key(self.key_path)) is not None:
                return key  # another process finished while we waited for the lock
            if key is None:
                if anchored := self._anchors_exist():
                    verdict = Verdict(False, 0, None, f"the ledger key {self.key_path} is missing, but the "
                                      f"ledger was keyed before ({anchored} exists)")
                    raise LedgerRefused(f"{verdict.reason}: restore {self.key_path} from the backup of the secrets "
                                        "directory. A new key would make every existing entry unverifiable, so "
                                        "none was made and nothing was changed", verdict)
                key = _link_new_key(self.pending_key_path)
            entry_key = _subkey(key, "entry")
            has_table = inspect(session.connection()).has_table(LedgerEntry.__tablename__)
            entries = list(session.scalars(select(LedgerEntry).order_by(LedgerEntry.seq))) if has_table else []
            if entries and not _chain(entries, _keyed(entry_key)).ok:
                # Not keyed with this key yet (a keyed chain means a predecessor crashed after its commit).
                if anchored := self._anchors_exist():
                    # Anchors are written only after the migration committed: this chain was keyed and then
                    # rewritten. Migrating it again would launder that.
                    verdict = _chain(entries, _keyed(entry_key))
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
        checkpoint = self._append_checkpoint(_subkey(key, "checkpoint"), head_seq, head_hash)
        if checkpoint is not None and self.s3_bucket:
            self._put_s3(checkpoint)
        try:
            os.link(self.pending_key_path, self.key_path)
        except (FileExistsError, FileNotFoundError):
            # A process that took the lock after our commit found the same pending key and finished first
            # (linked it, and maybe removed the pending file already).
            if _read_key(self.key_path) != key:
                raise StoreError(f"{self.key_path} appeared with another key while the ledger was being keyed "
                                 f"with {self.pending_key_path}; keep the one the ledger verifies with") from None
        _fsync_dir(secrets)
        self.pending_key_path.unlink(missing_ok=True)
        return key

    def _anchors_exist(self) -> str:
        try:
            if self.checkpoint_file.stat().st_size > 0:
                return str(self.checkpoint_file)
        except FileNotFoundError:
            pass
        if self.s3_bucket:
            try:
                listed = self._s3_client().list_objects_v2(Bucket=self.s3_bucket, Prefix=S3_PREFIX, MaxKeys=1)
            except _s3_errors() as exc:  # the file is the primary anchor; S3 is the second opinion
                log.warning("could not look for ledger checkpoints in s3://%s/%s: %s", self.s3_bucket, S3_PREFIX,
                            exc)
                return ""
            if listed.get("KeyCount"):
                return f"s3://{self.s3_bucket}/{S3_PREFIX}"
        return ""

    def _migrate(self, session: Session, entry_key: bytes, entries: list[LedgerEntry]) -> None:
        """Re-hash an unkeyed (previous release) chain with the key, in the caller's transaction."""
        plain = _chain(entries, plain_hash)
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
            entry.hash = prev = _mac(entry_key, _canonical(entry))
        _append(session, entry_key, KEYED_ACTION, actor="system:ledger",
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
        appended = session.info.pop(_APPENDED, None)
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
            checkpoint = self._append_checkpoint(self._checkpoint_key, head.seq, head.hash)
        except OSError as exc:
            # The transaction is committed and must stay so; verify accepts the unanchored tail and the next
            # batch anchors it. Loud, because until then a deletion of this tail would go unnoticed.
            log.error("ledger entry %d is committed but its checkpoint could not be written to %s: %s",
                      head.seq, self.checkpoint_file, exc)
            return
        if checkpoint is not None and self.s3_bucket:
            self._put_s3(checkpoint)

    def _append_checkpoint(self, subkey: bytes, seq: int, hash_: str) -> Checkpoint | None:
        """Append the head to the checkpoint file unless a newer head is there already; fsynced.

        Appenders in several processes commit in seq order (they hold the database lock) but reach this point
        after releasing it, so they may arrive out of order. Under an exclusive flock each one appends only if
        its seq is larger than the file's last line: the file stays strictly increasing (verify relies on it)
        and a skipped head is covered by the newer one, which chains to it.
        """
        self.checkpoint_file.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(self.checkpoint_file, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            size = os.fstat(fd).st_size
            last = _last_line(fd, size)
            try:
                last_seq = json.loads(last)["seq"] if last else -1
            except (ValueError, KeyError, TypeError):
                last_seq = -1  # verify reports the broken line; keep anchoring after it
                log.error("the last line of %s is not a checkpoint; run `rongmei audit verify`",
                          self.checkpoint_file)
            if isinstance(last_seq, int) and last_seq >= seq:
                return None
            checkpoint = Checkpoint.make(subkey, seq, hash_)
            os.write(fd, (b"\n" if size and not last.endswith(b"\n") else b"") + checkpoint.line())
            os.fsync(fd)
        finally:
            os.close(fd)  # releases the flock
        if size == 0:
            _fsync_dir(self.checkpoint_file.parent)  # a new file: make its directory entry durable too
        return checkpoint

    def _put_s3(self, checkpoint: Checkpoint) -> None:
        key = _s3_key(checkpoint.seq)
        try:
            self._s3_client().put_object(Bucket=self.s3_bucket, Key=key, Body=checkpoint.line(),
                                         ContentType="application/json")
        except _s3_errors() as exc:  # committed already; the file holds the anchor, the next batch retries S3
            log.warning("ledger checkpoint for entry %d could not be put to s3://%s/%s: %s", checkpoint.seq,
                        self.s3_bucket, key, exc)

    def _s3_client(self) -> Any:
        if self._s3 is None or self._s3[0] != os.getpid():
            import boto3
            from botocore.config import Config

            config = Config(retries={"max_attempts": 2, "mode": "standard"}, connect_timeout=5, read_timeout=10)
            self._s3 = (os.getpid(), boto3.client("s3", endpoint_url=self.s3_endpoint_url or None, config=config))
        return self._s3[1]

    # Reading the anchors back ------------------------------------------------------------------------
    def read_anchors(self) -> _Anchors:
        """Snapshot the anchors. Read before the database: every anchor then names a committed entry."""
        try:
            fd = os.open(self.checkpoint_file, os.O_RDONLY)
        except FileNotFoundError:
            size, last = None, b""
        else:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH)  # no half-appended line in the snapshot
                size = os.fstat(fd).st_size
                last = _last_line(fd, size)
            finally:
                os.close(fd)
        return _Anchors(size, self._newest_s3(last) if self.s3_bucket else None)

    def _newest_s3(self, last_line: bytes) -> Checkpoint | None:
        try:
            file_seq = int(json.loads(last_line)["seq"]) if last_line else 0
        except (ValueError, KeyError, TypeError):
            file_seq = 0
        client = self._s3_client()
        try:
            # Normally the newest object is the file's newest seq (or later): list from there, not from 1.
            newest = _last_key(client, self.s3_bucket, _s3_key(file_seq - 1) if file_seq > 0 else "")
            if newest is None and file_seq > 0:
                newest = _last_key(client, self.s3_bucket, "")
            if newest is None:
                return None
            body = client.get_object(Bucket=self.s3_bucket, Key=newest)["Body"].read()
        except _s3_errors() as exc:
            raise _AnchorUnreadable(f"could not read the ledger checkpoints in s3://{self.s3_bucket}/{S3_PREFIX}: "
                                    f"{exc}. Check s3_endpoint_url and the credentials and run it again") from exc
        checkpoint = Checkpoint.parse(body, self._checkpoint_key, f"s3://{self.s3_bucket}/{newest}")
        if _s3_key(checkpoint.seq) != newest:
            raise _BadAnchor(f"s3://{self.s3_bucket}/{newest} holds the checkpoint of entry {checkpoint.seq}: "
                             "it was renamed")
        return checkpoint

    def checkpoints(self, size: int) -> Iterator[Checkpoint]:
        """The file's checkpoints up to `size` bytes, each MAC-checked, in strictly increasing seq order."""
        previous = -1
        with open(self.checkpoint_file, "rb") as lines:
            for number, raw in enumerate(lines, 1):
                size -= len(raw)
                if size < 0:
                    return
                checkpoint = Checkpoint.parse(raw, self._checkpoint_key, f"line {number} of {self.checkpoint_file}")
                if checkpoint.seq <= previous:
                    raise _BadAnchor(f"line {number} of {self.checkpoint_file} anchors entry {checkpoint.seq} after "
                                     f"entry {previous}: the file was edited")
                previous = checkpoint.seq
                yield checkpoint


class _AnchorUnreadable(Exception):
    """An anchor that could not be read at all (S3 down): the verdict is inconclusive, not 'tampered'."""


def _s3_errors() -> tuple[type[Exception], ...]:
    from botocore.exceptions import BotoCoreError, ClientError

    return (BotoCoreError, ClientError)


def _last_key(client: Any, bucket: str, start_after: str) -> str | None:
    newest = None
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=S3_PREFIX,
                                                                 StartAfter=start_after):
        for item in page.get("Contents", ()):
            newest = item["Key"]
    return newest


def _last_line(fd: int, size: int) -> bytes:
    tail = os.pread(fd, min(size, 4096), max(0, size - 4096))
    stripped = tail.rstrip(b"\n")
    return tail[stripped.rfind(b"\n") + 1:] if stripped else b""


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
    _fsync_dir(target.parent)
    return _read_key(target)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# Writing -----------------------------------------------------------------------------------------------
def _keeper(session: Session) -> LedgerKeeper:
    keeper = session.info.get(SESSION_INFO)
    if not isinstance(keeper, LedgerKeeper):
        raise StoreError("this database session carries no ledger key, so no ledger entry can be written or "
                         "checked in it: open it with `Store.session()` (which hands the key to the session) "
                         "instead of a bare SQLAlchemy Session")
    return keeper


def _lock_appenders(session: Session) -> None:
    if session.bind is not None and session.bind.dialect.name == "postgresql":
        session.execute(text(f"SELECT pg_advisory_xact_lock({_ADVISORY_LOCK})"))
    else:
        session.connection()  # SQLite: the transaction starts with BEGIN IMMEDIATE, the write lock


def _append(session: Session, entry_key: bytes, action: str, *, actor: str, item_id: str = "", version: int = 0,
            content_hash: str = "", details: dict[str, Any] | None = None,
            at: datetime | None = None) -> LedgerEntry:
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
    entry.hash = _mac(entry_key, _canonical(entry))
    session.add(entry)
    session.flush()
    return entry


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
    keeper = _keeper(session)
    if not keeper.durable:
        raise StoreError("ledger entries need a durable store (Store(durable=True)): a commit a power cut can "
                         "lose would leave its anchor ahead of the database")
    entry_key = keeper.entry_key()
    # Serialise appenders until commit (PostgreSQL advisory lock; SQLite holds its write lock already).
    _lock_appenders(session)
    entry = _append(session, entry_key, action, actor=actor, item_id=item_id, version=version,
                    content_hash=content_hash, details=details, at=at)
    session.info.setdefault(_APPENDED, []).append(entry)
    return entry


def authentic(session: Session, entry: LedgerEntry) -> bool:
    """Whether this entry was written with the ledger key, as it is now (its HMAC matches its content)."""
    return hmac.compare_digest(_mac(_keeper(session).entry_key(), _canonical(entry)), entry.hash)


# Verifying ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Verdict:
    ok: bool
    entries: int
    first_bad_seq: int | None = None  # None when the problem is an anchor, not an entry
    reason: str = ""
    anchored_seq: int | None = None  # the newest checkpoint the database matched
    anchored_at: str = ""
    s3_seq: int | None = None  # the newest S3 checkpoint, when an S3 anchor is configured and has one
    inconclusive: bool = False  # an anchor could not be read: nothing is known to be wrong, nothing proven


def verify(session: Session) -> Verdict:
    """Walk the chain from the first entry and hold it against the anchors; the first thing that does not fit.

    Checks every entry's seq, link and HMAC, that every checkpoint matches the entry at its seq, and that the
    newest checkpoint (file and S3) is not beyond the database's head.
    """
    keeper = _keeper(session)
    keeper.open()
    if keeper.refusal is not None:
        return keeper.refusal.verdict
    entry_key = keeper.entry_key()
    walked = 0
    try:
        anchors = keeper.read_anchors()
        if anchors.file_size is None:
            return Verdict(False, count(session), None, f"the checkpoint file {keeper.checkpoint_file} is missing; "
                           "it is written when the ledger key is created and after every append, so it was deleted")
        checkpoints = keeper.checkpoints(anchors.file_size)
        first = next(checkpoints, None)
        if first is None:
            return Verdict(False, count(session), None, f"the checkpoint file {keeper.checkpoint_file} is empty; it "
                           "was emptied")
        if first.seq == 0 and first.hash != GENESIS:
            raise _BadAnchor(f"line 1 of {keeper.checkpoint_file} anchors entry 0 with a hash other than genesis")
        pending = next(checkpoints, None) if first.seq == 0 else first
        anchored = first if first.seq == 0 else None
        prev, expected, hasher = GENESIS, 1, _keyed(entry_key)
        entries = session.scalars(select(LedgerEntry).order_by(LedgerEntry.seq).execution_options(yield_per=1000))
        for entry in entries:
            walked += 1
            if problem := _link_problem(entry, expected, prev, hasher):
                return Verdict(False, walked, entry.seq, problem)
            if entry.seq == first.seq and entry.action != KEYED_ACTION:
                return Verdict(False, walked, None, f"the checkpoint file {keeper.checkpoint_file} does not begin "
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
    except _BadAnchor as bad:
        return Verdict(False, walked, None, str(bad))
    except _AnchorUnreadable as unreadable:
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
