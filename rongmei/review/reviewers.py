"""Reviewers and their TOTP codes: how a sign-off in the shared Prefect UI proves who made it.

The self-hosted Prefect UI has one shared login, so each sign-off form carries the reviewer's id and a
6-digit TOTP code from the reviewer's authenticator app. Secrets live in `data_dir/secrets/totp.json`
(mode 0600): not in the repo, not in our database and never in Prefect's.

Anyone with the UI login can type any reviewer's id, so a code is the only proof, and it is guarded:
each time step counts once; `signoff_max_failures` wrong codes within `signoff_failure_window_minutes`
lock the reviewer for `signoff_lockout_minutes` (recorded in the ledger, with a message saying until when);
a deactivated reviewer's codes never count; a rotated secret makes every old code invalid at once; demo
reviewers count only in demo mode.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyotp
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from rongmei.core.errors import SignOffRefused, StoreError
from rongmei.core.model import SHANGHAI
from rongmei.core.settings import Settings
from rongmei.storage import ledger
from rongmei.storage.store import Store
from rongmei.storage.tables import CodeFailure, Reviewer, TotpUse

__all__ = [
    "ISSUER", "ROLES", "Enrolment", "current_code", "enroll", "list_reviewers", "qr_ascii", "rotate",
    "set_active", "sync_demo_flags", "verify_code"
]

ROLES = ("editor", "desk_head", "chief_editor")
ISSUER = "rongmei"


def _secrets_file(settings: Settings) -> Path:
    return settings.secrets_dir / "totp.json"


def _load_secrets(settings: Settings) -> dict[str, dict[str, Any]]:
    path = _secrets_file(settings)
    return json.loads(path.read_text()) if path.exists() else {}


def _save_secrets(settings: Settings, secrets: dict[str, dict[str, Any]]) -> None:
    settings.secrets_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, tmp = tempfile.mkstemp(dir=settings.secrets_dir, prefix=".totp-")
    with os.fdopen(fd, "w") as out:
        json.dump(secrets, out)
    os.chmod(tmp, 0o600)
    os.replace(tmp, _secrets_file(settings))


@dataclass(frozen=True)
class Enrolment:
    reviewer_id: str
    secret: str  # shown once
    uri: str  # otpauth:// URI for authenticator apps
    qr_png: Path | None


def enroll(
    store: Store, settings: Settings, reviewer_id: str, name: str, roles: list[str], *, demo: bool = False,
    actor: str = "cli",
) -> Enrolment | None:
    """Add a reviewer (or add roles to one). Returns the new secret only for a new reviewer."""
    bad = [r for r in roles if r not in ROLES]
    if bad:
        raise StoreError(f"unknown role(s) {bad}; roles are {', '.join(ROLES)}")
    if not reviewer_id or not reviewer_id.replace("-", "").replace("_", "").isalnum() or not reviewer_id.isascii():
        raise StoreError(f"reviewer id {reviewer_id!r} may contain only ASCII letters, digits, - and _")
    with store.session() as session:
        existing = session.get(Reviewer, reviewer_id)
        if existing is not None:
            existing.roles = sorted(set(existing.roles) | set(roles))
            existing.name = name or existing.name
            ledger.record(session, "reviewer_roles_changed", actor=actor, details={
                "reviewer": reviewer_id, "roles": existing.roles})
            return None
        session.add(Reviewer(id=reviewer_id, name=name, roles=sorted(set(roles)), demo=demo))
        secret = _store_new_secret(settings, reviewer_id, demo=demo)
        ledger.record(session, "reviewer_enrolled", actor=actor, details={
            "reviewer": reviewer_id, "name": name, "roles": sorted(set(roles)), "demo": demo})
    return _enrolment(settings, reviewer_id, secret)


def _store_new_secret(settings: Settings, reviewer_id: str, *, demo: bool) -> str:
    secrets = _load_secrets(settings)
    secret = pyotp.random_base32()
    secrets[reviewer_id] = {"secret": secret, "demo": demo}
    _save_secrets(settings, secrets)
    return secret


def _enrolment(settings: Settings, reviewer_id: str, secret: str) -> Enrolment:
    uri = pyotp.TOTP(secret).provisioning_uri(name=f"{reviewer_id}@{settings.center_name}", issuer_name=ISSUER)
    return Enrolment(reviewer_id, secret, uri, _write_qr(settings, reviewer_id, uri))


def _reviewer(session: Any, reviewer_id: str) -> Reviewer:
    reviewer = session.get(Reviewer, reviewer_id)
    if reviewer is None:
        raise StoreError(f"no reviewer {reviewer_id!r}; see `rongmei reviewers list`")
    return reviewer


def set_active(store: Store, reviewer_id: str, active: bool, *, actor: str = "cli") -> Reviewer:
    """Deactivate a reviewer (their codes stop counting at once, and sign-offs they gave no longer let a
    version out: the delivery gate wants active signers) or activate them again (which also lifts a lock)."""
    with store.session() as session:
        reviewer = _reviewer(session, reviewer_id)
        reviewer.active = active
        if active:
            reviewer.locked_until = None
        ledger.record(session, "reviewer_activated" if active else "reviewer_deactivated", actor=actor,
                      details={"reviewer": reviewer_id})
        session.expunge(reviewer)
        return reviewer


def rotate(store: Store, settings: Settings, reviewer_id: str, *, actor: str = "cli") -> Enrolment:
    """Give a reviewer a new secret (a lost or exposed phone): every code of the old one stops working now."""
    with store.session() as session:
        reviewer = _reviewer(session, reviewer_id)
        secret = _store_new_secret(settings, reviewer_id, demo=reviewer.demo)
        reviewer.locked_until = None
        ledger.record(session, "reviewer_secret_rotated", actor=actor, details={"reviewer": reviewer_id})
    return _enrolment(settings, reviewer_id, secret)


def _write_qr(settings: Settings, reviewer_id: str, uri: str) -> Path | None:
    import qrcode

    path = settings.secrets_dir / f"{reviewer_id}-totp.png"
    image = qrcode.make(uri)
    image.save(path)
    os.chmod(path, 0o600)
    return path


def qr_ascii(uri: str) -> str:
    import io

    import qrcode

    qr = qrcode.QRCode(border=1)
    qr.add_data(uri)
    out = io.StringIO()
    qr.print_ascii(out=out, invert=True)
    return out.getvalue()


def current_code(settings: Settings, reviewer_id: str) -> str:
    """The code a demo reviewer's app would show now: only in demo mode, and never for a real reviewer."""
    if not settings.demo:
        raise StoreError("demo-code works only in demo mode (`rongmei up --demo`, or `demo = true` in rongmei.toml); "
                         "real reviewers' codes come only from their authenticator app")
    entry = _load_secrets(settings).get(reviewer_id)
    if entry is None:
        raise StoreError(f"no reviewer {reviewer_id!r}; enrol with `rongmei reviewers add`")
    if not entry.get("demo"):
        raise StoreError(f"{reviewer_id!r} is a real reviewer: codes come only from their authenticator app")
    return pyotp.TOTP(entry["secret"]).now()


def _aware(moment: datetime | None) -> datetime | None:
    # SQLite hands back naive datetimes; everything we store is UTC.
    return moment.replace(tzinfo=UTC) if moment is not None and moment.tzinfo is None else moment


def _local(moment: datetime) -> str:
    return moment.astimezone(SHANGHAI).strftime("%H:%M")


def verify_code(store: Store, settings: Settings, session: Any, reviewer_id: str, code: str, *,
                at: float | None = None) -> int:
    """Check the code and spend its time step inside the caller's transaction. Raises SignOffRefused.

    The caller commits the session even when this raises (the refusal is recorded), so a wrong code's
    failure count and a lockout are kept."""
    reviewer = session.get(Reviewer, reviewer_id)
    entry = _load_secrets(settings).get(reviewer_id)
    if reviewer is None or entry is None:
        raise SignOffRefused(f"审核人 {reviewer_id} 未登记（请技术人员用 rongmei reviewers add 登记）")
    if not reviewer.active:
        raise SignOffRefused(f"审核人 {reviewer_id} 已停用，签字无效")
    if (reviewer.demo or entry.get("demo")) and not settings.demo:
        raise SignOffRefused(f"{reviewer_id} 是演示审核人，正式环境（未开启演示模式）不认可演示账号的签字")
    wall = datetime.now(UTC)
    locked_until = _aware(reviewer.locked_until)
    if locked_until is not None and locked_until > wall:
        raise SignOffRefused(f"审核人 {reviewer_id} 因多次输错验证码已被锁定，{_local(locked_until)}（北京时间）后才能再签字；"
                             "如非本人操作，请立即告知技术人员")
    totp = pyotp.TOTP(entry["secret"])
    now = time.time() if at is None else at
    code = str(code).strip()
    step = None
    for offset in (0, -1, 1):  # one step of clock drift either way, as authenticator apps expect
        candidate = int(now // totp.interval) + offset
        if pyotp.utils.strings_equal(totp.generate_otp(candidate), code):
            step = candidate
            break
    if step is None:
        raise SignOffRefused(f"审核人 {reviewer_id} 的动态验证码不正确或已过期" + _count_failure(session, settings, reviewer, wall))
    if session.get(TotpUse, (reviewer_id, step)) is not None:
        raise SignOffRefused(f"审核人 {reviewer_id} 的这个验证码已经用过，请等待验证码刷新后再试")
    try:
        with session.begin_nested():
            session.add(TotpUse(reviewer_id=reviewer_id, timestep=step))
    except IntegrityError as exc:  # another process spent it at the same moment
        raise SignOffRefused(f"审核人 {reviewer_id} 的这个验证码已经用过") from exc
    return step


def _count_failure(session: Any, settings: Settings, reviewer: Reviewer, wall: datetime) -> str:
    """Record a wrong code; lock the reviewer when there were too many lately. Returns a note for the message."""
    session.add(CodeFailure(reviewer_id=reviewer.id, at=wall))
    session.flush()
    since = wall - timedelta(minutes=settings.signoff_failure_window_minutes)
    recent = session.scalar(select(func.count()).where(CodeFailure.reviewer_id == reviewer.id,
                                                       CodeFailure.at >= since)) or 0
    if recent < settings.signoff_max_failures:
        return f"（{settings.signoff_failure_window_minutes:g} 分钟内第 {recent} 次，满 {settings.signoff_max_failures} 次将锁定）"
    until = wall + timedelta(minutes=settings.signoff_lockout_minutes)
    reviewer.locked_until = until
    ledger.record(session, "reviewer_locked", actor="system:signoff", details={
        "reviewer": reviewer.id, "failures": recent, "window_minutes": settings.signoff_failure_window_minutes,
        "locked_until": until.isoformat()})
    return f"；已连续 {recent} 次输错，该审核人被锁定至 {_local(until)}（北京时间）"


def sync_demo_flags(store: Store, settings: Settings) -> None:
    """Reviewers enrolled as demo reviewers before the flag was in the database (it was only in the secrets
    file) get the flag, so the delivery gate and `rongmei up` see them as what they are."""
    demo_ids = [rid for rid, entry in _load_secrets(settings).items() if entry.get("demo")]
    if not demo_ids:
        return
    with store.session() as session:
        for reviewer in session.scalars(select(Reviewer).where(Reviewer.id.in_(demo_ids), Reviewer.demo.is_(False))):
            reviewer.demo = True


def list_reviewers(store: Store) -> list[Reviewer]:
    with store.session() as session:
        return list(session.scalars(select(Reviewer).order_by(Reviewer.id)))
