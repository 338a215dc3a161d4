"""Talking to an upstream server: a conditional GET of a feed, bounded in time and size, and parsing what came
back with the encoding the document declares. Every failure is a `FeedFetchError` worded for the desk.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import feedparser
import requests

from rongmei.core.errors import RongmeiError

__all__ = [
    "CONNECT_TIMEOUT", "MAX_FEED_BYTES", "READ_TIMEOUT", "USER_AGENT", "XML_ENCODING_DECL", "FeedFetchError",
    "Fetched", "fetch", "parse", "short_reason"
]

USER_AGENT = "rongmei-feeds/0.1 (RSS/Atom reprint ingest of a county media center; conditional GET)"
CONNECT_TIMEOUT = 5.0
READ_TIMEOUT = 20.0
MAX_FEED_BYTES = 10 * 1024 * 1024  # a feed bigger than this is a misconfigured URL, not a feed
XML_ENCODING_DECL = re.compile(rb"^(?:\xef\xbb\xbf)?\s*<\?xml[^>]*\bencoding\s*=\s*[\"']([A-Za-z0-9_.:-]+)[\"']")


class FeedFetchError(RongmeiError):
    """Raised when a feed cannot be fetched (the source's health records why; the next pull tries again)."""

    def __init__(self, message: str, *, http_status: int = 0) -> None:
        super().__init__(message)
        self.http_status = http_status



@dataclass
class Fetched:
    status: int
    url: str
    content: bytes = b""
    content_type: str = ""
    etag: str = ""
    last_modified: str = ""


def fetch(url: str, etag: str = "", last_modified: str = "", *, timeout: float = READ_TIMEOUT) -> Fetched:
    """GET the feed, conditionally when we hold validators; 304 comes back as a Fetched with no content."""
    headers = {
        "User-Agent": USER_AGENT,
        "Accept": "application/rss+xml, application/atom+xml, application/xml;q=0.9, text/xml;q=0.8, */*;q=0.5",
    }
    if etag:
        headers["If-None-Match"] = etag
    if last_modified:
        headers["If-Modified-Since"] = last_modified
    try:
        with requests.get(url, headers=headers, timeout=(CONNECT_TIMEOUT, timeout), stream=True) as response:
            if response.status_code == 304:
                return Fetched(304, response.url, etag=etag, last_modified=last_modified)
            if response.status_code >= 400:
                raise FeedFetchError(
                    f"源站返回 HTTP {response.status_code}（{response.reason}）：{url}；请确认订阅地址仍然有效。",
                    http_status=response.status_code,
                )
            body = bytearray()
            for chunk in response.iter_content(64 * 1024):
                body += chunk
                if len(body) > MAX_FEED_BYTES:
                    raise FeedFetchError(f"订阅源超过 {MAX_FEED_BYTES // 1024 // 1024} MB，不像是 RSS/Atom：{url}")
            return Fetched(
                response.status_code,
                response.url,
                bytes(body),
                response.headers.get("Content-Type", ""),
                response.headers.get("ETag", ""),
                response.headers.get("Last-Modified", ""),
            )
    except requests.Timeout as exc:
        raise FeedFetchError(f"连接源站超时（{timeout:g} 秒内无响应）：{url}（{exc.__class__.__name__}）") from exc
    except requests.ConnectionError as exc:
        # requests nests the reason deep in its message; the errno text ("Connection refused") is what helps.
        reason = re.search(r"\[Errno -?\d+\] [^'\")]+", str(exc))
        raise FeedFetchError(
            f"无法连接源站：{url}（{reason.group(0) if reason else short_reason(exc)}）；请确认地址和网络，下次抓取会重试。"
        ) from exc
    except requests.RequestException as exc:
        raise FeedFetchError(f"抓取失败：{url}（{short_reason(exc)}）") from exc


def short_reason(exc: BaseException) -> str:
    text = str(exc)
    return text if len(text) <= 200 else text[:197] + "..."


def parse(fetched: Fetched) -> feedparser.FeedParserDict:
    """Parse the raw bytes, so an encoding declared in the XML prolog (GB2312, GBK…) is honoured."""
    declared = XML_ENCODING_DECL.match(fetched.content[:200])
    # Chinese sites often send `text/xml` (RFC 3023: us-ascii) or a wrong charset next to a correct prolog;
    # when the document names its encoding, let that decide. The header's charset counts only otherwise.
    content_type = "application/xml" if declared or not fetched.content_type else fetched.content_type
    return feedparser.parse(
        fetched.content,
        response_headers={"content-location": fetched.url, "content-type": content_type},
        resolve_relative_uris=True,
        sanitize_html=True,
    )


