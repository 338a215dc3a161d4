"""Video renditions with the ffmpeg binary, one ffmpeg pass each (moviepy is 5–9× slower, media.md).

- web/WeChat: short side 720 (never upscaled), H.264 yuv420p, +faststart, AAC stereo.
- screen: 1920×1080, 25 fps, no audio; other aspect ratios sit on a blurred copy of themselves;
  subtitles.srt burned in with the vendored Chinese font.
- thumbnail: a representative frame (ffmpeg's `thumbnail` filter) from about a third in.
An optional logo (media.logo_path) is overlaid top right on both videos.
"""

from __future__ import annotations

import os
from pathlib import Path

from rongmei.core.media_settings import MediaSettings
from rongmei.renditions.errors import MediaError
from rongmei.renditions.ffmpeg import Progress, filter_path, run_ffmpeg
from rongmei.renditions.fonts import FONT_DIR, SC_FAMILY
from rongmei.renditions.probe import MediaInfo

__all__ = [
    "SCREEN_SIZE", "WEB_SHORT_SIDE", "read_srt", "screen_args", "thumbnail", "thumbnail_args", "video_screen",
    "video_web", "web_args", "web_size"
]

SCREEN_SIZE = (1920, 1080)
WEB_SHORT_SIDE = 720


def _even(value: float) -> int:
    return max(2, round(value / 2) * 2)


def web_size(info: MediaInfo) -> tuple[int, int]:
    size = info.display_size
    if size is None:
        raise MediaError(f"{info.path.name} 没有可用的视频画面，无法转码。")
    width, height = size
    scale = min(1.0, WEB_SHORT_SIDE / min(width, height))
    return _even(width * scale), _even(height * scale)


def _logo_chain(config: MediaSettings, base: str, frame_height: int, input_index: int) -> tuple[list[str], str, str]:
    """Extra inputs and filter text overlaying the logo on `base`; returns (inputs, filters, output label)."""
    if config.logo_path is None:
        return [], "", base
    logo = Path(config.logo_path)
    if not logo.is_file():
        raise MediaError(f"台标文件 {logo} 不存在。请检查配置 media.logo_path，或删掉这一项。")
    logo_height = _even(frame_height * 0.08)
    margin = _even(frame_height * 0.035)
    filters = (f";[{input_index}:v]scale=-2:{logo_height}[logo];"
               f"[{base}][logo]overlay=W-w-{margin}:{margin}:format=auto[logoed]")
    return ["-i", str(logo)], filters, "logoed"


def web_args(source: Path, target: Path, info: MediaInfo, config: MediaSettings) -> list[str]:
    width, height = web_size(info)
    fps = ",fps=30" if (info.video and info.video.fps and info.video.fps > 30.5) else ""
    inputs, logo, label = _logo_chain(config, "scaled", height, 1)
    graph = f"[0:v]scale={width}:{height}:flags=bicubic,setsar=1{fps}[scaled]{logo};[{label}]format=yuv420p[v]"
    return [
        "-i", str(source), *inputs, "-filter_complex", graph, "-map", "[v]", "-map", "0:a:0?",
        "-c:v", "libx264", "-preset", config.video_preset, "-crf", str(config.video_crf), "-profile:v", "high",
        "-c:a", "aac", "-b:a", f"{config.video_audio_kbps}k", "-ac", "2", "-ar", "44100",
        "-movflags", "+faststart", "-map_metadata", "-1", str(target),
    ]


def screen_args(source: Path, target: Path, info: MediaInfo, config: MediaSettings,
                subtitles: Path | None) -> list[str]:
    """ffmpeg arguments for the screen rendition; `subtitles` must be a bare file name in the working dir."""
    size = info.display_size
    if size is None:
        raise MediaError(f"{info.path.name} 没有可用的视频画面，无法生成大屏版本。")
    out_w, out_h = SCREEN_SIZE
    fps = config.screen_fps
    same_shape = abs(size[0] / size[1] - out_w / out_h) < 0.01
    if same_shape:
        graph = f"[0:v]fps={fps},scale={out_w}:{out_h}:flags=bicubic,setsar=1[base]"
    else:
        # Blur a tiny copy and blow it up: the background costs almost nothing to compute.
        graph = (f"[0:v]fps={fps},split=2[bgsrc][fgsrc];"
                 f"[bgsrc]scale={out_w // 10}:{out_h // 10}:force_original_aspect_ratio=increase,"
                 f"crop={out_w // 10}:{out_h // 10},boxblur=8:2,scale={out_w}:{out_h},eq=brightness=-0.08[bg];"
                 f"[fgsrc]scale={out_w}:{out_h}:force_original_aspect_ratio=decrease:flags=bicubic[fg];"
                 f"[bg][fg]overlay=(W-w)/2:(H-h)/2,setsar=1[base]")
    label = "base"
    if subtitles is not None:
        style = f"FontName={SC_FAMILY},FontSize=15,Outline=1.5,Shadow=0,MarginV=18,PrimaryColour=&H00FFFFFF"
        graph += (f";[base]subtitles=filename={filter_path(subtitles)}:fontsdir={filter_path(FONT_DIR)}"
                  f":charenc=UTF-8:force_style='{style}'[subbed]")
        label = "subbed"
    inputs, logo, label = _logo_chain(config, label, out_h, 1)
    graph += f"{logo};[{label}]format=yuv420p[v]"
    return [
        "-i", str(source), *inputs, "-filter_complex", graph, "-map", "[v]", "-an",
        "-c:v", "libx264", "-preset", config.video_preset, "-crf", str(config.video_crf), "-profile:v", "high",
        "-maxrate", "8M", "-bufsize", "16M", "-r", str(fps),
        "-movflags", "+faststart", "-map_metadata", "-1", str(target),
    ]


def thumbnail_args(source: Path, target: Path, info: MediaInfo) -> list[str]:
    duration = info.duration_s or 0.0
    seek = max(0.0, min(duration * 0.3, duration - 1.5))
    return ["-ss", f"{seek:.3f}", "-i", str(source), "-vf", "thumbnail=n=25,scale='min(1280,iw)':-2",
            "-frames:v", "1", "-q:v", "3", "-map_metadata", "-1", str(target)]


def video_web(source: Path, target: Path, info: MediaInfo, config: MediaSettings,
              progress: Progress | None = None) -> None:
    run_ffmpeg(web_args(source, target, info, config), what="视频（网页/微信 720p）",
               duration_s=info.duration_s, progress=progress, fault="renditions.transcode")


def video_screen(source: Path, target: Path, info: MediaInfo, config: MediaSettings, *,
                 subtitles: Path | None = None, progress: Progress | None = None) -> None:
    """Run in the target's folder so the subtitle file is a bare name (filter escaping stays trivial)."""
    workdir = target.parent
    local_subs = None
    if subtitles is not None:
        local_subs = Path("subtitles.srt")
        (workdir / local_subs).write_text(read_srt(subtitles), encoding="utf-8")
    run_ffmpeg(screen_args(source, target, info, config, local_subs), what="视频（大屏 1080p）",
               duration_s=info.duration_s, progress=progress, cwd=workdir, fault="renditions.transcode")


def thumbnail(source: Path, target: Path, info: MediaInfo) -> None:
    run_ffmpeg(thumbnail_args(source, target, info), what="视频封面帧")
    if not target.is_file() or os.path.getsize(target) == 0:
        raise MediaError(f"无法从 {source.name} 取出封面画面，视频可能只有声音或已损坏。")


def read_srt(path: Path) -> str:
    """Subtitles as text; editors' tools save UTF-8 (with or without BOM) or GB18030."""
    data = path.read_bytes()
    for encoding in ("utf-8-sig", "gb18030"):
        try:
            return data.decode(encoding)
        except UnicodeDecodeError:
            continue
    raise MediaError(f"字幕文件 {path.name} 的编码无法识别。请另存为 UTF-8 编码的 .srt 文件。")
