"""Channels. Each module here is one channel behind the `publishers.base.Publisher` interface.

Built-in channels are registered as entry points in pyproject.toml (group `rongmei.publishers`), the same
way a third-party package adds one, so there is exactly one registration path. A channel that fails to load
is reported by `load_publishers`, not fatal to the others.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from functools import lru_cache
from importlib.metadata import entry_points

from publishers.base import Publisher
from rongmei.core.model import ItemMeta
from rongmei.core.settings import Settings

log = logging.getLogger(__name__)
GROUP = "rongmei.publishers"


@dataclass
class Registry:
    publishers: dict[str, type[Publisher]] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)  # channel name -> why it could not load


def load_publishers(extra: dict[str, type[Publisher]] | None = None) -> Registry:
    found = _from_entry_points()
    registry = Registry(dict(found.publishers), dict(found.errors))
    registry.publishers.update(extra or {})
    return registry


@lru_cache(maxsize=1)
def _from_entry_points() -> Registry:
    """Scanning installed distributions is slow; the set of installed channels does not change in a process."""
    registry = Registry()
    for ep in entry_points(group=GROUP):
        try:
            cls = ep.load()
        except Exception as exc:  # a broken plugin must not take the other channels down with it
            registry.errors[ep.name] = f"{type(exc).__name__}: {exc}"
            log.warning("channel %s could not be loaded: %s", ep.name, exc)
            continue
        if not (isinstance(cls, type) and issubclass(cls, Publisher)):
            registry.errors[ep.name] = f"{ep.value} is not a Publisher subclass"
            continue
        registry.publishers[ep.name] = cls
    return registry


def registry_for(settings: Settings) -> Registry:
    extra: dict[str, type[Publisher]] = {}
    errors: dict[str, str] = {}
    for name, target in settings.extra_publishers.items():
        module_name, _, attr = target.partition(":")
        try:
            module = __import__(module_name, fromlist=[attr])
            extra[name] = getattr(module, attr)
        except Exception as exc:  # a broken local plugin is reported, not fatal
            errors[name] = f"{type(exc).__name__}: {exc}"
    registry = load_publishers(extra)
    registry.errors.update(errors)
    return registry


def channels_of(meta: ItemMeta, settings: Settings) -> list[str]:
    if meta.channels:
        return [str(c) for c in meta.channels]
    return list(settings.default_channels.get(str(meta.kind), ["web"]))
