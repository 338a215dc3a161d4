"""Terminals (screens and loudspeakers): who they are, and what each audience of them was given.

A terminal is enrolled once (`rongmei terminals add ID --zone … | --group …`) and receives a bearer token;
only the token's sha256 is stored, so a copy of the database cannot be used to impersonate a terminal.

A play counts only for what the terminal was given ("Every door guarded"). Each successful delivery to an
aggregate channel records **grants** (rongmei.delivery.grants): which file (sha256) of
which item the terminals of one audience were given, from when until when. A terminal enrolled with a
display group is a screen, audience `group:<id>`; one with only a zone is a loudspeaker, audience
`zone:<code>`, and playlists exist only per leaf zone (a village, or a township configured without
villages), so a terminal enrolled with a township that has villages is given nothing.

How plays are reported, checked against the grants and stored is rongmei.distribution.plays.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from rongmei.core.errors import ConfigError, StoreError
from rongmei.storage.store import Store
from rongmei.storage.tables import Terminal

if TYPE_CHECKING:
    pass

TERMINAL_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")

__all__ = [
    "TERMINAL_ID", "TerminalInfo", "audience_of", "authenticate", "check_assignment", "enroll_terminal",
    "hash_token", "list_terminals"
]


@dataclass(frozen=True)
class TerminalInfo:
    """A detached snapshot of a terminal row, safe to keep after the session closed."""

    id: str
    zone: str
    group: str


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def check_assignment(settings: Any, *, zone: str = "", group: str = "") -> None:
    """Refuse a zone or display group the configuration does not know (call before enroll_terminal).

    With no zones or groups configured at all (a fresh install) anything is accepted.
    """
    zones = {z.code: z.name for z in settings.zones}
    groups = {g.id: g.name for g in settings.screen_groups}
    if zone and zones and zone not in zones:
        known = "、".join(f"{code}（{name}）" for code, name in list(zones.items())[:8])
        raise ConfigError(f"区划代码 {zone} 不在配置的 zones 里；可用的有：{known}……请检查 rongmei.toml")
    if group and groups and group not in groups:
        known = "、".join(f"{gid}（{name}）" for gid, name in groups.items())
        raise ConfigError(f"大屏分组 {group} 不在配置的 screen_groups 里；可用的有：{known}")


def enroll_terminal(store: Store, terminal_id: str, *, zone: str = "", group: str = "") -> str:
    """Create a terminal, or issue a new token for an existing one (the old token stops working).

    Returns the token; it is shown once and cannot be recovered, only replaced.
    """
    if not TERMINAL_ID.match(terminal_id):
        raise StoreError(
            f"终端编号 {terminal_id!r} 不可用：只能用字母、数字、点、下划线和连字符，最长 64 个字符"
        )
    if not zone and not group:
        raise StoreError(f"终端 {terminal_id} 需要指定 --zone（村村响所在区划代码）或 --group（大屏分组）")
    token = secrets.token_urlsafe(32)
    with store.session() as session:
        terminal = session.get(Terminal, terminal_id)
        if terminal is None:
            session.add(Terminal(id=terminal_id, token_hash=hash_token(token), zone=zone, group=group))
        else:
            terminal.token_hash = hash_token(token)
            terminal.zone, terminal.group = zone, group
    return token


def authenticate(store: Store, token: str) -> Terminal | None:
    """The terminal holding this token, or None (unknown, empty or replaced token)."""
    if not token:
        return None
    with store.session() as session:
        terminal = session.scalars(select(Terminal).where(Terminal.token_hash == hash_token(token))).first()
        if terminal is not None:
            session.expunge(terminal)
        return terminal


def list_terminals(store: Store) -> list[TerminalInfo]:
    with store.session() as session:
        rows = session.scalars(select(Terminal).order_by(Terminal.id)).all()
        return [TerminalInfo(id=t.id, zone=t.zone, group=t.group) for t in rows]


# Grants: what each audience was given ----------------------------------------------------------------------
def audience_of(terminal: Terminal | TerminalInfo) -> str:
    """The grant audience whose files a terminal may report: a screen's display group, else its zone.

    A terminal enrolled with a group is a screen even when it also has a zone (the reach report counts it
    so), so it cannot report what the loudspeakers of its village were given."""
    return f"group:{terminal.group}" if terminal.group else f"zone:{terminal.zone}"
