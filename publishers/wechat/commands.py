"""`rongmei wechat …`: the channel's own commands, mounted by the CLI under the channel's name.

Here rather than in the CLI so that the CLI names no channel and the secret's handling stays with its config.
"""

from __future__ import annotations

import typer

__all__ = ["wechat_app", "wechat_set_secret"]

wechat_app = typer.Typer(help="The WeChat Official Account channel.", no_args_is_help=True)


@wechat_app.command("set-secret")
def wechat_set_secret() -> None:
    """Store the Official Account's AppSecret in the secrets dir (0600), typed in hidden."""
    from publishers.wechat.config import write_wechat_secret
    from rongmei.core.settings import load_settings

    settings = load_settings()
    value = typer.prompt("AppSecret", hide_input=True).strip()
    path = write_wechat_secret(settings, value)
    typer.echo(f"AppSecret saved to {path} (readable by this user only). It is never printed.")
