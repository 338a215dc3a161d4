"""A local stand-in of the WeChat Official Account API (公众号), over real HTTP on 127.0.0.1 (issue 4).

It implements what `publishers.wechat` uses, with the documented request checks and error codes
(`shared/reference/wechat-api.md`): token lifecycle (stable_token and the legacy /cgi-bin/token), IP
whitelist (40164), multipart checks (41005), image type/size (40005/40009), thumb ids (40007), length limits
(45003 title, 45004 digest, 45110 author, 45002 content), `\\uXXXX` escapes (40033), external images stripped
from stored content, per-endpoint daily quotas (45009), unverified accounts (48001 on freepublish/*),
publish status 1 -> 0 (or 2/3/4/6 on request), delete -> 5, batchget, getarticle and datacube statistics.

Assumptions where the documentation is silent (kept in one place so they are easy to revisit):
- the title limit is the documented 32 characters (users report 64 works; 32 is the safe side), the digest
  limit the documented 128;
- freepublish/submit consumes the draft (it leaves the draft box), and batchget lists only articles whose
  publishing finished successfully;
- getarticletotaldetail's detail_list holds cumulative values per stat_date.

Inspection and fault switches (not part of WeChat):
    GET  /_standin/state    drafts, publishes, articles (with their HTML), images, calls, tokens, faults
    POST /_standin/faults   merge switches, e.g. {"unverified": true, "quota": {"freepublish/get": 0}}
    POST /_standin/reset    forget everything
    POST /_standin/stats    {"article_id": ..., "read_user": 12, "share_user": 3, "like_user": 2, "ref_date": ...}
Switches: ip_whitelist (bool), unverified (bool), token_expire_now (one-shot), token_expire_after_calls (int,
one-shot), expires_in (int), quota ({endpoint: per-day limit}), submit_delay (seconds to sleep *after* the
submit took effect, to make a client time out), publish_outcome (0/2/3/4/6), publish_gets (freepublish/get
calls until the outcome shows), publish_seconds (or this much time), title_limit (int).

Run it alone: `python -m standins.wechat --port 8801`.
"""

from __future__ import annotations

import argparse
import email.parser
import email.policy
import itertools
import json
import logging
import re
import secrets
import sys
import threading
import time
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit
from zoneinfo import ZoneInfo

log = logging.getLogger(__name__)
SHANGHAI = ZoneInfo("Asia/Shanghai")
MB = 1024 * 1024

DAILY_QUOTAS = {  # per the reference; endpoints not listed are unlimited here
    "draft/add": 1000, "freepublish/submit": 100, "freepublish/get": 100, "freepublish/getarticle": 100,
    "freepublish/delete": 10, "freepublish/batchget": 1000, "media/uploadimg": 1000,
    "material/add_material": 1000, "datacube/getarticletotaldetail": 1000, "datacube/getarticleread": 1000,
}
DEFAULT_FAULTS: dict[str, Any] = {
    "ip_whitelist": False, "unverified": False, "token_expire_after_calls": None, "expires_in": 7200,
    "quota": {}, "submit_delay": 0.0, "publish_outcome": 0, "publish_gets": 1, "publish_seconds": 5.0,
    "title_limit": 32,
}
ESCAPED = re.compile(rb"\\u[0-9a-fA-F]{4}")
IMG_TAG = re.compile(r"<img\b[^>]*>", re.IGNORECASE)
SRC = re.compile(r"""\bsrc\s*=\s*["']([^"']*)["']""", re.IGNORECASE)
SCRIPT = re.compile(r"<script\b.*?</script\s*>", re.IGNORECASE | re.DOTALL)


class ApiError(Exception):
    def __init__(self, code: int, errmsg: str) -> None:
        super().__init__(errmsg)
        self.code, self.errmsg = code, errmsg


def _today() -> date:
    return datetime.now(SHANGHAI).date()


def _image_type(data: bytes) -> str:
    if data.startswith(b"\xff\xd8\xff"):
        return "jpg"
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "gif"
    if data.startswith(b"BM"):
        return "bmp"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    return ""


class WeChatState:
    """Everything the fake account holds. One lock: requests are few and small."""

    def __init__(self, app_id: str | None, secret: str | None) -> None:
        self.app_id, self.secret = app_id, secret
        self.lock = threading.RLock()
        self.ids = itertools.count(1)
        self.reset()

    def reset(self) -> None:
        with self.lock:
            self.faults: dict[str, Any] = json.loads(json.dumps(DEFAULT_FAULTS))
            self.tokens: dict[str, float] = {}  # token -> expires_at (epoch seconds)
            self.current_token: str | None = None
            self.tokens_issued = 0
            self.calls: dict[str, int] = {}  # "YYYY-MM-DD endpoint" -> count
            self.images: dict[str, dict[str, Any]] = {}  # name -> {bytes, type, kind}
            self.materials: dict[str, dict[str, Any]] = {}  # permanent media_id -> image name
            self.drafts: dict[str, dict[str, Any]] = {}
            self.publishes: dict[str, dict[str, Any]] = {}
            self.articles: dict[str, dict[str, Any]] = {}
            self.stats: dict[str, dict[str, Any]] = {}  # article_id -> numbers

    def next_id(self, prefix: str) -> str:
        return f"{prefix}{next(self.ids)}{secrets.token_hex(4)}"

    # Faults -----------------------------------------------------------------------------------
    def set_faults(self, switches: dict[str, Any]) -> None:
        with self.lock:
            if switches.pop("token_expire_now", False):
                self.expire_tokens()
            if "quota" in switches:
                self.faults["quota"] = {**self.faults["quota"], **switches.pop("quota")}
            self.faults.update(switches)

    def expire_tokens(self) -> None:
        for token in self.tokens:
            self.tokens[token] = 0.0

    # Tokens -----------------------------------------------------------------------------------
    def issue_token(self, app_id: str, secret: str, force: bool) -> dict[str, Any]:
        if not app_id:
            raise ApiError(41002, "appid missing")
        if self.app_id is not None and app_id != self.app_id:
            raise ApiError(40013, "invalid appid")
        if self.secret is not None and secret != self.secret:
            raise ApiError(40125, "invalid appsecret")
        now = time.time()
        current = self.current_token
        if current and not force and self.tokens.get(current, 0) > now:
            return {"access_token": current, "expires_in": int(self.tokens[current] - now)}
        if current and force:
            self.tokens[current] = 0.0
        token = secrets.token_urlsafe(48)
        self.tokens[token] = now + float(self.faults["expires_in"])
        self.current_token = token
        self.tokens_issued += 1
        return {"access_token": token, "expires_in": int(self.faults["expires_in"])}

    def check_token(self, token: str | None) -> None:
        if not token:
            raise ApiError(41001, "access_token missing")
        if token not in self.tokens:
            raise ApiError(40001, "invalid credential, access_token is invalid or not latest")
        if self.tokens[token] <= time.time():
            raise ApiError(42001, "access_token expired")
        countdown = self.faults.get("token_expire_after_calls")
        if countdown is not None:
            if countdown <= 0:
                self.faults["token_expire_after_calls"] = None
                self.expire_tokens()
                raise ApiError(42001, "access_token expired")
            self.faults["token_expire_after_calls"] = countdown - 1

    def count_call(self, endpoint: str) -> None:
        key = f"{_today().isoformat()} {endpoint}"
        limit = self.faults["quota"].get(endpoint, DAILY_QUOTAS.get(endpoint))
        if limit is not None and self.calls.get(key, 0) >= int(limit):
            raise ApiError(45009, "reach max api daily quota limit")
        self.calls[key] = self.calls.get(key, 0) + 1

    # Publishing -------------------------------------------------------------------------------
    def advance(self, publish: dict[str, Any]) -> None:
        """Finish a publish once enough gets or time have passed (status 1 -> outcome)."""
        if publish["status"] != 1:
            return
        waited = time.time() - publish["submitted_at"]
        if publish["gets"] < publish["gets_needed"] and waited < publish["seconds_needed"]:
            return
        publish["status"] = publish["outcome"]
        if publish["outcome"] != 0:
            return
        article_id = self.next_id("art_")
        draft = publish["draft"]
        key = secrets.token_urlsafe(12)
        self.articles[article_id] = {
            "article_id": article_id, "publish_id": publish["publish_id"], "msg_data_id": publish["msg_data_id"],
            "url": f"{publish['base_url']}/s/{key}", "key": key, "news_item": draft["articles"],
            "published_at": time.time(), "ref_date": _today().isoformat(), "is_deleted": False,
        }
        publish["article_id"] = article_id


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
                self._reply(self._snapshot())
        elif url.path == "/cgi-bin/token":
            self._api(lambda: state.issue_token(query.get("appid", ""), query.get("secret", ""), True), None)
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
            body = self._json(raw)
            return self._api(lambda: state.issue_token(str(body.get("appid", "")), str(body.get("secret", "")),
                                                       bool(body.get("force_refresh"))), None)
        endpoint = url.path.removeprefix("/cgi-bin/").lstrip("/")
        action = ROUTES.get(endpoint)
        if action is None:
            return self._reply({"errcode": 40066, "errmsg": "invalid url"}, 404)
        self._api(lambda: action(self, raw, query), endpoint, token=query.get("access_token"))

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

    @staticmethod
    def _json(raw: bytes) -> dict[str, Any]:
        if ESCAPED.search(raw):
            raise ApiError(40033, "invalid charset. please check your request, if include \\uxxxx will create fail!")
        try:
            data = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as exc:
            raise ApiError(47001, "data format error") from exc
        if not isinstance(data, dict):
            raise ApiError(47001, "data format error")
        return data

    def _media(self, raw: bytes) -> bytes:
        content_type = self.headers.get("Content-Type", "")
        if not content_type.startswith("multipart/form-data"):
            raise ApiError(41005, "media data missing")
        message = email.parser.BytesParser(policy=email.policy.default).parsebytes(
            f"Content-Type: {content_type}\r\n\r\n".encode() + raw)
        for part in message.iter_parts():
            if part.get_param("name", header="content-disposition") == "media":
                payload = part.get_payload(decode=True)
                if payload:
                    return bytes(payload)
        raise ApiError(41005, "media data missing")

    # Endpoints -------------------------------------------------------------------------------
    def uploadimg(self, raw: bytes, query: dict[str, str]) -> dict[str, Any]:
        data = self._media(raw)
        kind = _image_type(data)
        if kind not in ("jpg", "png"):
            raise ApiError(40005, "invalid file type")
        if len(data) >= MB:
            raise ApiError(40009, "invalid image size")
        return {"url": self._store_image(data, kind, "body")}

    def add_material(self, raw: bytes, query: dict[str, str]) -> dict[str, Any]:
        media_type = query.get("type", "")
        if media_type not in ("image", "thumb"):
            raise ApiError(40004, "invalid media type")
        data = self._media(raw)
        kind = _image_type(data)
        allowed, limit = (("jpg",), 64 * 1024) if media_type == "thumb" else (("jpg", "png", "gif", "bmp"), 10 * MB)
        if kind not in allowed:
            raise ApiError(40005, "invalid file type")
        if len(data) > limit:
            raise ApiError(40009, "invalid image size")
        url = self._store_image(data, kind, media_type)
        media_id = self.state.next_id("mat_")
        self.state.materials[media_id] = {"url": url, "type": media_type}
        return {"media_id": media_id, "url": url}

    def _store_image(self, data: bytes, kind: str, use: str) -> str:
        name = f"{self.state.next_id('img_')}.{kind}"
        self.state.images[name] = {"bytes": data, "type": kind, "use": use}
        return f"{self.base_url}/mmbiz/{name}"

    def draft_add(self, raw: bytes, query: dict[str, str]) -> dict[str, Any]:
        articles = self._json(raw).get("articles") or []
        if not articles:
            raise ApiError(44003, "empty news data")
        stored = [self._checked_article(article) for article in articles]
        media_id = self.state.next_id("draft_")
        self.state.drafts[media_id] = {"media_id": media_id, "articles": stored, "created_at": time.time()}
        return {"media_id": media_id}

    def _checked_article(self, article: dict[str, Any]) -> dict[str, Any]:
        title, content = str(article.get("title", "")), str(article.get("content", ""))
        if not title or not content:
            raise ApiError(44003, "empty news data")
        if len(title) > int(self.state.faults["title_limit"]):
            raise ApiError(45003, "title size out of limit")
        if len(str(article.get("author", ""))) > 16:
            raise ApiError(45110, "author size out of limit")
        if len(str(article.get("digest", ""))) > 128:
            raise ApiError(45004, "description size out of limit")
        if len(content) >= 20000 or len(content.encode("utf-8")) >= MB:
            raise ApiError(45002, "content size out of limit")
        thumb = str(article.get("thumb_media_id", ""))
        if thumb not in self.state.materials:
            raise ApiError(40007, "invalid media_id")
        # WeChat drops scripts and images that are not on its own servers.
        own = f"{self.base_url}/mmbiz/"
        content = SCRIPT.sub("", content)
        content = IMG_TAG.sub(lambda m: m.group(0) if (s := SRC.search(m.group(0))) and s.group(1).startswith(own)
                              else "", content)
        return {**article, "content": content, "thumb_url": self.state.materials[thumb]["url"]}

    def draft_get(self, raw: bytes, query: dict[str, str]) -> dict[str, Any]:
        draft = self.state.drafts.get(str(self._json(raw).get("media_id", "")))
        if draft is None:
            raise ApiError(40007, "invalid media_id")
        return {"news_item": draft["articles"]}

    def draft_delete(self, raw: bytes, query: dict[str, str]) -> dict[str, Any]:
        if self.state.drafts.pop(str(self._json(raw).get("media_id", "")), None) is None:
            raise ApiError(40007, "invalid media_id")
        return {"errcode": 0, "errmsg": "ok"}

    def submit(self, raw: bytes, query: dict[str, str]) -> tuple[dict[str, Any], float]:
        state = self.state
        draft = state.drafts.pop(str(self._json(raw).get("media_id", "")), None)
        if draft is None:
            raise ApiError(40007, "invalid media_id")
        publish_id = str(2247483647 + next(state.ids))
        msg_data_id = str(2247480000 + next(state.ids))
        state.publishes[publish_id] = {
            "publish_id": publish_id, "msg_data_id": msg_data_id, "media_id": draft["media_id"], "draft": draft,
            "status": 1, "outcome": int(state.faults["publish_outcome"]), "gets": 0,
            "gets_needed": int(state.faults["publish_gets"]), "seconds_needed": float(state.faults["publish_seconds"]),
            "submitted_at": time.time(), "base_url": self.base_url,
        }
        # publish_id comes back as a number, as WeChat sometimes does: clients must not assume a string.
        return ({"errcode": 0, "errmsg": "ok", "publish_id": int(publish_id), "msg_data_id": msg_data_id},
                float(state.faults["submit_delay"]))

    def publish_get(self, raw: bytes, query: dict[str, str]) -> dict[str, Any]:
        publish = self.state.publishes.get(str(self._json(raw).get("publish_id", "")))
        if publish is None:
            raise ApiError(47003, "argument invalid! publish_id")
        publish["gets"] += 1
        self.state.advance(publish)
        answer: dict[str, Any] = {"publish_id": publish["publish_id"], "publish_status": publish["status"]}
        if publish.get("article_id"):
            article = self.state.articles[publish["article_id"]]
            answer["article_id"] = article["article_id"]
            answer["article_detail"] = {"count": 1, "item": [{"idx": 1, "article_url": article["url"]}]}
        if publish["status"] in (2, 3, 4, 6):
            answer["fail_idx"] = [1]
        return answer

    def batchget(self, raw: bytes, query: dict[str, str]) -> dict[str, Any]:
        body = self._json(raw)
        offset, count = int(body.get("offset", 0)), int(body.get("count", 20))
        if not 1 <= count <= 20:
            raise ApiError(40097, "invalid args: count must be 1-20")
        for publish in self.state.publishes.values():
            self.state.advance(publish)
        live = sorted((a for a in self.state.articles.values() if not a["is_deleted"]),
                      key=lambda a: a["published_at"], reverse=True)
        no_content = bool(body.get("no_content"))
        items = [{"article_id": a["article_id"], "update_time": int(a["published_at"]),
                  "content": {"news_item": [self._news_item(a, n, no_content) for n in a["news_item"]]}}
                 for a in live[offset:offset + count]]
        return {"total_count": len(live), "item_count": len(items), "item": items}

    @staticmethod
    def _news_item(article: dict[str, Any], item: dict[str, Any], no_content: bool = False) -> dict[str, Any]:
        news = {**item, "url": article["url"], "is_deleted": article["is_deleted"]}
        if no_content:
            news.pop("content", None)
        return news

    def _article(self, raw: bytes) -> dict[str, Any]:
        article = self.state.articles.get(str(self._json(raw).get("article_id", "")))
        if article is None:
            raise ApiError(53600, "Article ID 无效")
        return article

    def getarticle(self, raw: bytes, query: dict[str, str]) -> dict[str, Any]:
        article = self._article(raw)
        return {"news_item": [self._news_item(article, n) for n in article["news_item"]]}

    def delete(self, raw: bytes, query: dict[str, str]) -> dict[str, Any]:
        article = self._article(raw)
        if article["is_deleted"]:
            raise ApiError(53600, "Article ID 无效")
        article["is_deleted"] = True
        self.state.publishes[article["publish_id"]]["status"] = 5
        return {"errcode": 0, "errmsg": "ok"}

    def _date_range(self, raw: bytes) -> tuple[date, date]:
        body = self._json(raw)
        try:
            begin, end = date.fromisoformat(body["begin_date"]), date.fromisoformat(body["end_date"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ApiError(61500, "date format error") from exc
        if end < begin or end >= _today() or end - begin > timedelta(days=30):
            raise ApiError(61501, "date range error")
        return begin, end

    def totaldetail(self, raw: bytes, query: dict[str, str]) -> dict[str, Any]:
        begin, end = self._date_range(raw)
        rows = []
        for article in self.state.articles.values():
            if not begin.isoformat() <= article["ref_date"] <= end.isoformat():
                continue
            numbers = {"read_user": 0, "share_user": 0, "like_user": 0, "zaikan_user": 0, "comment_count": 0,
                       **self.state.stats.get(article["article_id"], {})}
            rows.append({"ref_date": article["ref_date"], "msgid": f"{article['msg_data_id']}_1", "publish_type": 1,
                         "title": article["news_item"][0]["title"], "content_url": article["url"],
                         "detail_list": [{"stat_date": end.isoformat(), **numbers}]})
        return {"list": rows, "is_delay": False}

    def articleread(self, raw: bytes, query: dict[str, str]) -> dict[str, Any]:
        return {"list": [{"ref_date": r["ref_date"], "msgid": r["msgid"], "title": r["title"],
                          "read_user": r["detail_list"][0]["read_user"]}
                         for r in self.totaldetail(raw, query)["list"]], "is_delay": False}

    # Inspection ------------------------------------------------------------------------------
    def _snapshot(self) -> dict[str, Any]:
        state = self.state
        return {
            "faults": state.faults, "tokens_issued": state.tokens_issued, "calls": state.calls,
            "images": {name: {"type": i["type"], "bytes": len(i["bytes"]), "use": i["use"]}
                       for name, i in state.images.items()},
            "materials": state.materials,
            "drafts": list(state.drafts.values()),
            "publishes": [{k: v for k, v in p.items() if k != "draft"} | {"title": p["draft"]["articles"][0]["title"]}
                          for p in state.publishes.values()],
            "articles": [{k: v for k, v in a.items()} for a in state.articles.values()],
        }

    def _article_page(self, key: str) -> None:
        with self.state.lock:
            article = next((a for a in self.state.articles.values() if a["key"] == key and not a["is_deleted"]), None)
        if article is None:
            return self._reply("<p>该内容已被发布者删除</p>".encode(), 404, "text/html; charset=utf-8")
        item = article["news_item"][0]
        page = (f"<!doctype html><meta charset=utf-8><title>{item['title']}</title>"
                f"<h1>{item['title']}</h1><p>{item.get('author', '')}</p>{item['content']}")
        self._reply(page.encode("utf-8"), 200, "text/html; charset=utf-8")


ROUTES: dict[str, Any] = {
    "media/uploadimg": Handler.uploadimg, "material/add_material": Handler.add_material,
    "draft/add": Handler.draft_add, "draft/get": Handler.draft_get,
    "draft/delete": Handler.draft_delete, "freepublish/submit": Handler.submit,
    "freepublish/get": Handler.publish_get, "freepublish/batchget": Handler.batchget,
    "freepublish/getarticle": Handler.getarticle, "freepublish/delete": Handler.delete,
    "datacube/getarticletotaldetail": Handler.totaldetail, "datacube/getarticleread": Handler.articleread,
}


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


if __name__ == "__main__":
    main()
