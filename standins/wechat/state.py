"""The fake Official Account behind the WeChat stand-in: what it holds (tokens, images, drafts, publishes,
articles, statistics), the fault switches, daily quotas, and the API error every endpoint raises.

One object per running stand-in; the HTTP side (standins.wechat.server) and the endpoints
(standins.wechat.endpoints) work on it under its lock.
"""

from __future__ import annotations

import itertools
import json
import secrets
import threading
import time
from datetime import date, datetime
from typing import Any
from zoneinfo import ZoneInfo

__all__ = ["DAILY_QUOTAS", "DEFAULT_FAULTS", "ApiError", "WeChatState", "today"]

SHANGHAI = ZoneInfo("Asia/Shanghai")

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


class ApiError(Exception):
    def __init__(self, code: int, errmsg: str) -> None:
        super().__init__(errmsg)
        self.code, self.errmsg = code, errmsg


def today() -> date:
    return datetime.now(SHANGHAI).date()


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
        key = f"{today().isoformat()} {endpoint}"
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
            "published_at": time.time(), "ref_date": today().isoformat(), "is_deleted": False,
        }
        publish["article_id"] = article_id

    # Inspection -------------------------------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        """What GET /_standin/state shows: everything but image bytes (their sizes instead)."""
        return {
            "faults": self.faults, "tokens_issued": self.tokens_issued, "calls": self.calls,
            "images": {name: {"type": i["type"], "bytes": len(i["bytes"]), "use": i["use"]}
                       for name, i in self.images.items()},
            "materials": self.materials,
            "drafts": list(self.drafts.values()),
            "publishes": [{k: v for k, v in p.items() if k != "draft"} | {"title": p["draft"]["articles"][0]["title"]}
                          for p in self.publishes.values()],
            "articles": [{k: v for k, v in a.items()} for a in self.articles.values()],
        }
