"""The store: the source of truth for items, versions, blobs, sign-offs and deliveries.

SQLite (in the data dir) is the embedded default; a PostgreSQL URL is the option for scale. File contents
live once each, content-addressed by sha256, under `data_dir/blobs/`.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import (
    create_engine,
    event,
    inspect,
    select,
)
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from rongmei.core.errors import StoreError
from rongmei.storage.tables import (
    Base,
    Blob,
    Version,
)

__all__ = ["CHUNK", "Store", "add_missing_columns", "make_engine", "store_for"]

CHUNK = 1024 * 1024

CHUNK = 1024 * 1024


def _sqlite_pragmas(synchronous: str) -> Any:
    def apply(dbapi_connection: Any, _record: Any) -> None:
        # Several processes (workers, CLI, server) share the file: WAL lets readers run beside one writer,
        # and the busy timeout waits for the writer instead of failing with "database is locked".
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA synchronous={synchronous}")
        cursor.close()

    return apply


def _sqlite_begin_immediate(connection: Any) -> None:
    # Take the write lock at BEGIN: a deferred transaction that reads and then writes fails at once with
    # SQLITE_BUSY under WAL when another process wrote in between; an immediate one waits its turn.
    connection.exec_driver_sql("BEGIN IMMEDIATE")


def make_engine(url: str, *, durable: bool = True) -> Engine:
    """An engine for the store. `durable` (SQLite synchronous=FULL) syncs every commit before it returns, so a
    power cut loses no sign-off or delivery, and the ledger's anchor outside the database never runs ahead of
    it (a lost commit would read as a deleted tail). The distribution server's high-volume play inserts use
    durable=False (synchronous=NORMAL: ~0.4 ms less per write here; a power cut may lose the last moments of
    acknowledged plays); such a store may not write ledger entries. PostgreSQL commits durably either way."""
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            # Created 0600 (SQLite gives its -wal and -shm files the same mode): unpublished items live here. Only
            # ever opened here when new: closing a descriptor of a file drops every POSIX lock this process holds
            # on it, and another engine of ours may hold SQLite's locks on an existing database.
            with contextlib.suppress(FileExistsError):
                os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        engine = create_engine(url, connect_args={"timeout": 30, "isolation_level": None})
        event.listen(engine, "connect", _sqlite_pragmas("FULL" if durable else "NORMAL"))
        event.listen(engine, "begin", _sqlite_begin_immediate)
        return engine
    return create_engine(url, pool_pre_ping=True)


_SCHEMA_READY: set[str] = set()  # database URLs whose schema this process has brought up to date


def add_missing_columns(engine: Engine) -> list[str]:
    """Bring tables an older rongmei created up to date: add the columns it did not have yet.

    Only additive changes are ever made this way (a new column with a default), so an existing data dir keeps
    every row and a second `rongmei up` on an upgraded checkout continues where the first stopped.
    """
    inspector = inspect(engine)
    added = []
    for table in Base.metadata.sorted_tables:
        if not inspector.has_table(table.name):
            continue
        present = {column["name"] for column in inspector.get_columns(table.name)}
        for column in table.columns:
            if column.name in present:
                continue
            kind = column.type.compile(dialect=engine.dialect)
            default = ""
            if column.server_default is not None:
                default = f" DEFAULT {column.server_default.arg.text}"  # type: ignore[union-attr]
            elif not column.nullable:
                raise StoreError(f"cannot add column {table.name}.{column.name} to an existing database: it "
                                 "needs a server default")
            with engine.begin() as connection:
                connection.exec_driver_sql(f'ALTER TABLE {table.name} ADD COLUMN "{column.name}" {kind}{default}')
            added.append(f"{table.name}.{column.name}")
    return added


class Store:
    """Database plus blob directory. Cheap to create; one per process is enough."""

    def __init__(self, url: str, blob_dir: Path, *, secrets_dir: Path | None = None,
                 ledger_dir: Path | None = None, s3_bucket: str = "", s3_endpoint_url: str = "",
                 durable: bool = True) -> None:
        from rongmei.storage.ledger_keeper import (
            LedgerKeeper,  # the ledger modules build on this one's tables
        )

        self.url = url
        self.durable = durable
        self.engine = make_engine(url, durable=durable)
        self.blob_dir = Path(blob_dir)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        # Without settings the blob dir is `data_dir/blobs`: the key and the checkpoints go beside it, where
        # `from_settings` puts them too.
        data_dir = self.blob_dir.parent
        self.ledger = LedgerKeeper(
            self.engine,
            secrets_dir=secrets_dir or data_dir / "secrets",
            checkpoint_file=(ledger_dir or data_dir / "ledger") / "checkpoints.jsonl",
            s3_bucket=s3_bucket,
            s3_endpoint_url=s3_endpoint_url,
        )
        self.ledger.durable = durable or not url.startswith("sqlite")
        self.ledger.watch(self._sessions)  # every commit that appended entries anchors the new head

    @classmethod
    def from_settings(cls, settings: Any, *, durable: bool = True) -> Store:
        store = cls(settings.db_url, settings.blob_dir, secrets_dir=settings.secrets_dir,
                    ledger_dir=settings.data_dir / "ledger", s3_bucket=settings.s3_bucket,
                    s3_endpoint_url=settings.s3_endpoint_url, durable=durable)
        store.create_schema()
        return store

    def create_schema(self) -> None:
        Base.metadata.create_all(self.engine)
        if self.url not in _SCHEMA_READY:  # columns are only ever added: once per process and database is enough
            add_missing_columns(self.engine)
            _SCHEMA_READY.add(self.url)

    @contextmanager
    def session(self) -> Iterator[Session]:
        """One transaction: committed on success, rolled back on any error.

        The session carries the ledger key (`ledger.record` needs it); the first one of a process creates the
        key, keying an older ledger (rongmei.storage.ledger).
        """
        self.ledger.open()  # before the transaction: creating the key takes the write lock itself
        with self._sessions(info=self.ledger.session_info()) as session, session.begin():
            yield session

    # Blobs -------------------------------------------------------------------------------------
    def blob_path(self, sha256: str) -> Path:
        if len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256):
            raise StoreError(f"not a sha256 digest: {sha256!r}")
        return self.blob_dir / sha256[:2] / sha256[2:4] / sha256

    def put_file(self, source: Path) -> tuple[str, int]:
        """Copy a file into the blob store (once per content); returns (sha256, bytes)."""
        with open(source, "rb") as stream:
            return self.put_stream(stream)

    def put_stream(self, source: Any) -> tuple[str, int]:
        """Copy an open binary file (read from where it stands) into the blob store; returns (sha256, bytes).

        Ingest opens drop files itself, without following links, and checks what it opened (rongmei.intake.safe_open):
        the blob is then exactly that file, not whatever its path names by the time it is copied."""
        digest = hashlib.sha256()
        self.blob_dir.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=self.blob_dir, prefix=".incoming-")
        size = 0
        try:
            with os.fdopen(fd, "wb") as out:
                while chunk := source.read(CHUNK):
                    digest.update(chunk)
                    out.write(chunk)
                    size += len(chunk)
            sha = digest.hexdigest()
            target = self.blob_path(sha)
            if target.exists():
                os.unlink(tmp_name)
            else:
                target.parent.mkdir(parents=True, exist_ok=True)
                os.replace(tmp_name, target)
        except BaseException:
            if os.path.exists(tmp_name):
                os.unlink(tmp_name)
            raise
        with self.session() as session:
            if session.get(Blob, sha) is None:
                session.merge(Blob(sha256=sha, bytes=size))
        return sha, size

    def put_bytes(self, data: bytes) -> tuple[str, int]:
        sha = hashlib.sha256(data).hexdigest()
        target = self.blob_path(sha)
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=".incoming-")
            with os.fdopen(fd, "wb") as out:
                out.write(data)
            os.replace(tmp_name, target)
        with self.session() as session:
            if session.get(Blob, sha) is None:
                session.merge(Blob(sha256=sha, bytes=len(data)))
        return sha, len(data)

    def read_blob(self, sha256: str) -> bytes:
        return self.blob_path(sha256).read_bytes()

    def copy_blob(self, sha256: str, target: Path) -> None:
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(self.blob_path(sha256), target)

    # Queries used everywhere -------------------------------------------------------------------
    def latest_version(self, session: Session, item_id: str) -> Version | None:
        return session.scalars(
            select(Version).where(Version.item_id == item_id).order_by(Version.number.desc()).limit(1)
        ).first()

    def version(self, session: Session, version_id: int) -> Version:
        version = session.get(Version, version_id)
        if version is None:
            raise StoreError(f"no version with id {version_id}; see `rongmei status` for what exists")
        return version


_STORES: dict[tuple[Any, ...], Store] = {}
_STORES_LOCK = threading.Lock()


def store_for(settings: Any, *, durable: bool = True) -> Store:
    """The one store of this process for these settings. A flow run and its tasks (threads of one process) share
    it, so the schema is checked and the ledger key opened once per run instead of once per task; a process
    worker starts every flow run in a process of its own, so each run still opens the store afresh."""
    key = (settings.db_url, str(settings.blob_dir), str(settings.secrets_dir), str(settings.data_dir),
           settings.s3_bucket, settings.s3_endpoint_url, durable)
    with _STORES_LOCK:
        store = _STORES.get(key)
        if store is None:
            store = _STORES[key] = Store.from_settings(settings, durable=durable)
    return store
