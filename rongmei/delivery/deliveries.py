"""Deliveries: one record per (version, channel, action), which is what makes every re-run safe.

A delivery that succeeded is never attempted again. A channel that fails does not touch the others. A
channel whose irreversible call timed out is left "unconfirmed" with what it knows, and the next attempt
hands that to the publisher so it can reconcile before calling again (WeChat's freepublish/submit).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from publishers import Registry, channels_of, registry_for
from publishers.base import Publisher, Receipt, Release, Slots
from rongmei.core.errors import DeliveryRefused, PublishError, StoreError
from rongmei.core.model import ItemMeta, ItemState, Priority
from rongmei.core.settings import Settings
from rongmei.delivery.gate import GATED_ACTIONS, Caller, current_caller, record_refusal, refusal_reason
from rongmei.distribution import terminals
from rongmei.storage import ledger
from rongmei.storage.store import Delivery, Item, SignOff, Store, Version

log = logging.getLogger(__name__)
DONE_STATES = ("succeeded", "draft_ready")
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


def build_release(store: Store, version_id: int, *, previous: dict[str, Any] | None = None,
                  extra: dict[str, Any] | None = None) -> Release:
    with store.session() as session:
        version = store.version(session, version_id)
        signoffs = session.scalars(
            select(SignOff).where(SignOff.version_id == version_id, SignOff.signed_hash == version.signed_hash)
        ).all()
        approved_at = max((s.signed_at for s in signoffs), default=None)
        return Release(
            item_id=version.item_id,
            version=version.number,
            version_id=version.id,
            content_hash=version.content_hash,
            meta=ItemMeta.model_validate(version.meta),
            body=version.body,
            files=version.files,
            renditions=version.renditions,
            blob_path=store.blob_path,
            approved_at=approved_at,
            signoffs=tuple({"stage": s.stage, "reviewer": s.reviewer_id, "decision": s.decision} for s in signoffs),
            previous=previous,
            extra=extra or {},
        )


def channels_for_version(store: Store, settings: Settings, version_id: int) -> list[str]:
    with store.session() as session:
        meta = ItemMeta.model_validate(store.version(session, version_id).meta)
    return channels_of(meta, settings)


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


def _claim(store: Store, version_id: int, item_id: str, channel: str, action: str) -> tuple[Delivery, dict[str, Any]]:
    """Get or create the delivery row and mark an attempt; returns it and any unconfirmed earlier attempt."""
    for _ in range(2):
        try:
            with store.session() as session:
                delivery = session.scalars(
                    select(Delivery).where(Delivery.version_id == version_id, Delivery.channel == channel,
                                           Delivery.action == action)
                ).first()
                if delivery is None:
                    delivery = Delivery(item_id=item_id, version_id=version_id, channel=channel, action=action)
                    session.add(delivery)
                if delivery.state in DONE_STATES:
                    return delivery, {}
                unconfirmed = dict(delivery.details or {}) if delivery.state == "unconfirmed" else {}
                delivery.state = "in_progress"
                delivery.attempts = (delivery.attempts or 0) + 1
                session.flush()
                return delivery, unconfirmed
        except IntegrityError:
            continue  # another run created the row at the same moment: read it again
    raise PublishError(f"could not claim delivery {channel}/{action} for version {version_id}", retryable=True)


def check_release(store: Store, settings: Settings, version_id: int, caller: Caller) -> None:
    """Raise DeliveryRefused (recorded in the ledger) unless the version may go out now (see rongmei.delivery.gate)."""
    with store.session() as session:
        version = store.version(session, version_id)
        reason = refusal_reason(session, settings, version)
        if reason is not None:
            record_refusal(session, version, caller, reason)
    if reason is not None:
        raise DeliveryRefused(f"拒绝发布：{reason}。已记入审计记录。")


def deliver(store: Store, settings: Settings, version_id: int, channel: str, action: str = "publish", *,
            reason: str = "", actor: str = "system:publish", registry: Registry | None = None,
            caller: Caller | None = None, slots: Slots | None = None) -> DeliveryResult:
    """Perform one delivery at most once successfully. Never raises for a channel's failure.

    `slots` coordinates the channel's exclusive calls across workers (the publish flow passes Prefect's);
    without it the channel's default, which coordinates nothing beyond its own file locks.

    Every channel call passes through here, so the delivery gate (rongmei.delivery.gate) is checked here: a version
    that is not signed off in every stage, or was retracted, superseded, returned or rejected, reaches no
    channel, whoever asked; the refusal is recorded in the ledger with the flow run that asked.
    """
    caller = caller or current_caller(actor)
    with store.session() as session:
        version = store.version(session, version_id)
        item_id, number, signed_hash = version.item_id, version.number, version.signed_hash
        expires = ItemMeta.model_validate(version.meta).expires
        refusal = refusal_reason(session, settings, version) if action in GATED_ACTIONS else None
        if refusal is not None:
            record_refusal(session, version, caller, refusal, channel=channel, action=action)
    if refusal is not None:
        return DeliveryResult(channel, action, "refused", refusal)
    delivery, unconfirmed = _claim(store, version_id, item_id, channel, action)
    if delivery.state in DONE_STATES:
        return DeliveryResult(channel, action, delivery.state, delivery.message, delivery.url, delivery.attempts,
                              already_done=True)
    registry = registry or registry_for(settings)
    try:
        publisher_cls = registry.publishers.get(channel)
        if publisher_cls is None:
            why = registry.errors.get(channel, "no channel module is registered under this name")
            raise PublishError(f"渠道 {channel} 不可用：{why}", retryable=False)
        publisher = publisher_cls(settings)
        if slots is not None:  # set, not passed: a channel's own __init__ need not know about slots
            publisher.slots = slots
        receipt = _call(store, publisher, version_id, item_id, number, channel, action, reason, unconfirmed)
    except PublishError as exc:
        state = exc.state or ("retrying" if exc.retryable else "failed")
        with store.session() as session:
            row = session.get(Delivery, delivery.id)
            row.state, row.message = state, str(exc)
            if exc.details:
                row.details = {**(row.details or {}), **exc.details}
            ledger.record(session, "delivery_failed", actor=actor, item_id=item_id, version=number,
                          content_hash=signed_hash,
                          details={"channel": channel, "action": action, "state": state, "error": str(exc),
                                   "attempt": row.attempts})
            attempts = row.attempts
        return DeliveryResult(channel, action, state, str(exc), attempts=attempts,
                              retryable=exc.retryable or state == "unconfirmed")
    now = datetime.now(UTC)
    with store.session() as session:
        row = session.get(Delivery, delivery.id)
        row.state = receipt.state or "succeeded"
        row.remote_id, row.url, row.message = receipt.remote_id, receipt.url, receipt.message
        row.details = {**(row.details or {}), **receipt.details}
        if action == "retract":
            terminals.end_grants(session, item_id=item_id, channel=channel, now=now)
        elif row.state in DONE_STATES:
            terminals.replace_grants(session, item_id=item_id, version_id=version_id, channel=channel,
                                     playables=receipt.playables, now=now, until=expires)
        ledger.record(session, ACTION_LEDGER[action], actor=actor, item_id=item_id, version=number,
                      content_hash=signed_hash,
                      details={"channel": channel, "state": row.state, "url": receipt.url,
                               "remote_id": receipt.remote_id, **({"reason": reason} if reason else {})})
        result = DeliveryResult(channel, action, row.state, row.message, row.url, row.attempts)
        retracted_meanwhile = action in GATED_ACTIONS and session.get(Item, item_id).state == ItemState.retracted
    if retracted_meanwhile:
        # The item was retracted while this channel call was on its way: the retraction did not know about this
        # delivery yet, so take it back at once rather than leave a retracted item on the channel.
        log.warning("%s was retracted while %s delivered it; withdrawing it there again", item_id, channel)
        deliver(store, settings, version_id, channel, "retract", reason="撤稿期间完成的发布，随即撤回",
                actor=actor, registry=registry, caller=caller, slots=slots)
    return result


def _call(store: Store, publisher: Publisher, version_id: int, item_id: str, number: int, channel: str,
          action: str, reason: str, unconfirmed: dict[str, Any]) -> Receipt:
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
    extra = {"previous_attempt": unconfirmed} if unconfirmed else {}
    if action == "update":
        earlier = previous_receipt(store, item_id, channel, before_version=number)
        if earlier is None:
            raise PublishError(f"{channel} 上没有旧版本可更正", retryable=False)
        release = build_release(store, version_id, previous=_receipt_of(earlier).__dict__, extra=extra)
        return publisher.update(release, _receipt_of(earlier))
    return publisher.publish(build_release(store, version_id, extra=extra))


def unconfirmed_delivery(store: Store, item_id: str, channel: str) -> Delivery | None:
    """The newest publish/update of the item on this channel whose outcome nobody knows yet."""
    with store.session() as session:
        return session.scalars(
            select(Delivery).where(Delivery.item_id == item_id, Delivery.channel == channel,
                                   Delivery.action.in_(("publish", "update")), Delivery.state == "unconfirmed")
            .order_by(Delivery.id.desc()).limit(1)
        ).first()


def settle_unconfirmed(store: Store, publisher: Publisher, pending: Delivery) -> Receipt | None:
    """Ask the channel what became of an unconfirmed delivery and record the answer on it (in the ledger too).

    Returns the receipt of what is out there (to act on, e.g. to delete it), or None when nothing went out.
    Raises PublishError when the channel cannot tell yet (e.g. WeChat still publishing)."""
    found = publisher.reconcile(pending.item_id, _receipt_of(pending))
    with store.session() as session:
        row = session.get(Delivery, pending.id)
        version = session.get(Version, row.version_id)
        if found is None:
            row.state, row.message = "failed", "核对结果：没有发出"
        else:
            row.state = found.state or "succeeded"
            row.remote_id, row.url, row.message = found.remote_id, found.url, found.message or "核对结果：已发出"
            row.details = {**(row.details or {}), **found.details}
        ledger.record(session, "reconciled", actor="system:reconcile", item_id=row.item_id,
                      version=version.number if version else 0, content_hash=version.signed_hash if version else "",
                      details={"channel": row.channel, "action": row.action, "state": row.state,
                               "remote_id": row.remote_id})
    return found


def embargoed_until(store: Store, version_id: int, now: datetime | None = None) -> datetime | None:
    """The embargo time if it is still ahead; emergencies ignore embargo."""
    with store.session() as session:
        meta = ItemMeta.model_validate(store.version(session, version_id).meta)
    if meta.publish_at is None or meta.priority is Priority.emergency:
        return None
    return meta.publish_at if meta.publish_at > (now or datetime.now(UTC)) else None


def give_up(store: Store, version_id: int, channel: str, action: str) -> DeliveryResult:
    """Retries are spent: a 'retrying' delivery becomes 'failed'; an 'unconfirmed' one stays for reconciling."""
    with store.session() as session:
        row = session.scalars(
            select(Delivery).where(Delivery.version_id == version_id, Delivery.channel == channel,
                                   Delivery.action == action)
        ).one()
        if row.state == "retrying":
            row.state = "failed"
        return DeliveryResult(channel, action, row.state, row.message, row.url, row.attempts)


def settle_item_state(store: Store, version_id: int, results: list[DeliveryResult]) -> str:
    """After a publish run: published if any channel has it; the per-channel truth stays on deliveries."""
    succeeded = any(r.state in DONE_STATES for r in results)
    with store.session() as session:
        version = store.version(session, version_id)
        item = session.get(Item, version.item_id)
        if succeeded and version.state in (ItemState.approved, ItemState.published):
            version.state = ItemState.published
            if item.current_version == version.number:
                item.state = ItemState.published
        return item.state


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


def delivery_plan(store: Store, settings: Settings, version_id: int) -> list[tuple[str, str]]:
    """(channel, action) for a signed-off version: a correction (更正) goes to every channel that holds an
    earlier version, by delivery history, even if the new version no longer names it; others get a publish."""
    with store.session() as session:
        version = store.version(session, version_id)
        item_id, number = version.item_id, version.number
    wanted = channels_for_version(store, settings, version_id)
    holding = channels_holding(store, item_id, number)
    return [(c, "update" if c in holding else "publish") for c in sorted(set(wanted) | holding)]


def retract_channels(store: Store, item_id: str) -> list[tuple[str, int]]:
    """(channel, version_id) for every channel that received the item, by delivery history, or may have: an
    `unconfirmed` delivery (WeChat's submit whose answer was lost) is settled with the channel, then undone."""
    with store.session() as session:
        rows = session.execute(
            select(Delivery.channel, Delivery.version_id)
            .join(Version, Version.id == Delivery.version_id)
            .where(Delivery.item_id == item_id, Delivery.action.in_(("publish", "update")),
                   Delivery.state.in_((*DONE_STATES, "unconfirmed")))
            .order_by(Version.number.desc())
        ).all()
    latest: dict[str, int] = {}
    for channel, version_id in rows:
        latest.setdefault(channel, version_id)
    return sorted(latest.items())


def withdraw_from_store(store: Store, item_id: str, reason: str, actor: str, *, via: str = "") -> list[int]:
    """Retract the item in the store before any channel is called: the item and every version that is out,
    approved (perhaps waiting for its embargo) or in review become retracted, so from this commit on the
    delivery gate refuses them, whoever asks. Returns the retracted version numbers."""
    with store.session() as session:
        item = session.get(Item, item_id)
        if item is None:
            raise StoreError(f"没有编号为 {item_id} 的稿件；用 `rongmei status` 查看全部稿件")
        numbers = []
        for version in session.scalars(select(Version).where(
                Version.item_id == item_id,
                Version.state.in_((ItemState.published, ItemState.approved, ItemState.in_review)))):
            version.state = ItemState.retracted
            numbers.append(version.number)
        item.state = ItemState.retracted
        ledger.record(session, "retract_requested", actor=actor, item_id=item_id, version=item.current_version,
                      details={"reason": reason, "versions": sorted(numbers), **({"via": via} if via else {})})
    return sorted(numbers)


def mark_retracted(store: Store, item_id: str, reason: str, actor: str, results: list[DeliveryResult],
                   extra: dict[str, Any] | None = None) -> None:
    with store.session() as session:
        item = session.get(Item, item_id)
        item.state = ItemState.retracted
        ledger.record(session, "item_retracted", actor=actor, item_id=item_id, version=item.current_version,
                      details={"reason": reason, "channels": {r.channel: r.state for r in results},
                               **(extra or {})})


def results_table(results: list[DeliveryResult]) -> list[dict[str, Any]]:
    from rongmei.core.labels import DELIVERY_ZH

    return [
        {"渠道": r.channel, "动作": r.action, "结果": DELIVERY_ZH.get(r.state, r.state), "尝试次数": r.attempts,
         "链接": r.url or "—", "说明": r.message or ("此前已完成，未重复发布" if r.already_done else "—")}
        for r in results
    ]
