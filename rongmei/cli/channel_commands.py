"""Each channel's own commands as `rongmei <channel name> …` (`Publisher.commands`), so the CLI names no channel.

Channels are looked up only for a command that is not one of ours, or for `--help`: loading every channel
module up front would slow down every command.
"""

from __future__ import annotations

from functools import cache

import click
from typer.core import TyperGroup
from typer.main import get_group

__all__ = ["ChannelCommandsGroup", "channel_groups"]


@cache
def channel_groups() -> dict[str, click.Command]:
    """Channel name -> its commands as a command group, for the channels that have commands."""
    from publishers import load_publishers, registry_for
    from rongmei.core.errors import ConfigError
    from rongmei.core.settings import load_settings

    try:
        registry = registry_for(load_settings())
    except (ConfigError, ValueError, OSError):  # a broken rongmei.toml must not hide `--help`; the command says why
        registry = load_publishers()
    groups: dict[str, click.Command] = {}
    for name, channel in registry.publishers.items():
        if (commands := channel.commands()) is not None:
            group = get_group(commands)
            group.name = name
            groups[name] = group
    return groups


class ChannelCommandsGroup(TyperGroup):
    """The `rongmei` group: our own commands first, then each channel's under its name."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        ours = super().list_commands(ctx)
        return [*ours, *(name for name in channel_groups() if name not in ours)]

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        return super().get_command(ctx, cmd_name) or channel_groups().get(cmd_name)
