"""A small client for the WeChat Official Account API (公众号), written with requests (issue 4).

No SDK: the stable wechatpy release lacks draft/freepublish and stable_token. Facts and error codes come from
`shared/reference/wechat-api.md`. Every call has a timeout; JSON goes out as UTF-8 with `ensure_ascii=False`
(WeChat rejects `\\uXXXX` escapes with 40033); uploads use the multipart field `media`.

Errors are mapped where they enter: each WeChat errcode becomes a `WeChatError` subclass of
`rongmei.core.errors.PublishError` whose message says, in Chinese, what happened and what to do. Only token
errors are retried here (once, after a refresh); nothing else is retried blindly.
"""

from __future__ import annotations

import fcntl
import json
import logging
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any, ClassVar

import requests

from publishers.wechat.config import WeChatSettings
from rongmei.core.errors import ConfigError, PublishError

__all__ = [
    "REFRESH_MARGIN", "TOKEN_ERRORS", "ArticleStats", "DailyBudget", "TokenCache", "WeChatClient",
    "WeChatContentError", "WeChatError", "WeChatIpNotWhitelisted", "WeChatLimitError", "WeChatMediaError",
    "WeChatPublishFailed", "WeChatQuotaExceeded", "WeChatTokenError", "WeChatTooFrequent",
    "WeChatUnauthorized", "error_for", "file_lock"
]
log = logging.getLogger(__name__)

TOKEN_ERRORS = frozenset({40001, 40014, 42001})  # invalid / expired access_token: refresh once and retry
REFRESH_MARGIN = 300.0  # seconds: refresh a cached token this long before WeChat says it expires


# Errors ------------------------------------------------------------------------------------------------
class WeChatError(PublishError):
    """Raised when the WeChat API answers with an errcode (or cannot be reached).

    `code` is WeChat's errcode (0 when the error is ours), `state` is the delivery state the publish flow
    should store ("failed" or "unconfirmed"), `details` what the next attempt needs (media_id, publish_id…).
    """

    hint: ClassVar[str] = ""

    def __init__(self, message: str, *, code: int = 0, errmsg: str = "", retryable: bool = False,
                 state: str = "failed", details: dict[str, Any] | None = None) -> None:
        super().__init__(message, retryable=retryable, state=state, details=details)
        self.code = code
        self.errmsg = errmsg


class WeChatTokenError(WeChatError):
    """Raised when no valid access_token can be obtained (wrong AppSecret, frozen secret, token refused twice)."""


class WeChatIpNotWhitelisted(WeChatError):
    """Raised on 40164: the calling IP is not on the account's API IP whitelist."""

    def __init__(self, errmsg: str, *, code: int = 40164) -> None:
        found = re.search(r"invalid ip ([0-9A-Fa-f.:]+)", errmsg)
        ip = found.group(1) if found else "（见 errmsg）"
        super().__init__(
            f"微信拒绝了本机的 IP {ip}（40164）：请技术人员在 mp.weixin.qq.com → 设置与开发 → 基本配置 → "
            f"IP 白名单 中加入 {ip}，再重新发布。原始信息：{errmsg}",
            code=code, errmsg=errmsg,
        )
        self.ip = ip


class WeChatUnauthorized(WeChatError):
    """Raised on 48001: the account has no right to this API (since 2025-07 unverified accounts cannot publish)."""


class WeChatQuotaExceeded(WeChatError):
    """Raised on 45009 (daily quota) and 45011 (per-minute frequency): waiting is the only cure."""


class WeChatTooFrequent(WeChatError):
    """Raised on 53501: publishing too often."""


class WeChatLimitError(WeChatError):
    """Raised on 45003/45004/45110/45002/44003: a field is too long or empty."""


class WeChatMediaError(WeChatError):
    """Raised on 40005/40009/41005/40007: an image or media id WeChat does not accept."""


class WeChatContentError(WeChatError):
    """Raised on 40033/47001/45166/53503: the content or its encoding was refused."""


class WeChatPublishFailed(WeChatError):
    """Raised when freepublish/get reports status 2/3/4/6: the article was not published."""


_ERRORS: dict[int, tuple[type[WeChatError], str]] = {
    40125: (WeChatTokenError, "AppSecret 不正确，请核对配置中的 wechat.app_secret"),
    40013: (WeChatTokenError, "AppID 不正确，请核对配置中的 wechat.app_id"),
    40243: (WeChatTokenError, "AppSecret 已被冻结，请管理员在公众号后台解冻或重置"),
    48001: (WeChatUnauthorized, "公众号没有该接口权限（未认证或个人号不能调用发表接口）"),
    45009: (WeChatQuotaExceeded, "接口今日调用次数已用完，请明天再试"),
    45011: (WeChatQuotaExceeded, "接口调用太频繁，请一分钟后再试"),
    53501: (WeChatTooFrequent, "发表太频繁，请稍后再试"),
    45003: (WeChatLimitError, "标题太长，请缩短到 32 字以内"),
    45004: (WeChatLimitError, "摘要太长，请缩短到 120 字以内"),
    45110: (WeChatLimitError, "作者名太长，请缩短到 16 字以内"),
    45002: (WeChatLimitError, "正文太长（需少于 2 万字且小于 1 MB），请拆分文章"),
    44003: (WeChatLimitError, "图文内容为空"),
    40005: (WeChatMediaError, "图片类型不被接受（只接受 JPG/PNG），请转换格式"),
    40009: (WeChatMediaError, "图片太大，请压缩到 1 MB 以内"),
    41005: (WeChatMediaError, "上传缺少文件数据（multipart 字段 media）"),
    40007: (WeChatMediaError, "媒体 ID 无效（封面需用永久素材）"),
    40033: (WeChatContentError, "请求包含 \\uXXXX 转义字符，微信不接受"),
    47001: (WeChatContentError, "请求格式错误"),
    45166: (WeChatContentError, "正文内容不被接受，请检查特殊标签或链接"),
    53503: (WeChatContentError, "发表前检查未通过，请在公众号后台查看原因"),
}


def error_for(code: int, errmsg: str, path: str) -> WeChatError:
    """Map one errcode to our typed error, with a message that says what to do."""
    if code == 40164:
        return WeChatIpNotWhitelisted(errmsg, code=code)
    cls, what = _ERRORS.get(code, (WeChatError, "微信接口返回错误"))
    return cls(f"微信 {path} 失败：{what}（错误码 {code}：{errmsg}）", code=code, errmsg=errmsg)


# Shared state on disk ------------------------------------------------------------------------------
@contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An exclusive lock across the worker processes sharing one data_dir (one account, one token)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, ValueError):
        return {}


def _write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    tmp.chmod(0o600)  # the token is a credential
    tmp.replace(path)


class TokenCache:
    """stable_token results shared by every process of one data_dir: `wechat-token.json`, keyed by AppID."""

    def __init__(self, data_dir: Path) -> None:
        self.path = Path(data_dir) / "wechat-token.json"
        self.lock_path = Path(data_dir) / "wechat-token.lock"

    def get(self, app_id: str, now: float) -> str | None:
        entry = _read_json(self.path).get(app_id) or {}
        if entry.get("token") and float(entry.get("expires_at", 0)) - REFRESH_MARGIN > now:
            return str(entry["token"])
        return None

    def put(self, app_id: str, token: str, expires_at: float) -> None:
        data = _read_json(self.path)
        data[app_id] = {"token": token, "expires_at": expires_at}
        _write_json(self.path, data)

    def drop(self, app_id: str, token: str) -> None:
        data = _read_json(self.path)
        if (data.get(app_id) or {}).get("token") == token:
            del data[app_id]
            _write_json(self.path, data)


class DailyBudget:
    """Calls we allow ourselves per day and account (freepublish/get has 100/day for everything we do)."""

    def __init__(self, data_dir: Path, name: str, limit: int) -> None:
        self.path = Path(data_dir) / f"wechat-{name}-budget.json"
        self.lock_path = self.path.with_suffix(".lock")
        self.limit = limit

    def take(self, app_id: str, today: date | None = None) -> bool:
        """Count one call; False (and nothing counted) when today's budget is spent."""
        day = (today or date.today()).isoformat()
        with file_lock(self.lock_path):
            data = _read_json(self.path)
            counts = {k: v for k, v in (data.get(app_id) or {}).items() if k == day}  # forget other days
            if counts.get(day, 0) >= self.limit:
                return False
            counts[day] = counts.get(day, 0) + 1
            data[app_id] = counts
            _write_json(self.path, data)
            return True

    def used(self, app_id: str, today: date | None = None) -> int:
        day = (today or date.today()).isoformat()
        return int((_read_json(self.path).get(app_id) or {}).get(day, 0))


# Stats --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ArticleStats:
    """Totals for one published article (msgid = `<msg_data_id>_<index>`) over the asked date range."""

    msgid: str
    title: str
    url: str
    reads: int
    shares: int
    likes: int
    zaikan: int = 0
    comments: int = 0

    @property
    def msg_data_id(self) -> str:
        return self.msgid.rsplit("_", 1)[0]


# Client -------------------------------------------------------------------------------------------
class WeChatClient:
    """One account's API. Cheap to create; the token lives in the shared cache, not in the object."""

    def __init__(self, config: WeChatSettings, data_dir: Path, *, timeout: float = 20.0,
                 connect_timeout: float = 5.0, session: requests.Session | None = None) -> None:
        self.secret = config.secret(Path(data_dir) / "secrets")
        if not config.app_id or not self.secret:
            raise ConfigError("WeChat needs wechat.app_id and the AppSecret: `rongmei wechat set-secret`, or "
                              "RONGMEI_WECHAT__APP_SECRET in the environment (or run the local stand-in)")
        self.config = config
        self.app_id = config.app_id
        self.base_url = config.base_url.rstrip("/")
        self.timeout = (connect_timeout, timeout)
        self.session = session or requests.Session()
        self.tokens = TokenCache(data_dir)

    # Token ---------------------------------------------------------------------------------------
    def access_token(self, *, refresh_from: str | None = None) -> str:
        """A valid token from the shared cache, fetched with stable_token when missing or about to expire.

        `refresh_from` is a token WeChat just refused: it is dropped, and if stable_token hands the same one
        back, it is fetched again with force_refresh (which WeChat limits, so only then).
        """
        with file_lock(self.tokens.lock_path):
            if refresh_from:
                self.tokens.drop(self.app_id, refresh_from)
            cached = self.tokens.get(self.app_id, time.time())
            if cached:
                return cached
            token, expires_in = self._stable_token(force=False)
            if token == refresh_from:
                token, expires_in = self._stable_token(force=True)
            self.tokens.put(self.app_id, token, time.time() + expires_in)
            return token

    def _stable_token(self, *, force: bool) -> tuple[str, float]:
        body = {"grant_type": "client_credential", "appid": self.app_id,
                "secret": self.secret, "force_refresh": force}
        data = self._send("POST", "/cgi-bin/stable_token", data=_json_bytes(body),
                          headers={"Content-Type": "application/json; charset=utf-8"}, path="stable_token")
        self._raise_for(data, "stable_token")
        if not data.get("access_token"):
            raise WeChatTokenError(f"stable_token 没有返回 access_token：{_redact(data)}")
        return str(data["access_token"]), float(data.get("expires_in", 7200))

    # Transport -----------------------------------------------------------------------------------
    def call(self, path: str, body: dict[str, Any] | None = None, *, files: dict[str, Any] | None = None,
             params: dict[str, str] | None = None, timeout: float | None = None) -> dict[str, Any]:
        """POST one API call with the access token; on a token error refresh once and try again."""
        token = self.access_token()
        for attempt in (1, 2):
            query = {**(params or {}), "access_token": token}
            if files is not None:
                data = self._send("POST", path, params=query, files=files, timeout=timeout, path=path)
            else:
                data = self._send("POST", path, params=query, data=_json_bytes(body or {}), timeout=timeout,
                                  headers={"Content-Type": "application/json; charset=utf-8"}, path=path)
            code = int(data.get("errcode") or 0)
            if code in TOKEN_ERRORS and attempt == 1:
                log.info("wechat %s: token refused (%s), refreshing once", path, code)
                token = self.access_token(refresh_from=token)
                continue
            if code in TOKEN_ERRORS:
                raise WeChatTokenError(f"微信两次拒绝 access_token（错误码 {code}），请检查是否有其他系统在刷新同一公众号的令牌",
                                       code=code, errmsg=str(data.get("errmsg", "")))
            self._raise_for(data, path)
            return data
        raise AssertionError("unreachable")

    def _send(self, method: str, url_path: str, *, path: str, timeout: float | None = None,
              **kwargs: Any) -> dict[str, Any]:
        # Timeouts and connection errors propagate as requests exceptions: only the caller knows whether
        # the call was irreversible (freepublish/submit) and what a lost answer means.
        response = self.session.request(method, self.base_url + url_path,
                                        timeout=(self.timeout[0], timeout or self.timeout[1]), **kwargs)
        if response.status_code >= 500:
            raise WeChatError(f"微信 {path} 服务端错误 HTTP {response.status_code}，稍后重试", retryable=True)
        try:
            data = response.json()
        except ValueError as exc:
            raise WeChatError(f"微信 {path} 返回的不是 JSON（HTTP {response.status_code}）") from exc
        if not isinstance(data, dict):
            raise WeChatError(f"微信 {path} 返回了意外的内容：{str(data)[:200]}")
        return data

    @staticmethod
    def _raise_for(data: dict[str, Any], path: str) -> None:
        code = int(data.get("errcode") or 0)
        if code:
            raise error_for(code, str(data.get("errmsg", "")), path)

    # Media ---------------------------------------------------------------------------------------
    def upload_image(self, content: bytes, filename: str, mime: str) -> str:
        """media/uploadimg: an image for the article body (JPG/PNG < 1 MB) -> its mmbiz URL."""
        data = self.call("/cgi-bin/media/uploadimg", files={"media": (filename, content, mime)})
        return str(data["url"])

    def add_image_material(self, content: bytes, filename: str, mime: str) -> tuple[str, str]:
        """material/add_material type=image: a permanent image (the cover) -> (media_id, url)."""
        data = self.call("/cgi-bin/material/add_material", files={"media": (filename, content, mime)},
                         params={"type": "image"})
        return str(data["media_id"]), str(data.get("url", ""))

    # Drafts and publishing -----------------------------------------------------------------------
    def add_draft(self, article: dict[str, Any]) -> str:
        return str(self.call("/cgi-bin/draft/add", {"articles": [article]})["media_id"])

    def get_draft(self, media_id: str) -> dict[str, Any]:
        return self.call("/cgi-bin/draft/get", {"media_id": media_id})

    def delete_draft(self, media_id: str) -> None:
        self.call("/cgi-bin/draft/delete", {"media_id": media_id})

    def submit(self, media_id: str, *, timeout: float | None = None) -> dict[str, str]:
        """freepublish/submit: irreversible. Returns publish_id and msg_data_id as strings."""
        data = self.call("/cgi-bin/freepublish/submit", {"media_id": media_id}, timeout=timeout)
        # publish_id sometimes comes back as a number; big numbers must not lose digits in floats.
        return {"publish_id": str(data["publish_id"]), "msg_data_id": str(data.get("msg_data_id", ""))}

    def publish_status(self, publish_id: str) -> dict[str, Any]:
        return self.call("/cgi-bin/freepublish/get", {"publish_id": publish_id})

    def published(self, offset: int = 0, count: int = 20) -> dict[str, Any]:
        """freepublish/batchget without content (count <= 20)."""
        return self.call("/cgi-bin/freepublish/batchget",
                         {"offset": offset, "count": min(count, 20), "no_content": 1})

    def get_article(self, article_id: str) -> dict[str, Any]:
        return self.call("/cgi-bin/freepublish/getarticle", {"article_id": article_id})

    def delete_article(self, article_id: str, index: int = 0) -> None:
        """freepublish/delete: index 0 deletes the whole article group (10 calls a day)."""
        self.call("/cgi-bin/freepublish/delete", {"article_id": article_id, "index": index})

    # Stats (reach report, issue 7) ---------------------------------------------------------------
    def article_stats(self, begin_date: date, end_date: date) -> list[ArticleStats]:
        """Per-article totals from datacube/getarticletotaldetail (range <= 30 days, end <= yesterday)."""
        data = self.call("/datacube/getarticletotaldetail",
                         {"begin_date": begin_date.isoformat(), "end_date": end_date.isoformat()})
        totals: dict[str, ArticleStats] = {}
        for entry in data.get("list", []):
            msgid = str(entry.get("msgid", ""))
            days = entry.get("detail_list") or []
            # detail_list holds cumulative values per stat_date: the latest day is the total.
            last = max(days, key=lambda d: str(d.get("stat_date", "")), default={})
            totals[msgid] = ArticleStats(
                msgid=msgid, title=str(entry.get("title", "")), url=str(entry.get("content_url", "")),
                reads=int(last.get("read_user", 0)), shares=int(last.get("share_user", 0)),
                likes=int(last.get("like_user", 0)), zaikan=int(last.get("zaikan_user", 0)),
                comments=int(last.get("comment_count", 0)),
            )
        return list(totals.values())

    def daily_reads(self, day: date) -> list[dict[str, Any]]:
        """datacube/getarticleread for one day: [{msgid, title, read_user, read_count, ...}]."""
        data = self.call("/datacube/getarticleread", {"begin_date": day.isoformat(), "end_date": day.isoformat()})
        return list(data.get("list", []))


def _json_bytes(body: dict[str, Any]) -> bytes:
    return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def _redact(data: dict[str, Any]) -> dict[str, Any]:
    return {k: ("***" if "token" in k or "secret" in k else v) for k, v in data.items()}
