"""The distribution server's ASGI application: routes each request to the static files or the plays API and
writes its access-log line. The pieces it routes to live beside it (files, plays_api, accesslog); running it
under uvicorn is rongmei.distribution.server.

The app is plain ASGI (no framework: per-request overhead matters at 2,000 polling terminals).
"""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime
from typing import Any

from publishers import registry_for
from rongmei.core.settings import Settings
from rongmei.distribution.accesslog import AccessLog
from rongmei.distribution.files import BadPath, StaticFiles
from rongmei.distribution.plays_api import PlaysApi
from rongmei.distribution.responses import Scope, json_body, respond

__all__ = ["DistributionApp", "make_app", "terminal_paths"]


def terminal_paths(settings: Settings) -> tuple[str, ...]:
    """The URL prefixes terminals poll, as the installed channels declare them (`Publisher.polled_paths`)."""
    channels = registry_for(settings).publishers.values()
    return tuple(sorted({prefix for channel in channels for prefix in channel.polled_paths}))


class DistributionApp:
    """ASGI application. One instance per server; not thread-safe beyond its own event loop."""

    def __init__(self, settings: Settings, store: Any = None) -> None:
        self.settings = settings
        self.access_log = AccessLog(settings.data_dir / "logs" / "access.jsonl")
        self.static = StaticFiles(os.path.realpath(settings.site_dir),
                                  os.path.realpath(settings.data_dir / "preview"), terminal_paths(settings))
        self.plays_api = PlaysApi(settings, store)

    # ASGI entry ------------------------------------------------------------------------------------
    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            await self.http(scope, receive, send)
        elif scope["type"] == "lifespan":
            await self.lifespan(receive, send)

    async def lifespan(self, receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                self.access_log.close()
                self.plays_api.close()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def http(self, scope: Scope, receive: Any, send: Any) -> None:
        started = time.perf_counter()
        path: str = scope["path"]
        method: str = scope["method"]
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        entry: dict[str, Any] = {"method": method, "path": path}
        try:
            if path == "/api/plays" or path.startswith("/api/"):
                status, sent = await self.plays_api.api(path, method, headers, receive, send, entry)
            else:
                status, sent = await self.static.serve(path, method, headers, send, entry)
        except BadPath as exc:
            status, body = json_body(400, "bad_path", f"请求路径不合法：{exc}")
            sent = await respond(send, status, body, method=method)
            entry.setdefault("kind", "asset")
        entry.update(
            time=datetime.now(UTC).isoformat(timespec="milliseconds"),
            status=status,
            bytes=sent,
            ua=headers.get("user-agent", ""),
            terminal=entry.get("terminal") or headers.get("x-terminal-id", "")[:64],
            ms=round((time.perf_counter() - started) * 1000, 2),
        )
        self.access_log.add(entry)


def make_app(settings: Settings, store: Any = None) -> DistributionApp:
    """The ASGI application serving `settings.site_dir`, previews and /api/plays."""
    return DistributionApp(settings, store)
