"""The delivery plan: which channels get which action, decided from delivery history and each channel's
`Capabilities`, never from its name.

A correction (更正) goes to every channel that holds an earlier version, as an update where the channel can carry
one and as a new publication where it cannot; a retraction is attempted where the channel can take things back
and recorded as not possible where it cannot; an embargo (publish_at) holds everything but emergencies.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import select

from publishers import Registry, channels_of, registry_for
from publishers.base import Capabilities, Correction
from rongmei.core.model import Priority
from rongmei.core.settings import Settings
from rongmei.core.states import DONE_STATES, DeliveryState
from rongmei.storage.snapshots import VersionSnapshot
from rongmei.storage.store import Store
from rongmei.storage.tables import Delivery, Version

__all__ = [
    "Withdrawal", "channels_holding", "correction_action", "delivery_plan", "embargoed_until", "retract_plan"
]


@dataclass(frozen=True)
class Withdrawal:
    """One channel to take an item back from: the version it holds, and whether the channel can retract at all."""

    channel: str
    version_id: int
    possible: bool = True


def _capabilities(registry: Registry, channel: str) -> Capabilities | None:
    """None for a channel that is not installed: its delivery reports it unavailable."""
    publisher = registry.publishers.get(channel)
    return getattr(publisher, "capabilities", None) if publisher is not None else None


def correction_action(registry: Registry, channel: str) -> str:
    """How a channel holding an earlier version takes a correction: "update" where it can edit what it holds
    (in place) or carries the correction as a new piece linking the original (its `update` does that), "publish"
    (a new publication) where it can do neither."""
    capabilities = _capabilities(registry, channel)
    if capabilities is None:
        return "update"
    if capabilities.correction is Correction.new_article:
        return "update"
    if capabilities.can_update and capabilities.correction is Correction.in_place:
        return "update"
    return "publish"


def channels_holding(store: Store, item_id: str, before_version: int) -> set[str]:
    """Channels where an earlier version of the item is out now (published or updated, not retracted)."""
    with store.session() as session:
        rows = session.execute(
            select(Delivery.channel, Delivery.action)
            .join(Version, Version.id == Delivery.version_id)
            .where(Delivery.item_id == item_id, Delivery.state.in_(DONE_STATES), Version.number < before_version)
            .order_by(Delivery.updated_at, Delivery.id)
        ).all()
    holding: set[str] = set()
    for channel, action in rows:
        if action == "retract":
            holding.discard(channel)
        else:
            holding.add(channel)
    return holding


def delivery_plan(store: Store, settings: Settings, version: VersionSnapshot,
                  registry: Registry | None = None) -> list[tuple[str, str]]:
    """(channel, action) for a signed-off version: a correction goes to every channel that holds an earlier
    version, by delivery history, even if the new version no longer names it; the others get a publish."""
    registry = registry or registry_for(settings)
    wanted = channels_of(version.meta, settings)
    holding = channels_holding(store, version.item_id, version.number)
    return [(c, correction_action(registry, c) if c in holding else "publish") for c in sorted(set(wanted) | holding)]


def retract_plan(store: Store, settings: Settings, item_id: str,
                 registry: Registry | None = None) -> list[Withdrawal]:
    """Every channel that received the item, by delivery history, or may have: an `unconfirmed` delivery
    (WeChat's submit whose answer was lost) is settled with the channel, then undone. A channel whose
    Capabilities say it cannot retract is planned as not possible: it is not called, and that is recorded."""
    registry = registry or registry_for(settings)
    with store.session() as session:
        rows = session.execute(
            select(Delivery.channel, Delivery.version_id)
            .join(Version, Version.id == Delivery.version_id)
            .where(Delivery.item_id == item_id, Delivery.action.in_(("publish", "update")),
                   Delivery.state.in_((*DONE_STATES, DeliveryState.unconfirmed)))
            .order_by(Version.number.desc())
        ).all()
    latest: dict[str, int] = {}
    for channel, version_id in rows:
        latest.setdefault(channel, version_id)
    plan = []
    for channel, version_id in sorted(latest.items()):
        capabilities = _capabilities(registry, channel)
        plan.append(Withdrawal(channel, version_id, capabilities is None or capabilities.can_retract))
    return plan


def embargoed_until(version: VersionSnapshot, now: datetime | None = None) -> datetime | None:
    """The embargo time if it is still ahead; emergencies ignore embargo."""
    meta = version.meta
    if meta.publish_at is None or meta.priority is Priority.emergency:
        return None
    return meta.publish_at if meta.publish_at > (now or datetime.now(UTC)) else None
