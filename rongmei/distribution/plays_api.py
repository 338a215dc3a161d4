"""`POST /api/plays` over HTTP: bearer-token authentication, the body read with limits, strict JSON, and the
answers a terminal acts on. What a play batch means, and whether a play counts, is rongmei.distribution.plays.

Hostile clients ("Every door guarded"): a malformed body of any shape answers 4xx with a JSON error, never
500 (strict JSON: no NaN/Infinity, no repeated keys; too deep nesting, too many digits, invalid UTF-8 are
400; a body that stops arriving for `server_header_timeout` seconds is 408).
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import math
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

from rongmei.core.settings import Settings
from rongmei.distribution.responses import Headers, json_body, respond

__all__ = ["AUTH_ENTRIES", "AUTH_TTL", "PLAYS_CORS", "BadJson", "PlaysApi", "parse_json", "read_body"]

log = logging.getLogger(__name__)

AUTH_TTL = 60.0  # seconds a verified terminal token is remembered
AUTH_ENTRIES = 4096  # tokens remembered at most; the cache is emptied when full

# Play reports authenticate with a bearer token, never with cookies, so any origin may send them: players run
# from our server, from an S3 bucket's origin, or from a file on the terminal.
PLAYS_CORS: Headers = [(b"access-control-allow-origin", b"*")]


class BadJson(ValueError):
    """Raised while parsing a request body that is not strict JSON; the message says what to fix."""


class PlaysApi:
    """The `/api/` paths of one server. Database work runs in two threads beside the event loop."""

    def __init__(self, settings: Settings, store: Any = None) -> None:
        self.settings = settings
        self._store = store
        self._store_lock = threading.Lock()
        self._auth_cache: dict[str, tuple[Any, float]] = {}
        from rongmei.distribution.plays import GrantCache

        self.grants = GrantCache()  # what each zone and display group was given, read at most every 30 s
        # Database work (token lookup, play inserts) is blocking; it runs beside the event loop.
        self._db = ThreadPoolExecutor(max_workers=2, thread_name_prefix="rongmei-db")

    def close(self) -> None:
        self._db.shutdown(wait=True)

    async def api(self, path: str, method: str, headers: dict[str, str], receive: Any, send: Any,
                  entry: dict[str, Any]) -> tuple[int, int]:
        entry["kind"] = "api"
        if path != "/api/plays":
            status, body = json_body(404, "not_found", f"没有这个接口：{path}；播放回执请用 POST /api/plays")
            return status, await respond(send, status, body, method=method)
        if method == "OPTIONS":  # a browser's preflight, e.g. the screen player served from an S3 origin
            extra: Headers = [*PLAYS_CORS, (b"access-control-allow-methods", b"POST"),
                              (b"access-control-allow-headers", b"authorization, content-type"),
                              (b"access-control-max-age", b"86400")]
            return 204, await respond(send, 204, b"", method=method, extra=extra)
        status, body, extra = await self.plays(method, headers, receive, entry)
        return status, await respond(send, status, body, method=method, extra=[*PLAYS_CORS, *extra])

    async def plays(self, method: str, headers: dict[str, str], receive: Any,
                    entry: dict[str, Any]) -> tuple[int, bytes, Headers]:
        """POST /api/plays; the batch schema is documented in rongmei.distribution.plays."""
        from rongmei.distribution import plays

        if method != "POST":
            return (*json_body(405, "method_not_allowed", "播放回执只接受 POST"), [(b"allow", b"POST")])
        scheme, _, token = headers.get("authorization", "").partition(" ")
        terminal = None
        if scheme.lower() == "bearer" and token.strip():
            terminal = await self.terminal_for(token.strip())
        if terminal is None:
            return (*json_body(401, "bad_token", "终端令牌缺失或无效：请求头应为 Authorization: Bearer <令牌>，"
                                                 "令牌用 rongmei terminals add 签发"),
                    [(b"www-authenticate", b'Bearer realm="rongmei"')])
        entry["terminal"] = terminal.id
        too_big = json_body(413, "batch_too_large", f"一批最多 {plays.MAX_PLAYS} 条、"
                                                     f"{plays.MAX_BATCH_BYTES // 1024} KB，请分批发送")
        declared = headers.get("content-length", "")
        if declared.isascii() and declared.isdigit() and int(declared) > plays.MAX_BATCH_BYTES:
            return (*too_big, [(b"connection", b"close")])  # not read: closing drops the rest of the body
        try:
            body = await read_body(receive, plays.MAX_BATCH_BYTES, self.settings.server_header_timeout)
        except TimeoutError:
            return (*json_body(408, "body_timeout", f"请求体 {self.settings.server_header_timeout:g} 秒内没有继续发送"
                                                   "（Content-Length 比实际发送的多？）：请检查后重发"),
                    [(b"connection", b"close")])
        if body is None:
            return (*too_big, [(b"connection", b"close")])
        try:
            data = parse_json(body)
        except BadJson as exc:
            return (*json_body(400, "malformed", str(exc)), [])
        if isinstance(data, dict) and isinstance(data.get("plays"), list) \
                and len(data["plays"]) > plays.MAX_PLAYS:
            return (*too_big, [])
        if not isinstance(data, dict):
            return (*json_body(400, "malformed", '请求体应为 {"plays": [...]} 形式的 JSON 对象'), [])
        try:
            batch = plays.parse_batch(data)
        except plays.BadBatch as exc:
            return (*json_body(400, "malformed", str(exc)), [])
        from sqlalchemy.exc import OperationalError

        skew = timedelta(seconds=self.settings.play_clock_skew_seconds)
        try:
            outcome = await self.in_db_thread(
                functools.partial(plays.record_plays, self.store(), terminal, batch.plays, skew=skew,
                                  cache=self.grants))
        except OperationalError as exc:
            # The database is busy or down: the terminal keeps its backlog and sends it again later.
            log.warning("could not store %d plays from %s: %s", len(batch.plays), terminal.id, exc)
            return (*json_body(503, "unavailable", "暂时无法保存播放回执，请保留记录稍后重发"),
                    [(b"retry-after", b"30")])
        if outcome.refused:
            log.info("%d of %d plays from %s refused (kept in refused_plays)", len(outcome.refused),
                     len(batch.plays), terminal.id)
        answer = {"accepted": outcome.accepted, "duplicates": outcome.duplicates, "batch_id": batch.batch_id,
                  "refused": [r.as_json() for r in outcome.refused]}
        return 200, json.dumps(answer, ensure_ascii=False).encode(), []

    async def terminal_for(self, token: str) -> Any:
        """Authenticate with a short-lived memory of recent tokens: under SQLite every lookup would queue
        behind the play inserts for the write lock. A replaced token keeps working for AUTH_TTL at most."""
        from rongmei.distribution import terminals

        token_hash = terminals.hash_token(token)
        now = time.monotonic()
        known = self._auth_cache.get(token_hash)
        if known is not None and known[1] > now:
            return known[0]
        found = await self.in_db_thread(terminals.authenticate, self.store(), token)
        if found is None:
            return None
        info = terminals.TerminalInfo(id=found.id, zone=found.zone, group=found.group)
        if len(self._auth_cache) >= AUTH_ENTRIES:
            self._auth_cache.clear()
        self._auth_cache[token_hash] = (info, now + AUTH_TTL)
        return info

    def store(self) -> Any:
        with self._store_lock:
            if self._store is None:
                from rongmei.storage.store import Store

                # Play inserts are statistics at terminal volume, not records of the newsroom: no sync per commit.
                self._store = Store.from_settings(self.settings, durable=False)
            return self._store

    async def in_db_thread(self, func: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._db, func, *args)


async def read_body(receive: Any, limit: int, idle_timeout: float | None = None) -> bytes | None:
    """The request body, or None as soon as it exceeds `limit` bytes.

    TimeoutError when no part of it arrives for `idle_timeout` seconds: a client that announced more than it
    sends (or sends a byte now and then) must not hold the connection and its coroutine forever. An idle
    limit rather than a total one, so a terminal on a slow rural link that keeps sending still gets through.
    """
    parts: list[bytes] = []
    size = 0
    while True:
        message = await asyncio.wait_for(receive(), idle_timeout)
        if message["type"] == "http.disconnect":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        parts.append(chunk)
        if not message.get("more_body"):
            break
    return b"".join(parts)


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # Two parsers may pick different values of a repeated key (first vs last): refuse the ambiguity.
    data = dict(pairs)
    if len(data) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise BadJson(f"请求体里的键 {key[:40]!r} 出现了不止一次：每个键只能写一次")
            seen.add(key)
    return data


def _no_constant(name: str) -> Any:
    raise BadJson(f"请求体含有 {name}：JSON 不允许 NaN/Infinity，请改成普通数字或字符串")


def _finite_float(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise BadJson(f"数字 {text[:20]}… 超出范围：请改成普通大小的数字或字符串")
    return value


def parse_json(body: bytes) -> Any:
    """Strict JSON, with every way of failing mapped to BadJson (answered 400), never to a server error."""
    try:
        return json.loads(body, object_pairs_hook=_unique_keys, parse_constant=_no_constant,
                          parse_float=_finite_float)
    except BadJson:
        raise
    except RecursionError:
        raise BadJson("请求体的 JSON 嵌套层数过多：播放回执只需要 {\"plays\": [{...}]} 两层") from None
    except UnicodeDecodeError:
        raise BadJson("请求体不是 UTF-8 编码的 JSON：请以 UTF-8 发送") from None
    except json.JSONDecodeError as exc:
        raise BadJson(f"请求体不是合法的 JSON：{exc}") from None
    except ValueError:  # e.g. an integer of more than 4300 digits (CPython's int conversion limit)
        raise BadJson("请求体里的数字位数过多：请改成普通大小的数字或字符串") from None
