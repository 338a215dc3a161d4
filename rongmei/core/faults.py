"""Named fault points: where the fault-injection suite (tests/faults/) breaks a running system on purpose.

A fault point is a call `fault_point("wechat.submit.before")` at a line where a power cut would hurt. It does
nothing unless the environment variable `RONGMEI_FAULTS_DIR` names a directory *and* that directory holds a
file named after the point (an "armed" point). The file's first word says what happens, once:

- `kill`: the process kills itself with SIGKILL at once (no cleanup, no `finally`, like a power cut);
- `hold`: the process writes `<point>.reached` beside it and waits there until someone kills it (the test
  then kills whatever it wants: the worker, or the whole `rongmei up` process group);
- `raise`: the call raises `InjectedFault` (an OSError, as a full disk or a dropped connection would).

Arming is a file and not a variable so that a test can arm a point in processes that are already running
(the worker's flow runs inherit the variable when `rongmei up` starts) and so that a point fires once: the
process that hits it removes the file first, and only the one whose removal succeeded acts. Production never
sets the variable; the cost of an unarmed point is one environment lookup.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

__all__ = ["FAULTS_DIR_VARIABLE", "InjectedFault", "fault_point"]

FAULTS_DIR_VARIABLE = "RONGMEI_FAULTS_DIR"


class InjectedFault(OSError):
    """Raised by an armed `raise` fault point."""


def fault_point(name: str) -> None:
    """Act on the fault armed for `name`, if any (see the module docstring)."""
    directory = os.environ.get(FAULTS_DIR_VARIABLE)
    if not directory:
        return
    armed = Path(directory) / name
    try:
        action = armed.read_text(encoding="utf-8").split()[0] if armed.stat().st_size else "kill"
        armed.unlink()  # only the process whose unlink succeeds acts: a point fires once
    except (FileNotFoundError, IndexError):
        return
    if action == "hold":
        reached = armed.with_name(f"{name}.reached")
        reached.write_text(str(os.getpid()), encoding="utf-8")
        while True:  # until the test kills this process (or its group)
            time.sleep(3600)
    if action == "raise":
        raise InjectedFault(f"fault injected at {name}")
    os.kill(os.getpid(), signal.SIGKILL)
