"""The delivery gate (签发核验): the one check every publication, update and correction passes on its way
to a channel.

The review flow is the usual way to a channel, but not the only one: anyone with the Prefect UI login can
start a run of the `publish` deployment with any `version_id`, a scheduled embargo run may fire after a
retraction, and code can call the delivery function directly. So the rule that protects the center (nothing
goes out unless every configured stage signed exactly what goes out) is checked here, where the channel call
happens, against the store: never against what the caller says.

A version may go out only if
- it is approved (or already published) and neither it nor its item was retracted, returned, rejected or
  superseded, and no newer version of the item has been approved or published since;
- every configured stage approved its current `signed_hash` (content + renditions);
- the sign-offs come from distinct reviewers who are enrolled, active, hold the stage's role and, for demo
  reviewers, only while demo mode is on;
- each sign-off is backed by an authentic ledger entry (the ledger is keyed, so a row added to the
  sign-off table by someone with database access but without the key does not count).
"""

from __future__ import annotations

import getpass
import os
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from rongmei.core.settings import Settings
from rongmei.core.states import LIVE_STATES, ItemState
from rongmei.storage import ledger
from rongmei.storage.tables import Item, LedgerEntry, Reviewer, SignOff, Version

__all__ = [
    "GATED_ACTIONS", "SIGNOFF_ACTIONS", "STATE_REASONS", "Caller", "current_caller", "record_refusal",
    "refusal_reason"
]

GATED_ACTIONS = ("publish", "update")  # a correction (更正) is an update; retraction is authorised separately
STATE_REASONS = {
    ItemState.in_review: "尚未完成审核签发（仍在审核中）",
    ItemState.returned: "已被审核人退回修改",
    ItemState.rejected: "已被审核人否决（不予采用）",
    ItemState.retracted: "已撤稿",
    ItemState.superseded: "已被新版本取代",
}
SIGNOFF_ACTIONS = ("signed", "approved")


@dataclass(frozen=True)
class Caller:
    """Who asked for a delivery: the Prefect flow run, or the process that called the function."""

    actor: str  # for the ledger's actor column, e.g. "system:publish"
    flow_run_id: str = ""
    flow_run_name: str = ""
    deployment: str = ""

    def details(self) -> dict[str, Any]:
        if self.flow_run_id:
            return {"flow_run_id": self.flow_run_id, "flow_run_name": self.flow_run_name,
                    "deployment": self.deployment}
        return {"process": f"pid {os.getpid()} ({getpass.getuser()})"}


def current_caller(actor: str) -> Caller:
    """The flow run we are in, if any (read from Prefect's run context without importing Prefect anew)."""
    import sys

    if "prefect" in sys.modules:
        from prefect.context import FlowRunContext

        context = FlowRunContext.get()
        if context is not None and context.flow_run is not None:
            run = context.flow_run
            deployment = str(run.deployment_id or "")
            return Caller(actor, str(run.id), run.name, deployment)
    return Caller(actor)


def refusal_reason(session: Session, settings: Settings, version: Version) -> str | None:
    """Why this version must not go out now, in Chinese for the ledger and the editors; None if it may."""
    label = f"{version.item_id} 第 {version.number} 版"
    item = session.get(Item, version.item_id)
    if version.state not in LIVE_STATES:
        return f"{label}{STATE_REASONS.get(version.state, f'状态为 {version.state}')}，不能发布"
    if item is None or item.state == ItemState.retracted:
        return f"{label}所属稿件已撤稿，不能再发布"
    newer = session.scalars(
        select(Version.number).where(Version.item_id == version.item_id, Version.number > version.number,
                                     Version.state.in_(LIVE_STATES))
    ).first()
    if newer is not None:
        return f"{label}已被第 {newer} 版取代（第 {newer} 版已签发），不能再发布旧版本"
    signoffs = {
        s.stage: s
        for s in session.scalars(
            select(SignOff).where(SignOff.version_id == version.id, SignOff.decision == "approve",
                                  SignOff.signed_hash == version.signed_hash)
        )
    }
    seen: dict[str, str] = {}
    for stage in settings.stages:
        signoff = signoffs.get(stage.name)
        if signoff is None:
            return f"{label}缺少{stage.label}签字（或签字后内容、渲染结果已变化），不能发布"
        reviewer = session.get(Reviewer, signoff.reviewer_id)
        who = f"{signoff.reviewer_id}"
        if reviewer is None:
            return f"{label}的{stage.label}签字人 {who} 未登记，签字无效"
        if not reviewer.active:
            return f"{label}的{stage.label}签字人 {reviewer.name}（{who}）已停用，签字不再有效，需重新审核"
        if reviewer.demo and not settings.demo:
            return f"{label}的{stage.label}由演示审核人 {who} 签字，正式环境不认可演示账号"
        if stage.role not in (reviewer.roles or []):
            return f"{label}的{stage.label}签字人 {reviewer.name}（{who}）没有该环节的权限"
        if who in seen:
            return f"{label}的{seen[who]}和{stage.label}由同一人（{who}）签字，违反“一人不能签两个环节”"
        seen[who] = stage.label
        if not _backed_by_ledger(session, version, stage.name, signoff):
            return f"{label}的{stage.label}签字在审计记录中没有对应的真实条目，签字无效（疑似被篡改，请运行 rongmei audit verify）"
    return None


def _backed_by_ledger(session: Session, version: Version, stage: str, signoff: SignOff) -> bool:
    entries = session.scalars(
        select(LedgerEntry).where(LedgerEntry.item_id == version.item_id, LedgerEntry.version == version.number,
                                  LedgerEntry.action.in_(SIGNOFF_ACTIONS),
                                  LedgerEntry.actor == f"reviewer:{signoff.reviewer_id}",
                                  LedgerEntry.content_hash == version.signed_hash)
    )
    return any((e.details or {}).get("stage") == stage and ledger.authentic(session, e) for e in entries)


def record_refusal(session: Session, version: Version, caller: Caller, reason: str, *, channel: str = "",
                   action: str = "publish") -> None:
    """A refused delivery is an action of its own in the ledger: what was asked, by which run, and why not."""
    ledger.record(
        session, "delivery_refused", actor=caller.actor, item_id=version.item_id, version=version.number,
        content_hash=version.signed_hash,
        details={"channel": channel or "*", "action": action, "reason": reason, **caller.details()},
    )
