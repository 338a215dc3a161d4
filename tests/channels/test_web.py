"""The web channel against real files, a real HTTP server on 127.0.0.1 and real feed/XML parsers."""

from __future__ import annotations

import hashlib
import threading
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import feedparser
import pytest
import requests

from publishers.base import Receipt, Release
from publishers.web.channel import WebPublisher, refresh
from publishers.web.preview import render_preview
from publishers.web.records import article_url
from rongmei.core.errors import PublishError
from rongmei.core.settings import Settings
from tests.channels.support import Blobs, Clock, jpeg
from tests.channels.support import make_release as support_release
from tests.support.waiting import ANSWER_TIMEOUT

T0 = datetime(2026, 11, 3, 8, 0, tzinfo=UTC)
SITEMAP_NS = {"s": "http://www.sitemaps.org/schemas/sitemap/0.9"}


def make_release(blobs: Blobs, item_id: str = "harvest", **kw: Any) -> Release:
    """An article as the web tests know it: their own title, author and summary."""
    meta = {"title": f"{item_id} 标题", "author": "张晓梅", "summary": "摘要。", **kw}
    return support_release(blobs, item_id, **meta)


@pytest.fixture
def clock() -> Clock:  # the web tests' own moment, not the playlists'
    return Clock(T0)


@pytest.fixture
def web(settings: Settings, clock: Clock) -> WebPublisher:
    return WebPublisher(settings, now=clock)


class QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


def get_text(url: str) -> tuple[int, str]:
    """Status and UTF-8 body (the stdlib server sends no charset; our pages declare UTF-8 in <meta>)."""
    response = requests.get(url, timeout=ANSWER_TIMEOUT)
    return response.status_code, response.content.decode("utf-8")


@pytest.fixture
def site(settings: Settings) -> Iterator[str]:
    """The site directory served over real HTTP on an ephemeral port."""
    settings.site_dir.mkdir(parents=True, exist_ok=True)
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(QuietHandler, directory=str(settings.site_dir)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def read(settings: Settings, key: str) -> str:
    return (settings.site_dir / key).read_text(encoding="utf-8")


def feed_links(settings: Settings) -> list[str]:
    return [entry.link for entry in feedparser.parse(read(settings, "feed.xml")).entries]


def sitemap_locs(settings: Settings) -> list[str]:
    root = ET.fromstring((settings.site_dir / "sitemap.xml").read_bytes())
    return [loc.text or "" for loc in root.findall("s:url/s:loc", SITEMAP_NS)]


def test_publish_builds_index_article_tags_feed_and_sitemap(web: WebPublisher, blobs: Blobs, settings: Settings,
                                                            site: str) -> None:
    image = jpeg()
    release = make_release(blobs, body="金秋时节。\n\n![玉米地](images/field.jpg)\n\n## 科技助力\n\n- 玉米\n- 大豆\n",
                           files={"images/field.jpg": image}, tags=["农业", "乡村振兴"])
    receipt = web.publish(release)

    assert receipt.url == "http://127.0.0.1:8800/articles/harvest/" and receipt.remote_id == "harvest"
    status, page = get_text(f"{site}/articles/harvest/")
    assert status == 200 and "harvest 标题" in page and "<h2" in page
    sha = hashlib.sha256(image).hexdigest()
    assert f'src="../../media/{sha}.jpg"' in page and "images/field.jpg" not in page
    served = requests.get(f"{site}/media/{sha}.jpg", timeout=ANSWER_TIMEOUT)
    assert served.status_code == 200 and served.content == image
    assert requests.get(f"{site}/static/site.css", timeout=ANSWER_TIMEOUT).status_code == 200

    index = get_text(f"{site}/")[1]
    assert 'href="articles/harvest/"' in index and "harvest 标题" in index
    status, tag_page = get_text(f"{site}/tags/%E5%86%9C%E4%B8%9A/")  # /tags/农业/
    assert status == 200 and "harvest 标题" in tag_page and "标签：农业" in tag_page

    feed = feedparser.parse(requests.get(f"{site}/feed.xml", timeout=ANSWER_TIMEOUT).content)
    assert not feed.bozo and feed.feed.title == settings.center_name
    assert [(e.title, e.link) for e in feed.entries] == [("harvest 标题", "http://127.0.0.1:8800/articles/harvest/")]
    assert sitemap_locs(settings) == ["http://127.0.0.1:8800/", "http://127.0.0.1:8800/articles/harvest/"]


def test_index_is_newest_first_and_paginates_beyond_fifty(web: WebPublisher, blobs: Blobs, settings: Settings,
                                                         clock: Clock) -> None:
    for n in range(51):
        web.publish(make_release(blobs, f"item-{n:02d}"))
        clock.advance(minutes=1)
    first = read(settings, "index.html")
    assert first.index("item-50 标题") < first.index("item-49 标题") and "item-00 标题" not in first
    assert "item-00 标题" in read(settings, "page/2/index.html") and 'href="page/2/"' in first

    web.retract("item-49", Receipt(), "测试")
    assert not (settings.site_dir / "page/2/index.html").exists()  # 50 left: one page, the stale one is gone
    assert "item-00 标题" in read(settings, "index.html")


def test_script_event_handlers_and_javascript_urls_are_stripped(web: WebPublisher, blobs: Blobs,
                                                                settings: Settings) -> None:
    body = ('正文<script>alert("x")</script>\n\n<img src="x.jpg" onerror="alert(1)">\n\n'
            '[点我](javascript:alert(2)) <a href="JaVaScRiPt:alert(3)" onclick="alert(4)">再点</a>\n\n'
            '<p onmouseover="alert(5)" style="color:red">段落</p>\n\n<iframe src="http://evil.example"></iframe>\n')
    web.publish(make_release(blobs, body=body))
    page = read(settings, "articles/harvest/index.html").lower()
    for bad in ("<script>alert", "onerror", "onclick", "onmouseover", "javascript:", "<iframe", "alert("):
        assert bad not in page, bad
    assert "段落" in page and "再点" in page


def test_reprint_names_its_source_and_video_and_audio_get_players(web: WebPublisher, blobs: Blobs,
                                                                  settings: Settings) -> None:
    video = b"\x00\x00\x00\x18ftypmp42 tiny"
    web.publish(make_release(blobs, "clip", kind="video", source="内蒙古日报",
                             source_url="https://example.org/a/1", files={"cover.jpg": jpeg("blue")},
                             renditions={"video_web": (video, "video/mp4")}))
    page = read(settings, "articles/clip/index.html")
    assert '来源：<a href="https://example.org/a/1"' in page and "内蒙古日报" in page
    sha = hashlib.sha256(video).hexdigest()
    assert '<video class="player" controls' in page and f'src="../../media/{sha}.mp4"' in page
    assert (settings.site_dir / f"media/{sha}.mp4").read_bytes() == video

    web.publish(make_release(blobs, "broadcast", kind="audio", source_url="javascript:alert(1)",
                             files={"audio.mp3": b"ID3 tiny"}))
    page = read(settings, "articles/broadcast/index.html")
    assert "<audio" in page and "javascript:" not in page


def test_writes_are_atomic_while_a_reader_reads(web: WebPublisher, blobs: Blobs, settings: Settings) -> None:
    web.publish(make_release(blobs, "first"))
    index = settings.site_dir / "index.html"
    seen: list[str] = []
    stop = threading.Event()

    def reader() -> None:
        while not stop.is_set():
            seen.append(index.read_text(encoding="utf-8"))

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for n in range(50):
            web.publish(make_release(blobs, "first", version=n + 2, body=f"第{n}版。" * 200))
    finally:
        stop.set()
        thread.join()
    assert len(seen) > 50
    incomplete = [text for text in seen if not (text.startswith("<!doctype html>") and
                                                text.rstrip().endswith("</html>"))]
    assert incomplete == []
    assert [p for p in settings.site_dir.rglob("*") if p.name.startswith(".tmp-")] == []
    assert [p for p in (settings.data_dir / "channels").rglob(".tmp-*")] == []


def test_update_shows_a_correction_note_at_the_same_url(web: WebPublisher, blobs: Blobs, settings: Settings,
                                                        clock: Clock) -> None:
    first = web.publish(make_release(blobs, body="产量达12.5万吨。"))
    clock.advance(hours=2)
    second = web.update(make_release(blobs, version=2, body="产量达12.8万吨。",
                                     extra={"correction_note": "原文产量数据有误，已更正为12.8万吨。"}), first)
    assert second.url == first.url
    page = read(settings, "articles/harvest/index.html")
    assert "更正" in page and "原文产量数据有误，已更正为12.8万吨。" in page
    assert "12.8万吨" in page and "12.5万吨" not in page

    clock.advance(hours=1)
    web.update(make_release(blobs, version=3, body="产量达12.9万吨。"), second)
    page = read(settings, "articles/harvest/index.html")
    assert "本文已于2026年11月03日 19:00更正" in page  # default note with the local (Asia/Shanghai) time
    assert page.count('class="flag correction"') == 2
    assert feed_links(settings) == [first.url]  # corrected, not duplicated


def test_retraction_leaves_a_notice_and_leaves_index_tags_feed_and_sitemap(
        web: WebPublisher, blobs: Blobs, settings: Settings, site: str) -> None:
    web.publish(make_release(blobs, "keep", tags=["农业"]))
    receipt = web.publish(make_release(blobs, "wrong", body="有误的正文内容。", tags=["农业", "独有"]))
    assert (settings.site_dir / "tags/独有/index.html").exists()

    web.retract("wrong", receipt, "数据来源未经核实")
    status, page = get_text(f"{site}/articles/wrong/")
    assert status == 200
    assert "撤稿说明" in page and "数据来源未经核实" in page and "有误的正文内容" not in page
    assert "articles/wrong/" not in read(settings, "index.html") and "articles/keep/" in read(settings, "index.html")
    assert "wrong 标题" not in read(settings, "tags/农业/index.html")
    assert not (settings.site_dir / "tags/独有/index.html").exists()
    assert feed_links(settings) == [article_url(settings, "keep")]
    assert article_url(settings, "wrong") not in sitemap_locs(settings)

    refresh(settings, now=T0 + timedelta(days=1))  # a later rebuild must not bring it back
    assert "articles/wrong/" not in read(settings, "index.html")
    assert "撤稿说明" in read(settings, "articles/wrong/index.html")


def test_expired_items_leave_the_index_but_the_page_stays_marked(web: WebPublisher, blobs: Blobs,
                                                                 settings: Settings, clock: Clock) -> None:
    expires = T0 + timedelta(hours=6)
    web.publish(make_release(blobs, "heating", tags=["通知"], expires=expires.isoformat()))
    web.publish(make_release(blobs, "other"))
    assert "articles/heating/" in read(settings, "index.html")
    assert "已过期" not in read(settings, "articles/heating/index.html")

    refresh(settings, now=expires - timedelta(minutes=1))
    assert "articles/heating/" in read(settings, "index.html")

    refresh(settings, now=expires + timedelta(minutes=1))
    assert "articles/heating/" not in read(settings, "index.html")
    assert article_url(settings, "heating") not in feed_links(settings)
    assert not (settings.site_dir / "tags/通知/index.html").exists()
    page = read(settings, "articles/heating/index.html")
    assert "已过期" in page and "heating 标题" in page and "正文" in page


def test_preview_is_private_self_contained_and_not_indexed(blobs: Blobs, settings: Settings) -> None:
    image = jpeg("green")
    release = make_release(blobs, "draft", body="![图](a.jpg)", files={"a.jpg": image})
    path = render_preview(release, settings, "tok_ABCdef-123456")

    assert path == "/preview/tok_ABCdef-123456/"
    folder = settings.data_dir / "preview" / "tok_ABCdef-123456"
    page = (folder / "index.html").read_text(encoding="utf-8")
    assert "预览 · 未发布" in page and 'name="robots" content="noindex' in page
    sha = hashlib.sha256(image).hexdigest()
    assert f'src="media/{sha}.jpg"' in page and (folder / f"media/{sha}.jpg").read_bytes() == image
    assert (folder / "static/site.css").is_file()
    assert not (settings.site_dir / "index.html").exists() or "draft" not in read(settings, "index.html")
    assert not (settings.site_dir / "articles/draft").exists()
    with pytest.raises(PublishError):
        render_preview(release, settings, "../../etc")
