"""The store: the source of truth for items, versions, blobs, sign-offs and deliveries.

SQLite (in the data dir) is the embedded default; a PostgreSQL URL is the option for scale. File contents
live once each, content-addressed by sha256, under `data_dir/blobs/`.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
    create_engine,
    event,
    inspect,
    select,
    text,
)
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

from rongmei.errors import StoreError

CHUNK = 1024 * 1024


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    type_annotation_map: ClassVar[dict[Any, Any]] = {dict[str, Any]: JSON, list[Any]: JSON, datetime: DateTime(timezone=True)}


class Blob(Base):
    __tablename__ = "blobs"
    sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    bytes: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Item(Base):
    __tablename__ = "items"
    id: Mapped[str] = mapped_column(String(100), primary_key=True)
    drop_name: Mapped[str] = mapped_column(String(200))
    state: Mapped[str] = mapped_column(String(20), default="in_review")
    current_version: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class Version(Base):
    """One immutable version of an item: front matter, body and files, as dropped."""

    __tablename__ = "versions"
    __table_args__ = (UniqueConstraint("item_id", "number", name="uq_version_number"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    item_id: Mapped[str] = mapped_column(ForeignKey("items.id"), index=True)
    number: Mapped[int] = mapped_column(Integer)
    content_hash: Mapped[str] = mapped_column(String(64))
    drop_name: Mapped[str] = mapped_column(String(200))
    archived_to: Mapped[str] = mapped_column(Text, default="")
    meta: Mapped[dict[str, Any]] = mapped_column(JSON)
    body: Mapped[str] = mapped_column(Text, default="")
    files: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    checks: Mapped[list[Any]] = mapped_column(JSON, default=list)
    renditions: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    renditions_hash: Mapped[str] = mapped_column(String(64), default="")
    state: Mapped[str] = mapped_column(String(20), default="in_review")
    preview_token: Mapped[str] = mapped_column(String(64), default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    @property
    def blocking_checks(self) -> list[dict[str, Any]]:
        return [c for c in self.checks if c.get("severity") == "blocking"]

    @property
    def signed_hash(self) -> str:
        """What a sign-off covers: the content and, once made, the renditions that will go out."""
        if not self.renditions_hash:
            return self.content_hash
        return hashlib.sha256(f"{self.content_hash}:{self.renditions_hash}".encode()).hexdigest()


class Reviewer(Base):
    __tablename__ = "reviewers"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    roles: Mapped[list[Any]] = mapped_column(JSON, default=list)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # Demo reviewers (`rongmei up --demo`) count only while demo mode is on.
    demo: Mapped[bool] = mapped_column(Boolean, default=False, server_default=text("false"))
    # Set when too many wrong codes came in a row (brute force): no code of this reviewer counts until then.
    locked_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True, default=None)


class CodeFailure(Base):
    """A wrong sign-off code for an enrolled reviewer: counted for the lockout (rongmei.reviewers)."""

    __tablename__ = "code_failures"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    reviewer_id: Mapped[str] = mapped_column(String(64), index=True)
    at: Mapped[datetime] = mapped_column(default=utcnow, index=True)


class TotpUse(Base):
    """A TOTP time step a reviewer has spent: a code counts once."""

    __tablename__ = "totp_uses"
    reviewer_id: Mapped[str] = mapped_column(ForeignKey("reviewers.id"), primary_key=True)
    timestep: Mapped[int] = mapped_column(Integer, primary_key=True)
    used_at: Mapped[datetime] = mapped_column(default=utcnow)


class SignOff(Base):
    __tablename__ = "signoffs"
    # One sign-off per stage of what was signed; a changed rendition (new signed_hash) voids the old ones.
    __table_args__ = (UniqueConstraint("version_id", "stage", "signed_hash", name="uq_signoff_stage"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    version_id: Mapped[int] = mapped_column(ForeignKey("versions.id"), index=True)
    stage: Mapped[str] = mapped_column(String(40))
    reviewer_id: Mapped[str] = mapped_column(ForeignKey("reviewers.id"))
    decision: Mapped[str] = mapped_column(String(10))
    comment: Mapped[str] = mapped_column(Text, default="")
    signed_hash: Mapped[str] = mapped_column(String(64))
    signed_at: Mapped[datetime] = mapped_column(default=utcnow)


class ReviewAttempt(Base):
    """Every answer to a sign-off form, counted or refused. `pause_key` makes re-runs idempotent."""

    __tablename__ = "review_attempts"
    __table_args__ = (UniqueConstraint("version_id", "pause_key", name="uq_attempt_key"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    version_id: Mapped[int] = mapped_column(ForeignKey("versions.id"), index=True)
    stage: Mapped[str] = mapped_column(String(40))
    pause_key: Mapped[str] = mapped_column(String(80))
    reviewer_id: Mapped[str] = mapped_column(String(64), default="")
    decision: Mapped[str] = mapped_column(String(10), default="")
    status: Mapped[str] = mapped_column(String(12))  # approved | returned | rejected | refused
    reason: Mapped[str] = mapped_column(Text, default="")
    at: Mapped[datetime] = mapped_column(default=utcnow)


class Delivery(Base):
    """One delivery per (version, channel, action): what makes publishing re-runs safe."""

    __tablename__ = "deliveries"
    __table_args__ = (UniqueConstraint("version_id", "channel", "action", name="uq_delivery"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    item_id: Mapped[str] = mapped_column(ForeignKey("items.id"), index=True)
    version_id: Mapped[int] = mapped_column(ForeignKey("versions.id"), index=True)
    channel: Mapped[str] = mapped_column(String(40))
    action: Mapped[str] = mapped_column(String(20))
    state: Mapped[str] = mapped_column(String(20), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    remote_id: Mapped[str] = mapped_column(Text, default="")
    url: Mapped[str] = mapped_column(Text, default="")
    message: Mapped[str] = mapped_column(Text, default="")
    details: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class LedgerEntry(Base):
    __tablename__ = "ledger"
    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    at: Mapped[str] = mapped_column(String(40))
    actor: Mapped[str] = mapped_column(String(100))
    action: Mapped[str] = mapped_column(String(40))
    item_id: Mapped[str] = mapped_column(String(100), default="", index=True)
    version: Mapped[int] = mapped_column(Integer, default=0)
    content_hash: Mapped[str] = mapped_column(String(64), default="")
    details: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))


class Terminal(Base):
    """A screen or loudspeaker terminal that polls us and reports plays."""

    __tablename__ = "terminals"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    zone: Mapped[str] = mapped_column(String(20), default="")
    group: Mapped[str] = mapped_column(String(64), default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Grant(Base):
    """What a channel gave the terminals of one audience (`zone:<code>` or `group:<id>`): a file (sha256) of an
    item, from `valid_from` until `valid_until` (None: still given). Proof of play is checked against these."""

    __tablename__ = "grants"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    item_id: Mapped[str] = mapped_column(String(100), index=True)
    version_id: Mapped[int] = mapped_column(Integer)
    channel: Mapped[str] = mapped_column(String(40))
    audience: Mapped[str] = mapped_column(String(80), index=True)
    sha256: Mapped[str] = mapped_column(String(64))
    valid_from: Mapped[datetime] = mapped_column()
    valid_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True, default=None)


class RefusedPlay(Base):
    """A play report that was not counted, kept apart with the reason (never in the reach report)."""

    __tablename__ = "refused_plays"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    terminal_id: Mapped[str] = mapped_column(String(64), index=True)
    item_id: Mapped[str] = mapped_column(String(100))
    sha256: Mapped[str] = mapped_column(String(64))
    started_at: Mapped[datetime] = mapped_column()
    ended_at: Mapped[datetime] = mapped_column()
    reason: Mapped[str] = mapped_column(Text)
    received_at: Mapped[datetime] = mapped_column(default=utcnow)


class Play(Base):
    """A completed play reported by a terminal (proof of play)."""

    __tablename__ = "plays"
    __table_args__ = (UniqueConstraint("terminal_id", "item_id", "started_at", name="uq_play"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    terminal_id: Mapped[str] = mapped_column(ForeignKey("terminals.id"), index=True)
    item_id: Mapped[str] = mapped_column(String(100), index=True)
    sha256: Mapped[str] = mapped_column(String(64))
    started_at: Mapped[datetime] = mapped_column()
    ended_at: Mapped[datetime] = mapped_column()
    zone: Mapped[str] = mapped_column(String(20), default="")
    group: Mapped[str] = mapped_column(String(64), default="")
    received_at: Mapped[datetime] = mapped_column(default=utcnow)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # Several processes (workers, CLI, server) share the file: WAL lets readers run beside one writer,
    # and the busy timeout waits for the writer instead of failing with "database is locked".
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def _sqlite_begin_immediate(connection: Any) -> None:
    # Take the write lock at BEGIN: a deferred transaction that reads and then writes fails at once with
    # SQLITE_BUSY under WAL when another process wrote in between; an immediate one waits its turn.
    connection.exec_driver_sql("BEGIN IMMEDIATE")


def make_engine(url: str) -> Engine:
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 30, "isolation_level": None})
        event.listen(engine, "connect", _sqlite_pragmas)
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

    def __init__(self, url: str, blob_dir: Path) -> None:
        self.url = url
        self.engine = make_engine(url)
        self.blob_dir = Path(blob_dir)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    @classmethod
    def from_settings(cls, settings: Any) -> Store:
        store = cls(settings.db_url, settings.blob_dir)
        store.create_schema()
        return store

    def create_schema(self) -> None:
        if self.url in _SCHEMA_READY:
            return
        Base.metadata.create_all(self.engine)
        add_missing_columns(self.engine)
        _SCHEMA_READY.add(self.url)

    @contextmanager
    def session(self) -> Iterator[Session]:
        """One transaction: committed on success, rolled back on any error."""
        with self._sessions() as session, session.begin():
            yield session

    # Blobs -------------------------------------------------------------------------------------
    def blob_path(self, sha256: str) -> Path:
        if len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256):
            raise StoreError(f"not a sha256 digest: {sha256!r}")
        return self.blob_dir / sha256[:2] / sha256[2:4] / sha256

    def put_file(self, source: Path) -> tuple[str, int]:
        """Copy a file into the blob store (once per content); returns (sha256, bytes)."""
        digest = hashlib.sha256()
        self.blob_dir.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=self.blob_dir, prefix=".incoming-")
        size = 0
        try:
            with os.fdopen(fd, "wb") as out, open(source, "rb") as src:
                while chunk := src.read(CHUNK):
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
