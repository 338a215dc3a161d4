"""Static files of the public site and reviewer previews, with the HTTP caching rules terminals rely on.

Serves `settings.site_dir` (the DirectoryTarget root every publisher writes to) at the paths in DESIGN.md and
reviewer previews from `data_dir/preview/<token>/` (issue 6 item 5):
- strong `ETag` on every file, `If-None-Match` → 304 (`If-Modified-Since` too when no ETag is sent);
  small files get a content-hash ETag, so a manifest rewritten with the same bytes still answers 304;
- `Range` (one range) → 206, unsatisfiable → 416, `If-Range` honoured; HEAD everywhere;
- Content-Type and Cache-Control from rongmei.targets.base (media an hour, everything else no-cache);
- no directory listings, no dot-files (a publisher's `.tmp-*` half-written file is never served),
  `..` in any spelling → 400, symlinks out of the root → 404;
- a key the target withdrew (a retracted item's media) → 410 Gone with `Cache-Control: no-store` while its
  file is absent (the tombstone lives in the never-served `.withdrawn/` dot-directory).
"""

from __future__ import annotations

import asyncio
import email.utils
import hashlib
import os
import re
import stat
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from rongmei.core.errors import RongmeiError
from rongmei.distribution.accesslog import request_kind
from rongmei.distribution.responses import respond
from rongmei.targets.base import WITHDRAWN_DIR, cache_control_for, content_type_for

__all__ = [
    "CACHE_ENTRIES", "CHUNK", "GONE_BODY", "PREVIEW_TOKEN", "SMALL_FILE", "BadPath", "FileCache", "FileInfo",
    "StaticFiles", "etag_matches", "parse_range", "safe_segments"
]

SMALL_FILE = 256 * 1024  # kept in memory with a content-hash ETag; manifests and pages are far smaller
CACHE_ENTRIES = 4096
CHUNK = 256 * 1024
PREVIEW_TOKEN = re.compile(r"^[A-Za-z0-9_-]{16,128}$")

GONE_BODY = "该内容已撤回，不再提供。\n".encode()


class BadPath(RongmeiError):
    """Raised when a request path tries to leave the public root (answered with 400)."""


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


def _not_modified_since(header: str, mtime: float) -> bool:
    try:
        since = email.utils.parsedate_to_datetime(header).timestamp()
    except (TypeError, ValueError):
        return False
    return int(mtime) <= since


def _if_range_allows(header: str | None, info: FileInfo) -> bool:
    return header is None or header.strip() == info.etag or header.strip() == info.last_modified


class StaticFiles:
    """GET and HEAD of the site root and of previews; one per server, on its event loop.

    `terminal_paths` are the URL prefixes the channels' terminals poll, for the access log's `kind`."""

    def __init__(self, site_root: str, preview_root: str, terminal_paths: tuple[str, ...]) -> None:
        self.site_root = site_root
        self.preview_root = preview_root
        self.terminal_paths = terminal_paths
        self.files = FileCache()

    async def serve(self, path: str, method: str, headers: dict[str, str], send: Any,
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
            entry["kind"] = request_kind(path, self.terminal_paths)
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
