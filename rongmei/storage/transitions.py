"""Every change of state of an item, a version or a delivery goes through `transition`.

It checks each change against the tables in rongmei.core.states before touching anything and writes the ledger
entry in the caller's transaction, so the store never holds a state the workflow does not allow, nor a change
without its audit record; a refused change raises before anything is written.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from sqlalchemy.orm import Session

from rongmei.core.errors import TransitionRefused
from rongmei.core.states import (
    DELIVERY_TRANSITIONS,
    ITEM_TRANSITIONS,
    VERSION_TRANSITIONS,
    DeliveryState,
    ItemState,
)
from rongmei.storage import ledger
from rongmei.storage.tables import Delivery, Item, Version

__all__ = ["LedgerNote", "Stateful", "allowed", "transition"]

Stateful = Item | Version | Delivery

# Per kind of record: the states it may be in, its first state (what a new row is created in) and the table.
_RULES: dict[type, tuple[type[StrEnum], StrEnum, dict[Any, frozenset[Any]]]] = {
    Item: (ItemState, ItemState.in_review, ITEM_TRANSITIONS),
    Version: (ItemState, ItemState.in_review, VERSION_TRANSITIONS),
    Delivery: (DeliveryState, DeliveryState.pending, DELIVERY_TRANSITIONS),
}


@dataclass(frozen=True)
class LedgerNote:
    """The ledger entry a transition writes (the arguments of rongmei.storage.ledger.record)."""

    action: str
    actor: str
    item_id: str = ""
    version: int = 0
    content_hash: str = ""
    details: dict[str, Any] = field(default_factory=dict)


def _describe(row: Stateful) -> str:
    if isinstance(row, Item):
        return f"item {row.id}"
    if isinstance(row, Version):
        return f"version {row.item_id} v{row.number}"
    return f"delivery {row.channel}/{row.action} of version {row.version_id}"


def allowed(row: Stateful, to: str) -> bool:
    """Whether the workflow lets this record change from its current state to `to`."""
    states, first, table = _RULES[type(row)]
    try:
        current, target = states(row.state or first), states(to)
    except ValueError:
        return False
    return target in table.get(current, frozenset())


def transition(session: Session, moves: Iterable[tuple[Stateful, str]], note: LedgerNote | None = None) -> None:
    """Change each record to its new state and write `note` to the ledger, all in `session`'s transaction.

    Every change is checked first: if one is not allowed, TransitionRefused names it (from, to) and nothing is
    changed or written. A note without moves records an action that changes no state (a 初审 sign-off)."""
    moves = list(moves)
    for row, to in moves:
        if not allowed(row, to):
            raise TransitionRefused(f"{_describe(row)} cannot go from {row.state!r} to {str(to)!r}")
    for row, to in moves:
        row.state = str(to)
    if note is not None:
        ledger.record(session, note.action, actor=note.actor, item_id=note.item_id, version=note.version,
                      content_hash=note.content_hash, details=note.details)
