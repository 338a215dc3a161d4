"""The WeChat stand-in over HTTP: routing, the checks every API call passes (IP whitelist, access_token,
unverified account, daily quota) before its endpoint runs, the inspection and fault paths, and starting it.

    python -m standins.wechat --port 8801
"""

from __future__ import annotations

import argparse
import json
import logging
import secrets
import sys
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from standins.wechat.endpoints import ROUTES, Call, json_object, stable_token, token
from standins.wechat.state import ApiError, WeChatState

__all__ = ["Handler", "StandIn", "main", "start_standin"]

log = logging.getLogger(__name__)


@dataclass
class StandIn:
    """A running stand-in: `base_url` for settings.wechat.base_url, `state` for assertions, `stop()`."""

    server: ThreadingHTTPServer
    thread: threading.Thread
    state: WeChatState

    @property
    def base_url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def set_faults(self, **switches: Any) -> None:
        self.state.set_faults(switches)

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


class Handler(BaseHTTPRequestHandler):
    server_version = "WeChatStandIn/1.0"
    state: WeChatState  # set on the subclass made per server

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("standin: " + format, *args)

    # Plumbing --------------------------------------------------------------------------------
    def _reply(self, data: Any, status: int = 200, content_type: str = "application/json; encoding=utf-8") -> None:
        body = data if isinstance(data, bytes) else json.dumps(data, ensure_ascii=False).encode("utf-8")
        try:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up waiting (submit_delay): expected
            log.debug("standin: client left before the answer to %s", self.path)

    def _body(self) -> bytes:
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    @property
    def base_url(self) -> str:
        return f"http://{self.headers.get('Host') or '127.0.0.1'}"

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        state = self.state
        if url.path == "/_standin/state":
            with state.lock:
                self._reply(state.snapshot())
        elif url.path == "/cgi-bin/token":
            self._api(lambda: token(state, query), None)
        elif url.path.startswith("/mmbiz/"):
            image = state.images.get(url.path.rsplit("/", 1)[-1])
            if image is None:
                self._reply(b"not found", 404, "text/plain")
            else:
                self._reply(image["bytes"], 200, f"image/{'jpeg' if image['type'] == 'jpg' else image['type']}")
        elif url.path.startswith("/s/"):
            self._article_page(url.path[3:])
        else:
            self._reply({"errcode": 40066, "errmsg": "invalid url"}, 404)

    def do_POST(self) -> None:
        url = urlsplit(self.path)
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        raw = self._body()
        state = self.state
        if url.path == "/_standin/faults":
            state.set_faults(json.loads(raw or b"{}"))
            return self._reply({"faults": state.faults})
        if url.path == "/_standin/reset":
            state.reset()
            return self._reply({"ok": True})
        if url.path == "/_standin/stats":
            body = json.loads(raw or b"{}")
            with state.lock:
                article_id = body.pop("article_id")
                if "ref_date" in body:
                    state.articles[article_id]["ref_date"] = body.pop("ref_date")
                state.stats.setdefault(article_id, {}).update(body)
            return self._reply({"ok": True})
        if url.path == "/cgi-bin/stable_token":
            body = json_object(raw)  # outside _api, as before: a bad body here gets no JSON answer
            return self._api(lambda: stable_token(state, body), None)
        endpoint = url.path.removeprefix("/cgi-bin/").lstrip("/")
        action = ROUTES.get(endpoint)
        if action is None:
            return self._reply({"errcode": 40066, "errmsg": "invalid url"}, 404)
        call = Call(state, raw, query, self.headers.get("Content-Type", ""), self.base_url)
        self._api(lambda: action(call), endpoint, token=query.get("access_token"))

    def _api(self, action: Any, endpoint: str | None, token: str | None = None) -> None:
        state = self.state
        delay = 0.0
        try:
            with state.lock:
                if state.faults["ip_whitelist"]:
                    ip = self.client_address[0]
                    raise ApiError(40164, f"invalid ip {ip} ipv6 ::ffff:{ip}, not in whitelist rid: {secrets.token_hex(6)}")
                if endpoint is not None:
                    state.check_token(token)
                    if state.faults["unverified"] and endpoint.startswith("freepublish/"):
                        raise ApiError(48001, f"api unauthorized rid: {secrets.token_hex(6)}")
                    state.count_call(endpoint)
                result = action()
                if isinstance(result, tuple):  # (body, seconds to sleep after the work took effect)
                    result, delay = result
        except ApiError as exc:
            return self._reply({"errcode": exc.code, "errmsg": exc.errmsg})
        if delay:
            time.sleep(delay)
        self._reply(result)

    def _article_page(self, key: str) -> None:
        with self.state.lock:
            article = next((a for a in self.state.articles.values() if a["key"] == key and not a["is_deleted"]), None)
        if article is None:
            return self._reply("<p>该内容已被发布者删除</p>".encode(), 404, "text/html; charset=utf-8")
        item = article["news_item"][0]
        page = (f"<!doctype html><meta charset=utf-8><title>{item['title']}</title>"
                f"<h1>{item['title']}</h1><p>{item.get('author', '')}</p>{item['content']}")
        self._reply(page.encode("utf-8"), 200, "text/html; charset=utf-8")


def start_standin(host: str = "127.0.0.1", port: int = 0, *, app_id: str | None = None,
                  secret: str | None = None, **faults: Any) -> StandIn:
    """Start the stand-in in a daemon thread; `app_id`/`secret` None accepts any credentials."""
    state = WeChatState(app_id, secret)
    state.set_faults(dict(faults))
    handler = type("BoundHandler", (Handler,), {"state": state})
    server = ThreadingHTTPServer((host, port), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="wechat-standin",
                              daemon=True)
    thread.start()
    return StandIn(server, thread, state)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Local stand-in of the WeChat Official Account API")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8801)
    parser.add_argument("--app-id", default=None, help="accept only this AppID (default: any)")
    parser.add_argument("--secret", default=None, help="accept only this AppSecret (default: any)")
    parser.add_argument("--expires-in", type=int, default=7200, help="token lifetime in seconds")
    args = parser.parse_args(argv)
    standin = start_standin(args.host, args.port, app_id=args.app_id, secret=args.secret, expires_in=args.expires_in)
    sys.stdout.write(f"WeChat stand-in on {standin.base_url} (state: {standin.base_url}/_standin/state)\n")
    sys.stdout.flush()
    try:
        standin.thread.join()
    except KeyboardInterrupt:
        standin.stop()
