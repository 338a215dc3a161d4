"""How the distribution server answers outside of file bodies: the ASGI types, a whole-body response and the
JSON error body every 4xx carries. Shared by the static files, the plays API and the routing, so that every
error a terminal sees has the same shape.
"""

from __future__ import annotations

import json
from typing import Any

__all__ = ["Headers", "Scope", "json_body", "respond"]

Scope = dict[str, Any]
Headers = list[tuple[bytes, bytes]]


def json_body(status: int, code: str, message: str) -> tuple[int, bytes]:
    return status, json.dumps({"error": code, "message": message}, ensure_ascii=False).encode("utf-8")


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
