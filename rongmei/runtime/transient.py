"""Surviving a Prefect API that answers 503 for a while (a busy SQLite, a server restart): flow runs retry
instead of crashing and stranding their item.

Two layers. Prefect's own client retries each request (429, 502, 503, 408 and connection errors) with
exponential backoff; `flow_run_environment` gives our worker's runs more of those retries than Prefect's
default five (about a minute), and heartbeats so that a killed run can be told from a live one
(rongmei.runtime.runs). When even that runs out, `again_after_transient_errors` runs the whole flow body again
after a pause, up to a few times. That is safe because the review and publish flows are idempotent from the
store: a sign-off is applied once per pause key and the stage is read from the store, a delivery that
succeeded is never repeated. Errors that are not the API's passing trouble (a refused publication, a missing
version, a bug) are raised at once: retrying them would only repeat them, and their ledger entries.
"""

from __future__ import annotations

import functools
import logging
import os
import time
from collections.abc import Callable, Sequence
from typing import ParamSpec, TypeVar

from rongmei.core.settings import Settings

__all__ = ["CLIENT_MAX_RETRIES", "RETRY_DELAYS", "TRANSIENT_STATUS", "again_after_transient_errors", "flow_run_environment",
           "is_transient"]

log = logging.getLogger(__name__)
_P = ParamSpec("_P")
_R = TypeVar("_R")

TRANSIENT_STATUS = frozenset({408, 429, 502, 503, 504})
RETRY_DELAYS = (15.0, 60.0, 180.0)  # seconds before the 2nd, 3rd and 4th attempt of a flow body
CLIENT_MAX_RETRIES = 8  # Prefect's client waits 2, 4, … 256 s between them: about 8.5 minutes in all


def is_transient(exc: BaseException) -> bool:
    """An error of the Prefect API (or the way to it) that may well be gone in a minute."""
    import httpx

    if isinstance(exc, httpx.TransportError | ConnectionError | TimeoutError):
        return True
    if isinstance(exc, httpx.HTTPStatusError):  # PrefectHTTPStatusError is one
        return exc.response.status_code in TRANSIENT_STATUS
    return False


def again_after_transient_errors(body: Callable[_P, _R], *, delays: Sequence[float] = RETRY_DELAYS,
                                 sleep: Callable[[float], None] = time.sleep) -> Callable[_P, _R]:
    """Wrap a flow's body (under @flow) so that a transient Prefect API error runs it again from the top after
    a pause; any other error, and the last transient one, propagates. Prefect's pause/suspend signals are
    BaseExceptions and pass through untouched."""

    @functools.wraps(body)
    def run(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        for attempt, delay in enumerate((*delays, None), start=1):
            try:
                return body(*args, **kwargs)
            except Exception as exc:
                if delay is None or not is_transient(exc):
                    raise
                _logger().warning("Prefect 接口暂时不可用（%s: %s）：%d 秒后从头再试（第 %d 次，共 %d 次）；"
                                  "已完成的签字和发布不会重复", type(exc).__name__, exc, round(delay), attempt + 1,
                                  len(delays) + 1)
                sleep(delay)
        raise AssertionError("unreachable")  # the last attempt returns or raises

    return run


def _logger() -> logging.Logger | logging.LoggerAdapter:
    try:
        from prefect import get_run_logger

        return get_run_logger()
    except Exception:  # outside a run (tests, scripts)
        return log


def flow_run_environment(settings: Settings) -> dict[str, str]:
    """Prefect settings for the worker and its flow runs: more client retries, and heartbeats. A variable the
    operator set already is left as it is."""
    wanted = {"PREFECT_CLIENT_MAX_RETRIES": str(CLIENT_MAX_RETRIES), "PREFECT_CLIENT_RETRY_EXTRA_CODES": "504"}
    if settings.flow_heartbeat_seconds > 0:
        wanted["PREFECT_FLOWS_HEARTBEAT_FREQUENCY"] = str(max(30, settings.flow_heartbeat_seconds))
    return {key: value for key, value in wanted.items() if key not in os.environ}
