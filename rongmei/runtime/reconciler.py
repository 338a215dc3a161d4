"""The reconciler (自动核对): finds work that no live run will finish and finishes it, each action in the ledger.

One pass holds what the store says is waiting (rongmei.delivery.stranded) against the runs Prefect has
(rongmei.runtime.runs):
- a version in review with no live review run: a review run is started, tagged with the stage it waits for
  (the run reads that stage from the store, so no sign-off is asked or applied twice);
- an approved version no channel was asked to take, or whose embargo run is missing: its publish run is
  started, or scheduled at `publish_at`; likewise one whose publish run died part-way;
- a delivery a dead run left in progress (expired lease) or between retries: a publish run for its version
  (deliver() takes the delivery over after asking the channel what happened);
- an `unconfirmed` delivery: its channel is asked again, at most `reconcile_unconfirmed_per_pass` per pass and
  each at most every `reconcile_unconfirmed_interval_minutes` (doubling); published → the item's state is
  settled, nothing went out → a publish run tries again;
- a retraction that stopped half-way: finished;
- waiting runs that no longer match the store (a scheduled publish of a retracted item, the wrong embargo time,
  a review run paused at a stage another run already signed): cancelled, rescheduled where the time changed;
- runs Prefect shows as running whose process died (no heartbeat): marked crashed, their work finished as above.

`stranded(settings)` says what a pass would act on, changing nothing; after a pass it is empty unless an action
failed (or the re-query budget ran out). The scheduled `reconcile` deployment (flows/reconcile.py) runs a pass
every two minutes; `rongmei reconcile [--dry-run]` runs one from the shell.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select

from publishers import registry_for
from rongmei.core.errors import PublishError
from rongmei.core.settings import Settings
from rongmei.core.states import DONE_STATES, DeliveryState
from rongmei.delivery.deliveries import DeliveryResult, settle_item_state, settle_unconfirmed
from rongmei.delivery.gate import refusal_reason
from rongmei.delivery.retraction import retract_item_everywhere
from rongmei.delivery.stranded import (
    ABANDONED,
    CHECKED_AT,
    CHECKS,
    DEAD_RUN,
    PUBLISH,
    RETRACTION,
    REVIEW,
    STALE_RUN,
    UNCONFIRMED,
    RunVerdict,
    Stranded,
    next_check_at,
    review_run_verdict,
    scheduled_run_verdict,
    stranded_in_store,
)
from rongmei.runtime.orchestration import cancel_item_runs
from rongmei.runtime.runs import (
    RunView,
    cancel_run,
    is_dead,
    last_heartbeats,
    live_runs,
    mark_crashed,
    start_publish_run,
    start_review_run,
)
from rongmei.storage import ledger
from rongmei.storage.snapshots import load_version
from rongmei.storage.store import store_for
from rongmei.storage.tables import Delivery, LedgerEntry, Version

__all__ = ["ACTIONS", "ACTOR", "ReconcileAction", "ReconcileReport", "reconcile", "stranded"]

ACTOR = "system:reconcile"
ACTIONS = {  # what -> (ledger action, what editors and technicians read)
    "start_review": ("reconcile_review_started", "重新开始审核"),
    "start_publish": ("reconcile_publish_started", "开始发布"),
    "schedule_publish": ("reconcile_publish_scheduled", "排定定时发布"),
    "requery": ("reconcile_checked", "向渠道查询结果"),
    "finish_retraction": ("reconcile_retraction_resumed", "完成撤稿"),
    "cancel_run": ("reconcile_run_cancelled", "取消运行"),
    "reschedule_run": ("reconcile_run_rescheduled", "重新排定发布"),
    "mark_crashed": ("reconcile_run_crashed", "标记运行已中断"),
}


@dataclass(frozen=True)
class ReconcileAction:
    """One thing a pass did (or, dry, would do): to which item and version, what, why, and how it went."""

    what: str  # a key of ACTIONS
    item_id: str
    version: int
    why: str
    outcome: str = ""
    flow_run_id: str = ""
    ok: bool = True


@dataclass
class ReconcileReport:
    dry_run: bool = False
    found: list[Stranded] = field(default_factory=list)
    actions: list[ReconcileAction] = field(default_factory=list)

    @property
    def failed(self) -> list[ReconcileAction]:
        return [a for a in self.actions if not a.ok]

    def lines(self) -> list[str]:
        """The pass in Chinese, for the CLI and the flow run's log."""
        if not self.found:
            return ["自动核对：没有发现搁置的工作。"]
        head = (f"自动核对：发现 {len(self.found)} 项搁置的工作"
                + ("（仅列出，未做任何改动）" if self.dry_run else f"，处理 {len(self.actions)} 项"))
        lines = [head]
        for a in self.actions:
            version = f" v{a.version}" if a.version else ""
            lines.append(f"- {ACTIONS[a.what][1]} · {a.item_id or '—'}{version}：{a.why}"
                         + (f" → {a.outcome}" if a.outcome else ""))
        return lines


def stranded(settings: Settings, *, item_ids: Collection[str] | None = None) -> list[Stranded]:
    """What a reconcile pass would act on now, changing nothing (no store write, no Prefect change)."""
    return _Pass(settings, dry_run=True, item_ids=item_ids).survey()


def reconcile(settings: Settings, *, dry_run: bool = False,
              item_ids: Collection[str] | None = None) -> ReconcileReport:
    """One pass: find stranded work and finish it (`dry_run`: only say what would be done). `item_ids` limits
    the pass to those items. One item's trouble never stops the pass: it is reported and the next one goes on."""
    return _Pass(settings, dry_run=dry_run, item_ids=item_ids).run()


class _Pass:
    def __init__(self, settings: Settings, *, dry_run: bool, item_ids: Collection[str] | None) -> None:
        self.settings, self.dry_run = settings, dry_run
        self.store = store_for(settings)
        self.now = datetime.now(UTC)
        self.item_ids = set(item_ids) if item_ids is not None else None
        runs = live_runs()
        if self.item_ids is not None:
            with self.store.session() as session:
                ours = set(session.scalars(select(Version.id).where(Version.item_id.in_(self.item_ids))))
            runs = [r for r in runs if r.version_id in ours or r.item_id in self.item_ids]
        self.runs = runs
        self.by_version: dict[int, list[RunView]] = defaultdict(list)
        for run in runs:
            if run.version_id is not None:
                self.by_version[run.version_id].append(run)
        beats = last_heartbeats(r.id for r in runs if not r.waiting) if settings.flow_heartbeat_seconds > 0 else {}
        self.dead = {r.id: r for r in runs if is_dead(r, beats.get(r.id), settings, self.now)}
        self.stale = self._stale_runs()  # waiting runs that will not do what the store needs
        self.report = ReconcileReport(dry_run=dry_run)
        self.publishing: set[int] = set()  # versions this pass started a publish run for

    # What is stranded -----------------------------------------------------------------------------
    def alive(self, stranded: Stranded) -> list[RunView]:
        """The live runs that will do this work themselves."""
        if stranded.kind == RETRACTION:
            runs = [r for r in self.runs if r.flow == "retract" and r.item_id == stranded.item_id]
        elif stranded.kind == REVIEW:
            runs = [r for r in self.by_version[stranded.version_id] if r.flow == "review"]
        else:  # a publish run, or a review run on its way to publishing (not one paused at a form)
            runs = [r for r in self.by_version[stranded.version_id]
                    if r.flow == "publish" or (r.flow == "review" and r.state_type != "PAUSED")]
        # A stale run this pass reschedules will do the work; one it cancels will not.
        return [r for r in runs if r.id not in self.dead
                and (r.id not in self.stale or self.stale[r.id][1].action == "reschedule")]

    def survey(self) -> list[Stranded]:
        """Dead runs first (they are marked crashed before their work is started again), then the store's
        stranded work that no live run will do, then the waiting runs that do not match the store."""
        found = [self._about_run(DEAD_RUN, run, self._dead_why(run)) for run in self.dead.values()]
        found += [s for s in stranded_in_store(self.store, self.settings, now=self.now, item_ids=self.item_ids)
                  if not self.alive(s)]
        found += [self._about_run(STALE_RUN, run, verdict.why) for run, verdict in self.stale.values()]
        return found

    def _about_run(self, kind: str, run: RunView, why: str) -> Stranded:
        item_id, number = run.item_id, 0
        if run.version_id is not None:
            with self.store.session() as session:
                if (version := session.get(Version, run.version_id)) is not None:
                    item_id, number = version.item_id, version.number
        return Stranded(kind, item_id, run.version_id or 0, number, why, flow_run_id=run.id)

    def _stale_runs(self) -> dict[str, tuple[RunView, RunVerdict]]:
        stale = {}
        for run in self.runs:
            if run.id in self.dead or not run.from_deployment:
                continue
            if run.flow == "publish" and run.state_type == "SCHEDULED" and run.state_name in ("Scheduled", "Late"):
                verdict = scheduled_run_verdict(self.store, self.settings, run.version_id, run.scheduled_for, self.now)
            elif run.flow == "review" and run.waiting:
                verdict = review_run_verdict(self.store, self.settings, run.version_id,
                                             run.pause_key.rpartition("-")[0])
            else:
                continue
            if verdict.action != "keep":
                stale[run.id] = (run, verdict)
        return stale

    def _dead_why(self, run: RunView) -> str:
        return (f"运行“{run.name}”在 Prefect 中仍显示为 {run.state_name}，但已超过 "
                f"{round(self.settings.reconcile_dead_run_seconds)} 秒没有心跳（进程可能已被终止）")

    # Acting -------------------------------------------------------------------------------------------
    def run(self) -> ReconcileReport:
        self.report.found = self.survey()
        budget = self.settings.reconcile_unconfirmed_per_pass
        for stranded in self.report.found:
            if stranded.kind == UNCONFIRMED:
                if budget <= 0:
                    continue  # still due: the next pass asks
                budget -= 1
            try:
                if not self.dry_run and stranded.kind not in (DEAD_RUN, STALE_RUN) and self.taken_meanwhile(stranded):
                    continue
                self.handle(stranded)
            except Exception as exc:  # one item's trouble is reported; the pass goes on with the others
                self.act(_what(stranded), stranded, outcome=f"失败：{type(exc).__name__}: {exc}", ok=False)
        return self.report

    def taken_meanwhile(self, stranded: Stranded) -> bool:
        """Look again, just before acting, at the item's runs (by their `item:` tag): the pass read the live runs
        page by page, and a run that moved between pages can be missed; a run started since counts too."""
        runs = [r for r in live_runs(stranded.item_id) if r.id not in self.dead]
        for run in runs:
            if run.version_id is not None and run not in self.by_version[run.version_id]:
                self.by_version[run.version_id].append(run)
        self.runs.extend(r for r in runs if r not in self.runs)
        return bool(self.alive(stranded))

    def handle(self, stranded: Stranded) -> None:
        if stranded.kind == REVIEW:
            self.start_review(stranded)
        elif stranded.kind in (PUBLISH, ABANDONED):
            self.publish(stranded)
        elif stranded.kind == UNCONFIRMED:
            self.requery(stranded)
        elif stranded.kind == RETRACTION:
            self.finish_retraction(stranded)
        elif stranded.kind == DEAD_RUN:
            self.mark_dead(stranded)
        elif stranded.kind == STALE_RUN:
            self.fix_stale(stranded, self.stale[stranded.flow_run_id][1])

    def act(self, what: str, stranded: Stranded, *, outcome: str = "", flow_run_id: str = "", ok: bool = True,
            why: str = "") -> None:
        self.report.actions.append(ReconcileAction(
            what, stranded.item_id, stranded.version, why or stranded.why,
            outcome if not self.dry_run or not ok else "仅列出（--dry-run）", flow_run_id, ok))

    def record(self, what: str, item_id: str, version_id: int | None, details: dict[str, Any]) -> None:
        """The ledger entry of one action (after it happened, so that it can name the run it started)."""
        with self.store.session() as session:
            version = session.get(Version, version_id) if version_id else None
            ledger.record(session, ACTIONS[what][0], actor=ACTOR, item_id=item_id,
                          version=version.number if version else 0,
                          content_hash=version.signed_hash if version else "", details=details)

    def key(self, what: str, stranded: Stranded) -> str:
        """An idempotency key for a run this action starts: two passes at once start one run, not two."""
        with self.store.session() as session:
            earlier = session.scalar(select(func.count()).where(
                LedgerEntry.action == ACTIONS[what][0], LedgerEntry.item_id == stranded.item_id,
                LedgerEntry.version == stranded.version)) or 0
        return f"reconcile-{what}-{stranded.version_id}-{earlier}"

    def replaced(self, version_id: int) -> list[str]:
        return [r.id for r in self.dead.values() if r.version_id == version_id]

    def start_review(self, stranded: Stranded) -> None:
        if self.dry_run:
            return self.act("start_review", stranded)
        version = load_version(self.store, stranded.version_id)
        run_id = start_review_run(version, stranded.stage, idempotency_key=self.key("start_review", stranded))
        self.record("start_review", stranded.item_id, stranded.version_id, {
            "why": stranded.why, "stage": stranded.stage, "flow_run_id": run_id,
            "replaces": self.replaced(stranded.version_id)})
        self.act("start_review", stranded, outcome=f"已开始审核运行（等待 {stranded.stage} 环节）", flow_run_id=run_id)

    def publish(self, stranded: Stranded, why: str = "") -> None:
        """Start (or schedule, for an embargo) the version's publish run, once per pass and version."""
        what = "schedule_publish" if stranded.publish_at else "start_publish"
        if stranded.version_id in self.publishing:
            return self.act(what, stranded, outcome="本轮已为该版本开始发布", why=why)
        self.publishing.add(stranded.version_id)
        if self.dry_run:
            return self.act(what, stranded, why=why)
        version = load_version(self.store, stranded.version_id)
        run_id = start_publish_run(version, at=stranded.publish_at, idempotency_key=self.key(what, stranded),
                                   tags=["reconcile", *(["embargo"] if stranded.publish_at else [])])
        self.record(what, stranded.item_id, stranded.version_id, {
            "why": why or stranded.why, "flow_run_id": run_id, "replaces": self.replaced(stranded.version_id),
            **({"publish_at": stranded.publish_at.isoformat()} if stranded.publish_at else {}),
            **({"channel": stranded.channel, "action": stranded.action} if stranded.channel else {})})
        outcome = (f"已排定 {stranded.publish_at.isoformat()} 的定时发布" if stranded.publish_at
                   else "已开始发布运行")
        self.act(what, stranded, outcome=outcome, flow_run_id=run_id, why=why)

    def requery(self, stranded: Stranded) -> None:
        """Ask the channel what became of an unconfirmed delivery (rongmei.delivery.deliveries records the
        answer and its ledger entry); an answer that settles nothing waits longer before the next question."""
        if self.dry_run:
            return self.act("requery", stranded)
        with self.store.session() as session:
            pending = session.get(Delivery, stranded.delivery_id)
        publisher_cls = registry_for(self.settings).publishers.get(stranded.channel)
        if publisher_cls is None:
            raise PublishError(f"渠道 {stranded.channel} 不可用，无法查询", retryable=False)
        try:
            found = settle_unconfirmed(self.store, publisher_cls(self.settings), pending)
        except Exception as exc:  # the channel cannot tell yet (PublishError), or could not be reached at all
            next_at = self.note_check(stranded, str(exc))
            return self.act("requery", stranded, outcome=f"渠道暂时无法确认（{exc}）；{next_at} 后再查")
        with self.store.session() as session:
            state = session.get(Delivery, stranded.delivery_id).state
        if state in DONE_STATES:
            item_state = settle_item_state(self.store, load_version(self.store, stranded.version_id),
                                           [DeliveryResult(stranded.channel, stranded.action, state)])
            said = ("渠道上只有草稿、没有发表（请在渠道后台发表，或重新投稿）" if state == DeliveryState.draft_ready
                    else "渠道确认已发出")
            return self.act("requery", stranded, outcome=f"{said}；稿件状态：{item_state}")
        with self.store.session() as session:
            refusal = refusal_reason(session, self.settings, session.get(Version, stranded.version_id))
        if found is not None or refusal is not None or self.alive(stranded):
            why_not = "渠道的答复不明确" if found is not None else (refusal or "已有运行在处理")
            return self.act("requery", stranded, outcome=f"渠道确认没有发出；不重新发布（{why_not}）")
        self.act("requery", stranded, outcome="渠道确认没有发出，将重新发布")
        self.publish(replace(stranded, kind=ABANDONED), why=f"{stranded.why}；核对结果：没有发出")

    def note_check(self, stranded: Stranded, answer: str) -> str:
        """Remember on the delivery when its channel was last asked (the backoff of the next question)."""
        with self.store.session() as session:
            row = session.get(Delivery, stranded.delivery_id)
            details = dict(row.details or {})
            details[CHECKS] = int(details.get(CHECKS, 0) or 0) + 1
            details[CHECKED_AT] = self.now.isoformat()
            row.details = details
            session.flush()
            next_at = next_check_at(row, self.settings).isoformat(timespec="minutes")
            version = session.get(Version, row.version_id)
            ledger.record(session, ACTIONS["requery"][0], actor=ACTOR, item_id=row.item_id, version=version.number,
                          content_hash=version.signed_hash,
                          details={"channel": row.channel, "action": row.action, "answer": answer[:500],
                                   "checks": details[CHECKS], "next_check_at": next_at})
        return next_at

    def finish_retraction(self, stranded: Stranded) -> None:
        if self.dry_run:
            return self.act("finish_retraction", stranded)
        self.record("finish_retraction", stranded.item_id, stranded.version_id,
                    {"why": stranded.why, "reason": stranded.reason, "ordered_by": stranded.ordered_by})
        results = retract_item_everywhere(self.store, self.settings, stranded.item_id, stranded.reason, ACTOR,
                                          cancel_runs=cancel_item_runs, via=f"reconcile:{stranded.ordered_by}")
        left = [r.channel for r in results if r.state != DeliveryState.succeeded]
        self.act("finish_retraction", stranded, ok=not left,
                 outcome=f"未能撤回：{'、'.join(left)}" if left else "各渠道均已撤回")

    def mark_dead(self, stranded: Stranded) -> None:
        if self.dry_run:
            return self.act("mark_crashed", stranded)
        mark_crashed(stranded.flow_run_id, f"{stranded.why}；自动核对已将其标记为中断，并接手它未完成的工作")
        self.record("mark_crashed", stranded.item_id, stranded.version_id or None,
                    {"why": stranded.why, "flow_run_id": stranded.flow_run_id})
        self.act("mark_crashed", stranded, outcome="已标记为中断", flow_run_id=stranded.flow_run_id)

    def fix_stale(self, stranded: Stranded, verdict: RunVerdict) -> None:
        what = "reschedule_run" if verdict.action == "reschedule" else "cancel_run"
        if self.dry_run:
            return self.act(what, stranded)
        cancel_run(stranded.flow_run_id, verdict.why)
        details: dict[str, Any] = {"why": verdict.why, "flow_run_id": stranded.flow_run_id}
        outcome = "已取消"
        if verdict.action == "reschedule":
            version = load_version(self.store, stranded.version_id)
            details["new_flow_run_id"] = start_publish_run(
                version, at=verdict.at, idempotency_key=self.key(what, replace(stranded, version=version.number)),
                tags=["reconcile", *(["embargo"] if verdict.at else [])])
            details["publish_at"] = verdict.at.isoformat() if verdict.at else "now"
            outcome = f"已取消，并改为{verdict.at.isoformat() if verdict.at else '立即'}发布"
        self.record(what, stranded.item_id, stranded.version_id or None, details)
        self.act(what, stranded, outcome=outcome, flow_run_id=stranded.flow_run_id)


def _what(stranded: Stranded) -> str:
    """The action a kind of stranded work calls for (the one reported when it failed)."""
    if stranded.kind in (PUBLISH, ABANDONED):
        return "schedule_publish" if stranded.publish_at else "start_publish"
    return {REVIEW: "start_review", UNCONFIRMED: "requery", RETRACTION: "finish_retraction",
            DEAD_RUN: "mark_crashed", STALE_RUN: "cancel_run"}[stranded.kind]
