"""Loudspeaker audio: mono, two-pass EBU R128 loudnorm, MP3, measured again after encoding, ID3 tags.

The true-peak limit sits at −2 dBTP because MP3 encoding adds 0.5–1 dB of peak (shared/reference/media.md);
the file is measured after encoding with `ebur128=peak=true` and those measured values go in the manifest.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rongmei.core.media_settings import MediaSettings
from rongmei.renditions.errors import MediaError
from rongmei.renditions.ffmpeg import Progress, run_ffmpeg

__all__ = ["SILENCE_LUFS", "Loudness", "encode", "first_pass", "loudspeaker_audio", "measure", "write_tags"]

_SUMMARY_I = re.compile(r"I:\s+(-?[\d.]+|-inf) LUFS")
_SUMMARY_LRA = re.compile(r"LRA:\s+(-?[\d.]+) LU")
_SUMMARY_PEAK = re.compile(r"Peak:\s+(-?[\d.]+|-inf) dBFS")
SILENCE_LUFS = -70.0


@dataclass(frozen=True)
class Loudness:
    integrated_lufs: float
    true_peak_dbtp: float
    loudness_range_lu: float


def _number(text: str) -> float:
    return float("-inf") if text == "-inf" else float(text)


def measure(path: Path) -> Loudness:
    """Integrated loudness, true peak and LRA as decoded from the file (ffmpeg ebur128 with peak=true)."""
    stderr = run_ffmpeg(["-i", str(path), "-vn", "-af", "ebur128=peak=true", "-f", "null", "-"],
                        what=f"测量响度 {path.name}")
    summary = stderr[stderr.rfind("Summary:"):]
    i, lra, peak = _SUMMARY_I.search(summary), _SUMMARY_LRA.search(summary), _SUMMARY_PEAK.search(summary)
    if not (i and lra and peak):
        raise MediaError(f"无法测量 {path.name} 的响度：ffmpeg 没有给出 EBU R128 结果。")
    return Loudness(_number(i[1]), _number(peak[1]), float(lra[1]))


def _loudnorm(config: MediaSettings) -> str:
    return f"loudnorm=I={config.loudness_lufs}:TP={config.true_peak_dbtp}:LRA={config.loudness_range_lu}"


def first_pass(source: Path, config: MediaSettings, *, duration_s: float | None = None,
               progress: Progress | None = None) -> dict[str, str]:
    """loudnorm's analysis of the mono mix; the numbers the second pass needs."""
    stderr = run_ffmpeg(
        ["-i", str(source), "-vn", "-sn", "-dn", "-af",
         f"aformat=channel_layouts=mono,{_loudnorm(config)}:print_format=json", "-f", "null", "-"],
        what="响度分析", duration_s=duration_s, progress=progress)
    start, end = stderr.rfind("{"), stderr.rfind("}")
    if start < 0 or end < start:
        raise MediaError(f"{source.name} 的响度分析没有结果，文件可能没有声音或已损坏。")
    measured: dict[str, str] = json.loads(stderr[start:end + 1])
    if _number(measured["input_i"]) < SILENCE_LUFS:
        raise MediaError(f"{source.name} 几乎没有声音（响度 {measured['input_i']} LUFS），无法用于村村响。"
                         "请检查录音或视频的声音轨。")
    return measured


def encode(source: Path, target: Path, config: MediaSettings, measured: dict[str, str], *,
           duration_s: float | None = None, progress: Progress | None = None) -> None:
    chain = (f"aformat=channel_layouts=mono,{_loudnorm(config)}:measured_I={measured['input_i']}"
             f":measured_TP={measured['input_tp']}:measured_LRA={measured['input_lra']}"
             f":measured_thresh={measured['input_thresh']}:offset={measured['target_offset']}:linear=true")
    run_ffmpeg(
        ["-i", str(source), "-vn", "-sn", "-dn", "-map_metadata", "-1", "-af", chain,
         "-ar", str(config.loudspeaker_sample_rate), "-ac", "1", "-c:a", "libmp3lame",
         "-b:a", f"{config.loudspeaker_kbps}k", "-fflags", "+bitexact", "-flags:a", "+bitexact", str(target)],
        what="村村响音频编码", duration_s=duration_s, progress=progress)


def write_tags(path: Path, *, title: str, artist: str, publisher: str, date: str, item_id: str,
               comment: str = "") -> None:
    from mutagen.id3 import COMM, ID3, TDRC, TIT2, TPE1, TPUB, TXXX

    tags = ID3()  # a fresh tag replaces whatever the encoder wrote
    tags.add(TIT2(encoding=3, text=title))
    tags.add(TPE1(encoding=3, text=artist))
    tags.add(TPUB(encoding=3, text=publisher))
    if date:
        tags.add(TDRC(encoding=3, text=date))
    tags.add(TXXX(encoding=3, desc="rongmei_item", text=item_id))
    if comment:
        tags.add(COMM(encoding=3, lang="chi", desc="", text=comment))
    tags.save(path, v2_version=3)  # ID3v2.3: what cheap loudspeaker terminals and Windows read


def loudspeaker_audio(source: Path, target: Path, config: MediaSettings, *, duration_s: float | None,
                      tags: dict[str, str] | None = None, progress: Progress | None = None) -> dict[str, Any]:
    """Make the loudspeaker MP3 from any audio (or a video's soundtrack); returns the measured facts."""
    measured = first_pass(source, config, duration_s=duration_s, progress=progress)
    encode(source, target, config, measured, duration_s=duration_s, progress=progress)
    loudness = measure(target)
    if tags:
        write_tags(target, **tags)
    return {
        "integrated_lufs": loudness.integrated_lufs,
        "true_peak_dbtp": loudness.true_peak_dbtp,
        "loudness_range_lu": loudness.loudness_range_lu,
        "kbps": config.loudspeaker_kbps,
        "target_lufs": config.loudness_lufs,
    }
