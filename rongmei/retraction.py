"""Retraction as plain functions shared by `rongmei retract` and the retract flow."""

from __future__ import annotations

from rongmei import ledger
from rongmei.errors import SignOffRefused, StoreError
from rongmei.publishing import DeliveryResult, deliver, mark_retracted, registry_for, retract_channels
from rongmei.reviewers import verify_code
from rongmei.settings import Settings
from rongmei.store import Item, Reviewer, Store

RETRACT_ROLES = ("desk_head", "chief_editor")


def authorise_retraction(store: Store, settings: Settings, item_id: str, reason: str, reviewer_id: str,
                         code: str) -> str:
    """A retraction from the shared UI counts only with a desk head's or chief editor's valid code."""
    if not reason.strip():
        raise StoreError("撤稿必须填写原因（reason）")
    with store.session() as session:
        try:
            reviewer = session.get(Reviewer, reviewer_id)
            if reviewer is None:
                raise SignOffRefused(f"审核人“{reviewer_id}”未登记")
            verify_code(store, settings, session, reviewer_id, code)
            if not set(reviewer.roles) & set(RETRACT_ROLES):
                raise SignOffRefused(f"{reviewer.name}（{reviewer_id}）没有撤稿权限（需要部门主任或总编辑）")
        except SignOffRefused as refusal:
            ledger.record(session, "retract_refused", actor=f"reviewer:{reviewer_id}", item_id=item_id,
                          details={"reason": reason, "why": str(refusal)})
            refused = refusal
        else:
            return f"reviewer:{reviewer_id}"
    raise refused


def retract_item_everywhere(store: Store, settings: Settings, item_id: str, reason: str,
                            actor: str) -> list[DeliveryResult]:
    with store.session() as session:
        if session.get(Item, item_id) is None:
            raise StoreError(f"没有编号为 {item_id} 的稿件；用 `rongmei status` 查看全部稿件")
        ledger.record(session, "retract_requested", actor=actor, item_id=item_id, details={"reason": reason})
    registry = registry_for(settings)
    results = [
        deliver(store, settings, version_id, channel, "retract", reason=reason, actor=actor, registry=registry)
        for channel, version_id in retract_channels(store, item_id)
    ]
    mark_retracted(store, item_id, reason, actor, results)
    return results
