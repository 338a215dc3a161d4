"""Benchmark: our renditions against the raw ffmpeg command lines with the same settings, in the same run.

Inputs are generated with ffmpeg test sources: a 60 s 1080×1920 (vertical) clip with sound and a 3-minute
speech-like tone. "Ours" is the library path (probe, then the rendition function); "raw" is the literal
ffmpeg command line(s) a person would type for the same output. Targets (issue 5): video ≤ 1.15×, audio ≤ 1.2×.

    .venv/bin/python bench/renditions.py [--reps 1] [--keep DIR]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from rongmei.core.media_settings import MediaSettings
from rongmei.renditions import audio, video
from rongmei.renditions.ffmpeg import ffmpeg_exe
from rongmei.renditions.probe import probe

FFMPEG = ffmpeg_exe()


def ffmpeg(*args: str) -> None:
    subprocess.run([FFMPEG, "-hide_banner", "-nostdin", "-y", "-loglevel", "error", *args], check=True)


def make_inputs(folder: Path) -> tuple[Path, Path]:
    clip, speech = folder / "clip-1080x1920-60s.mp4", folder / "speech-3min.wav"
    if not clip.exists():
        ffmpeg("-f", "lavfi", "-i", "testsrc2=size=1080x1920:rate=30:duration=60",
               "-f", "lavfi", "-i", "sine=frequency=330:duration=60", "-c:v", "libx264", "-preset", "ultrafast",
               "-crf", "18", "-pix_fmt", "yuv420p", "-c:a", "aac", "-shortest", str(clip))
    if not speech.exists():
        ffmpeg("-f", "lavfi", "-i", "aevalsrc=0.5*sin(2*PI*220*t)*(0.55+0.45*sin(2*PI*3*t)):s=48000:d=180",
               "-af", "volume=-24dB", "-ac", "2", str(speech))
    return clip, speech


def timed(action: Callable[[], object]) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def raw_web(clip: Path, out: Path, c: MediaSettings) -> None:
    ffmpeg("-i", str(clip), "-filter_complex", "[0:v]scale=720:1280:flags=bicubic,setsar=1[s];[s]format=yuv420p[v]",
           "-map", "[v]", "-map", "0:a:0?", "-c:v", "libx264", "-preset", c.video_preset, "-crf", str(c.video_crf),
           "-profile:v", "high", "-c:a", "aac", "-b:a", f"{c.video_audio_kbps}k", "-ac", "2", "-ar", "44100",
           "-movflags", "+faststart", "-map_metadata", "-1", str(out))


def raw_screen(clip: Path, out: Path, c: MediaSettings) -> None:
    graph = ("[0:v]fps=25,split=2[a][b];[a]scale=192:108:force_original_aspect_ratio=increase,crop=192:108,"
             "boxblur=8:2,scale=1920:1080,eq=brightness=-0.08[bg];"
             "[b]scale=1920:1080:force_original_aspect_ratio=decrease:flags=bicubic[fg];"
             "[bg][fg]overlay=(W-w)/2:(H-h)/2,setsar=1[base];[base]format=yuv420p[v]")
    ffmpeg("-i", str(clip), "-filter_complex", graph, "-map", "[v]", "-an", "-c:v", "libx264",
           "-preset", c.video_preset, "-crf", str(c.video_crf), "-profile:v", "high", "-maxrate", "8M",
           "-bufsize", "16M", "-r", "25", "-movflags", "+faststart", "-map_metadata", "-1", str(out))


def raw_audio(speech: Path, out: Path, c: MediaSettings) -> None:
    import json

    norm = f"loudnorm=I={c.loudness_lufs}:TP={c.true_peak_dbtp}:LRA={c.loudness_range_lu}"
    first = subprocess.run([FFMPEG, "-hide_banner", "-nostdin", "-i", str(speech), "-vn", "-af",
                            f"aformat=channel_layouts=mono,{norm}:print_format=json", "-f", "null", "-"],
                           capture_output=True, text=True, check=True).stderr
    m = json.loads(first[first.rfind("{"):first.rfind("}") + 1])
    ffmpeg("-i", str(speech), "-vn", "-af",
           f"aformat=channel_layouts=mono,{norm}:measured_I={m['input_i']}:measured_TP={m['input_tp']}"
           f":measured_LRA={m['input_lra']}:measured_thresh={m['input_thresh']}:offset={m['target_offset']}"
           ":linear=true", "-ar", str(c.loudspeaker_sample_rate), "-ac", "1", "-c:a", "libmp3lame",
           "-b:a", f"{c.loudspeaker_kbps}k", str(out))
    # The check after encoding is part of the recipe: the raw side measures too.
    subprocess.run([FFMPEG, "-hide_banner", "-nostdin", "-i", str(out), "-af", "ebur128=peak=true", "-f", "null",
                    "-"], capture_output=True, check=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=1, help="runs of each side; the best time counts")
    parser.add_argument("--only", help="run only the cases whose name contains this text")
    parser.add_argument("--keep", type=Path, help="folder for inputs and outputs (default: a temporary one)")
    args = parser.parse_args()
    config = MediaSettings()
    with tempfile.TemporaryDirectory() as scratch:
        folder = args.keep or Path(scratch)
        folder.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        clip, speech = make_inputs(folder)
        print(f"inputs ready in {time.perf_counter() - started:.1f} s (60 s 1080x1920 clip, 3 min speech)")
        cases: dict[str, tuple[Callable[[], object], Callable[[], object]]] = {
            "video_web 720p": (
                lambda: video.video_web(clip, folder / "ours-web.mp4", probe(clip), config),
                lambda: raw_web(clip, folder / "raw-web.mp4", config)),
            "video_screen 1080p": (
                lambda: video.video_screen(clip, folder / "ours-screen.mp4", probe(clip), config),
                lambda: raw_screen(clip, folder / "raw-screen.mp4", config)),
            "loudspeaker_audio": (
                lambda: audio.loudspeaker_audio(speech, folder / "ours.mp3", config,
                                                duration_s=probe(speech).duration_s,
                                                tags={"title": "基准", "artist": "bench", "publisher": "bench",
                                                      "date": "2026-11-26", "item_id": "bench"}),
                lambda: raw_audio(speech, folder / "raw.mp3", config)),
        }
        targets = {"video_web 720p": 1.15, "video_screen 1080p": 1.15, "loudspeaker_audio": 1.2}
        print(f"{'rendition':<20}{'ours s':>9}{'raw s':>9}{'ratio':>8}{'target':>8}")
        failed = False
        for name, (ours, raw) in cases.items():
            if args.only and args.only not in name:
                continue
            ours_t, raw_t = [], []
            for rep in range(args.reps):  # interleaved, order swapped each rep: load and caches hit both alike
                if rep % 2:
                    raw_t.append(timed(raw))
                    ours_t.append(timed(ours))
                else:
                    ours_t.append(timed(ours))
                    raw_t.append(timed(raw))
            ratio = min(ours_t) / min(raw_t)
            failed |= ratio > targets[name]
            print(f"{name:<20}{min(ours_t):>9.2f}{min(raw_t):>9.2f}{ratio:>8.3f}{targets[name]:>8.2f}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
