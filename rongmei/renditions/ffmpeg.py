"""Running the ffmpeg binary shipped by imageio-ffmpeg (there is no ffprobe), with progress reporting.

Every call goes through `run_ffmpeg`, which counts runs (`ffmpeg_run_count`) so callers and tests can see
that a cached rendition did not touch ffmpeg again. An ffmpeg never outlives its run: it is stopped when the
call fails, and on Linux the kernel kills it when the process that started it dies (a SIGKILLed flow run would
otherwise leave it encoding for minutes beside the run that redoes the work).
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Sequence
from functools import cache
from pathlib import Path

from rongmei.core.faults import fault_point
from rongmei.renditions.errors import MediaError

__all__ = ["Progress", "ffmpeg_exe", "ffmpeg_run_count", "filter_path", "run_ffmpeg"]

log = logging.getLogger(__name__)

Progress = Callable[[str, float], None]

_runs = 0
_runs_lock = threading.Lock()
_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
_prctl = ctypes.CDLL(None, use_errno=True).prctl if sys.platform.startswith("linux") else None


def _dies_with(parent: int) -> Callable[[], None] | None:
    """What the child runs between fork and exec: ask for SIGKILL when `parent` (the thread that started it) dies,
    and give up at once if it died already. Only a C call and two system calls: nothing that takes a lock."""
    if _prctl is None:
        return None
    prctl, sigkill = _prctl, int(signal.SIGKILL)

    def arrange() -> None:
        prctl(_PR_SET_PDEATHSIG, sigkill)
        if os.getppid() != parent:
            os._exit(1)

    return arrange


@cache
def ffmpeg_exe() -> str:
    try:
        import imageio_ffmpeg

        return imageio_ffmpeg.get_ffmpeg_exe()
    except (ImportError, RuntimeError) as exc:
        raise MediaError(
            f"找不到 ffmpeg 程序（{exc}）。请技术人员执行 pip install imageio-ffmpeg 后重试。"
        ) from exc


def ffmpeg_run_count() -> int:
    """How many ffmpeg processes this process has started (cache hits start none)."""
    return _runs


def _count() -> None:
    global _runs
    with _runs_lock:
        _runs += 1


def run_ffmpeg(args: Sequence[str], *, what: str, duration_s: float | None = None,
               progress: Progress | None = None, cwd: Path | None = None, check: bool = True,
               fault: str = "") -> str:
    """Run `ffmpeg -hide_banner -nostdin <args>`; returns stderr (where ffmpeg reports measurements).

    With `duration_s` and `progress`, ffmpeg's `-progress pipe:1` is parsed and `progress(what, 0..1)` called
    about once a second. A non-zero exit raises MediaError naming `what` and ffmpeg's last lines. `fault` names
    the fault point (rongmei.core.faults) passed while ffmpeg runs.
    """
    cmd = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-y"]
    reporting = progress is not None and duration_s
    if reporting:
        cmd += ["-progress", "pipe:1", "-nostats"]
    cmd += list(args)
    _count()
    log.debug("ffmpeg %s: %s", what, " ".join(cmd))
    # stderr goes to a file, not a pipe: reading only stdout while stderr fills its pipe would deadlock.
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE if reporting else subprocess.DEVNULL,
                                stderr=err, cwd=cwd, preexec_fn=_dies_with(os.getpid()))
        try:
            if fault:
                fault_point(fault)
            if reporting and proc.stdout is not None:
                _follow_progress(proc.stdout, what, float(duration_s or 0), progress)  # type: ignore[arg-type]
            code = proc.wait()
        except BaseException:  # e.g. the progress file could not be written (disk full): no ffmpeg left behind
            proc.kill()
            proc.wait()
            raise
        err.seek(0)
        stderr = err.read().decode("utf-8", "replace")
    if code != 0 and check:
        tail = "\n".join(stderr.strip().splitlines()[-6:])
        raise MediaError(f"ffmpeg 处理“{what}”失败（退出码 {code}）：{tail}")
    if reporting:
        progress(what, 1.0)  # type: ignore[misc]
    return stderr


def _follow_progress(stream: object, what: str, duration_s: float, progress: Progress) -> None:
    last = -1.0
    for raw in stream:  # type: ignore[attr-defined]
        line = raw.decode("ascii", "replace").strip()
        if not line.startswith("out_time_us="):
            continue
        try:
            done = int(line.split("=", 1)[1]) / 1_000_000
        except ValueError:  # "N/A" before the first frame
            continue
        fraction = max(0.0, min(done / duration_s, 0.999))
        if fraction - last >= 0.01:
            last = fraction
            progress(what, fraction)


def filter_path(path: Path | str) -> str:
    """Escape a path for a filter option value (e.g. subtitles=filename=...) inside a filter graph.

    Two levels, per ffmpeg-filters(1) "Notes on filtergraph escaping": the option value, then the graph.
    """
    value = str(path).replace("\\", "\\\\").replace("'", "\\'").replace(":", "\\:")
    for char in ("\\", "'", "[", "]", ",", ";"):
        value = value.replace(char, "\\" + char)
    return value
