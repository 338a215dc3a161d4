"""Proof of play: the batch terminals POST to `/api/plays`, and storing its plays once each, counting only
what a grant covers. The HTTP side (authentication, limits, strict JSON) is rongmei.distribution.plays_api::

    POST /api/plays
    Authorization: Bearer <token>
    Content-Type: application/json

    {"batch_id": "optional, echoed back",
     "plays": [{"item": "<item id>",
                "sha256": "<64 lowercase hex: the file that actually played>",
                "started_at": "2025-06-01T07:00:00+08:00",
                "ended_at": "2025-06-01T07:04:30+08:00"}]}

    200 {"accepted": 1, "duplicates": 0, "batch_id": "…",
         "refused": [{"index": 3, "item": "…", "reason": "<in Chinese: what is wrong, how to fix it>"}]}

Times must carry an offset (a `Z` is fine). A play is identified by (terminal, item, started_at): a backlog
flushed twice, or a batch retried after a lost answer, is counted once (`duplicates`).

A play is accepted when a grant of its audience (rongmei.distribution.terminals) names the same item and
sha256 and the play's `[started_at, ended_at]` lies within `[valid_from - skew, (valid_until or now) + skew]`
(consecutive grants of the same file count as one span), and it neither starts nor ends more than `skew`
after the server's clock (`settings.play_clock_skew_seconds`): only completed plays are reported, so a
"ten-year play" ending in the future is refused even while its item is still given. Anything else is listed
under `refused` with its index in `plays` and kept apart in `refused_plays` with the reason; it is never
counted in the reach report. The batch is still answered 200: the terminal should drop refused plays from its
backlog, since grants only ever start at the moment of a delivery and sending them again cannot make them
count.

At most `MAX_PLAYS` plays and `MAX_BATCH_BYTES` bytes per batch; larger backlogs are sent in several
batches. The body must be strict JSON (no NaN/Infinity, no repeated keys, nesting of at most a few hundred
levels). Errors answer with `{"error": "<code>", "message": "<what to fix>"}`: 400 malformed, 401 bad token,
405 wrong method, 408 body not sent in time, 413 oversized.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from sqlalchemy import insert, or_, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from rongmei.core.errors import RongmeiError, StoreError
from rongmei.core.model import ITEM_ID, SHANGHAI
from rongmei.delivery.grants import as_utc
from rongmei.distribution.terminals import TerminalInfo, audience_of
from rongmei.storage.store import Store
from rongmei.storage.tables import Grant, Play, RefusedPlay, Terminal

MAX_PLAYS = 1000
MAX_BATCH_BYTES = 1024 * 1024
DEFAULT_SKEW = timedelta(seconds=300)  # settings.play_clock_skew_seconds is what the server passes

__all__ = [
    "DEFAULT_SKEW", "MAX_BATCH_BYTES", "MAX_PLAYS", "AudienceGrants", "BadBatch", "GrantCache", "PlayBatch",
    "PlayOutcome", "PlayReport", "Refusal", "Span", "parse_batch", "record_plays"
]


class BadBatch(RongmeiError):
    """Raised when a proof-of-play batch cannot be accepted as sent (answered with HTTP 400)."""


class PlayReport(BaseModel):
    """One completed play as a terminal reports it."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    item: str = Field(min_length=1, max_length=100)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    started_at: datetime
    ended_at: datetime

    @field_validator("item")
    @classmethod
    def _item_id(cls, value: str) -> str:
        # Only an id an item can have could ever be granted; anything else (NUL, control characters) is a
        # malformed report, and must not reach the database (PostgreSQL refuses NUL in text).
        if not ITEM_ID.fullmatch(value):  # fullmatch: `$` alone would let a trailing newline through
            raise ValueError("not an item id (letters, digits, Chinese characters, . _ -, at most 100)")
        return value

    @field_validator("started_at", "ended_at")
    @classmethod
    def _aware_utc(cls, value: datetime) -> datetime:
        # Stored as UTC: SQLite drops offsets, and the uniqueness key must compare instants, not spellings.
        if value.tzinfo is None:
            raise ValueError("time has no UTC offset; send e.g. 2025-06-01T07:00:00+08:00 or …Z")
        try:
            return value.astimezone(UTC)
        except OverflowError:  # 0001-01-01T00:00+01:00 has no UTC instant: a bad report, not a server error
            raise ValueError("time is out of range") from None

    @model_validator(mode="after")
    def _ordered(self) -> PlayReport:
        if self.ended_at < self.started_at:
            raise ValueError("ended_at is before started_at")
        return self


class PlayBatch(BaseModel):
    model_config = ConfigDict(extra="ignore")

    plays: list[PlayReport] = Field(max_length=MAX_PLAYS)
    batch_id: str = Field(default="", max_length=100)


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


@dataclass(frozen=True)
class Refusal:
    """A play that was not counted: its index in the batch, the item it named and why (in Chinese)."""

    index: int
    item: str
    reason: str

    def as_json(self) -> dict[str, Any]:
        return {"index": self.index, "item": self.item, "reason": self.reason}


@dataclass(frozen=True)
class PlayOutcome:
    """What became of a batch: counted once, already counted (duplicates), or refused."""

    accepted: int
    duplicates: int
    refused: list[Refusal] = field(default_factory=list)


# Checking plays against the grants ----------------------------------------------------------------------
Span = tuple[datetime, datetime | None]  # [valid_from, valid_until or still given]


def _spans(grants: Iterable[tuple[datetime, datetime | None]]) -> list[Span]:
    """Grants of one (item, sha256) merged where they touch: an update that kept the file ends one grant and
    starts the next at the same instant, and a play running across that instant must still count."""
    merged: list[list[Any]] = []
    for start, end in sorted(((as_utc(a), as_utc(b) if b else None) for a, b in grants), key=lambda g: g[0]):
        if merged and (merged[-1][1] is None or start <= merged[-1][1]):
            if merged[-1][1] is not None and (end is None or end > merged[-1][1]):
                merged[-1][1] = end
        else:
            merged.append([start, end])
    return [(a, b) for a, b in merged]


def _shown(moment: datetime | None) -> str:
    # Terminals and their technicians are in China: local time reads better in a reason than UTC.
    return moment.astimezone(SHANGHAI).isoformat(timespec="seconds") if moment else "现在"


class AudienceGrants:
    """The grants of one audience, loaded with one query: for the items of one batch, or (`recent_since`) all
    grants still open or ended since then, as GrantCache keeps them."""

    def __init__(self, session: Session, audience: str, items: set[str] | None,
                 recent_since: datetime | None = None) -> None:
        self.audience = audience
        query = select(Grant.item_id, Grant.sha256, Grant.valid_from, Grant.valid_until).where(
            Grant.audience == audience)
        if items is not None:
            query = query.where(Grant.item_id.in_(sorted(items)))
        if recent_since is not None:
            query = query.where(or_(Grant.valid_until.is_(None), Grant.valid_until > as_utc(recent_since)))
        rows = session.execute(query).all() if items is None or items else []
        raw: dict[tuple[str, str], list[tuple[datetime, datetime | None]]] = {}
        for item_id, sha256, valid_from, valid_until in rows:
            raw.setdefault((item_id, sha256), []).append((valid_from, valid_until))
        self.items = {item_id for item_id, _ in raw}
        self.spans = {key: _spans(grants) for key, grants in raw.items()}

    def refusal(self, play: PlayReport, now: datetime, skew: timedelta) -> str | None:
        """Why this play cannot count, or None when a grant covers it."""
        whom = self.audience.replace("group:", "大屏分组 ").replace("zone:", "区划 ")
        seconds = int(skew.total_seconds())
        if play.started_at > now + skew:
            return (f"开始时间 {_shown(play.started_at)} 比服务器时间晚了超过 {seconds} 秒：请校准终端时钟（NTP）后再报")
        if play.ended_at > now + skew:
            # Only completed plays are reported; an end in the future would let one report run for years.
            return (f"结束时间 {_shown(play.ended_at)} 比服务器时间晚了超过 {seconds} 秒：只报已播完的节目，"
                    "并请校准终端时钟（NTP）")
        if play.item not in self.items:
            return (f"稿件 {play.item} 从未下发给本终端（{whom}），不计入播放统计；请核对终端登记的区划或大屏分组"
                    "（rongmei terminals list）与稿件的播出范围")
        spans = self.spans.get((play.item, play.sha256))
        if not spans:
            return (f"文件 {play.sha256[:12]}… 不是下发给本终端（{whom}）的稿件 {play.item} 的文件（可能是旧版本"
                    "或文件被改动），不计入；请重新拉取播放列表并按 sha256 校验文件")
        for start, end in spans:
            if start - skew <= play.started_at and play.ended_at <= (end or now) + skew:
                return None
        given = "、".join(f"{_shown(a)} 至 {_shown(b)}" for a, b in spans[-3:])
        return (f"播放时间 {_shown(play.started_at)} 至 {_shown(play.ended_at)} 不在稿件 {play.item} 下发给本终端的"
                f"时段内（{given}，允许误差 {seconds} 秒），不计入；请检查终端时钟和缓存的旧节目")


class GrantCache:
    """Recently read grants per audience, kept by the distribution server so that a play batch usually needs no
    query inside the database's write lock (plays at terminal volume queue on it).

    An entry lives `ttl` seconds (30 s: far below the clock skew a play is allowed, so a grant a retraction
    ended is seen in time to matter) and holds the audience's grants open now or ended in the last two days.
    A play the cached grants would refuse is checked again with the exact query before it is refused, so a
    grant made a moment ago, or an old one for a backlog, is never missed."""

    def __init__(self, ttl: float = 30.0, window: timedelta = timedelta(days=2)) -> None:
        self.ttl, self.window = ttl, window
        self._entries: dict[str, tuple[float, AudienceGrants]] = {}
        self._lock = threading.Lock()

    def grants(self, session: Session, audience: str, now: datetime) -> AudienceGrants:
        clock = time.monotonic()
        with self._lock:
            cached = self._entries.get(audience)
        if cached is not None and cached[0] > clock:
            return cached[1]
        fresh = AudienceGrants(session, audience, None, recent_since=now - self.window)
        with self._lock:
            self._entries[audience] = (clock + self.ttl, fresh)
        return fresh


# Recording plays -----------------------------------------------------------------------------------------
def _insert_ignoring_duplicates(dialect: str):  # type: ignore[no-untyped-def]
    if dialect == "postgresql":
        return pg_insert(Play).on_conflict_do_nothing(constraint="uq_play").returning(Play.id)
    if dialect == "sqlite":
        return sqlite_insert(Play).on_conflict_do_nothing(
            index_elements=["terminal_id", "item_id", "started_at"]
        ).returning(Play.id)
    raise StoreError(f"proof of play needs SQLite or PostgreSQL, not {dialect}")


def record_plays(
    store: Store, terminal: Terminal | TerminalInfo, plays: Sequence[PlayReport] | Iterable[PlayReport], *,
    now: datetime | None = None, skew: timedelta = DEFAULT_SKEW, cache: GrantCache | None = None,
) -> PlayOutcome:
    """Store completed plays once each, counting only those a grant covers (see the module docstring).

    Duplicates are plays already stored (an earlier flush of the same backlog) or repeated within the batch.
    ON CONFLICT DO NOTHING keeps this exact even when two flushes of one backlog race each other. Refused
    plays go to `refused_plays` once each (a batch sent again does not store them twice). The grants are
    read with one query per batch and checked in memory, so a batch costs what it did before the check.
    """
    terminal_id, zone, group = terminal.id, terminal.zone, terminal.group
    now = as_utc(now or datetime.now(UTC))
    plays = list(plays)
    seen: set[tuple[str, datetime]] = set()
    unique: list[tuple[int, PlayReport]] = []
    for index, play in enumerate(plays):
        key = (play.item, play.started_at)
        if key not in seen:
            seen.add(key)
            unique.append((index, play))
    accepted = 0
    refused: list[tuple[int, PlayReport, str]] = []
    statement = _insert_ignoring_duplicates(store.engine.dialect.name)
    with store.session() as session:
        audience, items = audience_of(terminal), {play.item for _, play in unique}
        grants = cache.grants(session, audience, now) if cache else AudienceGrants(session, audience, items)
        exact = cache is None
        rows = []
        for index, play in unique:
            reason = grants.refusal(play, now, skew)
            if reason is not None and not exact:  # the cache may be behind: ask the database before refusing
                grants, exact = AudienceGrants(session, audience, items), True
                reason = grants.refusal(play, now, skew)
            if reason is not None:
                refused.append((index, play, reason))
                continue
            rows.append({"terminal_id": terminal_id, "item_id": play.item, "sha256": play.sha256,
                         "started_at": play.started_at, "ended_at": play.ended_at, "zone": zone, "group": group,
                         "received_at": now})
        if rows:
            # One multi-row statement per batch. RETURNING, not rowcount: psycopg reports -1 for an
            # INSERT … ON CONFLICT DO NOTHING; the rows returned are the plays that were new.
            accepted = len(session.execute(statement.values(rows)).all())
        if refused:
            _keep_refused(session, terminal_id, refused, now)
    duplicates = len(plays) - accepted - len(refused)
    return PlayOutcome(accepted, duplicates, [Refusal(i, play.item, why) for i, play, why in refused])


def _keep_refused(session: Session, terminal_id: str, refused: list[tuple[int, PlayReport, str]],
                  now: datetime) -> None:
    """Keep refused plays apart, once per (terminal, item, started_at) like accepted ones."""
    known = set(session.execute(
        select(RefusedPlay.item_id, RefusedPlay.started_at)
        .where(RefusedPlay.terminal_id == terminal_id,
               RefusedPlay.started_at.in_(sorted({play.started_at for _, play, _ in refused})))
    ).all())
    known = {(item_id, as_utc(started_at)) for item_id, started_at in known}
    rows = [{"terminal_id": terminal_id, "item_id": play.item, "sha256": play.sha256,
             "started_at": play.started_at, "ended_at": play.ended_at, "reason": reason, "received_at": now}
            for _, play, reason in refused if (play.item, play.started_at) not in known]
    if rows:
        session.execute(insert(RefusedPlay), rows)  # one executemany, not a flush of one INSERT per row
