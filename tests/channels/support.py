"""Helpers shared by the channel tests (here, and the player, S3 and door tests); no tests in here.

Tiny real media (ffmpeg MP3, Pillow PNG and JPEG) in a blob directory, Releases built by hand from them, a
settable clock, the demo zone tree and screen groups, and the real distribution server in a thread.
"""

from __future__ import annotations

import hashlib
import subprocess
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import imageio_ffmpeg
from PIL import Image, ImageDraw
from sqlalchemy import select

from publishers.base import Release
from rongmei.core.model import SHANGHAI, ItemMeta
from rongmei.core.settings import ScreenGroup, Settings, Zone
from rongmei.distribution.server import serve_in_thread
from rongmei.storage.store import Store
from rongmei.storage.tables import Play

__all__ = [
    "BAOLIGE",
    "BAYAN",
    "COUNTY",
    "DEMO_GROUPS",
    "DEMO_ZONES",
    "HONGQI",
    "TEST_PLUGINS",
    "VILLAGES",
    "WULAN",
    "WULAN_GACHA",
    "XINHUA",
    "Blobs",
    "Clock",
    "Site",
    "at",
    "audio_rendition",
    "card_rendition",
    "channel_settings",
    "jpeg",
    "make_card",
    "make_mp3",
    "make_release",
    "running_site",
]

# The test plugins (tests/plugins/testchannels.py), registered as a center registers its own channels.
TEST_PLUGINS = {"flaky": "tests.plugins.testchannels:FlakyPublisher", "broken": "tests.plugins.testchannels:BrokenPublisher"}
COUNTY, BAYAN, HONGQI, XINHUA, WULAN, BAOLIGE, WULAN_GACHA = (
    "150121", "150121101", "150121101201", "150121101202", "150121102", "150121102201", "150121102202")
DEMO_ZONES = [
    Zone(code=COUNTY, name="示例旗"),
    Zone(code=BAYAN, name="巴彦镇", parent=COUNTY),
    Zone(code=HONGQI, name="红旗村", parent=BAYAN),
    Zone(code=XINHUA, name="新华村", parent=BAYAN),
    Zone(code=WULAN, name="乌兰苏木", parent=COUNTY),
    Zone(code=BAOLIGE, name="宝力格嘎查", parent=WULAN),
    Zone(code=WULAN_GACHA, name="乌兰嘎查", parent=WULAN),
]
VILLAGES = [HONGQI, XINHUA, BAOLIGE, WULAN_GACHA]
DEMO_GROUPS = [ScreenGroup(id="hall", name="政务服务大厅"), ScreenGroup(id="square", name="文化广场 LED 大屏")]


def channel_settings(settings: Settings, **changes: Any) -> Settings:
    return settings.model_copy(update={"zones": DEMO_ZONES, "screen_groups": DEMO_GROUPS, **changes})


class Clock:
    """An injected clock: tests move time instead of sleeping."""

    def __init__(self, start: datetime) -> None:
        self.moment = start

    def __call__(self) -> datetime:
        return self.moment

    def advance(self, **delta: float) -> datetime:
        self.moment += timedelta(**delta)
        return self.moment


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=SHANGHAI)


class Blobs:
    """A content-addressed blob directory, like the store's."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    def path(self, sha256: str) -> Path:
        return self.root / sha256

    def add(self, data: bytes) -> str:
        sha = hashlib.sha256(data).hexdigest()
        self.path(sha).write_bytes(data)
        return sha

    def put(self, data: bytes) -> dict[str, Any]:
        """Store `data`; its facts as a Release's `files` table has them."""
        return {"sha256": self.add(data), "bytes": len(data)}

    def put_file(self, path: Path) -> tuple[str, int]:
        """Store a file, as `Store.put_file` does for the rendition step."""
        data = Path(path).read_bytes()
        return self.add(data), len(data)


def make_mp3(seconds: float = 1.0, frequency: int = 440) -> bytes:
    """A short mono 64 kbit/s MP3 tone from the real ffmpeg."""
    result = subprocess.run(
        [imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-f", "lavfi", "-i",
         f"sine=frequency={frequency}:duration={seconds}", "-ac", "1", "-ar", "44100", "-b:a", "64k",
         "-f", "mp3", "pipe:1"],
        check=True, capture_output=True,
    )
    return result.stdout


def jpeg(color: str = "red", size: tuple[int, int] = (8, 6)) -> bytes:
    """A tiny real JPEG."""
    from io import BytesIO

    out = BytesIO()
    Image.new("RGB", size, color).save(out, "JPEG")
    return out.getvalue()


def make_card(text: str, color: tuple[int, int, int] = (20, 60, 140), size: tuple[int, int] = (192, 108)) -> bytes:
    """A small PNG standing in for a 1920×1080 screen card (the player scales it)."""
    from io import BytesIO

    image = Image.new("RGB", size, color)
    ImageDraw.Draw(image).text((10, 10), text, fill=(255, 255, 255))
    out = BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


def audio_rendition(blobs: Blobs, seconds: float = 1.0, frequency: int = 440) -> dict[str, Any]:
    data = make_mp3(seconds, frequency)
    return {"sha256": blobs.add(data), "bytes": len(data), "mime": "audio/mpeg", "duration_s": seconds,
            "integrated_lufs": -19.0, "true_peak_dbtp": -1.5, "channels": 1, "sample_rate": 44100, "kbps": 64}


def card_rendition(blobs: Blobs, text: str, color: tuple[int, int, int] = (20, 60, 140)) -> dict[str, Any]:
    data = make_card(text, color)
    return {"sha256": blobs.add(data), "bytes": len(data), "mime": "image/png", "width": 192, "height": 108}


def make_release(blobs: Blobs, item_id: str = "harvest", renditions: Mapping[str, Any] | None = None,
                 version: int = 1, *, body: str = "正文。", files: Mapping[str, bytes] | None = None,
                 extra: Mapping[str, Any] | None = None, **meta: Any) -> Release:
    """A Release as the publish flow builds it. `renditions`: key -> facts (`audio_rendition`, `card_rendition`,
    or the rendition step's manifest) or (bytes, mime); `files`: drop-relative name -> bytes; `meta`: front matter."""
    fields = {"id": item_id, "title": f"标题 {item_id}", "author": "编辑部", **meta}
    table = {key: ({**blobs.put(value[0]), "mime": value[1]} if isinstance(value, tuple) else dict(value))
             for key, value in (renditions or {}).items()}
    return Release(item_id=item_id, version=version, version_id=version,
                   content_hash=hashlib.sha256(f"{item_id}-v{version}".encode()).hexdigest(),
                   meta=ItemMeta.model_validate(fields), body=body,
                   files={name: blobs.put(data) for name, data in (files or {}).items()}, renditions=table,
                   blob_path=blobs.path, extra=dict(extra or {}))


# Distribution server --------------------------------------------------------------------------------------
class Site:
    """The real distribution server (rongmei.distribution.server) on an ephemeral port, which a test can take down and
    bring back on the same port to play an outage."""

    def __init__(self, settings: Settings, store: Store) -> None:
        self.settings, self.store = settings, store
        self.running = serve_in_thread(settings, store=store)
        self.url, self.port = self.running.url, self.running.port

    def down(self) -> None:
        self.running.stop()

    def up(self) -> None:
        self.running = serve_in_thread(self.settings, port=self.port, store=self.store)

    def stop(self) -> None:
        self.running.stop()

    def plays(self) -> list[Play]:
        with self.store.session() as session:
            return list(session.scalars(select(Play).order_by(Play.started_at, Play.id)).all())


@contextmanager
def running_site(settings: Settings, store: Store) -> Iterator[Site]:
    site = Site(settings, store)
    try:
        yield site
    finally:
        site.stop()
