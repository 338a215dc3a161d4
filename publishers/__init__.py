"""Channels: the registry that finds them and the routing of an item to them. Each module (or package) in here
is one channel behind `publishers.base.Publisher`.

Installed channels are entry points (group `rongmei.publishers` in pyproject.toml, the built-in ones the same way
a third-party package adds one); a center's local channels are named in `settings.extra_publishers`
('module:Class'). Both go through one loader with one validation, so `registry_for(settings)` is the one way the
core gets channels: a channel that fails to import, is not a Publisher, or takes a name already taken is
reported in `Registry.errors`, never fatal to the others.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache, lru_cache
from importlib.metadata import EntryPoint, entry_points

from publishers.base import Publisher
from rongmei.core.model import ItemMeta
from rongmei.core.settings import Settings

__all__ = [
    "GROUP", "Registry", "base", "channel_state", "channels_of", "default_channels", "load_publishers",
    "loudspeakers", "prechecks", "reach", "registry_for", "screens", "web", "wechat"
]

log = logging.getLogger(__name__)
GROUP = "rongmei.publishers"


@dataclass
class Registry:
    """The loaded channels by name, in channel order (`Publisher.order`), and why others are missing."""

    publishers: dict[str, type[Publisher]] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)  # channel name -> why it could not load, or a clash


def registry_for(settings: Settings) -> Registry:
    """The installed channels and the settings' local ones (`extra_publishers`)."""
    return load_publishers(settings.extra_publishers)


def load_publishers(local: Mapping[str, str] | None = None) -> Registry:
    """The installed channels, then the local ones (name -> 'module:Class'); a later one of the same name wins
    (a center may replace a built-in channel by its own), and the clash is reported."""
    registry = Registry()
    chosen: dict[str, EntryPoint] = {}
    installed = [(ep, _load_installed(ep)) for ep in _installed()]
    local_entries = [EntryPoint(name, spec, GROUP) for name, spec in (local or {}).items()]
    for ep, loaded in [*installed, *((ep, _load(ep)) for ep in local_entries)]:
        if isinstance(loaded, str):
            registry.errors[ep.name] = loaded
            _report(ep.name, loaded)
            continue
        if ep.name in chosen:
            clash = (f"two channels are registered as {ep.name!r}: {chosen[ep.name].value} and {ep.value}; "
                     f"{ep.value} is used")
            registry.errors[ep.name] = clash
            _report(ep.name, clash)
        registry.publishers.pop(ep.name, None)
        registry.publishers[ep.name] = loaded
        chosen[ep.name] = ep
    position = {name: index for index, name in enumerate(registry.publishers)}
    registry.publishers = dict(sorted(registry.publishers.items(), key=lambda kv: (kv[1].order, position[kv[0]])))
    return registry


@lru_cache(maxsize=1)
def _installed() -> tuple[EntryPoint, ...]:
    """Scanning installed distributions is slow; the set of installed channels does not change in a process."""
    return tuple(entry_points(group=GROUP))


@cache
def _load_installed(ep: EntryPoint) -> type[Publisher] | str:
    return _load(ep)


def _load(ep: EntryPoint) -> type[Publisher] | str:
    """The channel class `ep` names, or why it cannot be used (one line, for editors' notes and logs)."""
    try:
        loaded = ep.load()
    except Exception as exc:  # a broken plugin must not take the other channels down with it
        return f"{type(exc).__name__}: {exc}"
    if not (isinstance(loaded, type) and issubclass(loaded, Publisher)):
        return f"{ep.value} is not a Publisher subclass"
    return loaded


_reported: set[tuple[str, str]] = set()


def _report(name: str, why: str) -> None:
    if (name, why) not in _reported:  # the registry is built for every check and delivery: say it once
        _reported.add((name, why))
        log.warning("channel %s: %s", name, why)


def default_channels(kind: str, registry: Registry) -> list[str]:
    """The channels that take items of `kind` when the front matter names none, in channel order."""
    return [name for name, cls in registry.publishers.items() if kind in cls.default_kinds]


def channels_of(meta: ItemMeta, settings: Settings) -> list[str]:
    """Where an item goes: the channels its front matter names; else `default_channels` of rongmei.toml for its
    kind; else every channel whose `default_kinds` has the kind."""
    if meta.channels:
        return [str(c) for c in meta.channels]
    kind = str(meta.kind)
    if kind in settings.default_channels:
        return list(settings.default_channels[kind])
    return default_channels(kind, registry_for(settings))
