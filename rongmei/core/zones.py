"""Where an item goes: administrative zones (苏木镇街道 → 嘎查村社区) for loudspeakers, display groups for screens.

Zones form a tree through `Zone.parent`. Terminals sit at the leaves (villages, or a township configured
without villages), so targeting resolves every front-matter code to the leaves below it: a township code
reaches all its villages, a village code reaches itself, the county code reaches everything. An empty
`zones` / `screens` list means "everywhere" (the default for every kind). Only the geography lives here; the
channels that target by it check the front matter against it in their own pre-checks.
"""

from __future__ import annotations

from collections.abc import Iterable

from rongmei.core.errors import ConfigError
from rongmei.core.settings import Settings, Zone

__all__ = [
    "children_of", "leaf_zones", "resolve_groups", "resolve_zones", "unknown_groups", "unknown_zones",
    "zone_index", "zone_name"
]


def zone_index(settings: Settings) -> dict[str, Zone]:
    return {zone.code: zone for zone in settings.zones}


def children_of(settings: Settings) -> dict[str, list[str]]:
    children: dict[str, list[str]] = {}
    for zone in settings.zones:
        if zone.parent:
            children.setdefault(zone.parent, []).append(zone.code)
    return children


def leaf_zones(settings: Settings) -> list[str]:
    """Codes of the zones terminals belong to (those without children), in configuration order."""
    parents = children_of(settings)
    return [zone.code for zone in settings.zones if zone.code not in parents]


def unknown_zones(codes: Iterable[str], settings: Settings) -> list[str]:
    known = zone_index(settings)
    return [code for code in codes if code not in known]


def resolve_zones(codes: Iterable[str], settings: Settings) -> list[str]:
    """Leaf codes reached by `codes`; empty `codes` means all leaves. Unknown codes raise ConfigError."""
    codes = list(codes)
    if not codes:
        return leaf_zones(settings)
    missing = unknown_zones(codes, settings)
    if missing:
        raise ConfigError(
            f"unknown zone code(s) {missing}: add them under [[zones]] in rongmei.toml or fix the front matter"
        )
    children = children_of(settings)
    reached: set[str] = set()
    pending = list(codes)
    while pending:
        code = pending.pop()
        if code in reached:
            continue
        below = children.get(code)
        if below:
            pending.extend(below)
        else:
            reached.add(code)
    # Keep configuration order so playlists and receipts are stable from run to run.
    return [code for code in leaf_zones(settings) if code in reached]


def unknown_groups(groups: Iterable[str], settings: Settings) -> list[str]:
    configured = {group.id for group in settings.screen_groups}
    return [g for g in groups if g not in configured]


def resolve_groups(groups: Iterable[str], settings: Settings) -> list[str]:
    """Display groups reached by `groups`; empty means all configured groups."""
    groups = list(groups)
    configured = [group.id for group in settings.screen_groups]
    if not groups:
        return configured
    missing = unknown_groups(groups, settings)
    if missing:
        raise ConfigError(
            f"unknown screen group(s) {missing}: add them under [[screen_groups]] in rongmei.toml "
            "or fix the front matter"
        )
    return [g for g in configured if g in groups]


def zone_name(code: str, settings: Settings) -> str:
    zone = zone_index(settings).get(code)
    return zone.name if zone else code
