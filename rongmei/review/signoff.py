"""The sign-off state machine (审稿签发), as plain functions the review flow calls.

Each answer to a stage's form is applied in one transaction that checks the current state, spends the
reviewer's TOTP step, records the attempt and writes its ledger entry, so the store always says exactly
which stage a version is at. A sign-off counts only if the code verifies for that reviewer (once), the
reviewer holds the stage's role, and nobody signs two stages of one version.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from rongmei.core.errors import SignOffRefused
from rongmei.core.faults import fault_point
from rongmei.core.files import extension_for, unique_path
from rongmei.core.labels import DECISION_ZH, ROLE_ZH
from rongmei.core.model import SHANGHAI
from rongmei.core.settings import ReviewStage, Settings
from rongmei.core.states import ItemState
from rongmei.review.reviewers import verify_code
from rongmei.storage import ledger
from rongmei.storage.snapshots import VersionSnapshot
from rongmei.storage.store import Store
from rongmei.storage.tables import Item, ReviewAttempt, Reviewer, SignOff, Version
from rongmei.storage.transitions import LedgerNote, transition

__all__ = [
    "CHECK_MARK", "IMAGE_RENDITIONS", "MARKDOWN_SPECIAL", "StageResult", "apply_signoff", "attempts_so_far",
    "form_description", "plain", "quoted", "role_label", "stage_position", "write_returned"
]


@dataclass(frozen=True)
class StageResult:
    status: str  # approved | returned | rejected | refused
    message: str


def stage_position(store: Store, settings: Settings, version: VersionSnapshot) -> ReviewStage | None:
    """The first stage this version still needs, or None when every stage approved it."""
    with store.session() as session:
        approved = set(
            session.scalars(
                select(SignOff.stage).where(
                    SignOff.version_id == version.id,
                    SignOff.decision == "approve",
                    SignOff.signed_hash == version.signed_hash,  # approvals cover exactly what goes out
                )
            )
        )
    for stage in settings.stages:
        if stage.name not in approved:
            return stage
    return None


def attempts_so_far(store: Store, version_id: int, stage: str) -> int:
    with store.session() as session:
        return session.scalar(
            select(func.count()).where(ReviewAttempt.version_id == version_id, ReviewAttempt.stage == stage)
        ) or 0


def apply_signoff(
    store: Store, settings: Settings, snapshot: VersionSnapshot, stage: ReviewStage, pause_key: str,
    form: dict[str, Any], *, at: float | None = None,
) -> StageResult:
    """Apply one answer to a stage's form. Applying the same `pause_key` twice returns the first result.

    The version's state is read again in the transaction (the snapshot may be older than another answer)."""
    version_id = snapshot.id
    reviewer_id = str(form.get("reviewer", "")).strip()
    decision = str(form.get("decision", "")).strip()
    comment = str(form.get("comment", "") or "").strip()
    with store.session() as session:
        done = session.scalars(
            select(ReviewAttempt).where(ReviewAttempt.version_id == version_id, ReviewAttempt.pause_key == pause_key)
        ).first()
        if done is not None:
            return StageResult(done.status, done.reason)
        version = store.version(session, version_id)
        try:
            _admit(store, settings, session, version, stage, reviewer_id, decision, str(form.get("code", "")), at)
        except SignOffRefused as refusal:
            session.add(
                ReviewAttempt(
                    version_id=version_id, stage=stage.name, pause_key=pause_key, reviewer_id=reviewer_id,
                    decision=decision, status="refused", reason=str(refusal),
                )
            )
            ledger.record(
                session, "signoff_refused", actor=f"reviewer:{reviewer_id or '?'}", item_id=version.item_id,
                version=version.number, content_hash=version.signed_hash,
                details={"stage": stage.name, "decision": decision, "reason": str(refusal)},
            )
            return StageResult("refused", str(refusal))
        status = {"approve": "approved", "return": "returned", "reject": "rejected"}[decision]
        session.add(
            SignOff(version_id=version_id, stage=stage.name, reviewer_id=reviewer_id, decision=decision,
                    comment=comment, signed_hash=version.signed_hash)
        )
        session.add(
            ReviewAttempt(version_id=version_id, stage=stage.name, pause_key=pause_key, reviewer_id=reviewer_id,
                          decision=decision, status=status, reason=comment)
        )
        item = session.get(Item, version.item_id)
        final = stage.name == settings.stages[-1].name
        if decision == "approve":
            action = "approved" if final else "signed"
            outcome = ItemState.approved if final else None  # an earlier stage's approval changes no state
        else:
            action = "returned" if decision == "return" else "rejected"
            outcome = ItemState.returned if decision == "return" else ItemState.rejected
        transition(
            session, [(version, outcome), (item, outcome)] if outcome else [],
            LedgerNote(action, actor=f"reviewer:{reviewer_id}", item_id=version.item_id, version=version.number,
                       content_hash=version.signed_hash,
                       details={"stage": stage.name, "label": stage.label, "decision": decision,
                                "comment": comment, "renditions_hash": version.renditions_hash,
                                "submitted_at": at}),
        )
        message = f"{stage.label}：{reviewer_id} {DECISION_ZH[decision]}" + (f"（{comment}）" if comment else "")
        fault_point("review.before_signoff_commit")  # all of the sign-off written, nothing committed yet
    if decision == "return":
        write_returned(store, settings, snapshot, stage, reviewer_id, comment)
    return StageResult(status, message)


def _admit(
    store: Store, settings: Settings, session: Any, version: Version, stage: ReviewStage, reviewer_id: str,
    decision: str, code: str, at: float | None = None,
) -> None:
    if version.state != ItemState.in_review:
        raise SignOffRefused(f"该版本（v{version.number}）已不在审核中（{version.state}），签字无效")
    if decision not in DECISION_ZH:
        raise SignOffRefused(f"审核结论“{decision}”无效，应为 approve、return 或 reject")
    reviewer = session.get(Reviewer, reviewer_id)
    if reviewer is None or not reviewer.active:
        raise SignOffRefused(f"审核人“{reviewer_id}”未登记或已停用")
    verify_code(store, settings, session, reviewer_id, code, at=at)  # identity first; the code is spent either way
    if stage.role not in reviewer.roles:
        raise SignOffRefused(
            f"{reviewer.name}（{reviewer_id}）没有“{role_label(stage.role)}”权限，不能签{stage.label}"
        )
    other = session.scalars(
        select(SignOff).where(
            SignOff.version_id == version.id,
            SignOff.reviewer_id == reviewer_id,
            SignOff.signed_hash == version.signed_hash,
        )
    ).first()
    if other is not None and other.stage != stage.name:
        raise SignOffRefused(f"{reviewer.name}（{reviewer_id}）已签过本版本的其他环节，同一人不能签两个环节")


def write_returned(
    store: Store, settings: Settings, version: VersionSnapshot, stage: ReviewStage, reviewer_id: str, comment: str
) -> Path:
    """Copy the archived original to content/returned/<name>/ with a REVIEW.md in Chinese."""
    with store.session() as session:
        reviewer = session.get(Reviewer, reviewer_id)
        who = f"{reviewer.name}（{reviewer_id}）" if reviewer else reviewer_id
    source = Path(version.archived_to) if version.archived_to else None
    name, number, title = version.drop_name, version.number, version.meta.title
    destination = unique_path(settings.returned / name)
    if source is not None and source.exists():
        shutil.copytree(source, destination, symlinks=True)
    else:
        destination.mkdir(parents=True)
    stamp = datetime.now(SHANGHAI).strftime("%Y-%m-%d %H:%M")
    (destination / "REVIEW.md").write_text(
        "\n".join(
            [
                f"# 稿件退回修改：{title}",
                "",
                f"- 稿件：{name}（第 {number} 版）",
                f"- 审核环节：{stage.label}",
                f"- 审核人：{who}",
                f"- 时间：{stamp}",
                "",
                "## 审核意见",
                "",
                comment or "（审核人未填写意见）",
                "",
                "请按意见修改后，把整个稿件重新放进 `content/inbox/`（保持同一个 id），系统会作为新版本重新送审。",
                "",
            ]
        ),
        encoding="utf-8",
    )
    return destination


def role_label(role: str) -> str:
    return ROLE_ZH.get(role, role)


CHECK_MARK = {"blocking": "⛔", "warning": "⚠️"}
MARKDOWN_SPECIAL = set("\\`*_{}[]()#+-.!|>~=:")


def plain(text: Any, limit: int = 2000) -> str:
    """Text from editors or reviewers, safe to put into the form's Markdown: every character that Markdown (or
    HTML inside it) would act on is escaped, line breaks become spaces. A comment like "**已签字**：…" or a
    heading in a title then shows as typed instead of drawing something that looks like our own text."""
    flat = " ".join(str(text or "").split())[:limit]
    return "".join(f"\\{ch}" if ch in MARKDOWN_SPECIAL else ch for ch in flat).replace("<", "&lt;")


def quoted(text: Any, limit: int = 2000) -> str:
    """A reviewer's comment for later stages: a block quote of plain text, one quoted line per line typed."""
    lines = str(text or "").splitlines()[:40] or [""]
    return "\n".join(f"> {plain(line, limit) or ' '}" for line in lines)
IMAGE_RENDITIONS = ("cover_900x383", "cover_1x1", "share_image", "screen_card", "screen_card_mn", "thumbnail")


def form_description(store: Store, settings: Settings, version: VersionSnapshot, stage: ReviewStage) -> str:
    """What the reviewer reads above the sign-off form: the item, its checks, previews and earlier sign-offs."""
    with store.session() as session:
        signoffs = session.scalars(
            select(SignOff).where(SignOff.version_id == version.id, SignOff.signed_hash == version.signed_hash)
            .order_by(SignOff.id)
        ).all()
        refused = session.scalar(
            select(func.count()).where(ReviewAttempt.version_id == version.id, ReviewAttempt.stage == stage.name,
                                       ReviewAttempt.status == "refused")
        )
    meta, checks, renditions = version.meta.to_json(), version.checks, version.renditions
    token, number, signed = version.preview_token, version.number, version.signed_hash
    base = settings.public_url.rstrip("/")
    channels = "、".join(plain(c) for c in meta.get("channels") or []) or "按类型默认"
    lines = [
        f"## {stage.label}（需要“{role_label(stage.role)}”签字）",
        "",
        f"**{plain(meta.get('title', ''))}**  ",
        f"作者：{plain(meta.get('author', ''))} · 类型：{plain(meta.get('kind', ''))} · 第 {number} 版 · "
        f"渠道：{channels}",
        "",
        f"> {plain(meta.get('summary')) or '（无摘要）'}",
        "",
    ]
    if meta.get("source"):
        lines += [f"转载来源：{plain(meta['source'])} {plain(meta.get('source_url', ''))}", ""]
    if token:
        lines += [f"**预览**：[{base}/preview/{token}/]({base}/preview/{token}/)", ""]
    shown = [k for k in IMAGE_RENDITIONS if k in renditions]
    if shown and token:
        lines += [" ".join(f"![{k}]({base}/preview/{token}/renditions/{k}.{extension_for(renditions[k].get('mime'))})" for k in shown), ""]
    audio = [k for k, r in renditions.items() if str(r.get("mime", "")).startswith(("audio/", "video/"))]
    for key in audio:
        facts = renditions[key]
        extra = f"，响度 {facts['integrated_lufs']:.1f} LUFS" if facts.get("integrated_lufs") is not None else ""
        lines.append(f"- {key}：{facts.get('duration_s', 0):.0f} 秒{extra}" +
                     (f" [试听/试看]({base}/preview/{token}/renditions/{key}.{extension_for(facts.get('mime'))})" if token else ""))
    lines += ["", "**自动检查**："]
    lines += [f"- {CHECK_MARK.get(c['severity'], '')} {plain(c['message'])}" for c in checks] or ["- ✅ 全部通过"]
    if signoffs:
        lines += ["", "**已签字**（签字意见为审核人原文，仅供参考）："]
        for s in signoffs:
            lines.append(f"- {plain(s.stage)}：{plain(s.reviewer_id)} {DECISION_ZH.get(s.decision, plain(s.decision))}")
            if s.comment:
                lines += ["", quoted(s.comment), ""]
    if refused:
        lines += ["", f"⚠️ 本环节已有 {refused} 次签字未被接受（验证码错误、权限不符或同一人重复签字），见审计记录。"]
    lines += [
        "",
        f"签字对象（内容+渲染）哈希：`{signed[:16]}…`",
        "",
        "填写：decision（approve 通过 / return 退回修改 / reject 不予采用）、reviewer（审核人编号）、"
        "code（验证器 App 上的 6 位动态码）、comment（意见）。",
    ]
    return "\n".join(lines)


