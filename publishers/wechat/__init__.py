"""The WeChat Official Account channel (公众号, issue 4), one module per concern.

`channel` holds the `WeChatPublisher` (registered as the `wechat` entry point), `formatting` the Markdown →
WeChat HTML, `images` the cover and the body's pictures, `checks` the channel's limits, `client` the API,
`config` its `[wechat]` section and the AppSecret, `commands` `rongmei wechat …`.
"""

from __future__ import annotations

from publishers.wechat.channel import WeChatPublisher

__all__ = [
    "WeChatPublisher", "channel", "checks", "client", "commands", "config", "formatting", "images", "reach"
]
