"""The distribution server: the public site, manifests, playlists, player and media, plus proof of play.

Serves `settings.site_dir` (the DirectoryTarget root every publisher writes to) at the paths in DESIGN.md,
reviewer previews from `data_dir/preview/<token>/`, and `POST /api/plays` (schema in rongmei.distribution.terminals).

HTTP behaviour terminals rely on (issue 6 item 5):
- strong `ETag` on every file, `If-None-Match` → 304 (`If-Modified-Since` too when no ETag is sent);
  small files get a content-hash ETag, so a manifest rewritten with the same bytes still answers 304;
- `Range` (one range) → 206, unsatisfiable → 416, `If-Range` honoured; HEAD everywhere;
- Content-Type and Cache-Control from rongmei.targets.base (media an hour, everything else no-cache);
- no directory listings, no dot-files (a publisher's `.tmp-*` half-written file is never served),
  `..` in any spelling → 400, symlinks out of the root → 404;
- a key the target withdrew (a retracted item's media) → 410 Gone with `Cache-Control: no-store` while its
  file is absent (the tombstone lives in the never-served `.withdrawn/` dot-directory).

Hostile clients ("Every door guarded"): a malformed body of any shape answers 4xx with a JSON error, never
500 (strict JSON: no NaN/Infinity, no repeated keys; too deep nesting, too many digits, invalid UTF-8 are
400; a body that stops arriving for `server_header_timeout` seconds is 408). Unparseable HTTP gets a JSON
400 too. A connection that does not finish its request headers within `settings.server_header_timeout`
seconds of connecting, or of starting its next request, is closed (slowloris); the deadline runs from the
first byte and is not extended by dripping more. Idle kept-alive connections between requests are governed
by the keep-alive timeout instead, so terminals polling on one connection are not affected.

Every request appends one JSON line to `data_dir/logs/access.jsonl`; `is_page_view` is the rule the reach
report uses. The app is plain ASGI (no framework: per-request overhead matters at 2,000 polling terminals)
and runs under uvicorn with httptools, through the small protocol subclass `guarded_protocol` makes.
"""

from __future__ import annotations

import asyncio
import email.utils
import functools
import hashlib
import json
import logging
import math
import os
import re
import socket
import stat
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

from rongmei.core.errors import ConfigError, RongmeiError
from rongmei.core.settings import Settings
from rongmei.targets.base import WITHDRAWN_DIR, cache_control_for, content_type_for

log = logging.getLogger(__name__)

Scope = dict[str, Any]
Headers = list[tuple[bytes, bytes]]

SMALL_FILE = 256 * 1024  # kept in memory with a content-hash ETag; manifests and pages are far smaller
CACHE_ENTRIES = 4096
CHUNK = 256 * 1024
AUTH_TTL = 60.0  # seconds a verified terminal token is remembered
PREVIEW_TOKEN = re.compile(r"^[A-Za-z0-9_-]{16,128}$")
BOT_AGENTS = re.compile(r"bot|crawl|spider|slurp|curl|wget|python-requests|httpx|aiohttp|go-http|headless",
                        re.IGNORECASE)


GONE_BODY = "该内容已撤回，不再提供。\n".encode()


class BadPath(RongmeiError):
    """Raised when a request path tries to leave the public root (answered with 400)."""


class BadJson(ValueError):
    """Raised while parsing a request body that is not strict JSON; the message says what to fix."""


# Access log ------------------------------------------------------------------------------------------
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


# Play reports authenticate with a bearer token, never with cookies, so any origin may send them: players run
# from our server, from an S3 bucket's origin, or from a file on the terminal.
PLAYS_CORS: Headers = [(b"access-control-allow-origin", b"*")]


def request_kind(path: str) -> str:
    """What a public path is, for the access log: page | feed | media | terminal | asset."""
    if path.startswith("/media/"):
        return "media"
    if path.startswith(("/loudspeakers/", "/screens/")):
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


# Files ---------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class FileInfo:
    path: str
    identity: tuple[int, int, int]  # (inode, mtime_ns, size): changes on every atomic replace
    size: int
    etag: str
    last_modified: str
    mtime: float
    body: bytes | None  # the whole file when small


class FileCache:
    """Small files in memory keyed by path, revalidated by one stat() per request."""

    def __init__(self) -> None:
        self._entries: dict[str, FileInfo] = {}

    def lookup(self, path: str, st: os.stat_result, root: str) -> FileInfo | None:
        """The file's serving facts, or None when its real location is outside `root` (a symlink out)."""
        identity = (st.st_ino, st.st_mtime_ns, st.st_size)
        cached = self._entries.get(path)
        if cached is not None and cached.identity == identity:
            return cached  # vetted when cached: same inode, same file
        if not os.path.realpath(path).startswith(root + os.sep):
            return None
        body = None
        if st.st_size <= SMALL_FILE:
            with open(path, "rb") as handle:
                body = handle.read()
            etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
            identity = (st.st_ino, st.st_mtime_ns, len(body))
        else:
            etag = f'"{st.st_ino:x}-{st.st_mtime_ns:x}-{st.st_size:x}"'
        info = FileInfo(path, identity, len(body) if body is not None else st.st_size, etag,
                        email.utils.formatdate(st.st_mtime, usegmt=True), st.st_mtime, body)
        if body is not None:
            if len(self._entries) >= CACHE_ENTRIES:
                self._entries.clear()  # crude but bounded; the working set of manifests is small
            self._entries[path] = info
        return info


def safe_segments(url_path: str) -> list[str]:
    """Split a decoded URL path into segments that cannot leave the root; BadPath otherwise."""
    segments = url_path.split("/")[1:]
    for segment in segments:
        if segment in (".", "..") or "\\" in segment or "\x00" in segment:
            raise BadPath(f"path segment {segment!r} is not allowed")
    return segments


def parse_range(header: str, size: int) -> tuple[int, int] | bool | None:
    """(start, end inclusive) for one satisfiable range; None to ignore the header; False for 416."""
    if not header.startswith("bytes=") or "," in header:
        return None  # several ranges or another unit: a full 200 answer is allowed (RFC 9110 14.2)
    first, _, last = header[6:].strip().partition("-")
    try:
        if first == "":
            if not last:
                return None
            length = int(last)
            if length <= 0:
                return False
            return (max(0, size - length), size - 1) if size else False
        start = int(first)
        end = int(last) if last else size - 1
    except ValueError:
        return None
    if start >= size:
        return False
    if end < start:
        return None
    return start, min(end, size - 1)


def etag_matches(header: str, etag: str) -> bool:
    if header.strip() == "*":
        return True
    # If-None-Match uses the weak comparison: W/"x" matches "x".
    return any(tag.strip().removeprefix("W/") == etag for tag in header.split(","))


def json_body(status: int, code: str, message: str) -> tuple[int, bytes]:
    return status, json.dumps({"error": code, "message": message}, ensure_ascii=False).encode("utf-8")


# The application --------------------------------------------------------------------------------------
class DistributionApp:
    """ASGI application. One instance per server; not thread-safe beyond its own event loop."""

    def __init__(self, settings: Settings, store: Any = None) -> None:
        self.settings = settings
        self.site_root = os.path.realpath(settings.site_dir)
        self.preview_root = os.path.realpath(settings.data_dir / "preview")
        self.access_log = AccessLog(settings.data_dir / "logs" / "access.jsonl")
        self.files = FileCache()
        self._store = store
        self._store_lock = threading.Lock()
        self._auth_cache: dict[str, tuple[Any, float]] = {}
        from rongmei.distribution.terminals import GrantCache

        self.grants = GrantCache()  # what each zone and display group was given, read at most every 30 s
        # Database work (token lookup, play inserts) is blocking; it runs beside the event loop.
        self._db = ThreadPoolExecutor(max_workers=2, thread_name_prefix="rongmei-db")

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
                self._db.shutdown(wait=True)
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
                status, sent = await self.api(path, method, headers, receive, send, entry)
            else:
                status, sent = await self.static(path, method, headers, send, entry)
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

    # Static files ----------------------------------------------------------------------------------
    async def static(self, path: str, method: str, headers: dict[str, str], send: Any,
                     entry: dict[str, Any]) -> tuple[int, int]:
        segments = safe_segments(path)
        if segments and segments[0] == "preview":
            entry["kind"] = "preview"
            # The token is a secret: it never reaches the log.
            entry["path"] = "/preview/…/" + "/".join(segments[2:]) if len(segments) > 2 else "/preview/…"
            if len(segments) < 3 or not PREVIEW_TOKEN.match(segments[1]):
                return 404, await respond(send, 404, b"not found\n", method=method)
            root = os.path.join(self.preview_root, segments[1])
            segments = segments[2:]
            cache_control = "private, no-store"
        else:
            entry["kind"] = request_kind(path)
            root, cache_control = self.site_root, ""
        if method not in ("GET", "HEAD"):
            return 405, await respond(send, 405, b"method not allowed\n", method=method,
                                      extra=[(b"allow", b"GET, HEAD")])
        if any(s.startswith(".") for s in segments):
            return 404, await respond(send, 404, b"not found\n", method=method)
        key = "/".join(segments)
        if not key or key.endswith("/"):
            key += "index.html"
        full = os.path.join(root, *key.split("/"))
        try:
            st = os.stat(full)
        except OSError:  # missing, a file used as a directory, a name too long…
            if root == self.site_root and self._withdrawn(key):
                # Not 404: a cache or a player that kept the URL learns the file will not come back. no-store,
                # because writing the key again (another live item uses the blob) serves it again.
                return 410, await respond(send, 410, GONE_BODY, method=method,
                                          extra=[(b"cache-control", b"no-store")])
            return 404, await respond(send, 404, b"not found\n", method=method)
        if stat.S_ISDIR(st.st_mode):
            if os.path.isfile(os.path.join(full, "index.html")):
                # /articles/<id> → /articles/<id>/ so relative links in the page resolve.
                return 301, await respond(send, 301, b"", method=method,
                                          extra=[(b"location", quote(path + "/").encode("ascii"))])
            return 404, await respond(send, 404, b"not found\n", method=method)
        info = self.files.lookup(full, st, root) if stat.S_ISREG(st.st_mode) else None
        if info is None:
            return 404, await respond(send, 404, b"not found\n", method=method)
        return await self.send_file(info, key, method, headers, send,
                                    cache_control or cache_control_for(key))

    def _withdrawn(self, key: str) -> bool:
        return os.path.isfile(os.path.join(self.site_root, WITHDRAWN_DIR, *key.split("/")))

    async def send_file(self, info: FileInfo, key: str, method: str, headers: dict[str, str], send: Any,
                        cache_control: str) -> tuple[int, int]:
        common = [
            (b"etag", info.etag.encode()),
            (b"last-modified", info.last_modified.encode()),
            (b"cache-control", cache_control.encode()),
            (b"accept-ranges", b"bytes"),
        ]
        if_none_match = headers.get("if-none-match")
        if if_none_match is not None:
            not_modified = etag_matches(if_none_match, info.etag)
        else:
            since = headers.get("if-modified-since")
            not_modified = since is not None and _not_modified_since(since, info.mtime)
        if not_modified:
            await send({"type": "http.response.start", "status": 304, "headers": common})
            await send({"type": "http.response.body", "body": b""})
            return 304, 0
        common.append((b"content-type", content_type_for(key).encode()))
        start, end, status = 0, info.size - 1, 200
        range_header = headers.get("range")
        if range_header and method == "GET" and _if_range_allows(headers.get("if-range"), info):
            wanted = parse_range(range_header, info.size)
            if wanted is False:
                common.append((b"content-range", f"bytes */{info.size}".encode()))
                return 416, await respond(send, 416, b"", method=method, extra=common)
            if wanted:
                start, end = wanted
                status = 206
                common.append((b"content-range", f"bytes {start}-{end}/{info.size}".encode()))
        length = max(0, end - start + 1)
        common.append((b"content-length", str(length).encode()))
        await send({"type": "http.response.start", "status": status, "headers": common})
        if method == "HEAD" or length == 0:
            await send({"type": "http.response.body", "body": b""})
            return status, 0
        if info.body is not None:
            await send({"type": "http.response.body", "body": info.body[start:end + 1]})
            return status, length
        return status, await self._stream(info.path, start, length, send)

    async def _stream(self, path: str, start: int, length: int, send: Any) -> int:
        loop = asyncio.get_running_loop()
        sent = 0
        with open(path, "rb") as handle:
            handle.seek(start)
            while sent < length:
                # Disk reads go to a thread: a slow disk must not stall every other terminal's poll.
                chunk = await loop.run_in_executor(None, handle.read, min(CHUNK, length - sent))
                if not chunk:
                    break  # the file shrank under us (should not happen with atomic replace)
                sent += len(chunk)
                await send({"type": "http.response.body", "body": chunk, "more_body": sent < length})
        if sent < length:
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        return sent

    # API ---------------------------------------------------------------------------------------------
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
        """POST /api/plays; the batch schema is documented in rongmei.distribution.terminals."""
        from rongmei.distribution import terminals

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
        too_big = json_body(413, "batch_too_large", f"一批最多 {terminals.MAX_PLAYS} 条、"
                                                     f"{terminals.MAX_BATCH_BYTES // 1024} KB，请分批发送")
        declared = headers.get("content-length", "")
        if declared.isascii() and declared.isdigit() and int(declared) > terminals.MAX_BATCH_BYTES:
            return (*too_big, [(b"connection", b"close")])  # not read: closing drops the rest of the body
        try:
            body = await read_body(receive, terminals.MAX_BATCH_BYTES, self.settings.server_header_timeout)
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
                and len(data["plays"]) > terminals.MAX_PLAYS:
            return (*too_big, [])
        if not isinstance(data, dict):
            return (*json_body(400, "malformed", '请求体应为 {"plays": [...]} 形式的 JSON 对象'), [])
        try:
            batch = terminals.parse_batch(data)
        except terminals.BadBatch as exc:
            return (*json_body(400, "malformed", str(exc)), [])
        from sqlalchemy.exc import OperationalError

        skew = timedelta(seconds=self.settings.play_clock_skew_seconds)
        try:
            outcome = await self.in_db_thread(
                functools.partial(terminals.record_plays, self.store(), terminal, batch.plays, skew=skew,
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
        if len(self._auth_cache) >= CACHE_ENTRIES:
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


def _not_modified_since(header: str, mtime: float) -> bool:
    try:
        since = email.utils.parsedate_to_datetime(header).timestamp()
    except (TypeError, ValueError):
        return False
    return int(mtime) <= since


def _if_range_allows(header: str | None, info: FileInfo) -> bool:
    return header is None or header.strip() == info.etag or header.strip() == info.last_modified


async def respond(send: Any, status: int, body: bytes, *, method: str, extra: Headers | None = None) -> int:
    headers = list(extra or [])
    names = {name for name, _ in headers}
    if b"content-type" not in names:
        ctype = b"application/json; charset=utf-8" if body.startswith(b"{") else b"text/plain; charset=utf-8"
        headers.append((b"content-type", ctype))
    headers.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": b"" if method == "HEAD" else body})
    return 0 if method == "HEAD" else len(body)


def make_app(settings: Settings, store: Any = None) -> DistributionApp:
    """The ASGI application serving `settings.site_dir`, previews and /api/plays."""
    return DistributionApp(settings, store)


# Running ---------------------------------------------------------------------------------------------
BAD_REQUEST = json.dumps({"error": "bad_request", "message": "HTTP 请求无法解析（请求行、请求头、Content-Length 或"
                                                            "分块编码有误），连接已关闭：请检查终端的 HTTP 客户端"},
                         ensure_ascii=False).encode("utf-8")
HEADERS_TOO_LARGE = json.dumps({"error": "headers_too_large", "message": "请求行和请求头合计超过 64 KB，连接已关闭："
                                                                         "请缩短 URL 或请求头"},
                               ensure_ascii=False).encode("utf-8")
MAX_HEAD_BYTES = 64 * 1024  # request line + headers; llhttp itself sets no limit, and they are kept in memory
HEADERS_TOO_SLOW = json.dumps({"error": "header_timeout", "message": "请求头没有在规定时间内发完，连接已关闭：请检查"
                                                                     "网络或终端的 HTTP 客户端后重试"},
                              ensure_ascii=False).encode("utf-8")


@functools.cache
def guarded_protocol(header_timeout: float) -> type[asyncio.Protocol]:
    """uvicorn's httptools protocol with a deadline and a size limit for request heads, and JSON answers to
    bad HTTP.

    uvicorn arms no timer while a connection waits for (the rest of) a request's headers: only the
    keep-alive timer between requests, and any byte received cancels that. A client could therefore hold a
    connection, and its memory, forever by connecting and then sending nothing, or half a header line
    (slowloris). Here a timer of `header_timeout` seconds runs whenever no request is in flight and headers
    are owed: from the connection's start, and from the first byte of each later request on a kept-alive
    connection. It is not re-armed by more bytes, so dripping does not extend it, and it is cancelled once
    the headers are complete; an idle kept-alive connection stays under uvicorn's keep-alive timeout. And
    since llhttp sets no size limit, a fast client could make it buffer one endless header within that
    time: the request line and headers together are limited to MAX_HEAD_BYTES (431).
    """
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    class GuardedHttpToolsProtocol(HttpToolsProtocol):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._header_timer: asyncio.TimerHandle | None = None
            self._headers_pending = False  # a request has begun and its headers are not complete yet
            self._head_bytes = 0  # received while headers were owed, since the last complete headers

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._watch_headers()

        def connection_lost(self, exc: Exception | None) -> None:
            self._stop_header_timer()
            super().connection_lost(exc)

        def data_received(self, data: bytes) -> None:
            owed = self._headers_pending or self._owes_headers()
            super().data_received(data)
            if owed or self._headers_pending:
                self._head_bytes += len(data)
                # Checked after parsing, so a body that came in the same read as complete headers is never
                # mistaken for a head; httptools buffers an unfinished header itself, out of our sight.
                if self._headers_pending and self._head_bytes > MAX_HEAD_BYTES and not self.transport.is_closing():
                    self._answer_and_close(b"431 Request Header Fields Too Large", HEADERS_TOO_LARGE)
            self._watch_headers()

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._headers_pending = True

        def on_headers_complete(self) -> None:
            self._headers_pending = False
            self._head_bytes = 0
            super().on_headers_complete()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self._watch_headers()  # part of the next request may already be here (pipelined)

        def send_400_response(self, msg: str) -> None:
            # uvicorn's own answer is plain text; terminals and the docs expect a JSON error on every 4xx.
            self._answer_and_close(b"400 Bad Request", BAD_REQUEST)

        def _answer_and_close(self, status: bytes, body: bytes) -> None:
            """Answer outside any request cycle (none is in flight, or it is abandoned), then hang up."""
            self.transport.write(b"".join([
                b"HTTP/1.1 ", status, b"\r\n",
                *(name + b": " + value + b"\r\n" for name, value in self.server_state.default_headers),
                b"content-type: application/json; charset=utf-8\r\n",
                b"content-length: " + str(len(body)).encode() + b"\r\n",
                b"connection: close\r\n\r\n", body]))
            self.transport.close()

        def _owes_headers(self) -> bool:
            idle = (self.cycle is None or self.cycle.response_complete) and not self.pipeline
            # Between requests with nothing received, the keep-alive timer is the one that runs.
            return (idle and not self.transport.is_closing()
                    and (self._headers_pending or self.timeout_keep_alive_task is None))

        def _watch_headers(self) -> None:
            if not self._owes_headers():
                self._stop_header_timer()
            elif self._header_timer is None:
                self._header_timer = self.loop.call_later(header_timeout, self._headers_too_slow)

        def _stop_header_timer(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None

        def _headers_too_slow(self) -> None:
            self._header_timer = None
            if not self._owes_headers():
                return
            if self._headers_pending:  # say why to a client that did start a request; no response is in flight
                self._answer_and_close(b"408 Request Timeout", HEADERS_TOO_SLOW)
            else:
                self.transport.close()

    return GuardedHttpToolsProtocol


def _config(app: DistributionApp) -> Any:
    import uvicorn

    return uvicorn.Config(
        app,
        http=guarded_protocol(app.settings.server_header_timeout),
        # The stdlib loop, not uvloop: measured with 2,000 terminals (bench/terminals.py), uvloop served
        # ~1.5x more requests but left ~70% of freshly connected terminals unanswered for the whole run,
        # while the stdlib loop answered every terminal evenly.
        loop="asyncio",
        lifespan="on",
        access_log=False,  # we write our own, in the format the reach report reads
        log_level="warning",
        server_header=False,
        timeout_keep_alive=75,  # terminals poll on one kept-alive connection
        backlog=4096,
    )


def bind(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ConfigError(
            f"分发服务器无法监听 {host}:{port}（{exc.strerror}）：端口可能已被占用，"
            "请在 rongmei.toml 里改 server_port 或设置 RONGMEI_SERVER_PORT"
        ) from exc
    sock.listen(4096)
    sock.setblocking(False)
    return sock


@dataclass
class RunningServer:
    url: str
    port: int
    _server: Any
    _thread: threading.Thread

    def stop(self, timeout: float = 10.0) -> None:
        """Stop accepting, finish open requests, flush the access log."""
        self._server.should_exit = True
        self._thread.join(timeout)
        if self._thread.is_alive():
            self._server.force_exit = True
            self._thread.join(timeout)


def serve_in_thread(settings: Settings, host: str = "127.0.0.1", port: int = 0,
                    store: Any = None) -> RunningServer:
    """Start the server on its own event loop in a daemon thread; returns once it accepts connections."""
    import uvicorn

    sock = bind(host, port)
    bound_port = sock.getsockname()[1]
    server = uvicorn.Server(_config(make_app(settings, store)))
    failure: list[BaseException] = []

    def run() -> None:
        try:
            server.run(sockets=[sock])
        except BaseException as exc:
            failure.append(exc)
        finally:
            sock.close()

    thread = threading.Thread(target=run, name=f"rongmei-server-{bound_port}", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if failure or not thread.is_alive():
            raise ConfigError(f"分发服务器启动失败：{failure[0] if failure else '线程已退出'}")
        if time.monotonic() > deadline:
            server.should_exit = True
            raise ConfigError("分发服务器 30 秒内没有启动完成")
        time.sleep(0.01)
    shown = f"[{host}]" if ":" in host else host
    return RunningServer(url=f"http://{shown}:{bound_port}", port=bound_port, _server=server, _thread=thread)


def run(settings: Settings) -> None:
    """Serve until Ctrl-C (SIGINT/SIGTERM), in the foreground."""
    import uvicorn

    sock = bind(settings.server_host, settings.server_port)
    log.info("distribution server on %s:%s serving %s", settings.server_host, sock.getsockname()[1],
             settings.site_dir)
    uvicorn.Server(_config(make_app(settings))).run(sockets=[sock])


if __name__ == "__main__":  # `python -m rongmei.distribution.server`: used by bench/terminals.py
    logging.basicConfig(level=logging.INFO)
    run(Settings())
