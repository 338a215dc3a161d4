"""The distribution server's access log and the rule that makes a line of it a page view.

Every request appends one JSON line to `data_dir/logs/access.jsonl`; the reach report reads those lines with
`is_page_view`, which lives here so that it does not have to import the server to count readers.
"""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any

__all__ = ["BOT_AGENTS", "AccessLog", "is_page_view", "request_kind"]

BOT_AGENTS = re.compile(r"bot|crawl|spider|slurp|curl|wget|python-requests|httpx|aiohttp|go-http|headless",
                        re.IGNORECASE)


class AccessLog:
    """JSON lines, buffered and written a few times a second: one write per request would cost a syscall each."""

    def __init__(self, path: Path, flush_every: float = 0.25, max_pending: int = 512) -> None:
        self.path = path
        self.flush_every = flush_every
        self.max_pending = max_pending
        self._pending: list[str] = []
        self._timer: asyncio.TimerHandle | None = None
        self._file: Any = None

    def add(self, entry: dict[str, Any]) -> None:
        self._pending.append(json.dumps(entry, ensure_ascii=False, separators=(",", ":")))
        if len(self._pending) >= self.max_pending:
            self.flush()
        elif self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self.flush_every, self.flush)

    def flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self._pending:
            return
        if self._file is None:
            from rongmei.storage.privacy import private_file

            # 0600: the log holds terminals' ids and readers' addresses; open for the server's life.
            self._file = private_file(self.path, "a")
        self._file.write("\n".join(self._pending) + "\n")
        self._file.flush()
        self._pending.clear()

    def close(self) -> None:
        self.flush()
        if self._file is not None:
            self._file.close()
            self._file = None


def request_kind(path: str, terminal_paths: tuple[str, ...]) -> str:
    """What a public path is, for the access log: page | feed | media | terminal | asset.

    `terminal_paths` are the URL prefixes the channels' terminals poll (`Publisher.polled_paths`): the core
    does not know which channels have terminals."""
    if path.startswith("/media/"):
        return "media"
    if path.startswith(terminal_paths):
        return "terminal"
    if path.endswith((".xml", ".rss")):
        return "feed"
    if path.endswith(("/", ".html")):
        return "page"
    return "asset"


def is_page_view(entry: dict[str, Any]) -> bool:
    """Whether an access-log line counts as a page view in the reach report: a successful GET of a public
    page by something that is not a bot. Previews, media, feeds, terminal polls and API calls never count."""
    return (
        entry.get("kind") == "page"
        and entry.get("method") == "GET"
        and entry.get("status") in (200, 304)
        and not BOT_AGENTS.search(entry.get("ua") or "")
    )
