"""The store's tables: items, versions, reviewers, sign-offs, deliveries, the ledger, terminals and plays, and
what the feed pulls remember between runs (rongmei.intake.feeds).

Plain SQLAlchemy models, with no behaviour beyond a derived property or two: `rongmei.storage.store` opens the
database and the blob directory, `rongmei.storage.ledger` appends to and verifies the ledger table. Both import
these; neither imports the other's internals for them.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from typing import Any, ClassVar

from sqlalchemy import JSON, Boolean, DateTime, ForeignKey, Integer, String, Text, UniqueConstraint, text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

__all__ = [
    "Base", "Blob", "CodeFailure", "Delivery", "FeedEntry", "FeedSource", "Grant", "Item", "LedgerEntry",
    "Play", "RefusedPlay", "ReviewAttempt", "Reviewer", "SignOff", "Terminal", "TotpUse", "Version", "utcnow"
]


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
    """A wrong sign-off code for an enrolled reviewer: counted for the lockout (rongmei.review.reviewers)."""

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
    # The lease (rongmei.delivery.leases): who is calling the channel for this delivery now, and until when.
    # A delivery "in_progress" whose lease expired was abandoned (its run died); it is taken over only after the
    # channel said what actually happened.
    lease_holder: Mapped[str] = mapped_column(String(120), default="", server_default=text("''"))
    lease_expires: Mapped[datetime | None] = mapped_column(nullable=True, default=None)
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


class FeedSource(Base):
    """What we know about one upstream source between pulls: validators for conditional GET, and health."""

    __tablename__ = "feed_sources"
    url: Mapped[str] = mapped_column(String(1000), primary_key=True)
    name: Mapped[str] = mapped_column(String(200), default="")
    etag: Mapped[str] = mapped_column(Text, default="")
    last_modified: Mapped[str] = mapped_column(Text, default="")
    last_status: Mapped[str] = mapped_column(String(20), default="")  # ok | not_modified | warning | error
    last_http_status: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str] = mapped_column(Text, default="")  # also holds the bozo reason of a warning
    last_checked: Mapped[datetime | None] = mapped_column(default=None)
    last_success: Mapped[datetime | None] = mapped_column(default=None)
    last_new: Mapped[int] = mapped_column(Integer, default=0)


class FeedEntry(Base):
    """An upstream entry already turned into a drop; the (source, key) pair is what deduplicates."""

    __tablename__ = "feed_entries"
    __table_args__ = (UniqueConstraint("source", "key", name="uq_feed_entry"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    source: Mapped[str] = mapped_column(ForeignKey("feed_sources.url"), index=True)
    key: Mapped[str] = mapped_column(String(1000))
    item_id: Mapped[str] = mapped_column(String(100))
    link: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
