"""The HTTP protocol the distribution server runs under uvicorn: httptools with guards for hostile clients.

Unparseable HTTP gets a JSON 400, like every other 4xx. A connection that does not finish its request headers
within `settings.server_header_timeout` seconds of connecting, or of starting its next request, is closed
(slowloris); the deadline runs from the first byte and is not extended by dripping more. Idle kept-alive
connections between requests are governed by the keep-alive timeout instead, so terminals polling on one
connection are not affected.
"""

from __future__ import annotations

import asyncio
import functools
import json
from typing import Any

__all__ = ["BAD_REQUEST", "HEADERS_TOO_LARGE", "HEADERS_TOO_SLOW", "MAX_HEAD_BYTES", "guarded_protocol"]

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
