"""Spoken versions of articles (有声新闻): pluggable speech engines, espeak-ng by default.

An engine turns normalised Chinese text into a WAV file; the loudness chain (audio.py) does the rest.
`cmn-latn-pinyin` is the espeak-ng voice that reads Chinese characters; plain `cmn` reads pinyin letters
in English (shared/reference/media.md). Other engines plug in as `module:Class` in `media.tts_engine`.
"""

from __future__ import annotations

import importlib
import re
import shutil
import subprocess
from pathlib import Path
from typing import Protocol, runtime_checkable

from rongmei.core.media_settings import MediaSettings
from rongmei.renditions.errors import MediaError
from rongmei.renditions.textnorm import normalise

__all__ = ["EspeakNg", "SpeechEngine", "load_engine", "spoken_text"]


@runtime_checkable
class SpeechEngine(Protocol):
    """Contract: `synthesize` writes a WAV file of `text` spoken in Mandarin to `target`, or raises MediaError."""

    @property
    def name(self) -> str: ...  # engine and voice, recorded in the manifest (e.g. "espeak-ng:cmn-latn-pinyin")

    def synthesize(self, text: str, target: Path) -> None: ...


class EspeakNg:
    """The offline default: robotic but intelligible, near-zero cost (RTF ~0.001)."""

    def __init__(self, binary: str = "espeak-ng", voice: str = "cmn-latn-pinyin", words_per_minute: int = 150,
                 timeout_s: float = 600.0) -> None:
        self.binary, self.voice, self.words_per_minute, self.timeout_s = binary, voice, words_per_minute, timeout_s

    @classmethod
    def from_config(cls, config: MediaSettings) -> EspeakNg:
        return cls(config.tts_binary, config.tts_voice, config.tts_words_per_minute)

    @property
    def name(self) -> str:
        return f"espeak-ng:{self.voice}"

    def executable(self) -> str:
        found = shutil.which(self.binary)
        if found is None:
            raise MediaError(
                f"找不到语音合成程序 {self.binary}，无法生成有声版本。请技术人员安装 espeak-ng"
                "（Debian/Ubuntu：apt-get install espeak-ng），或在配置 media.tts_binary 中写明它的路径；"
                "也可以在稿件文件夹里放一段人工录音 audio.mp3 代替。"
            )
        return found

    def synthesize(self, text: str, target: Path) -> None:
        exe = self.executable()
        text_file = target.with_suffix(".txt")
        text_file.write_text(text, encoding="utf-8")
        try:
            result = subprocess.run(
                [exe, "-v", self.voice, "-s", str(self.words_per_minute), "-b", "1", "-w", str(target),
                 "-f", str(text_file)],
                capture_output=True, timeout=self.timeout_s, check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise MediaError(f"语音合成超时（{self.timeout_s:.0f} 秒），稿件可能太长。请分段发布或附人工录音。") from exc
        if result.returncode != 0 or not target.is_file() or target.stat().st_size <= 44:
            detail = result.stderr.decode("utf-8", "replace").strip()[-300:]
            raise MediaError(f"语音合成失败（{self.name}，退出码 {result.returncode}）：{detail or '没有生成声音'}。"
                             f"请确认 espeak-ng 支持语音 {self.voice}（espeak-ng --voices=cmn）。")


def load_engine(config: MediaSettings) -> SpeechEngine:
    """The configured engine: 'espeak-ng', or 'package.module:Class' whose constructor takes MediaSettings."""
    if config.tts_engine == "espeak-ng":
        return EspeakNg.from_config(config)
    module_name, _, class_name = config.tts_engine.partition(":")
    if not class_name:
        raise MediaError(f"不认识的语音合成引擎“{config.tts_engine}”。请写 espeak-ng 或 模块:类名。")
    try:
        engine = getattr(importlib.import_module(module_name), class_name)(config)
    except (ImportError, AttributeError) as exc:
        raise MediaError(f"无法加载语音合成引擎“{config.tts_engine}”：{exc}。请检查配置 media.tts_engine。") from exc
    if not isinstance(engine, SpeechEngine):
        raise MediaError(f"“{config.tts_engine}”不是语音合成引擎（需要 name 和 synthesize(text, target)）。")
    return engine


_MD_IMAGE = re.compile(r"!\[[^\]]*\]\([^)]*\)")
_MD_LINK = re.compile(r"\[([^\]]*)\]\([^)]*\)")
_HTML_TAG = re.compile(r"<[^>]+>")
_MD_MARKS = re.compile(r"(^|\n)\s{0,3}(?:#{1,6}\s*|>\s*|[-*+]\s+|\d+\.\s+)|[*_`~|]+")


def spoken_text(title: str, body: str) -> str:
    """What the loudspeaker says: the headline, a pause, then the body without Markdown, figures spelled out."""
    text = _MD_IMAGE.sub("", body)
    text = _MD_LINK.sub(r"\1", text)
    text = _HTML_TAG.sub("", text)
    text = _MD_MARKS.sub(r"\1", text)
    paragraphs = [p.strip() for p in text.splitlines() if p.strip() and not set(p.strip()) <= set("-=:| ")]
    spoken = "\n".join([title.strip().rstrip("。") + "。", *paragraphs])
    return normalise(spoken)
