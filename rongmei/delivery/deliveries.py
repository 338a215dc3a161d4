"""Deliveries: one record per (version, channel, action), which is what makes every re-run safe.

A delivery that succeeded is never attempted again. A channel that fails does not touch the others. A
channel whose irreversible call timed out is left "unconfirmed" with what it knows, and the next attempt
hands that to the publisher so it can reconcile before calling again (WeChat's freepublish/submit).
Here a delivery is claimed, the channel called and the outcome settled; what to deliver is rongmei.delivery.plan.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select

from publishers import Registry, registry_for
from publishers.base import Publisher, Receipt, Slots
from rongmei.core.errors import PublishError
from rongmei.core.faults import fault_point
from rongmei.core.labels import DELIVERY_ZH
from rongmei.core.settings import Settings
from rongmei.core.states import DONE_STATES, LIVE_STATES, DeliveryState, ItemState
from rongmei.delivery import grants
from rongmei.delivery.gate import GATED_ACTIONS, Caller, current_caller, record_refusal, refusal_reason
from rongmei.delivery.leases import Claim, LeaseKeeper, claim, new_holder, release_lease
from rongmei.delivery.release import build_release
from rongmei.storage.snapshots import VersionSnapshot
from rongmei.storage.store import Store
from rongmei.storage.tables import Delivery, Item, Version
from rongmei.storage.transitions import LedgerNote, transition

__all__ = [
    "ACTION_LEDGER", "DeliveryResult", "deliver", "give_up", "previous_receipt", "record_not_possible",
    "results_table", "settle_item_state", "settle_unconfirmed", "unconfirmed_delivery"
]

log = logging.getLogger(__name__)
ACTION_LEDGER = {"publish": "published", "update": "updated", "retract": "retracted"}


@dataclass
class DeliveryResult:
    channel: str
    action: str
    state: str
    message: str = ""
    url: str = ""
    attempts: int = 0
    retryable: bool = False
    already_done: bool = False
    details: dict[str, Any] = field(default_factory=dict)


def previous_receipt(store: Store, item_id: str, channel: str, before_version: int | None = None) -> Delivery | None:
    """The newest successful publish/update of this item on this channel (by delivery history)."""
    with store.session() as session:
        query = (
            select(Delivery)
            .join(Version, Version.id == Delivery.version_id)
            .where(
                Delivery.item_id == item_id,
                Delivery.channel == channel,
                Delivery.action.in_(("publish", "update")),
                Delivery.state.in_(DONE_STATES),
            )
            .order_by(Version.number.desc(), Delivery.id.desc())
        )
        if before_version is not None:
            query = query.where(Version.number < before_version)
        return session.scalars(query.limit(1)).first()


def _receipt_of(delivery: Delivery) -> Receipt:
    return Receipt(state=delivery.state, remote_id=delivery.remote_id, url=delivery.url, message=delivery.message,
                   details=dict(delivery.details or {}))


def _record_failure(store: Store, delivery_id: int, version: VersionSnapshot, channel: str, action: str,
                    exc: PublishError, actor: str, holder: str = "") -> DeliveryResult:
    state = exc.state or (DeliveryState.retrying if exc.retryable else DeliveryState.failed)
    with store.session() as session:
        row = session.get(Delivery, delivery_id, with_for_update=True)
        if holder and not release_lease(row, holder):  # another run took over meanwhile: its outcome stands
            return DeliveryResult(channel, action, row.state, f"{exc}（另一个发布任务已接手）", attempts=row.attempts)
        row.message = str(exc)
        if exc.details:
            row.details = {**(row.details or {}), **exc.details}
        transition(session, [(row, state)], LedgerNote(
            "delivery_failed", actor=actor, item_id=version.item_id, version=version.number,
            content_hash=version.signed_hash,
            details={"channel": channel, "action": action, "state": str(state), "error": str(exc),
                     "attempt": row.attempts}))
        attempts = row.attempts
    return DeliveryResult(channel, action, str(state), str(exc), attempts=attempts,
                          retryable=exc.retryable or state == DeliveryState.unconfirmed)


def deliver(store: Store, settings: Settings, version: VersionSnapshot, channel: str, action: str = "publish", *,
            reason: str = "", actor: str = "system:publish", registry: Registry | None = None,
            caller: Caller | None = None, slots: Slots | None = None) -> DeliveryResult:
    """Perform one delivery at most once successfully. Never raises for a channel's failure.

    The delivery is claimed under a lease (rongmei.delivery.leases): a run that finds another live run on it
    skips it; one that finds it abandoned by a dead run asks the channel what that run achieved and resumes from
    what it recorded. The channel writes ahead through `publisher.progress` while it works.

    `slots` coordinates the channel's exclusive calls across workers (the publish flow passes Prefect's);
    without it the channel's default, which coordinates nothing beyond its own file locks.

    Every channel call passes through here, so the delivery gate (rongmei.delivery.gate) is checked here, against
    the store and not the snapshot: a version that is not signed off in every stage, or was retracted,
    superseded, returned or rejected, reaches no channel, whoever asked; the refusal is recorded in the ledger
    with the flow run that asked.
    """
    caller = caller or current_caller(actor)
    with store.session() as session:
        row = store.version(session, version.id)
        refusal = refusal_reason(session, settings, row) if action in GATED_ACTIONS else None
        if refusal is not None:
            record_refusal(session, row, caller, refusal, channel=channel, action=action)
        if row.signed_hash != version.signed_hash:
            version = VersionSnapshot.of(row)  # renditions changed since the snapshot: send what is signed now
    if refusal is not None:
        return DeliveryResult(channel, action, str(DeliveryState.refused), refusal)
    holder = new_holder(caller)
    claimed = claim(store, version, channel, action, holder=holder, lease_seconds=settings.delivery_lease_seconds,
                    actor=actor)
    delivery = claimed.delivery
    if claimed.done:
        return DeliveryResult(channel, action, delivery.state, delivery.message, delivery.url, delivery.attempts,
                              already_done=True)
    if claimed.busy_with:
        return DeliveryResult(channel, action, str(DeliveryState.in_progress),
                              f"另一个发布任务正在发送（{claimed.busy_with}），本次不重复发送", attempts=delivery.attempts)
    fault_point("delivery.after_claim")
    registry = registry or registry_for(settings)
    try:
        publisher_cls = registry.publishers.get(channel)
        if publisher_cls is None:
            why = registry.errors.get(channel, "no channel module is registered under this name")
            raise PublishError(f"渠道 {channel} 不可用：{why}", retryable=False)
        publisher = publisher_cls(settings)
        if slots is not None:  # set, not passed: a channel's own __init__ need not know about slots
            publisher.slots = slots
        with LeaseKeeper(store, delivery.id, holder, settings.delivery_lease_seconds) as keeper:
            publisher.progress = keeper
            receipt = _takeover_check(publisher, version, action, claimed)
            if receipt is None:
                receipt = _call(store, publisher, version, channel, action, reason, claimed.previous_attempt)
        fault_point("delivery.before_record")
    except PublishError as exc:
        return _record_failure(store, delivery.id, version, channel, action, exc, actor, holder)
    now = datetime.now(UTC)
    item_id = version.item_id
    with store.session() as session:
        row = session.get(Delivery, delivery.id, with_for_update=True)
        if not release_lease(row, holder):
            # Presumed dead, this run was taken over while the channel answered. Say so; the run that holds the
            # delivery now records its outcome (and has asked the channel what this call did).
            log.error("%s/%s of %s: the channel answered after another run took the delivery over (%s)",
                      channel, action, version.item_id, receipt.remote_id or receipt.url)
            return DeliveryResult(channel, action, row.state, "另一个发布任务已接手这次发送", attempts=row.attempts)
        row.remote_id, row.url, row.message = receipt.remote_id, receipt.url, receipt.message
        row.details = {**(row.details or {}), **receipt.details}
        state = receipt.state or DeliveryState.succeeded
        if action == "retract":
            grants.end_grants(session, item_id=item_id, channel=channel, now=now)
        elif state in DONE_STATES:
            grants.replace_grants(session, item_id=item_id, version_id=version.id, channel=channel,
                                     playables=receipt.playables, now=now, until=version.meta.expires)
        transition(session, [(row, state)], LedgerNote(
            ACTION_LEDGER[action], actor=actor, item_id=item_id, version=version.number,
            content_hash=version.signed_hash,
            details={"channel": channel, "state": str(state), "url": receipt.url,
                     "remote_id": receipt.remote_id, **({"reason": reason} if reason else {})}))
        result = DeliveryResult(channel, action, row.state, row.message, row.url, row.attempts)
        retracted_meanwhile = action in GATED_ACTIONS and session.get(Item, item_id).state == ItemState.retracted
    if retracted_meanwhile:
        # The item was retracted while this channel call was on its way: the retraction did not know about this
        # delivery yet, so take it back at once rather than leave a retracted item on the channel.
        log.warning("%s was retracted while %s delivered it; withdrawing it there again", item_id, channel)
        deliver(store, settings, version, channel, "retract", reason="撤稿期间完成的发布，随即撤回",
                actor=actor, registry=registry, caller=caller, slots=slots)
    return result


def record_not_possible(store: Store, version: VersionSnapshot, channel: str, action: str, why: str, *,
                        actor: str) -> DeliveryResult:
    """A delivery the channel cannot do at all (its Capabilities say so): recorded as failed with `why`, in the
    delivery table and the ledger, without calling the channel. One that is done already stays done."""
    holder = new_holder(current_caller(actor))
    claimed = claim(store, version, channel, action, holder=holder, lease_seconds=60.0, actor=actor)
    delivery = claimed.delivery
    if claimed.done or claimed.busy_with:
        return DeliveryResult(channel, action, delivery.state, delivery.message, delivery.url, delivery.attempts,
                              already_done=claimed.done)
    return _record_failure(store, delivery.id, version, channel, action, PublishError(why, retryable=False), actor,
                           holder)


def _takeover_check(publisher: Publisher, version: VersionSnapshot, action: str, claimed: Claim) -> Receipt | None:
    """Before resuming a delivery whose run died, ask the channel what that run achieved: the receipt if the
    delivery is out there already, else None (resume from what was recorded). Channels without `reconcile`
    promise that calling them again is safe (their calls are never left unconfirmed)."""
    if not (claimed.taken_over and claimed.previous_attempt and action != "retract"):
        return None
    if type(publisher).reconcile is Publisher.reconcile:
        return None
    found = publisher.reconcile(version.item_id, Receipt(state=str(DeliveryState.in_progress),
                                                         details=claimed.previous_attempt))
    if found is not None and found.state == DeliveryState.succeeded:
        log.info("%s: the delivery of %s v%s that a dead run left is out already (%s)", publisher.name,
                 version.item_id, version.number, found.remote_id)
        found.details = {**found.details, "taken_over": True}
        return found
    return None


def _call(store: Store, publisher: Publisher, version: VersionSnapshot, channel: str, action: str, reason: str,
          previous_attempt: dict[str, Any]) -> Receipt:
    item_id = version.item_id
    if action == "retract":
        earlier = previous_receipt(store, item_id, channel)
        if earlier is not None:
            return publisher.retract(item_id, _receipt_of(earlier), reason)
        pending = unconfirmed_delivery(store, item_id, channel)
        if pending is None:
            raise PublishError(f"{channel} 上没有已发布的记录，无需撤回", retryable=False)
        found = settle_unconfirmed(store, publisher, pending)
        if found is None:
            return Receipt(message="核对结果：此前的发布没有发出，无需撤回")
        return publisher.retract(item_id, found, reason)
    extra = {"previous_attempt": previous_attempt} if previous_attempt else {}
    if action == "update":
        earlier = previous_receipt(store, item_id, channel, before_version=version.number)
        if earlier is None:
            raise PublishError(f"{channel} 上没有旧版本可更正", retryable=False)
        release = build_release(store, version, previous=_receipt_of(earlier).__dict__, extra=extra)
        return publisher.update(release, _receipt_of(earlier))
    return publisher.publish(build_release(store, version, extra=extra))


def unconfirmed_delivery(store: Store, item_id: str, channel: str) -> Delivery | None:
    """The newest publish/update of the item on this channel whose outcome nobody knows yet."""
    with store.session() as session:
        return session.scalars(
            select(Delivery).where(Delivery.item_id == item_id, Delivery.channel == channel,
                                   Delivery.action.in_(("publish", "update")),
                                   Delivery.state == DeliveryState.unconfirmed)
            .order_by(Delivery.id.desc()).limit(1)
        ).first()


def settle_unconfirmed(store: Store, publisher: Publisher, pending: Delivery) -> Receipt | None:
    """Ask the channel what became of an unconfirmed delivery and record the answer on it (in the ledger too).

    Returns the receipt of what is out there (to act on, e.g. to delete it), or None when nothing went out.
    Raises PublishError when the channel cannot tell yet (e.g. WeChat still publishing)."""
    found = publisher.reconcile(pending.item_id, _receipt_of(pending))
    with store.session() as session:
        row = session.get(Delivery, pending.id, with_for_update=True)
        if row.state != DeliveryState.unconfirmed:  # a publish run claimed (or settled) it meanwhile: its turn
            return _receipt_of(row) if row.state in DONE_STATES else None
        version = session.get(Version, row.version_id)
        if found is None:
            state, row.message = DeliveryState.failed, "核对结果：没有发出"
        else:
            state = found.state or DeliveryState.succeeded
            row.remote_id, row.url, row.message = found.remote_id, found.url, found.message or "核对结果：已发出"
            row.details = {**(row.details or {}), **found.details}
        transition(session, [(row, state)], LedgerNote(
            "reconciled", actor="system:reconcile", item_id=row.item_id,
            version=version.number if version else 0, content_hash=version.signed_hash if version else "",
            details={"channel": row.channel, "action": row.action, "state": str(state), "remote_id": row.remote_id}))
    return found


def give_up(store: Store, version_id: int, channel: str, action: str) -> DeliveryResult:
    """Retries are spent: a 'retrying' delivery becomes 'failed'; an 'unconfirmed' one stays for reconciling."""
    with store.session() as session:
        row = session.scalars(
            select(Delivery).where(Delivery.version_id == version_id, Delivery.channel == channel,
                                   Delivery.action == action)
        ).one()
        if row.state == DeliveryState.retrying:
            transition(session, [(row, DeliveryState.failed)])
        return DeliveryResult(channel, action, row.state, row.message, row.url, row.attempts)


def settle_item_state(store: Store, version: VersionSnapshot, results: list[DeliveryResult]) -> str:
    """After a publish run: published if any channel has it; the per-channel truth stays on deliveries."""
    succeeded = any(r.state in DONE_STATES for r in results)
    with store.session() as session:
        row = store.version(session, version.id)
        item = session.get(Item, row.item_id)
        if succeeded and row.state in LIVE_STATES:
            current = item.current_version == row.number
            transition(session, [(row, ItemState.published), *([(item, ItemState.published)] if current else [])])
        return item.state


def results_table(results: list[DeliveryResult]) -> list[dict[str, Any]]:
    return [
        {"渠道": r.channel, "动作": r.action, "结果": DELIVERY_ZH.get(r.state, r.state), "尝试次数": r.attempts,
         "链接": r.url or "—", "说明": r.message or ("此前已完成，未重复发布" if r.already_done else "—")}
        for r in results
    ]
