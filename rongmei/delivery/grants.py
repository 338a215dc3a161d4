"""Grants: what a delivery gave the terminals of each audience (which file of which item, from when until
when), written in the same transaction that marks the delivery done, so grants and deliveries never disagree.
The distribution server counts a play only inside a grant (rongmei.distribution.plays)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime

from sqlalchemy import or_, update
from sqlalchemy.orm import Session

from publishers.base import Playable
from rongmei.storage.tables import Grant

__all__ = ["as_utc", "end_grants", "replace_grants"]


def as_utc(moment: datetime) -> datetime:
    """An aware UTC instant. SQLite stores datetimes without their offset and gives them back naive, so every
    time written or compared in SQL must be UTC already, and a naive one read back is UTC."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def replace_grants(session: Session, *, item_id: str, version_id: int, channel: str,
                   playables: Iterable[Playable], now: datetime, until: datetime | None) -> None:
    """Record what a successful publish or update of `item_id` on `channel` gave each audience.

    The item's grants on that channel that are still open at `now` end at `now`; one grant per playable
    starts at `now` and lasts until `until` (the item's `expires`, or None). Call it in the transaction that
    marks the delivery succeeded, with `receipt.playables`, so grants and deliveries never disagree.
    """
    now = as_utc(now)
    end_grants(session, item_id=item_id, channel=channel, now=now)
    valid_until = as_utc(until) if until is not None else None
    unique = sorted({(p.audience, p.sha256) for p in playables})
    session.add_all(Grant(item_id=item_id, version_id=version_id, channel=channel, audience=audience,
                          sha256=sha256, valid_from=now, valid_until=valid_until)
                    for audience, sha256 in unique)
    session.flush()


def end_grants(session: Session, *, item_id: str, channel: str, now: datetime) -> None:
    """End every grant of `item_id` on `channel` still open at `now` (retraction): plays of it that start
    later than `now` plus the clock skew no longer count; earlier ones still do."""
    now = as_utc(now)
    session.execute(
        update(Grant)
        .where(Grant.item_id == item_id, Grant.channel == channel,
               or_(Grant.valid_until.is_(None), Grant.valid_until > now))
        .values(valid_until=now)
        .execution_options(synchronize_session=False)
    )
