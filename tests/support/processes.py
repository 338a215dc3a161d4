"""Processes by /proc, for the fault suite: a process's descendants, and a power cut that kills them all.

Linux only (the suite runs there): `/proc/<pid>/stat` gives each process's parent and state without psutil.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

__all__ = [
    "Process", "alive", "children_named", "descendants", "dies_with_this_process", "freeze", "kill_tree", "processes",
    "wait_gone"
]


def processes() -> dict[int, tuple[int, str]]:
    """Every process now: pid -> (parent pid, state letter; 'Z' is a zombie)."""
    found: dict[int, tuple[int, str]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:  # gone meanwhile
            continue
        fields = stat[stat.rindex(")") + 2:].split()  # after the command name, which may hold spaces
        found[int(entry)] = (int(fields[1]), fields[0])
    return found


class Process:
    """A process by pid *and* start time: on a busy machine (pid_max 32768) a pid is soon another process's, and a
    signal sent to a stale pid would hit whatever runs there now."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.started = _start_time(pid)

    def same(self) -> bool:
        return self.started is not None and _start_time(self.pid) == self.started and alive(self.pid)

    def signal(self, signum: int) -> bool:
        """Send `signum` if it is still the same process; whether it was."""
        if not self.same():
            return False
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signum)
        return True

    def __repr__(self) -> str:
        return f"Process({self.pid})"


def _start_time(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat[stat.rindex(")") + 2:].split()[19])  # field 22, starttime (clock ticks since boot)


def alive(pid: int) -> bool:
    """Running (or stopped), not gone and not a zombie waiting for its parent."""
    state = processes().get(pid)
    return state is not None and state[1] != "Z"


def descendants(*roots: int) -> set[int]:
    """The roots and every process below them, now."""
    table = processes()
    below: dict[int, list[int]] = {}
    for pid, (parent, _) in table.items():
        below.setdefault(parent, []).append(pid)
    found, todo = set(), [r for r in roots if r in table]
    while todo:
        pid = todo.pop()
        if pid not in found:
            found.add(pid)
            todo.extend(below.get(pid, []))
    return found


def children_named(parent: int, name: str) -> list[Process]:
    """Descendants of `parent` whose executable's name contains `name` (e.g. "ffmpeg")."""
    found = []
    for pid in descendants(parent) - {parent}:
        try:
            command = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode(errors="replace")
        except OSError:
            continue
        if name in Path(command).name:
            found.append(Process(pid))
    return found


def freeze(procs: list[Process]) -> None:
    """SIGSTOP: the processes stay exactly where they are (an encoder cannot finish) until killed."""
    for proc in procs:
        proc.signal(signal.SIGSTOP)


def kill_tree(*roots: int) -> set[int]:
    """SIGKILL the roots and everything below them, like a power cut: first freeze them all (SIGSTOP) so that
    none can start a new child between the listing and the kill, then kill. Returns the pids killed."""
    killed: set[int] = set()
    while True:
        found = descendants(*roots) - killed
        if not found:
            return killed
        for pid in found:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGSTOP)
        for pid in descendants(*roots) | found:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            killed.add(pid)


def wait_gone(pids: set[int], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while any(alive(pid) for pid in pids):
        if time.monotonic() > deadline:
            raise AssertionError(f"processes still alive {timeout:.0f} s after SIGKILL: "
                                 f"{sorted(p for p in pids if alive(p))}")
        time.sleep(0.1)



def dies_with_this_process(signum: int = signal.SIGTERM) -> Callable[[], None]:
    """A `preexec_fn`: the child gets `signum` when this process dies, however it dies (a test runner killed by
    its CI job must not leave a `rongmei up` behind; SIGTERM lets it stop what it started)."""
    prctl, parent, number = ctypes.CDLL(None, use_errno=True).prctl, os.getpid(), int(signum)

    def arrange() -> None:
        prctl(1, number)  # PR_SET_PDEATHSIG
        if os.getppid() != parent:
            os._exit(1)

    return arrange
