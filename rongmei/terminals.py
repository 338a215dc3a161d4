"""Terminals (screens and loudspeakers) and their proof of play, as plain functions over the store.

A terminal is enrolled once (`rongmei terminals add ID --zone … | --group …`) and receives a bearer token;
only the token's sha256 is stored, so a copy of the database cannot be used to impersonate a terminal.

Proof of play (issue 6 item 6): terminals POST completed plays to `/api/plays`::

    POST /api/plays
    Authorization: Bearer <token>
    Content-Type: application/json

    {"batch_id": "optional, echoed back",
     "plays": [{"item": "<item id>",
                "sha256": "<64 lowercase hex: the file that actually played>",
                "started_at": "2025-06-01T07:00:00+08:00",
                "ended_at": "2025-06-01T07:04:30+08:00"}]}

    200 {"accepted": 1, "duplicates": 0, "batch_id": "…"}

Times must carry an offset (a `Z` is fine). A play is identified by (terminal, item, started_at): a backlog
flushed twice, or a batch retried after a lost answer, is counted once. At most `MAX_PLAYS` plays and
`MAX_BATCH_BYTES` bytes per batch; larger backlogs are sent in several batches. Errors answer with
`{"error": "<code>", "message": "<what to fix>"}`: 400 malformed, 401 bad token, 405 wrong method,
413 oversized.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from rongmei.errors import ConfigError, RongmeiError, StoreError
from rongmei.store import Play, Store, Terminal

MAX_PLAYS = 1000
MAX_BATCH_BYTES = 1024 * 1024
TERMINAL_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")

__all__ = [
    "MAX_BATCH_BYTES",
    "MAX_PLAYS",
    "BadBatch",
    "PlayBatch",
    "PlayReport",
    "TerminalInfo",
    "authenticate",
    "check_assignment",
    "enroll_terminal",
    "hash_token",
    "list_terminals",
    "parse_batch",
    "record_plays",
]


class BadBatch(RongmeiError):
    """Raised when a proof-of-play batch cannot be accepted as sent (answered with HTTP 400)."""


@dataclass(frozen=True)
class TerminalInfo:
    """A detached snapshot of a terminal row, safe to keep after the session closed."""

    id: str
    zone: str
    group: str


class PlayReport(BaseModel):
    """One completed play as a terminal reports it."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    item: str = Field(min_length=1, max_length=100)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    started_at: datetime
    ended_at: datetime

    @field_validator("started_at", "ended_at")
    @classmethod
    def _aware_utc(cls, value: datetime) -> datetime:
        # Stored as UTC: SQLite drops offsets, and the uniqueness key must compare instants, not spellings.
        if value.tzinfo is None:
            raise ValueError("time has no UTC offset; send e.g. 2025-06-01T07:00:00+08:00 or …Z")
        return value.astimezone(UTC)

    @model_validator(mode="after")
    def _ordered(self) -> PlayReport:
        if self.ended_at < self.started_at:
            raise ValueError("ended_at is before started_at")
        return self


class PlayBatch(BaseModel):
    model_config = ConfigDict(extra="ignore")

    plays: list[PlayReport] = Field(max_length=MAX_PLAYS)
    batch_id: str = Field(default="", max_length=100)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def check_assignment(settings: Any, *, zone: str = "", group: str = "") -> None:
    """Refuse a zone or display group the configuration does not know (call before enroll_terminal).

    With no zones or groups configured at all (a fresh install) anything is accepted.
    """
    zones = {z.code: z.name for z in settings.zones}
    groups = {g.id: g.name for g in settings.screen_groups}
    if zone and zones and zone not in zones:
        known = "、".join(f"{code}（{name}）" for code, name in list(zones.items())[:8])
        raise ConfigError(f"区划代码 {zone} 不在配置的 zones 里；可用的有：{known}……请检查 rongmei.toml")
    if group and groups and group not in groups:
        known = "、".join(f"{gid}（{name}）" for gid, name in groups.items())
        raise ConfigError(f"大屏分组 {group} 不在配置的 screen_groups 里；可用的有：{known}")


def enroll_terminal(store: Store, terminal_id: str, *, zone: str = "", group: str = "") -> str:
    """Create a terminal, or issue a new token for an existing one (the old token stops working).

    Returns the token; it is shown once and cannot be recovered, only replaced.
    """
    if not TERMINAL_ID.match(terminal_id):
        raise StoreError(
            f"终端编号 {terminal_id!r} 不可用：只能用字母、数字、点、下划线和连字符，最长 64 个字符"
        )
    if not zone and not group:
        raise StoreError(f"终端 {terminal_id} 需要指定 --zone（村村响所在区划代码）或 --group（大屏分组）")
    token = secrets.token_urlsafe(32)
    with store.session() as session:
        terminal = session.get(Terminal, terminal_id)
        if terminal is None:
            session.add(Terminal(id=terminal_id, token_hash=hash_token(token), zone=zone, group=group))
        else:
            terminal.token_hash = hash_token(token)
            terminal.zone, terminal.group = zone, group
    return token


def authenticate(store: Store, token: str) -> Terminal | None:
    """The terminal holding this token, or None (unknown, empty or replaced token)."""
    if not token:
        return None
    with store.session() as session:
        terminal = session.scalars(select(Terminal).where(Terminal.token_hash == hash_token(token))).first()
        if terminal is not None:
            session.expunge(terminal)
        return terminal


def list_terminals(store: Store) -> list[TerminalInfo]:
    with store.session() as session:
        rows = session.scalars(select(Terminal).order_by(Terminal.id)).all()
        return [TerminalInfo(id=t.id, zone=t.zone, group=t.group) for t in rows]


def parse_batch(data: bytes | str | dict[str, Any]) -> PlayBatch:
    """Validate a request body; BadBatch carries a message a field technician can act on."""
    try:
        if isinstance(data, dict):
            return PlayBatch.model_validate(data)
        return PlayBatch.model_validate_json(data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors()[:10]:
            where = ".".join(str(p) for p in err["loc"]) or "body"
            problems.append(f"{where}: {err['msg']}")
        raise BadBatch("播放回执格式错误：" + "; ".join(problems)) from exc


def _insert_ignoring_duplicates(dialect: str):  # type: ignore[no-untyped-def]
    if dialect == "postgresql":
        return pg_insert(Play).on_conflict_do_nothing(constraint="uq_play").returning(Play.id)
    if dialect == "sqlite":
        return sqlite_insert(Play).on_conflict_do_nothing(
            index_elements=["terminal_id", "item_id", "started_at"]
        ).returning(Play.id)
    raise StoreError(f"proof of play needs SQLite or PostgreSQL, not {dialect}")


def record_plays(
    store: Store, terminal: Terminal | TerminalInfo, plays: Sequence[PlayReport] | Iterable[PlayReport]
) -> tuple[int, int]:
    """Store completed plays once each; returns (accepted, duplicates).

    Duplicates are plays already stored (an earlier flush of the same backlog) or repeated within the batch.
    ON CONFLICT DO NOTHING keeps this exact even when two flushes of one backlog race each other.
    """
    terminal_id, zone, group = terminal.id, terminal.zone, terminal.group
    plays = list(plays)
    seen: set[tuple[str, datetime]] = set()
    unique = []
    for play in plays:
        key = (play.item, play.started_at)
        if key not in seen:
            seen.add(key)
            unique.append(play)
    accepted = 0
    received = datetime.now(UTC)
    statement = _insert_ignoring_duplicates(store.engine.dialect.name)
    with store.session() as session:
        for play in unique:
            result = session.execute(
                statement.values(
                    terminal_id=terminal_id,
                    item_id=play.item,
                    sha256=play.sha256,
                    started_at=play.started_at,
                    ended_at=play.ended_at,
                    zone=zone,
                    group=group,
                    received_at=received,
                )
            )
            # RETURNING, not rowcount: psycopg reports -1 for an INSERT … ON CONFLICT DO NOTHING.
            accepted += result.first() is not None
    return accepted, len(plays) - accepted
