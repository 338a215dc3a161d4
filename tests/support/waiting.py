"""Waiting in tests without depending on a quiet machine.

CI runs the suite on a busy 2-core machine: anything a test waits for may take many times longer there than on
a developer's laptop. So a test never sleeps and hopes; it waits for the condition it needs, with a deadline
that only a hang reaches. A generous deadline costs nothing when things go well: the wait ends as soon as the
condition holds.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

__all__ = ["ANSWER_TIMEOUT", "PATIENCE", "wait_until"]

_T = TypeVar("_T")

# Seconds before a wait for something that should happen gives up: far above what anything takes on a loaded
# CI machine, well below pytest-timeout's 600 s, so a hang fails with this module's message instead.
PATIENCE = 300.0
# Seconds for one answer from a local server (HTTP on 127.0.0.1, a subprocess doing one small thing).
ANSWER_TIMEOUT = 60.0


def wait_until(condition: Callable[[], _T], *, timeout: float = PATIENCE, message: str | Callable[[], str] = "",
               interval: float = 0.02, max_interval: float = 0.5) -> _T:
    """Call `condition` until it returns something truthy, and return that; fail after `timeout` seconds.

    The polling interval starts short (a quick answer is seen at once) and grows up to `max_interval` (a long
    wait does not spin on a machine that is busy already). `message` (or a function making it, called only on
    failure, e.g. to show a log as it is then) says what did not happen."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            text = message() if callable(message) else message
            raise AssertionError(f"{text or 'condition not met'} (waited {timeout:g} s)")
        time.sleep(interval)
        interval = min(interval * 1.5, max_interval)
