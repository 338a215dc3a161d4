"""Housekeeping: on a schedule, let every channel re-apply its time rules (`expires` takes items off)."""

from __future__ import annotations

from datetime import UTC, datetime

from prefect import flow, get_run_logger

from publishers import registry_for
from rongmei.core.settings import load_settings


@flow(name="housekeeping", log_prints=False)
def housekeeping() -> dict[str, str]:
    settings = load_settings()
    registry = registry_for(settings)
    now = datetime.now(UTC)
    outcome: dict[str, str] = {}
    for name, publisher_cls in sorted(registry.publishers.items()):
        try:
            publisher_cls(settings).refresh(now)
            outcome[name] = "ok"
        except Exception as exc:  # one channel's trouble must not stop the others' expiry
            outcome[name] = f"{type(exc).__name__}: {exc}"
            get_run_logger().error("%s refresh failed: %s", name, exc)
    return outcome
