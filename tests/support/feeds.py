"""A real HTTP server on 127.0.0.1 serving feed files with ETag / Last-Modified and 304, for the feed tests."""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from tests.support.waiting import PATIENCE


@dataclass
class Served:
    body: bytes
    content_type: str
    last_modified: str = field(default_factory=lambda: formatdate(time.time() - 3600, usegmt=True))

    @property
    def etag(self) -> str:
        return '"' + hashlib.sha256(self.body).hexdigest()[:16] + '"'


class FeedServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.files: dict[str, Served] = {}
        self.log: list[tuple[str, int, dict[str, str]]] = []  # (path, status, request headers)
        # Paths that answer only once the test is over: a source that times out, however slow the machine.
        self.stalled: set[str] = set()
        self.released = threading.Event()

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def serve(self, path: str, body: bytes, content_type: str = "application/rss+xml") -> None:
        self.files[path] = Served(body, content_type)

    def statuses(self, path: str) -> list[int]:
        return [status for p, status, _ in self.log if p == path]


class _Handler(BaseHTTPRequestHandler):
    server: FeedServer

    def log_message(self, format: str, *args: object) -> None:  # keep test output quiet
        pass

    def do_GET(self) -> None:
        if self.path in self.server.stalled:
            self.server.released.wait(PATIENCE)
        served = self.server.files.get(self.path)
        headers = {k: v for k, v in self.headers.items()}
        if served is None:
            return self._answer(404, b"not found", "text/plain", headers)
        inm, ims = self.headers.get("If-None-Match"), self.headers.get("If-Modified-Since")
        # RFC 9110: If-None-Match wins over If-Modified-Since when both are sent.
        if (inm is not None and inm == served.etag) or (inm is None and ims == served.last_modified):
            return self._answer(304, b"", "", headers, served)
        return self._answer(200, served.body, served.content_type, headers, served)

    def _answer(self, status: int, body: bytes, content_type: str, request_headers: dict[str, str],
                served: Served | None = None) -> None:
        self.server.log.append((self.path, status, request_headers))
        self.send_response(status)
        if served is not None:
            self.send_header("ETag", served.etag)
            self.send_header("Last-Modified", served.last_modified)
        if status != 304:
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if status != 304:
            self.wfile.write(body)


@contextmanager
def feed_server() -> Iterator[FeedServer]:
    server = FeedServer()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.released.set()
        server.shutdown()
        server.server_close()
