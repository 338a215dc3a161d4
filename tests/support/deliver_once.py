"""One delivery in a process of its own, so that a test can SIGKILL it at a fault point (tests/delivery).

    python -m tests.support.deliver_once '{"settings": {...}, "version_id": 1, "channel": "wechat"}'

Prints the result's state. The WeChat channel polls fast here (the stand-in publishes at once).
"""

from __future__ import annotations

import json
import sys

from publishers import Registry, registry_for
from publishers.wechat import WeChatPublisher
from rongmei.core.settings import Settings
from rongmei.delivery.deliveries import deliver
from rongmei.storage.snapshots import load_version
from rongmei.storage.store import Store

__all__ = ["QuickWeChat", "quick_registry"]


class QuickWeChat(WeChatPublisher):
    def __init__(self, settings: Settings, **kwargs) -> None:  # type: ignore[no-untyped-def]
        super().__init__(settings, poll_delays=(0.01,) * 20, **kwargs)


def quick_registry(settings: Settings) -> Registry:
    """The installation's channels, with WeChat polling fast."""
    return Registry({**registry_for(settings).publishers, "wechat": QuickWeChat})


if __name__ == "__main__":
    args = json.loads(sys.argv[1])
    settings = Settings(**args["settings"])
    store = Store.from_settings(settings)
    result = deliver(store, settings, load_version(store, args["version_id"]), args["channel"],
                     registry=quick_registry(settings))
    print(result.state)
