"""The `rongmei` command line."""

from rongmei.cli.commands import app

__all__ = ["app", "channel_commands", "commands", "status"]
