"""Rendition settings. Read from `settings.media` when the core settings carry it, else these defaults.

The core `Settings` (rongmei/settings.py) is owned elsewhere; `MediaSettings.from_settings` accepts a
nested model, a dict, or nothing, so the renditions work before and after the field is added.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

__all__ = ["RECIPE_VERSION", "MediaSettings"]

RECIPE_VERSION = "2026-11-26.1"  # bump when any recipe changes its output: voids the rendition cache


class MediaSettings(BaseModel):
    max_duration_s: float = Field(default=1800.0, description="Longest video/audio accepted, in seconds.")
    max_image_pixels: int = Field(default=80_000_000, description="Larger images are refused as decompression bombs.")
    max_working_side: int = Field(default=4096, description="Huge images are downscaled to this longest side first.")
    video_preset: str = Field(default="veryfast", description="libx264 preset for both video renditions.")
    video_crf: int = Field(default=23, description="libx264 quality (lower is better and bigger).")
    video_audio_kbps: int = Field(default=128, description="AAC bit rate of the web/WeChat video.")
    screen_fps: int = Field(default=25, description="Frame rate of the screen video.")
    logo_path: Path | None = Field(default=None, description="PNG logo burned into videos (top right); none if unset.")
    loudness_lufs: float = Field(default=-16.0, description="Loudspeaker integrated loudness target.")
    true_peak_dbtp: float = Field(default=-2.0, description="True-peak limit (MP3 encoding adds up to ~1 dB).")
    loudness_range_lu: float = Field(default=11.0, description="Loudness range target for loudnorm.")
    loudspeaker_sample_rate: int = Field(default=44100, description="MP3 sample rate for loudspeakers.")
    loudspeaker_kbps: int = Field(default=96, description="MP3 bit rate for loudspeakers.")
    tts_engine: str = Field(default="espeak-ng", description="Speech engine name, or 'module:Class' of a plugin.")
    tts_binary: str = Field(default="espeak-ng", description="Executable of the espeak-ng engine.")
    tts_voice: str = Field(default="cmn-latn-pinyin", description="espeak-ng voice; plain 'cmn' reads pinyin in English.")
    tts_words_per_minute: int = Field(default=150, description="espeak-ng speaking rate.")

    @classmethod
    def from_settings(cls, settings: Any) -> MediaSettings:
        raw = getattr(settings, "media", None)
        if raw is None:
            return cls()
        if isinstance(raw, BaseModel):
            raw = raw.model_dump()
        return cls.model_validate(raw)

    def fingerprint(self) -> dict[str, Any]:
        """The settings that change rendition output (part of every cache key)."""
        data = self.model_dump(mode="json", exclude={"max_duration_s", "max_image_pixels", "tts_binary"})
        if self.logo_path is not None and Path(self.logo_path).is_file():
            from hashlib import sha256

            data["logo_sha256"] = sha256(Path(self.logo_path).read_bytes()).hexdigest()
        return data
