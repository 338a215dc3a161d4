"""The distribution server: the public site, manifests, playlists, player and media, plus proof of play.

Serves `settings.site_dir` (the DirectoryTarget root every publisher writes to) at the paths in DESIGN.md,
reviewer previews from `data_dir/preview/<token>/`, and `POST /api/plays` (schema in rongmei.terminals).

HTTP behaviour terminals rely on (issue 6 item 5):
- strong `ETag` on every file, `If-None-Match` → 304 (`If-Modified-Since` too when no ETag is sent);
  small files get a content-hash ETag, so a manifest rewritten with the same bytes still answers 304;
- `Range` (one range) → 206, unsatisfiable → 416, `If-Range` honoured; HEAD everywhere;
- Content-Type and Cache-Control from rongmei.distribution (media immutable, everything else no-cache);
- no directory listings, no dot-files (a publisher's `.tmp-*` half-written file is never served),
  `..` in any spelling → 400, symlinks out of the root → 404.

Every request appends one JSON line to `data_dir/logs/access.jsonl`; `is_page_view` is the rule the reach
report uses. The app is plain ASGI (no framework: per-request overhead matters at 2,000 polling terminals)
and runs under uvicorn (httptools when installed, else h11).
"""

from __future__ import annotations

import asyncio
import email.utils
import hashlib
import json
import logging
import os
import re
import socket
import stat
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

from rongmei.distribution import cache_control_for, content_type_for
from rongmei.errors import ConfigError, RongmeiError
from rongmei.settings import Settings

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


class BadPath(RongmeiError):
    """Raised when a request path tries to leave the public root (answered with 400)."""


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
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - open for the server's life
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
        """POST /api/plays; the batch schema is documented in rongmei.terminals."""
        from rongmei import terminals

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
        if declared.isdigit() and int(declared) > terminals.MAX_BATCH_BYTES:
            return (*too_big, [(b"connection", b"close")])  # not read: closing drops the rest of the body
        body = await read_body(receive, terminals.MAX_BATCH_BYTES)
        if body is None:
            return (*too_big, [(b"connection", b"close")])
        try:
            data = json.loads(body)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            return (*json_body(400, "malformed", f"请求体不是合法的 JSON：{exc}"), [])
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

        try:
            accepted, duplicates = await self.in_db_thread(terminals.record_plays, self.store(), terminal,
                                                           batch.plays)
        except OperationalError as exc:
            # The database is busy or down: the terminal keeps its backlog and sends it again later.
            log.warning("could not store %d plays from %s: %s", len(batch.plays), terminal.id, exc)
            return (*json_body(503, "unavailable", "暂时无法保存播放回执，请保留记录稍后重发"),
                    [(b"retry-after", b"30")])
        answer = {"accepted": accepted, "duplicates": duplicates, "batch_id": batch.batch_id}
        return 200, json.dumps(answer).encode(), []

    async def terminal_for(self, token: str) -> Any:
        """Authenticate with a short-lived memory of recent tokens: under SQLite every lookup would queue
        behind the play inserts for the write lock. A replaced token keeps working for AUTH_TTL at most."""
        from rongmei import terminals

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
                from rongmei.store import Store

                self._store = Store.from_settings(self.settings)
            return self._store

    async def in_db_thread(self, func: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._db, func, *args)


async def read_body(receive: Any, limit: int) -> bytes | None:
    """The request body, or None as soon as it exceeds `limit` bytes."""
    parts: list[bytes] = []
    size = 0
    while True:
        message = await receive()
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
def _config(app: DistributionApp) -> Any:
    import importlib.util

    import uvicorn

    return uvicorn.Config(
        app,
        http="httptools" if importlib.util.find_spec("httptools") else "h11",
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


if __name__ == "__main__":  # `python -m rongmei.server`: used by bench/terminals.py
    logging.basicConfig(level=logging.INFO)
    run(Settings())
