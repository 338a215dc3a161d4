"""The WeChat API endpoints of the stand-in, grouped as WeChat groups them: token, material and media upload,
draft, freepublish, datacube. Each takes one `Call` and returns the JSON answer or raises `ApiError` with
WeChat's code; the HTTP plumbing, the token check and the daily quota are standins.wechat.server's.
"""

from __future__ import annotations

import email.parser
import email.policy
import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

from standins.wechat.state import ApiError, WeChatState, today

__all__ = ["ROUTES", "Call", "json_object", "stable_token", "token"]

MB = 1024 * 1024
ESCAPED = re.compile(rb"\\u[0-9a-fA-F]{4}")
IMG_TAG = re.compile(r"<img\b[^>]*>", re.IGNORECASE)
SRC = re.compile(r"""\bsrc\s*=\s*["']([^"']*)["']""", re.IGNORECASE)
SCRIPT = re.compile(r"<script\b.*?</script\s*>", re.IGNORECASE | re.DOTALL)


@dataclass(frozen=True)
class Call:
    """One API request as an endpoint sees it."""

    state: WeChatState
    body: bytes
    query: dict[str, str]
    content_type: str  # the request's Content-Type header ("" when absent)
    base_url: str  # http://<Host header>: where the stand-in's own image and article URLs point


def json_object(raw: bytes) -> dict[str, Any]:
    """A request body as WeChat reads it: `\\uXXXX` escapes refused (40033), anything but an object 47001."""
    if ESCAPED.search(raw):
        raise ApiError(40033, "invalid charset. please check your request, if include \\uxxxx will create fail!")
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise ApiError(47001, "data format error") from exc
    if not isinstance(data, dict):
        raise ApiError(47001, "data format error")
    return data


# Token ------------------------------------------------------------------------------------------------
def token(state: WeChatState, query: dict[str, str]) -> dict[str, Any]:
    """GET /cgi-bin/token: the legacy call, which always issues a new token."""
    return state.issue_token(query.get("appid", ""), query.get("secret", ""), True)


def stable_token(state: WeChatState, body: dict[str, Any]) -> dict[str, Any]:
    """POST /cgi-bin/stable_token (its body read with `json_object`): the current token unless `force_refresh`."""
    return state.issue_token(str(body.get("appid", "")), str(body.get("secret", "")), bool(body.get("force_refresh")))


# Material and media upload ----------------------------------------------------------------------------
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


def _media(call: Call) -> bytes:
    content_type = call.content_type
    if not content_type.startswith("multipart/form-data"):
        raise ApiError(41005, "media data missing")
    message = email.parser.BytesParser(policy=email.policy.default).parsebytes(
        f"Content-Type: {content_type}\r\n\r\n".encode() + call.body)
    for part in message.iter_parts():
        if part.get_param("name", header="content-disposition") == "media":
            payload = part.get_payload(decode=True)
            if payload:
                return bytes(payload)
    raise ApiError(41005, "media data missing")


def _store_image(call: Call, data: bytes, kind: str, use: str) -> str:
    name = f"{call.state.next_id('img_')}.{kind}"
    call.state.images[name] = {"bytes": data, "type": kind, "use": use}
    return f"{call.base_url}/mmbiz/{name}"


def uploadimg(call: Call) -> dict[str, Any]:
    data = _media(call)
    kind = _image_type(data)
    if kind not in ("jpg", "png"):
        raise ApiError(40005, "invalid file type")
    if len(data) >= MB:
        raise ApiError(40009, "invalid image size")
    return {"url": _store_image(call, data, kind, "body")}


def add_material(call: Call) -> dict[str, Any]:
    media_type = call.query.get("type", "")
    if media_type not in ("image", "thumb"):
        raise ApiError(40004, "invalid media type")
    data = _media(call)
    kind = _image_type(data)
    allowed, limit = (("jpg",), 64 * 1024) if media_type == "thumb" else (("jpg", "png", "gif", "bmp"), 10 * MB)
    if kind not in allowed:
        raise ApiError(40005, "invalid file type")
    if len(data) > limit:
        raise ApiError(40009, "invalid image size")
    url = _store_image(call, data, kind, media_type)
    media_id = call.state.next_id("mat_")
    call.state.materials[media_id] = {"url": url, "type": media_type}
    return {"media_id": media_id, "url": url}


# Draft ------------------------------------------------------------------------------------------------
def draft_add(call: Call) -> dict[str, Any]:
    articles = json_object(call.body).get("articles") or []
    if not articles:
        raise ApiError(44003, "empty news data")
    stored = [_checked_article(call, article) for article in articles]
    media_id = call.state.next_id("draft_")
    call.state.drafts[media_id] = {"media_id": media_id, "articles": stored, "created_at": time.time()}
    return {"media_id": media_id}


def _checked_article(call: Call, article: dict[str, Any]) -> dict[str, Any]:
    title, content = str(article.get("title", "")), str(article.get("content", ""))
    if not title or not content:
        raise ApiError(44003, "empty news data")
    if len(title) > int(call.state.faults["title_limit"]):
        raise ApiError(45003, "title size out of limit")
    if len(str(article.get("author", ""))) > 16:
        raise ApiError(45110, "author size out of limit")
    if len(str(article.get("digest", ""))) > 128:
        raise ApiError(45004, "description size out of limit")
    if len(content) >= 20000 or len(content.encode("utf-8")) >= MB:
        raise ApiError(45002, "content size out of limit")
    thumb = str(article.get("thumb_media_id", ""))
    if thumb not in call.state.materials:
        raise ApiError(40007, "invalid media_id")
    # WeChat drops scripts and images that are not on its own servers.
    own = f"{call.base_url}/mmbiz/"
    content = SCRIPT.sub("", content)
    content = IMG_TAG.sub(lambda m: m.group(0) if (s := SRC.search(m.group(0))) and s.group(1).startswith(own)
                          else "", content)
    return {**article, "content": content, "thumb_url": call.state.materials[thumb]["url"]}


def draft_get(call: Call) -> dict[str, Any]:
    draft = call.state.drafts.get(str(json_object(call.body).get("media_id", "")))
    if draft is None:
        raise ApiError(40007, "invalid media_id")
    return {"news_item": draft["articles"]}


def draft_delete(call: Call) -> dict[str, Any]:
    if call.state.drafts.pop(str(json_object(call.body).get("media_id", "")), None) is None:
        raise ApiError(40007, "invalid media_id")
    return {"errcode": 0, "errmsg": "ok"}


# Freepublish ------------------------------------------------------------------------------------------
def submit(call: Call) -> tuple[dict[str, Any], float]:
    state = call.state
    draft = state.drafts.pop(str(json_object(call.body).get("media_id", "")), None)
    if draft is None:
        raise ApiError(40007, "invalid media_id")
    publish_id = str(2247483647 + next(state.ids))
    msg_data_id = str(2247480000 + next(state.ids))
    state.publishes[publish_id] = {
        "publish_id": publish_id, "msg_data_id": msg_data_id, "media_id": draft["media_id"], "draft": draft,
        "status": 1, "outcome": int(state.faults["publish_outcome"]), "gets": 0,
        "gets_needed": int(state.faults["publish_gets"]), "seconds_needed": float(state.faults["publish_seconds"]),
        "submitted_at": time.time(), "base_url": call.base_url,
    }
    # publish_id comes back as a number, as WeChat sometimes does: clients must not assume a string.
    return ({"errcode": 0, "errmsg": "ok", "publish_id": int(publish_id), "msg_data_id": msg_data_id},
            float(state.faults["submit_delay"]))


def publish_get(call: Call) -> dict[str, Any]:
    publish = call.state.publishes.get(str(json_object(call.body).get("publish_id", "")))
    if publish is None:
        raise ApiError(47003, "argument invalid! publish_id")
    publish["gets"] += 1
    call.state.advance(publish)
    answer: dict[str, Any] = {"publish_id": publish["publish_id"], "publish_status": publish["status"]}
    if publish.get("article_id"):
        article = call.state.articles[publish["article_id"]]
        answer["article_id"] = article["article_id"]
        answer["article_detail"] = {"count": 1, "item": [{"idx": 1, "article_url": article["url"]}]}
    if publish["status"] in (2, 3, 4, 6):
        answer["fail_idx"] = [1]
    return answer


def batchget(call: Call) -> dict[str, Any]:
    body = json_object(call.body)
    offset, count = int(body.get("offset", 0)), int(body.get("count", 20))
    if not 1 <= count <= 20:
        raise ApiError(40097, "invalid args: count must be 1-20")
    for publish in call.state.publishes.values():
        call.state.advance(publish)
    live = sorted((a for a in call.state.articles.values() if not a["is_deleted"]),
                  key=lambda a: a["published_at"], reverse=True)
    no_content = bool(body.get("no_content"))
    items = [{"article_id": a["article_id"], "update_time": int(a["published_at"]),
              "content": {"news_item": [_news_item(a, n, no_content) for n in a["news_item"]]}}
             for a in live[offset:offset + count]]
    return {"total_count": len(live), "item_count": len(items), "item": items}


def _news_item(article: dict[str, Any], item: dict[str, Any], no_content: bool = False) -> dict[str, Any]:
    news = {**item, "url": article["url"], "is_deleted": article["is_deleted"]}
    if no_content:
        news.pop("content", None)
    return news


def _article(call: Call) -> dict[str, Any]:
    article = call.state.articles.get(str(json_object(call.body).get("article_id", "")))
    if article is None:
        raise ApiError(53600, "Article ID 无效")
    return article


def getarticle(call: Call) -> dict[str, Any]:
    article = _article(call)
    return {"news_item": [_news_item(article, n) for n in article["news_item"]]}


def delete(call: Call) -> dict[str, Any]:
    article = _article(call)
    if article["is_deleted"]:
        raise ApiError(53600, "Article ID 无效")
    article["is_deleted"] = True
    call.state.publishes[article["publish_id"]]["status"] = 5
    return {"errcode": 0, "errmsg": "ok"}


# Datacube ---------------------------------------------------------------------------------------------
def _date_range(call: Call) -> tuple[date, date]:
    body = json_object(call.body)
    try:
        begin, end = date.fromisoformat(body["begin_date"]), date.fromisoformat(body["end_date"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ApiError(61500, "date format error") from exc
    if end < begin or end >= today() or end - begin > timedelta(days=30):
        raise ApiError(61501, "date range error")
    return begin, end


def totaldetail(call: Call) -> dict[str, Any]:
    begin, end = _date_range(call)
    rows = []
    for article in call.state.articles.values():
        if not begin.isoformat() <= article["ref_date"] <= end.isoformat():
            continue
        numbers = {"read_user": 0, "share_user": 0, "like_user": 0, "zaikan_user": 0, "comment_count": 0,
                   **call.state.stats.get(article["article_id"], {})}
        rows.append({"ref_date": article["ref_date"], "msgid": f"{article['msg_data_id']}_1", "publish_type": 1,
                     "title": article["news_item"][0]["title"], "content_url": article["url"],
                     "detail_list": [{"stat_date": end.isoformat(), **numbers}]})
    return {"list": rows, "is_delay": False}


def articleread(call: Call) -> dict[str, Any]:
    return {"list": [{"ref_date": r["ref_date"], "msgid": r["msgid"], "title": r["title"],
                      "read_user": r["detail_list"][0]["read_user"]}
                     for r in totaldetail(call)["list"]], "is_delay": False}


# The endpoints behind an access_token, by their path after /cgi-bin/ (the quota and error keys too).
ROUTES: dict[str, Callable[[Call], Any]] = {
    "media/uploadimg": uploadimg, "material/add_material": add_material,
    "draft/add": draft_add, "draft/get": draft_get,
    "draft/delete": draft_delete, "freepublish/submit": submit,
    "freepublish/get": publish_get, "freepublish/batchget": batchget,
    "freepublish/getarticle": getarticle, "freepublish/delete": delete,
    "datacube/getarticletotaldetail": totaldetail, "datacube/getarticleread": articleread,
}
