"""Reviewers and their TOTP codes: how a sign-off in the shared Prefect UI proves who made it.

The self-hosted Prefect UI has one shared login, so each sign-off form carries the reviewer's id and a
6-digit TOTP code from the reviewer's authenticator app. Secrets live in `data_dir/secrets/totp.json`
(mode 0600): not in the repo, not in our database and never in Prefect's.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyotp
from sqlalchemy.exc import IntegrityError

from rongmei.errors import SignOffRefused, StoreError
from rongmei.settings import Settings
from rongmei.store import Reviewer, Store, TotpUse

ROLES = ("editor", "desk_head", "chief_editor")
ROLE_ZH = {"editor": "编辑（初审）", "desk_head": "部门主任（复审）", "chief_editor": "总编辑（终审）"}
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
    store: Store, settings: Settings, reviewer_id: str, name: str, roles: list[str], *, demo: bool = False
) -> Enrolment | None:
    """Add a reviewer (or add roles to one). Returns the new secret only for a new reviewer."""
    bad = [r for r in roles if r not in ROLES]
    if bad:
        raise StoreError(f"unknown role(s) {bad}; roles are {', '.join(ROLES)}")
    if not reviewer_id.replace("-", "").replace("_", "").isalnum():
        raise StoreError(f"reviewer id {reviewer_id!r} may contain only letters, digits, - and _")
    with store.session() as session:
        existing = session.get(Reviewer, reviewer_id)
        if existing is not None:
            existing.roles = sorted(set(existing.roles) | set(roles))
            existing.name = name or existing.name
            return None
        session.add(Reviewer(id=reviewer_id, name=name, roles=sorted(set(roles))))
        secrets = _load_secrets(settings)
        secret = pyotp.random_base32()
        secrets[reviewer_id] = {"secret": secret, "demo": demo}
        _save_secrets(settings, secrets)
    uri = pyotp.TOTP(secret).provisioning_uri(name=f"{reviewer_id}@{settings.center_name}", issuer_name=ISSUER)
    return Enrolment(reviewer_id, secret, uri, _write_qr(settings, reviewer_id, uri))


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


def current_code(settings: Settings, reviewer_id: str, *, allow_real: bool = False) -> str:
    """The code a reviewer's app shows now. Only for demo reviewers (or tests that enrolled real ones)."""
    entry = _load_secrets(settings).get(reviewer_id)
    if entry is None:
        raise StoreError(f"no reviewer {reviewer_id!r}; enrol with `rongmei reviewers add`")
    if not entry.get("demo") and not allow_real:
        raise StoreError(f"{reviewer_id!r} is a real reviewer: codes come only from their authenticator app")
    return pyotp.TOTP(entry["secret"]).now()


def verify_code(store: Store, settings: Settings, session: Any, reviewer_id: str, code: str, *, at: float | None = None) -> int:
    """Check the code and spend its time step inside the caller's transaction. Raises SignOffRefused."""
    entry = _load_secrets(settings).get(reviewer_id)
    if entry is None:
        raise SignOffRefused(f"审核人 {reviewer_id} 未登记（请技术人员用 rongmei reviewers add 登记）")
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
        raise SignOffRefused(f"审核人 {reviewer_id} 的动态验证码不正确或已过期")
    if session.get(TotpUse, (reviewer_id, step)) is not None:
        raise SignOffRefused(f"审核人 {reviewer_id} 的这个验证码已经用过，请等待验证码刷新后再试")
    try:
        with session.begin_nested():
            session.add(TotpUse(reviewer_id=reviewer_id, timestep=step))
    except IntegrityError as exc:  # another process spent it at the same moment
        raise SignOffRefused(f"审核人 {reviewer_id} 的这个验证码已经用过") from exc
    return step


def list_reviewers(store: Store) -> list[Reviewer]:
    from sqlalchemy import select

    with store.session() as session:
        return list(session.scalars(select(Reviewer).order_by(Reviewer.id)))
