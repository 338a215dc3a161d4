"""Tiny generated media for the rendition tests: ffmpeg test sources, sine tones, Pillow images."""

from __future__ import annotations

import struct
import subprocess
import zlib
from pathlib import Path

import imageio_ffmpeg
from PIL import Image

FFMPEG = imageio_ffmpeg.get_ffmpeg_exe()


def ffmpeg(*args: str) -> None:
    subprocess.run([FFMPEG, "-hide_banner", "-nostdin", "-y", "-loglevel", "error", *args], check=True)


def make_video(path: Path, *, seconds: float = 2.0, size: tuple[int, int] = (320, 240), audio: bool = True,
               source: str = "testsrc2", fps: int = 25, volume_db: float = -20.0) -> Path:
    """H.264 + AAC test clip; `source` may be e.g. 'color=c=black' for a plain picture."""
    width, height = size
    joiner = ":" if "=" in source else "="
    args = ["-f", "lavfi", "-i", f"{source}{joiner}size={width}x{height}:rate={fps}:duration={seconds}"]
    if audio:
        args += ["-f", "lavfi", "-i", f"sine=frequency=330:duration={seconds}:sample_rate=48000",
                 "-af", f"volume={volume_db}dB", "-c:a", "aac", "-ac", "2"]
    ffmpeg(*args, "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-shortest", str(path))
    return path


def make_speech_like(path: Path, *, seconds: float = 3.0, volume_db: float = -30.0, sample_rate: int = 48000,
                     channels: int = 2) -> Path:
    """A quiet, syllable-like modulated tone: loud enough to measure, far from the −16 LUFS target."""
    expr = "0.5*sin(2*PI*220*t)*(0.55+0.45*sin(2*PI*4*t))"
    ffmpeg("-f", "lavfi", "-i", f"aevalsrc={expr}:s={sample_rate}:d={seconds}",
           "-af", f"volume={volume_db}dB", "-ac", str(channels), str(path))
    return path


def make_image(path: Path, size: tuple[int, int] = (800, 600), *, color: tuple[int, int, int] = (40, 120, 200),
               fmt: str | None = None, exif_orientation: int | None = None) -> Path:
    """An image whose left half is red, so orientation fixes are visible in pixels."""
    image = Image.new("RGB", size, color)
    image.paste((220, 20, 20), (0, 0, size[0] // 2, size[1]))
    kwargs = {}
    if exif_orientation is not None:
        exif = Image.Exif()
        exif[0x0112] = exif_orientation
        kwargs["exif"] = exif.tobytes()
    image.save(path, fmt, **kwargs)
    return path


def make_decompression_bomb(path: Path, side: int = 30000) -> Path:
    """A valid PNG header claiming side×side pixels with almost no data: must be refused before decoding."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)  # 1-bit greyscale
    idat = zlib.compress(b"\x00" * (side // 8 + 1))  # one row; the rest is "missing"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b""))
    return path


def make_srt(path: Path, text: str = "旗应急管理局提醒：严禁野外用火", seconds: float = 2.0) -> Path:
    end = f"00:00:0{int(seconds)},000"
    path.write_text(f"1\n00:00:00,000 --> {end}\n{text}\n", encoding="utf-8")
    return path
