"""Video, loudspeaker audio and spoken articles: real ffmpeg and espeak-ng on tiny generated inputs.

Every output is checked by probing the file itself (ffmpeg header, MP4 atoms, ebur128, ID3), not by
trusting the facts our code reports.
"""

from __future__ import annotations

import re
import struct
import subprocess
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from mutagen.id3 import ID3
from PIL import Image

from rongmei.core.media_settings import MediaSettings
from rongmei.core.model import ItemMeta
from rongmei.core.settings import Settings
from rongmei.renditions import (
    MediaError,
    ffmpeg_run_count,
    manifest_hash,
    media_problems,
    probe,
    produce_renditions,
)
from rongmei.storage.store import Store
from tests.support.media import FFMPEG, make_image, make_speech_like, make_srt, make_video

pytestmark = pytest.mark.media


class MediaTestSettings(Settings):
    """Settings with the `media` block the core settings are to carry (see the renditions report)."""

    media: MediaSettings = MediaSettings()


def header(path: Path) -> str:
    return subprocess.run([FFMPEG, "-hide_banner", "-i", str(path)], capture_output=True, text=True).stderr


def top_level_atoms(path: Path) -> list[str]:
    atoms, data, offset = [], path.read_bytes(), 0
    while offset + 8 <= len(data):
        size, kind = struct.unpack(">I4s", data[offset:offset + 8])
        if size == 1:
            size = struct.unpack(">Q", data[offset + 8:offset + 16])[0]
        atoms.append(kind.decode("latin-1"))
        if size == 0:
            break
        offset += size
    return atoms


def ebur128(path: Path) -> tuple[float, float]:
    err = subprocess.run([FFMPEG, "-hide_banner", "-nostdin", "-i", str(path), "-af", "ebur128=peak=true",
                          "-f", "null", "-"], capture_output=True, text=True).stderr
    summary = err[err.rfind("Summary:"):]
    return (float(re.search(r"I:\s+(-?[\d.]+) LUFS", summary)[1]),  # type: ignore[index]
            float(re.search(r"Peak:\s+(-?[\d.]+) dBFS", summary)[1]))  # type: ignore[index]


def put(store: Store, files: dict[str, Path]) -> dict[str, dict[str, Any]]:
    out = {}
    for rel, path in files.items():
        sha, size = store.put_file(path)
        out[rel] = {"sha256": sha, "bytes": size}
    return out


def run(store: Store, settings: Settings, meta: ItemMeta, files: dict[str, dict[str, Any]], channels: list[str],
        work: Path, body: str = "", progress: Any = None) -> dict[str, dict[str, Any]]:
    return produce_renditions(meta=meta, body=body, files=files, blob_path=store.blob_path, put_file=store.put_file,
                              settings=settings, channels=channels, work_dir=work, progress=progress)


@pytest.fixture
def media_settings(tmp_path: Path) -> MediaTestSettings:
    return MediaTestSettings(data_dir=tmp_path / "data", content_dir=tmp_path / "content")


@pytest.fixture
def media_store(media_settings: MediaTestSettings) -> Store:
    store = Store.from_settings(media_settings)
    store.create_schema()
    return store


# Probing and pre-checks --------------------------------------------------------------------------------
def test_probe_reads_streams_of_a_real_clip(tmp_path: Path) -> None:
    info = probe(make_video(tmp_path / "clip.mp4", seconds=2, size=(320, 240)))
    assert info.video is not None and info.video.codec == "h264" and (info.video.width, info.video.height) == (320, 240)
    assert info.video.pix_fmt == "yuv420p" and info.video.fps == 25
    assert info.audio is not None and info.audio.codec == "aac" and info.audio.channels == 2
    assert info.audio.sample_rate == 48000 and info.duration_s == pytest.approx(2.0, abs=0.1)


def test_media_problems_name_what_is_wrong_in_chinese(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"\x00\x01garbage" * 100)
    empty = tmp_path / "empty.mp3"
    empty.write_bytes(b"")
    clip = make_video(tmp_path / "clip.mp4", seconds=2)
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(clip.read_bytes()[:2000])
    silent = make_video(tmp_path / "silent.mp4", seconds=2, audio=False)

    [corrupt] = media_problems(junk, "video", settings)
    assert corrupt.blocking and corrupt.code == "media.corrupt" and "已损坏" in corrupt.message
    [zero] = media_problems(empty, "audio", settings)
    assert zero.blocking and zero.code == "media.empty" and "0 字节" in zero.message
    [truncated] = media_problems(cut, "video", settings)
    assert truncated.blocking and "不完整" in truncated.message
    [no_sound] = media_problems(silent, "video", settings)
    assert not no_sound.blocking and no_sound.code == "media.video_no_audio" and "没有声音" in no_sound.message
    [no_audio] = media_problems(silent, "audio", settings)
    assert no_audio.blocking and no_audio.code == "media.no_audio"
    assert media_problems(clip, "video", settings) == []
    [too_long] = media_problems(clip, "video", SimpleNamespace(media={"max_duration_s": 1}))
    assert too_long.blocking and too_long.code == "media.too_long" and "超过上限" in too_long.message


# Video -------------------------------------------------------------------------------------------------
def test_vertical_video_renditions_probe_right(tmp_path: Path, media_settings: Settings, media_store: Store) -> None:
    clip = make_video(tmp_path / "v.mp4", seconds=1.5, size=(900, 1600))
    files = put(media_store, {"video.mp4": clip})
    meta = ItemMeta(id="v1", title="牧民冬季转场", author="记者", kind="video")
    seen: list[tuple[str, float]] = []
    manifest = run(media_store, media_settings, meta, files, ["web", "screens"], tmp_path / "w",
                   progress=lambda label, fraction: seen.append((label, fraction)))
    assert {"thumbnail", "share_image", "video_web", "screen_card", "video_screen"} <= set(manifest)

    web = media_store.blob_path(manifest["video_web"]["sha256"])
    text = header(web)
    assert re.search(r"Video: h264 .*yuv420p.*, 720x1280", text), text
    assert re.search(r"Audio: aac .*44100 Hz, stereo", text), text
    atoms = top_level_atoms(web)
    assert atoms.index("moov") < atoms.index("mdat"), atoms  # +faststart
    assert manifest["video_web"]["width"] == 720 and manifest["video_web"]["mime"] == "video/mp4"

    screen = media_store.blob_path(manifest["video_screen"]["sha256"])
    text = header(screen)
    assert re.search(r"Video: h264 .*yuv420p.*, 1920x1080.*25 fps", text), text
    assert "Audio:" not in text
    atoms = top_level_atoms(screen)
    assert atoms.index("moov") < atoms.index("mdat")

    with Image.open(media_store.blob_path(manifest["thumbnail"]["sha256"])) as thumb:
        assert thumb.format == "JPEG" and thumb.size == (900, 1600)
    fractions = [f for label, f in seen if label == "视频（大屏 1080p）"]
    assert fractions and fractions[-1] == 1.0  # ffmpeg -progress was followed to the end


def test_subtitles_are_burned_into_the_screen_video(tmp_path: Path, media_settings: Settings,
                                                    media_store: Store) -> None:
    clip = make_video(tmp_path / "black.mp4", seconds=2, size=(320, 180), source="color=c=black")
    files = put(media_store, {"video.mp4": clip, "subtitles.srt": make_srt(tmp_path / "s.srt", seconds=2)})
    meta = ItemMeta(id="v2", title="字幕测试", author="记者", kind="video")
    manifest = run(media_store, media_settings, meta, files, ["screens"], tmp_path / "w")
    assert manifest["video_screen"]["subtitles"] is True
    frame = tmp_path / "frame.png"
    subprocess.run([FFMPEG, "-v", "error", "-ss", "1", "-i", str(media_store.blob_path(manifest["video_screen"]["sha256"])),
                    "-frames:v", "1", "-y", str(frame)], check=True)
    with Image.open(frame) as image:
        gray = image.convert("L")
        bottom = gray.crop((300, 860, 1620, 1060)).point(lambda v: 255 if v > 200 else 0)
        top = gray.crop((300, 100, 1620, 300)).point(lambda v: 255 if v > 200 else 0)
    assert bottom.getbbox() is not None and top.getbbox() is None  # white text only where subtitles go


# Loudspeaker audio and spoken articles ---------------------------------------------------------------
def test_loudspeaker_audio_is_loudness_normalised_mono_mp3_with_tags(tmp_path: Path, media_settings: Settings,
                                                                      media_store: Store) -> None:
    quiet = make_speech_like(tmp_path / "audio.wav", seconds=6, volume_db=-28)
    files = put(media_store, {"audio.wav": quiet})
    meta = ItemMeta(id="a1", title="今日农牧业信息", author="播音员", kind="audio", publish_at="2026-11-26T07:00")
    manifest = run(media_store, media_settings, meta, files, ["loudspeakers"], tmp_path / "w")
    facts = manifest["loudspeaker_audio"]
    mp3 = media_store.blob_path(facts["sha256"])
    assert re.search(r"Audio: mp3.*44100 Hz, mono", header(mp3))
    integrated, peak = ebur128(mp3)
    assert abs(integrated - (-16.0)) <= 1.0 and peak < -1.0, (integrated, peak)
    assert facts["source"] == "recording" and facts["mime"] == "audio/mpeg" and facts["kbps"] == 96
    assert facts["integrated_lufs"] == pytest.approx(integrated, abs=0.05)
    tags = ID3(mp3)
    assert str(tags["TIT2"]) == "今日农牧业信息" and str(tags["TDRC"]) == "2026-11-26"
    assert str(tags["TPUB"]) == media_settings.center_name


def test_article_gets_a_spoken_version_and_a_recording_wins(tmp_path: Path, media_settings: Settings,
                                                           media_store: Store) -> None:
    meta = ItemMeta(id="art1", title="全旗粮食产量创新高", author="记者", kind="article")
    body = "2026年全旗粮食产量达12.5万吨，同比增长8.3%。\n\n![图](a.jpg)\n\n详情见[公告](https://example.org)。"
    spoken = run(media_store, media_settings, meta, {}, ["loudspeakers"], tmp_path / "w1", body=body)
    facts = spoken["loudspeaker_audio"]
    assert facts["source"] == "tts" and facts["engine"] == "espeak-ng:cmn-latn-pinyin"
    mp3 = media_store.blob_path(facts["sha256"])
    assert facts["duration_s"] > 3 and re.search(r"Audio: mp3.*mono", header(mp3))
    integrated, peak = ebur128(mp3)
    assert abs(integrated + 16.0) <= 1.0 and peak < -1.0, (integrated, peak)

    files = put(media_store, {"audio.mp3": make_speech_like(tmp_path / "rec.mp3", seconds=4)})
    recorded = run(media_store, media_settings, meta, files, ["loudspeakers"], tmp_path / "w2", body=body)
    assert recorded["loudspeaker_audio"]["source"] == "recording"
    assert recorded["loudspeaker_audio"]["sha256"] != facts["sha256"]


def test_missing_speech_engine_is_a_clear_error(tmp_path: Path) -> None:
    settings = MediaTestSettings(data_dir=tmp_path / "data",
                                 media=MediaSettings(tts_binary=str(tmp_path / "no-such-espeak-ng")))
    store = Store.from_settings(settings)
    store.create_schema()
    meta = ItemMeta(id="art2", title="通知", author="记者", kind="notice")
    with pytest.raises(MediaError, match=r"找不到语音合成程序.*espeak-ng"):
        run(store, settings, meta, {}, ["loudspeakers"], tmp_path / "w", body="今天下午停电。")


# Reuse ---------------------------------------------------------------------------------------------------
def test_rerun_reuses_renditions_without_ffmpeg(tmp_path: Path, media_settings: Settings, media_store: Store) -> None:
    files = put(media_store, {"video.mp4": make_video(tmp_path / "v.mp4", seconds=1.5, size=(320, 180)),
                              "cover.png": make_image(tmp_path / "cover.png", (640, 360))})
    meta = ItemMeta(id="v3", title="草原书屋开放", author="记者", kind="video")
    channels = ["web", "wechat", "screens", "loudspeakers"]
    first = run(media_store, media_settings, meta, files, channels, tmp_path / "w1")
    assert first["loudspeaker_audio"]["source"] == "soundtrack"  # a video's own sound goes to the loudspeakers
    with Image.open(media_store.blob_path(first["cover_900x383"]["sha256"])) as cover:
        assert cover.size == (900, 383)
    before = ffmpeg_run_count()
    second = run(media_store, media_settings, meta, files, channels, tmp_path / "w2")
    assert ffmpeg_run_count() == before  # nothing re-encoded, nothing even probed
    assert second == first and manifest_hash(second) == manifest_hash(first)

    retitled = run(media_store, media_settings, meta.model_copy(update={"title": "草原书屋正式开放"}), files, channels,
                   tmp_path / "w3")
    assert ffmpeg_run_count() == before  # a new headline redraws cards only; the videos and audio are reused
    assert retitled["screen_card"]["sha256"] != first["screen_card"]["sha256"]
    assert retitled["video_screen"] == first["video_screen"]
    assert manifest_hash(retitled) != manifest_hash(first)


def test_video_without_sound_cannot_feed_loudspeakers(tmp_path: Path, media_settings: Settings,
                                                      media_store: Store) -> None:
    files = put(media_store, {"video.mp4": make_video(tmp_path / "v.mp4", seconds=1, size=(160, 90), audio=False)})
    meta = ItemMeta(id="v4", title="无声视频", author="记者", kind="video")
    with pytest.raises(MediaError, match="没有声音轨"):
        run(media_store, media_settings, meta, files, ["loudspeakers"], tmp_path / "w")
