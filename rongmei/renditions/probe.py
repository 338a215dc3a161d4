"""Probe media with the ffmpeg binary (imageio-ffmpeg ships no ffprobe) and turn problems into check results.

`ffmpeg -i FILE` with no output prints the container and stream facts on stderr and exits non-zero;
that header is stable enough to parse for what renditions need (duration, codecs, size, audio layout).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rongmei.core.media_settings import MediaSettings
from rongmei.core.model import CheckResult, Severity
from rongmei.renditions.errors import MediaError
from rongmei.renditions.ffmpeg import run_ffmpeg

_INPUT = re.compile(r"^Input #0, (?P<format>[^,]+(?:,[^ ]+)*), from ", re.M)
_DURATION = re.compile(r"Duration: (?P<h>\d+):(?P<m>\d\d):(?P<s>\d\d(?:\.\d+)?)")
_BITRATE = re.compile(r"bitrate: (\d+) kb/s")
_STREAM = re.compile(r"^\s*Stream #0:(?P<index>\d+)\S*: (?P<kind>Video|Audio|Subtitle|Data|Attachment): (?P<rest>.*)$",
                     re.M)
_SIZE = re.compile(r"(?<![\w.])(\d{2,5})x(\d{2,5})(?![\w.])")
_PIX_FMT = re.compile(r"\b(yuv\w+|yuvj\w+|nv12|nv21|rgb\w+|bgr\w+|gray\w*|pal8|argb|rgba|bgra)\b")
_FPS = re.compile(r"([\d.]+) fps")
_RATE = re.compile(r"(\d+) Hz")
_ROTATION = re.compile(r"rotation of (-?[\d.]+) degrees")
_LAYOUT_CHANNELS = {"mono": 1, "stereo": 2, "2.1": 3, "quad": 4, "5.0": 5, "5.1": 6, "6.1": 7, "7.1": 8}


@dataclass(frozen=True)
class StreamInfo:
    index: int
    kind: str  # "video" | "audio" | "subtitle" | "data" | "attachment"
    codec: str
    width: int | None = None
    height: int | None = None
    pix_fmt: str | None = None
    fps: float | None = None
    sample_rate: int | None = None
    channels: int | None = None
    attached_picture: bool = False  # cover art inside an MP3/M4A, not a real video track


@dataclass(frozen=True)
class MediaInfo:
    path: Path
    format: str
    duration_s: float | None
    bitrate_kbps: int | None
    streams: list[StreamInfo] = field(default_factory=list)
    rotation: int = 0  # display rotation from the container (phones record rotated frames)

    @property
    def video(self) -> StreamInfo | None:
        return next((s for s in self.streams if s.kind == "video" and not s.attached_picture), None)

    @property
    def audio(self) -> StreamInfo | None:
        return next((s for s in self.streams if s.kind == "audio"), None)

    @property
    def display_size(self) -> tuple[int, int] | None:
        """Width and height as shown (ffmpeg applies the rotation when it transcodes)."""
        video = self.video
        if video is None or not video.width or not video.height:
            return None
        if self.rotation % 180:
            return video.height, video.width
        return video.width, video.height

    def facts(self) -> dict[str, Any]:
        """The facts a rendition manifest records, probed from the file itself."""
        out: dict[str, Any] = {"duration_s": round(self.duration_s or 0.0, 3)}
        if (video := self.video) is not None:
            width, height = self.display_size or (video.width, video.height)
            out |= {"codec": video.codec, "width": width, "height": height, "pix_fmt": video.pix_fmt,
                    "fps": video.fps}
        if (audio := self.audio) is not None:
            out |= {"audio_codec": audio.codec, "channels": audio.channels, "sample_rate": audio.sample_rate}
            if video is None:
                out["codec"] = audio.codec
        return out


def probe(path: Path) -> MediaInfo:
    """Read the container and stream facts; raises MediaError (in Chinese) when ffmpeg cannot open the file."""
    if not path.is_file():
        raise MediaError(f"媒体文件 {path.name} 不存在。")
    if path.stat().st_size == 0:
        raise MediaError(f"媒体文件 {path.name} 是空的（0 字节），可能没有复制完整。请重新复制。")
    stderr = run_ffmpeg(["-i", str(path)], what=f"读取 {path.name}", check=False)
    return parse_header(path, stderr)


def parse_header(path: Path, stderr: str) -> MediaInfo:
    match = _INPUT.search(stderr)
    if match is None:
        reason = "文件结构不完整（可能没有复制完）" if "moov atom not found" in stderr else "无法识别的文件内容"
        raise MediaError(f"媒体文件 {path.name} 已损坏或不是音视频文件：{reason}。请重新导出（MP4/H.264 或 MP3）后再放入。")
    duration = None
    if (d := _DURATION.search(stderr)) is not None:
        duration = int(d["h"]) * 3600 + int(d["m"]) * 60 + float(d["s"])
    bitrate = _BITRATE.search(stderr)
    rotation = _ROTATION.search(stderr)
    streams = [_parse_stream(m) for m in _STREAM.finditer(stderr)]
    return MediaInfo(path=path, format=match["format"], duration_s=duration,
                     bitrate_kbps=int(bitrate[1]) if bitrate else None, streams=streams,
                     rotation=round(float(rotation[1])) % 360 if rotation else 0)


def _parse_stream(match: re.Match[str]) -> StreamInfo:
    kind, rest = match["kind"].lower(), match["rest"]
    codec = rest.split(",", 1)[0].split(" ", 1)[0].strip()
    if kind == "video":
        size = _SIZE.search(rest)
        pix = _PIX_FMT.search(rest)
        fps = _FPS.search(rest)
        return StreamInfo(int(match["index"]), kind, codec,
                          width=int(size[1]) if size else None, height=int(size[2]) if size else None,
                          pix_fmt=pix[1] if pix else None, fps=float(fps[1]) if fps else None,
                          attached_picture="(attached pic)" in rest)
    if kind == "audio":
        rate = _RATE.search(rest)
        parts = [p.strip() for p in rest.split(",")]
        channels = None
        for part in parts[2:3]:
            layout = part.split("(", 1)[0].strip()
            if layout in _LAYOUT_CHANNELS:
                channels = _LAYOUT_CHANNELS[layout]
            elif (n := re.match(r"(\d+) channels", layout)) is not None:
                channels = int(n[1])
        return StreamInfo(int(match["index"]), kind, codec, sample_rate=int(rate[1]) if rate else None,
                          channels=channels)
    return StreamInfo(int(match["index"]), kind, codec)


# Pre-checks ---------------------------------------------------------------------------------------------
def _blocking(code: str, message: str, fix: str) -> CheckResult:
    return CheckResult(code=code, severity=Severity.blocking, message=message, fix=fix)


def _warning(code: str, message: str, fix: str) -> CheckResult:
    return CheckResult(code=code, severity=Severity.warning, message=message, fix=fix)


def media_problems(path: Path, role: str, settings: Any) -> list[CheckResult]:
    """What is wrong with one media file of a drop, for the ingest pre-checks. `role`: video | audio | image."""
    config = MediaSettings.from_settings(settings)
    if role == "image":
        return list(_image_problems(path, config))
    try:
        info = probe(path)
    except MediaError as exc:
        code = "media.empty" if path.is_file() and path.stat().st_size == 0 else "media.corrupt"
        return [_blocking(code, str(exc), "请用剪辑软件重新导出（视频 MP4/H.264，音频 MP3），复制完整后再放入。")]
    return list(_stream_problems(path.name, role, info, config))


def _stream_problems(name: str, role: str, info: MediaInfo, config: MediaSettings) -> Iterable[CheckResult]:
    if role == "video" and info.video is None:
        yield _blocking("media.unsupported", f"{name} 里没有可用的视频画面（格式 {info.format}）。",
                        "请导出为带画面的 MP4（H.264）视频；若只是音频，请把稿件类型改为 audio。")
        return
    if role == "audio" and info.audio is None:
        yield _blocking("media.no_audio", f"音频文件 {name} 里没有声音轨。", "请重新导出音频（MP3 或 WAV）。")
        return
    if role == "video" and info.audio is None:
        yield _warning("media.video_no_audio", f"视频 {name} 没有声音。",
                       "大屏播放不受影响；若要在村村响播出，请补充配音（audio.mp3）或重新导出带声音的视频。")
    if info.duration_s is None or info.duration_s <= 0:
        yield _blocking("media.no_duration", f"{name} 读不出时长，文件可能不完整。", "请重新导出后再放入。")
    elif info.duration_s > config.max_duration_s:
        yield _blocking(
            "media.too_long",
            f"{name} 长 {info.duration_s / 60:.1f} 分钟，超过上限 {config.max_duration_s / 60:.0f} 分钟。",
            "请剪短后再放入，或请技术人员调整 media.max_duration_s。",
        )


def _image_problems(path: Path, config: MediaSettings) -> Iterable[CheckResult]:
    from rongmei.renditions.images import open_image

    try:
        open_image(path, config).close()
    except MediaError as exc:
        yield _blocking("image.bomb" if "像素" in str(exc) else "image.broken", str(exc),
                        "请换一张正常尺寸的图片，或重新导出为 JPG/PNG。")


__all__ = ["MediaInfo", "StreamInfo", "media_problems", "parse_header", "probe"]
