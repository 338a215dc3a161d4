"""The channel's own `[wechat]` section of rongmei.toml (and RONGMEI_WECHAT__<KEY> variables), and the
AppSecret kept in the secrets dir: the core settings know nothing about WeChat.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from pydantic import BaseModel, Field, SecretStr

from rongmei.core.errors import ConfigError
from rongmei.core.settings import Settings

__all__ = ["WECHAT_SECRET_FILE", "WeChatSettings", "write_wechat_secret"]

WECHAT_SECRET_FILE = "wechat-app-secret"


class WeChatSettings(BaseModel):
    """`[wechat]`: the Official Account to publish to; without an AppID `rongmei up` runs the local stand-in."""

    app_id: str = Field(default="", description="Official Account AppID; empty runs the local stand-in.")
    app_secret: SecretStr = Field(
        default=SecretStr(""),
        description="AppSecret, from the environment (RONGMEI_WECHAT__APP_SECRET); else the file "
        f"<data_dir>/secrets/{WECHAT_SECRET_FILE} (`rongmei wechat set-secret`). Never printed.",
    )
    app_secret_block: str = Field(
        default="", description="No longer supported: anyone with the Prefect UI login can read a Secret block."
    )
    base_url: str = Field(default="https://api.weixin.qq.com", description="API base URL.")
    draft_only: bool = Field(default=False, description="Stop at the draft (accounts without publish rights).")
    daily_poll_budget: int = Field(default=60, description="freepublish/get calls we allow ourselves per day.")

    def secret(self, secrets_dir: Path) -> str:
        """The AppSecret: from the environment/settings, else from the secrets dir; '' when neither has it.

        Not from a Prefect Secret block: every holder of the Prefect UI login can read blocks back through the
        UI and the API, and the AppSecret lets whoever has it post on the center's account."""
        if value := self.app_secret.get_secret_value():
            return value
        if self.app_secret_block:
            raise ConfigError(
                f"wechat.app_secret_block ({self.app_secret_block!r}) is no longer supported: anyone with the "
                "Prefect UI login can read a Secret block. Store the AppSecret with `rongmei wechat set-secret` "
                "(or set RONGMEI_WECHAT__APP_SECRET), remove app_secret_block from rongmei.toml, and delete the "
                "block in the Prefect UI (Blocks → Secret)"
            )
        path = Path(secrets_dir) / WECHAT_SECRET_FILE
        return path.read_text(encoding="utf-8").strip() if path.is_file() else ""


def write_wechat_secret(settings: Settings, value: str) -> Path:
    """Keep the AppSecret in the secrets dir, readable by the service user only (`rongmei wechat set-secret`)."""
    if not value:
        raise ConfigError("the AppSecret is empty; copy it from mp.weixin.qq.com → 设置与开发 → 基本配置")
    settings.secrets_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, tmp = tempfile.mkstemp(dir=settings.secrets_dir, prefix=".wechat-")
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(value + "\n")
    path = settings.secrets_dir / WECHAT_SECRET_FILE
    os.replace(tmp, path)
    return path
