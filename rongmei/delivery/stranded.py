"""Stranded work as the store tells it: what a crashed, killed or never-started run left undone.

Read-only queries, no Prefect. Each finds work that only a run can finish, and that a run would be doing if one
were alive: a version in review (it needs a review run waiting at its next stage), an approved version that no
channel was ever asked to take, a delivery whose lease expired (the run that held it died mid-call), an
`unconfirmed` delivery due for another question to its channel, a retraction that stopped half-way.
rongmei.runtime.reconciler holds these against the runs Prefect has and finishes what no live run will.

Work younger than `reconcile_grace_seconds` is left alone: the run about to take it (the review run ingest is
starting, the publish of a sign-off just given) may not be visible yet. The store keeps times in UTC; SQLite
gives them back without a zone, PostgreSQL with one, so every time read here goes through `grants.as_utc`.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from rongmei.core.settings import ReviewStage, Settings
from rongmei.core.states import DONE_STATES, LIVE_STATES, DeliveryState, ItemState
from rongmei.delivery.gate import refusal_reason
from rongmei.delivery.grants import as_utc
from rongmei.delivery.leases import lease_is_live
from rongmei.delivery.plan import delivery_plan, embargoed_until
from rongmei.storage.snapshots import VersionSnapshot
from rongmei.storage.store import Store
from rongmei.storage.tables import Delivery, Item, LedgerEntry, SignOff, Version

__all__ = [
    "ABANDONED", "CHECKED_AT", "CHECKS", "DEAD_RUN", "KEEP", "KINDS", "PUBLISH", "RETRACTION", "REVIEW",
    "SCHEDULE_TOLERANCE", "STALE_RUN", "UNCONFIRMED", "RunVerdict",
    "Stranded", "next_check_at", "pending_stages", "review_run_verdict", "scheduled_run_verdict",
    "stranded_in_store"
]

REVIEW = "review"  # a version waiting for a sign-off that no run asks for
PUBLISH = "publish"  # an approved version no channel was asked to take (or whose embargo run is missing)
ABANDONED = "abandoned"  # a delivery left in progress (lease expired) or between retries by a run that died
UNCONFIRMED = "unconfirmed"  # an irreversible call whose answer was lost, due for another question
RETRACTION = "retraction"  # a retraction that stopped before every channel took the item back
# Found on the Prefect side by rongmei.runtime.reconciler, named here so that one table names every kind:
STALE_RUN = "stale_run"  # a waiting run that no longer matches the store (retracted item, wrong embargo time)
DEAD_RUN = "dead_run"  # a run Prefect shows as running whose process died
KINDS = {REVIEW: "待审核", PUBLISH: "待发布", ABANDONED: "发送中断", UNCONFIRMED: "待确认", RETRACTION: "撤稿未完成",
         STALE_RUN: "运行与稿件不符", DEAD_RUN: "运行已中断"}

# Where the reconciler keeps, on an unconfirmed delivery's details, when it last asked the channel and how often.
CHECKED_AT = "reconcile_checked_at"
CHECKS = "reconcile_checks"


@dataclass(frozen=True)
class Stranded:
    """One piece of stranded work: what it is, whose, and why it counts as stranded (in Chinese)."""

    kind: str  # one of KINDS
    item_id: str
    version_id: int
    version: int  # the version's number
    why: str
    stage: str = ""  # REVIEW: the stage the version waits for
    delivery_id: int | None = None  # ABANDONED, UNCONFIRMED
    channel: str = ""
    action: str = ""
    publish_at: datetime | None = None  # PUBLISH: the embargo still ahead, if any
    reason: str = ""  # RETRACTION: the reason given when it was ordered
    ordered_by: str = ""  # RETRACTION: who ordered it (the ledger's actor)
    flow_run_id: str = ""  # problems found on the Prefect side (rongmei.runtime.reconciler)


def stranded_in_store(store: Store, settings: Settings, *, now: datetime | None = None,
                      item_ids: Collection[str] | None = None) -> list[Stranded]:
    """Every piece of work the store says is waiting for a run, oldest kinds of trouble first."""
    now = now or datetime.now(UTC)
    settled_before = now - timedelta(seconds=settings.reconcile_grace_seconds)
    with store.session() as session:
        waiting, half_released = _waiting_for_review_or_release(session, settings, now, settled_before, item_ids)
        found = [
            *waiting,
            *_abandoned_deliveries(session, settings, now, item_ids),
            *_unconfirmed_due(session, settings, now, item_ids),
            *_unfinished_retractions(session, settings, now, item_ids),
        ]
    return [*found, *_not_released_everywhere(store, settings, half_released)]


def _only(query: Any, column: Any, item_ids: Collection[str] | None) -> Any:
    return query if item_ids is None else query.where(column.in_(list(item_ids)))


def _label(version: Version) -> str:
    return f"{version.meta.get('title') or version.item_id}（v{version.number}）"


def pending_stages(session: Session, settings: Settings, versions: Iterable[Version]) -> dict[int, ReviewStage | None]:
    """For each version the first stage it still needs (None: every stage approved what it holds now).

    The rule of rongmei.review.signoff.stage_position, for many versions in one query: an approval counts only
    for the signed_hash (content + renditions) the version has now."""
    by_id = {v.id: v for v in versions}
    approved: dict[int, set[str]] = defaultdict(set)
    ids = list(by_id)
    for start in range(0, len(ids), 500):
        rows = session.execute(select(SignOff.version_id, SignOff.stage, SignOff.signed_hash).where(
            SignOff.version_id.in_(ids[start:start + 500]), SignOff.decision == "approve"))
        for version_id, stage, signed_hash in rows:
            if signed_hash == by_id[version_id].signed_hash:
                approved[version_id].add(stage)
    return {vid: next((s for s in settings.stages if s.name not in approved[vid]), None) for vid in by_id}


def _approved_at(session: Session, version_id: int) -> datetime | None:
    signed_at = session.scalar(select(func.max(SignOff.signed_at)).where(SignOff.version_id == version_id))
    return as_utc(signed_at) if signed_at is not None else None


def _waiting_for_review_or_release(
    session: Session, settings: Settings, now: datetime, settled_before: datetime, item_ids: Collection[str] | None,
) -> tuple[list[Stranded], list[tuple[VersionSnapshot, set[tuple[str, str, str]]]]]:
    """Versions in review (or approved, but whose sign-offs no longer cover what they hold), and approved
    versions that pass the gate but have no delivery at all. (A version in review is its item's newest: ingest
    supersedes the older ones; an approved older one may still go out, at its embargo, while a newer one is in
    review, which the gate decides.) Also returned: the approved versions that have some deliveries, with them,
    for `_not_released_everywhere` (its plan opens sessions of its own)."""
    query = select(Version).where(Version.state.in_((ItemState.in_review, ItemState.approved))).order_by(Version.id)
    versions = list(session.scalars(_only(query, Version.item_id, item_ids)))
    stages = pending_stages(session, settings, versions)
    with_deliveries = set(session.scalars(select(Delivery.version_id).where(
        Delivery.version_id.in_([v.id for v in versions if v.state == ItemState.approved])).distinct()))
    found, half_released = [], []
    for version in versions:
        stage = stages[version.id]
        if stage is not None and version.id not in with_deliveries:
            if as_utc(version.created_at) > settled_before:
                continue
            waiting = "审核中" if version.state == ItemState.in_review else "已签发，但签字不再覆盖现在的内容或渲染结果"
            found.append(Stranded(REVIEW, version.item_id, version.id, version.number,
                                  f"{_label(version)}{waiting}，等待{stage.label}", stage=stage.name))
        elif version.state == ItemState.approved and stage is None and version.id not in with_deliveries:
            approved_at = _approved_at(session, version.id)
            if approved_at is None or approved_at > settled_before or refusal_reason(session, settings, version):
                continue  # the gate would refuse it: nothing a publish run could do (the gate says why)
            held = embargoed_until(VersionSnapshot.of(version), now=now)
            why = (f"{_label(version)}已签发，定于 {held.isoformat()} 发布" if held else
                   f"{_label(version)}已签发，但还没有任何渠道开始发布")
            found.append(Stranded(PUBLISH, version.item_id, version.id, version.number, why, publish_at=held))
        elif version.state == ItemState.approved and stage is None:
            approved_at = _approved_at(session, version.id)
            if approved_at is None or approved_at > settled_before or refusal_reason(session, settings, version):
                continue
            rows = {(d.channel, d.action, d.state) for d in session.scalars(
                select(Delivery).where(Delivery.version_id == version.id))}
            half_released.append((VersionSnapshot.of(version), rows))
    return found, half_released


def _not_released_everywhere(store: Store, settings: Settings,
                             half_released: list[tuple[VersionSnapshot, set[tuple[str, str, str]]]]) -> list[Stranded]:
    """Approved versions whose publish run died part-way: a channel of its plan was never asked, or a channel has
    it already but the version was never settled as published. (Only approved ones: once a run settled a version
    as published its outcome is recorded, and a channel configured later must not receive old items.)"""
    found = []
    for version, rows in half_released:
        missing = sorted(set(delivery_plan(store, settings, version)) - {(c, a) for c, a, _ in rows})
        out = sorted(c for c, _, state in rows if state in DONE_STATES)
        if missing:
            why = f"{'、'.join(c for c, _ in missing)} 还没有开始发布"
        elif out:
            why = f"已在 {'、'.join(out)} 发出，但稿件状态没有更新为已发布"
        else:
            continue
        found.append(Stranded(PUBLISH, version.item_id, version.id, version.number,
                              f"{version.meta.title}（v{version.number}）已签发，{why}"))
    return found


def _abandoned_deliveries(session: Session, settings: Settings, now: datetime,
                          item_ids: Collection[str] | None) -> list[Stranded]:
    """Publish/update deliveries a dead run left: in progress with an expired lease (or, for rows from before
    leases, not touched for a lease's length), or pending/retrying and not touched for that long."""
    lease = timedelta(seconds=settings.delivery_lease_seconds)
    query = (select(Delivery, Version).join(Version, Version.id == Delivery.version_id)
             .where(Delivery.state.in_((DeliveryState.in_progress, DeliveryState.pending, DeliveryState.retrying)),
                    Delivery.action.in_(("publish", "update")), Version.state.in_(LIVE_STATES))
             .order_by(Delivery.id))
    found = []
    for delivery, version in session.execute(_only(query, Delivery.item_id, item_ids)):
        if delivery.state == DeliveryState.in_progress and delivery.lease_expires is not None:
            if lease_is_live(delivery, now):
                continue
            expires = as_utc(delivery.lease_expires)
        else:  # between retries, or a row from before leases: judged by when it was last touched
            expires = as_utc(delivery.updated_at) + lease
            if expires > now:
                continue
        if refusal_reason(session, settings, version):
            continue
        holder = f"（租约持有者 {delivery.lease_holder}）" if delivery.lease_holder else ""
        found.append(Stranded(
            ABANDONED, delivery.item_id, version.id, version.number,
            f"{_label(version)}在 {delivery.channel} 的{delivery.action}停在“{delivery.state}”，"
            f"自 {expires.isoformat(timespec='seconds')} 起无人继续{holder}",
            delivery_id=delivery.id, channel=delivery.channel, action=delivery.action))
    return found


def next_check_at(delivery: Delivery, settings: Settings) -> datetime:
    """When an unconfirmed delivery may be asked about again: a while after the last question (or after it was
    left unconfirmed), the wait doubling with every answer that settled nothing."""
    details = delivery.details or {}
    checks = int(details.get(CHECKS, 0) or 0)
    last = details.get(CHECKED_AT)
    since = as_utc(datetime.fromisoformat(last)) if last else as_utc(delivery.updated_at)
    minutes = min(settings.reconcile_unconfirmed_interval_minutes * 2 ** min(checks, 20),
                  settings.reconcile_unconfirmed_max_interval_minutes)
    return since + timedelta(minutes=minutes)


def _unconfirmed_due(session: Session, settings: Settings, now: datetime,
                     item_ids: Collection[str] | None) -> list[Stranded]:
    """Unconfirmed deliveries whose next question is due, the longest-waiting first."""
    query = (select(Delivery, Version).join(Version, Version.id == Delivery.version_id)
             .where(Delivery.state == DeliveryState.unconfirmed))
    due = []
    for delivery, version in session.execute(_only(query, Delivery.item_id, item_ids)):
        at = next_check_at(delivery, settings)
        if at <= now:
            checks = int((delivery.details or {}).get(CHECKS, 0) or 0)
            asked = f"已核对 {checks} 次仍无结果" if checks else "发送结果不明"
            due.append((at, Stranded(
                UNCONFIRMED, delivery.item_id, version.id, version.number,
                f"{_label(version)}在 {delivery.channel} 的{delivery.action}{asked}，该再向渠道查询了",
                delivery_id=delivery.id, channel=delivery.channel, action=delivery.action)))
    return [stranded for _, stranded in sorted(due, key=lambda pair: (pair[0], pair[1].delivery_id))]


def _unfinished_retractions(session: Session, settings: Settings, now: datetime,
                            item_ids: Collection[str] | None) -> list[Stranded]:
    """Retracted items whose last retraction was ordered (`retract_requested`) but never finished
    (`item_retracted`), and long enough ago that the run doing it is dead."""
    settled_before = now - timedelta(seconds=max(settings.reconcile_grace_seconds, settings.delivery_lease_seconds))
    items = session.scalars(_only(select(Item.id).where(Item.state == ItemState.retracted), Item.id, item_ids))
    found = []
    for item_id in items:
        last: dict[str, LedgerEntry] = {}
        for entry in session.scalars(select(LedgerEntry).where(
                LedgerEntry.item_id == item_id, LedgerEntry.action.in_(("retract_requested", "item_retracted")))
                .order_by(LedgerEntry.seq)):
            last[entry.action] = entry
        requested, finished = last.get("retract_requested"), last.get("item_retracted")
        if requested is None or (finished is not None and finished.seq > requested.seq):
            continue
        if as_utc(datetime.fromisoformat(requested.at)) > settled_before:
            continue
        version = session.scalars(select(Version).where(Version.item_id == item_id)
                                  .order_by(Version.number.desc()).limit(1)).one()
        reason = str((requested.details or {}).get("reason", ""))
        found.append(Stranded(
            RETRACTION, item_id, version.id, version.number,
            f"{item_id} 的撤稿（{requested.actor}，原因：{reason}）在 {requested.at} 开始后没有完成",
            reason=reason, ordered_by=requested.actor))
    return found


@dataclass(frozen=True)
class RunVerdict:
    """What to do with a waiting flow run: keep it, cancel it, or cancel it and schedule it at `at` (None: now)."""

    action: str  # keep | cancel | reschedule
    why: str = ""
    at: datetime | None = None


KEEP = RunVerdict("keep")
SCHEDULE_TOLERANCE = timedelta(seconds=60)  # a scheduled time this close to the embargo is the embargo


def scheduled_run_verdict(store: Store, settings: Settings, version_id: int | None, scheduled_for: datetime | None,
                          now: datetime | None = None) -> RunVerdict:
    """A publish run waiting for its scheduled time, held against the store: cancel it when the version may no
    longer go out (retracted, superseded, returned, rejected…), reschedule it when its time is not the
    version's embargo (publish_at) any more."""
    now = now or datetime.now(UTC)
    with store.session() as session:
        version = session.get(Version, version_id) if isinstance(version_id, int) else None
        if version is None:
            return RunVerdict("cancel", f"没有编号为 {version_id} 的版本，定时发布已取消")
        if (refusal := refusal_reason(session, settings, version)) is not None:
            return RunVerdict("cancel", f"{refusal}：定时发布已取消")
        held = embargoed_until(VersionSnapshot.of(version), now=now)
    if scheduled_for is None:
        return KEEP
    scheduled_for = as_utc(scheduled_for)
    if held is None:
        if scheduled_for - now > SCHEDULE_TOLERANCE:
            return RunVerdict("reschedule", f"{_label(version)}已不再定时（或发布时间已过），改为立即发布")
        return KEEP
    if abs(scheduled_for - held) > SCHEDULE_TOLERANCE:
        return RunVerdict("reschedule", f"定时发布时间（{scheduled_for.isoformat()}）与稿件的发布时间"
                                        f"（{held.isoformat()}）不符，已按稿件的发布时间重新排定", at=held)
    return KEEP


def review_run_verdict(store: Store, settings: Settings, version_id: int | None, waiting_at: str) -> RunVerdict:
    """A review run that waits (scheduled, or paused at the form of stage `waiting_at`, "" when not paused),
    held against the store: cancel it when its version left review, or when that stage was already signed in
    another run (reviewers should see one run per version: the one that asks what is still needed)."""
    with store.session() as session:
        version = session.get(Version, version_id) if isinstance(version_id, int) else None
        if version is None:
            return RunVerdict("cancel", f"没有编号为 {version_id} 的版本，审核运行已取消")
        if version.state not in (ItemState.in_review, ItemState.approved):
            state = {ItemState.superseded: "已被新版本取代", ItemState.retracted: "已撤稿",
                     ItemState.returned: "已退回修改", ItemState.rejected: "已否决"}.get(version.state, version.state)
            return RunVerdict("cancel", f"{_label(version)}{state}，不再需要审核，本审核运行已取消")
        stage = pending_stages(session, settings, [version])[version.id]
    if waiting_at and (stage is None or stage.name != waiting_at):
        now_at = f"现在等待{stage.label}" if stage else "各环节均已签字"
        return RunVerdict("cancel", f"{_label(version)}的这一环节已在另一运行中签字（{now_at}），本运行已取消")
    return KEEP
