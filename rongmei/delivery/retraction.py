"""Retraction (撤稿) as plain functions shared by `rongmei retract` and the retract flow.

A retraction is complete when nothing of the item can reach anyone any more:
1. the store says retracted first (item and every version out, approved or in review), so from that commit on
   the delivery gate refuses the item whoever asks — a scheduled embargo run included;
2. the item's Prefect runs that would still act on it (scheduled publish runs, reviews waiting for a sign-off)
   are cancelled, so nobody is asked to sign a withdrawn piece;
3. every channel that received it, or may have (an `unconfirmed` WeChat submit is settled with WeChat first),
   takes it back;
4. its media stop being served (410) unless another live item uses the same file, and its previews go.
Every step lands in the ledger; a re-run completes what a crash left undone without doing anything twice.
"""

from __future__ import annotations

import logging
import shutil
from typing import Any

from sqlalchemy import select

from publishers import registry_for
from rongmei.core.errors import SignOffRefused, StoreError
from rongmei.core.settings import Settings
from rongmei.core.states import LIVE_STATES, ItemState
from rongmei.delivery.deliveries import DeliveryResult, deliver, record_not_possible
from rongmei.delivery.plan import retract_plan
from rongmei.review.reviewers import verify_code
from rongmei.storage import ledger
from rongmei.storage.snapshots import VersionSnapshot, load_version
from rongmei.storage.store import Store
from rongmei.storage.tables import Item, Reviewer, Version
from rongmei.storage.transitions import LedgerNote, transition
from rongmei.targets.selection import target_from_settings

__all__ = [
    "RETRACT_ROLES", "authorise_retraction", "mark_retracted", "remove_previews", "retract_item_everywhere",
    "withdraw_from_store", "withdraw_media"
]

log = logging.getLogger(__name__)
RETRACT_ROLES = ("desk_head", "chief_editor")


def authorise_retraction(store: Store, settings: Settings, item_id: str, reason: str, reviewer_id: str,
                         code: str, *, via: str = "") -> str:
    """A retraction counts only with a desk head's or chief editor's valid code; returns the ledger actor."""
    if not reason.strip():
        raise StoreError("撤稿必须填写原因（reason）")
    reviewer_id = reviewer_id.strip()
    with store.session() as session:
        try:
            reviewer = session.get(Reviewer, reviewer_id)
            if reviewer is None or not reviewer.active:
                raise SignOffRefused(f"审核人“{reviewer_id}”未登记或已停用")
            if reviewer.demo and not settings.demo:
                raise SignOffRefused(f"“{reviewer_id}”是演示审核人，正式环境（未开启演示模式）不能用它撤稿")
            verify_code(store, settings, session, reviewer_id, code)
            if not set(reviewer.roles) & set(RETRACT_ROLES):
                raise SignOffRefused(f"{reviewer.name}（{reviewer_id}）没有撤稿权限（需要部门主任或总编辑）")
        except SignOffRefused as refusal:
            ledger.record(session, "retract_refused", actor=f"reviewer:{reviewer_id or '?'}", item_id=item_id,
                          details={"reason": reason, "why": str(refusal), **({"via": via} if via else {})})
            refused = refusal
        else:
            return f"reviewer:{reviewer_id}"
    raise refused


def retract_item_everywhere(store: Store, settings: Settings, item_id: str, reason: str, actor: str, *,
                            cancel_runs: Any = None, via: str = "") -> list[DeliveryResult]:
    """Retract the item from the store, its pending runs, every channel, the media server and the previews.

    `cancel_runs(item_id, reason) -> list[str]` cancels the item's pending Prefect runs (the flows and the CLI
    pass rongmei.runtime.orchestration.cancel_item_runs); it is optional because the delivery gate refuses a retracted
    item anyway: cancelling is what keeps reviewers from being asked to sign it."""
    versions = withdraw_from_store(store, item_id, reason, actor, via=via)
    cancelled: list[str] = []
    if cancel_runs is not None:
        try:
            cancelled = list(cancel_runs(item_id, reason))
        except Exception as exc:  # Prefect unreachable: the gate still holds; say so in the ledger
            log.warning("could not cancel the Prefect runs of %s: %s", item_id, exc)
            cancelled = [f"error: {exc}"]
    registry = registry_for(settings)
    results = []
    snapshots: dict[int, VersionSnapshot] = {}  # channels that hold the same version share one read of it
    for step in retract_plan(store, settings, item_id, registry):
        if step.version_id not in snapshots:
            snapshots[step.version_id] = load_version(store, step.version_id)
        version = snapshots[step.version_id]
        if step.possible:
            results.append(deliver(store, settings, version, step.channel, "retract", reason=reason, actor=actor,
                                   registry=registry))
        else:
            why = f"渠道 {step.channel} 不支持撤回已发布的内容，未能撤回：请到该渠道手动删除"
            results.append(record_not_possible(store, version, step.channel, "retract", why, actor=actor))
    withdrawn = withdraw_media(store, settings, item_id)
    previews = remove_previews(store, settings, item_id)
    mark_retracted(store, item_id, reason, actor, results,
                   extra={"versions": versions, "cancelled_runs": cancelled, "media_withdrawn": withdrawn,
                          "previews_removed": previews})
    return results


def withdraw_from_store(store: Store, item_id: str, reason: str, actor: str, *, via: str = "") -> list[int]:
    """Retract the item in the store before any channel is called: the item and every version that is out,
    approved (perhaps waiting for its embargo) or in review become retracted, so from this commit on the
    delivery gate refuses them, whoever asks. Returns the retracted version numbers."""
    with store.session() as session:
        item = session.get(Item, item_id)
        if item is None:
            raise StoreError(f"没有编号为 {item_id} 的稿件；用 `rongmei status` 查看全部稿件")
        versions = list(session.scalars(select(Version).where(
            Version.item_id == item_id, Version.state.in_((*LIVE_STATES, ItemState.in_review)))))
        numbers = sorted(version.number for version in versions)
        transition(session, [*((version, ItemState.retracted) for version in versions), (item, ItemState.retracted)],
                   LedgerNote("retract_requested", actor=actor, item_id=item_id, version=item.current_version,
                              details={"reason": reason, "versions": numbers, **({"via": via} if via else {})}))
    return numbers


def mark_retracted(store: Store, item_id: str, reason: str, actor: str, results: list[DeliveryResult],
                   extra: dict[str, Any] | None = None) -> None:
    """The last step of a retraction: the item is retracted everywhere, and the ledger says what each channel did."""
    with store.session() as session:
        item = session.get(Item, item_id)
        transition(session, [(item, ItemState.retracted)], LedgerNote(
            "item_retracted", actor=actor, item_id=item_id, version=item.current_version,
            details={"reason": reason, "channels": {r.channel: r.state for r in results}, **(extra or {})}))


def _shas(version: Version) -> set[str]:
    found = {str(f.get("sha256")) for f in (version.files or {}).values()}
    found |= {str(r.get("sha256")) for r in (version.renditions or {}).values()}
    return {sha for sha in found if len(sha) == 64}


def withdraw_media(store: Store, settings: Settings, item_id: str) -> list[str]:
    """Stop serving the item's media files, except those another live item uses too."""
    with store.session() as session:
        ours: set[str] = set()
        for version in session.scalars(select(Version).where(Version.item_id == item_id)):
            ours |= _shas(version)
        still_live: set[str] = set()
        # Approved counts as live too: it may be out already (a publish run that died before settling the
        # state) or go out at its embargo, when its channels copy the file again if it is gone.
        for version in session.scalars(select(Version).where(
                Version.item_id != item_id, Version.state.in_(LIVE_STATES))):
            still_live |= _shas(version)
    target = target_from_settings(settings)
    withdrawn = []
    for sha in sorted(ours - still_live):
        for key in target.keys(f"media/{sha}"):
            target.withdraw(key)
            withdrawn.append(key)
    return withdrawn


def remove_previews(store: Store, settings: Settings, item_id: str) -> int:
    """Delete the reviewers' preview pages of every version: a retracted piece is not shown anywhere."""
    removed = 0
    with store.session() as session:
        for version in session.scalars(select(Version).where(Version.item_id == item_id,
                                                             Version.preview_token != "")):
            folder = settings.data_dir / "preview" / version.preview_token
            if folder.exists():
                shutil.rmtree(folder)
                removed += 1
            version.preview_token = ""
    return removed
