"""The distribution server over real HTTP on an ephemeral port: ETag/304, ranges, types, traversal, previews."""

from __future__ import annotations

import hashlib
import json
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from rongmei.core.settings import Settings
from rongmei.distribution.accesslog import is_page_view
from rongmei.distribution.server import RunningServer, serve_in_thread
from rongmei.targets.base import CACHE_MEDIA
from rongmei.targets.directory import DirectoryTarget
from tests.support.waiting import ANSWER_TIMEOUT, wait_until

MEDIA = bytes(range(256)) * 2048  # 512 KiB: above the in-memory threshold, so it streams from disk
MEDIA_KEY = f"media/{hashlib.sha256(MEDIA).hexdigest()}.mp3"
MANIFEST = {"manifest_version": 1, "files": []}
PREVIEW_TOKEN = "Zk3v9QpL2mWx8rTb5nYc1dHf"


@pytest.fixture
def server(settings: Settings) -> Iterator[RunningServer]:
    site = DirectoryTarget(settings.site_dir)
    site.write_text("index.html", "<!doctype html><title>首页</title>")
    site.write_text("articles/a1/index.html", "<!doctype html><title>文章一</title>")
    site.write_text("tags/乡村振兴/index.html", "<!doctype html><title>乡村振兴</title>")
    site.write_text("feed.xml", "<?xml version='1.0'?><rss/>")
    site.write_text("screens/hall/manifest.json", json.dumps(MANIFEST))
    site.write_text("screens/hall/player.html", "<!doctype html><title>player</title>")
    site.write_text("loudspeakers/150102001001/playlist.m3u8", "#EXTM3U\n")
    site.write_bytes(MEDIA_KEY, MEDIA)
    (settings.site_dir / "screens" / "hall" / ".tmp-half").write_text("{half")
    preview = settings.data_dir / "preview" / PREVIEW_TOKEN
    preview.mkdir(parents=True)
    (preview / "index.html").write_text("<!doctype html><title>预览</title>", encoding="utf-8")
    (settings.data_dir / "secret.txt").write_text("do not serve")
    running = serve_in_thread(settings, port=0)
    yield running
    running.stop()


def raw_get(server: RunningServer, target: str) -> int:
    """Send a request line exactly as given (HTTP clients normalise `..` away before sending)."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=ANSWER_TIMEOUT) as conn:
        conn.sendall(f"GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        answer = b""
        while chunk := conn.recv(65536):
            answer += chunk
    return int(answer.split(b" ", 2)[1])


def read_log(settings: Settings, expected: int) -> list[dict]:
    path = settings.data_dir / "logs" / "access.jsonl"

    def logged() -> list[dict] | None:
        lines = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()] if path.exists() else []
        return lines if len(lines) >= expected else None

    return wait_until(logged, message=f"access log has fewer than {expected} lines")


def test_manifest_etag_then_304_and_new_etag_after_atomic_replace(server, settings):
    url = f"{server.url}/screens/hall/manifest.json"
    first = requests.get(url)
    assert first.status_code == 200 and first.json() == MANIFEST
    assert first.headers["content-type"] == "application/json; charset=utf-8"
    assert first.headers["cache-control"] == "no-cache"
    etag = first.headers["etag"]
    assert etag.startswith('"') and not etag.startswith("W/")

    again = requests.get(url, headers={"If-None-Match": etag})
    assert again.status_code == 304 and again.content == b"" and again.headers["etag"] == etag

    # Same bytes rewritten (a publisher rebuild with nothing new): still 304 for every terminal.
    DirectoryTarget(settings.site_dir).write_text("screens/hall/manifest.json", json.dumps(MANIFEST))
    assert requests.get(url, headers={"If-None-Match": etag}).status_code == 304

    DirectoryTarget(settings.site_dir).write_text("screens/hall/manifest.json", json.dumps({"manifest_version": 2}))
    changed = requests.get(url, headers={"If-None-Match": etag})
    assert changed.status_code == 200 and changed.json() == {"manifest_version": 2}
    assert changed.headers["etag"] != etag


def test_content_types_and_pages(server):
    expected = {
        "/": "text/html; charset=utf-8",
        "/articles/a1/": "text/html; charset=utf-8",
        "/feed.xml": "application/xml; charset=utf-8",
        "/screens/hall/player.html": "text/html; charset=utf-8",
        "/loudspeakers/150102001001/playlist.m3u8": "application/vnd.apple.mpegurl",
        f"/{MEDIA_KEY}": "audio/mpeg",
    }
    for path, ctype in expected.items():
        answer = requests.get(server.url + path)
        assert answer.status_code == 200, path
        assert answer.headers["content-type"] == ctype, path
    assert "文章一" in requests.get(f"{server.url}/articles/a1/").text
    redirect = requests.get(f"{server.url}/articles/a1", allow_redirects=False)
    assert redirect.status_code == 301 and redirect.headers["location"] == "/articles/a1/"
    tag = requests.get(f"{server.url}/tags/乡村振兴")
    assert tag.status_code == 200 and "乡村振兴" in tag.text and tag.url.endswith("/")
    # No directory listing, no 405 surprises.
    assert requests.get(f"{server.url}/articles/").status_code == 404
    assert requests.get(f"{server.url}/media/").status_code == 404
    assert requests.delete(f"{server.url}/feed.xml").status_code == 405
    head = requests.head(f"{server.url}/{MEDIA_KEY}")
    assert head.status_code == 200 and head.content == b"" and int(head.headers["content-length"]) == len(MEDIA)


def test_media_ranges(server):
    url = f"{server.url}/{MEDIA_KEY}"
    full = requests.get(url)
    assert full.content == MEDIA
    assert full.headers["cache-control"] == CACHE_MEDIA == "public, max-age=3600"
    assert full.headers["accept-ranges"] == "bytes"

    part = requests.get(url, headers={"Range": "bytes=1000-1999"})
    assert part.status_code == 206 and part.content == MEDIA[1000:2000]
    assert part.headers["content-range"] == f"bytes 1000-1999/{len(MEDIA)}"

    tail = requests.get(url, headers={"Range": "bytes=-100"})
    assert tail.status_code == 206 and tail.content == MEDIA[-100:]
    open_end = requests.get(url, headers={"Range": f"bytes={len(MEDIA) - 10}-"})
    assert open_end.status_code == 206 and open_end.content == MEDIA[-10:]

    beyond = requests.get(url, headers={"Range": f"bytes={len(MEDIA)}-"})
    assert beyond.status_code == 416 and beyond.headers["content-range"] == f"bytes */{len(MEDIA)}"

    # A resumed download whose file changed meanwhile gets the whole new file, not a spliced one.
    stale = requests.get(url, headers={"Range": "bytes=0-9", "If-Range": '"stale"'})
    assert stale.status_code == 200 and stale.content == MEDIA
    fresh = requests.get(url, headers={"Range": "bytes=0-9", "If-Range": full.headers["etag"]})
    assert fresh.status_code == 206 and fresh.content == MEDIA[:10]

    small = requests.get(f"{server.url}/feed.xml", headers={"Range": "bytes=0-4"})
    assert small.status_code == 206 and small.content == b"<?xml"


@pytest.mark.parametrize(
    "target",
    ["/../secret.txt", "/media/../../secret.txt", "/%2e%2e/secret.txt", "/media/%2E%2E/%2e%2e/secret.txt",
     "/media/..%2f..%2fsecret.txt", "/preview/..%2f..%2fsecret.txt", "/screens/hall/.tmp-half",
     "/..\\secret.txt", "/feed.xml%00.html"],
)
def test_traversal_never_leaves_the_root(server, target):
    assert raw_get(server, target) in (400, 404)


def test_symlink_out_of_root_is_not_followed(server, settings):
    (settings.site_dir / "escape.txt").symlink_to(settings.data_dir / "secret.txt")
    assert raw_get(server, "/escape.txt") == 404


def test_preview_served_privately_and_not_counted(server, settings):
    answer = requests.get(f"{server.url}/preview/{PREVIEW_TOKEN}/", headers={"User-Agent": "Mozilla/5.0"})
    assert answer.status_code == 200 and "预览" in answer.text
    assert answer.headers["cache-control"] == "private, no-store"
    assert requests.get(f"{server.url}/preview/wrong-token-0000000000/").status_code == 404
    requests.get(f"{server.url}/articles/a1/", headers={"User-Agent": "Mozilla/5.0"})
    requests.get(f"{server.url}/articles/a1/", headers={"User-Agent": "Googlebot/2.1"})
    requests.get(f"{server.url}/screens/hall/manifest.json", headers={"X-Terminal-Id": "hall-1"})

    entries = read_log(settings, 5)
    assert all(PREVIEW_TOKEN not in json.dumps(e) for e in entries), "the preview token leaked into the log"
    views = [e for e in entries if is_page_view(e)]
    assert [e["path"] for e in views] == ["/articles/a1/"]
    preview = entries[0]
    assert preview["kind"] == "preview" and preview["status"] == 200 and preview["bytes"] > 0
    poll = entries[-1]
    assert poll["terminal"] == "hall-1" and poll["kind"] == "terminal"
    assert {"time", "path", "status", "bytes", "ua", "terminal"} <= set(poll)


def test_stop_flushes_the_log_and_frees_the_port(settings):
    DirectoryTarget(settings.site_dir).write_text("index.html", "hi")
    running = serve_in_thread(settings, port=0)
    assert requests.get(running.url + "/").status_code == 200
    running.stop()
    log_file: Path = settings.data_dir / "logs" / "access.jsonl"
    assert log_file.read_text().count("\n") == 1  # flushed on shutdown, not lost in the buffer
    with pytest.raises(requests.ConnectionError):
        requests.get(running.url + "/", timeout=2)
