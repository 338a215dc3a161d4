"""Talking to the Prefect server from outside a flow run (the CLI), about runs other than our own, and for the
channels' slots (global concurrency limits): Prefect knowledge stays out of the channels.

Prefect is imported lazily: the CLI must stay quick for commands that never touch it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import requests

from publishers.base import SlotUnavailable
from rongmei.core.settings import Settings

__all__ = [
    "AUTH_FILE", "PrefectSlots", "api_auth_file", "cancel_item_runs", "read_api_auth", "use_local_prefect"
]

AUTH_FILE = "prefect-api-auth"


def api_auth_file(settings: Settings) -> Path:
    return settings.secrets_dir / AUTH_FILE


def read_api_auth(settings: Settings) -> str | None:
    """The Prefect API login: the operator's PREFECT_API_AUTH_STRING, else the one `rongmei up` generated."""
    if value := os.environ.get("PREFECT_API_AUTH_STRING") or os.environ.get("PREFECT_SERVER_API_AUTH_STRING"):
        return value
    path = api_auth_file(settings)
    return path.read_text(encoding="utf-8").strip() if path.is_file() else None


def use_local_prefect(settings: Settings) -> str | None:
    """Point this process's Prefect client at the server `rongmei up` runs (unless the environment already
    names one) with its login; returns the API URL, or None when nobody answers there. Call before Prefect is
    imported: it reads its settings once."""
    api = os.environ.setdefault("PREFECT_API_URL", f"http://127.0.0.1:{settings.prefect_port}/api")
    if (auth := read_api_auth(settings)) is not None:
        os.environ.setdefault("PREFECT_API_AUTH_STRING", auth)
    try:
        requests.get(f"{api.rstrip('/')}/health", timeout=3)
    except requests.RequestException:
        return None
    return api


def cancel_item_runs(item_id: str, reason: str) -> list[str]:
    """Cancel the item's runs that would still act on it: scheduled publish runs (embargo) and runs that are
    pending or waiting for a sign-off. Returns the names of the runs cancelled."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterState,
        FlowRunFilterStateType,
        FlowRunFilterTags,
    )
    from prefect.client.schemas.objects import StateType
    from prefect.context import FlowRunContext
    from prefect.states import Cancelled

    context = FlowRunContext.get()
    ours = context.flow_run.id if context and context.flow_run else None
    waiting = FlowRunFilter(
        tags=FlowRunFilterTags(all_=[f"item:{item_id}"]),
        state=FlowRunFilterState(type=FlowRunFilterStateType(
            any_=[StateType.SCHEDULED, StateType.PENDING, StateType.PAUSED])),
    )
    cancelled = []
    with get_client(sync_client=True) as client:
        for run in client.read_flow_runs(flow_run_filter=waiting):
            if run.id == ours:
                continue
            client.set_flow_run_state(run.id, Cancelled(message=f"稿件已撤稿（{reason}），本运行已取消"), force=True)
            cancelled.append(run.name)
    return cancelled


class PrefectSlots:
    """`publishers.base.Slots` as Prefect global concurrency limits (1 slot, strict), handed to the channels by
    the publish flow: its workers may sit on several machines that share only the Prefect server. A limit is
    created the first time its name is used."""

    def __init__(self, timeout_seconds: float = 300) -> None:
        self.timeout_seconds = timeout_seconds

    @contextmanager
    def hold(self, name: str) -> Iterator[None]:
        from prefect.concurrency.sync import concurrency

        try:
            _ensure_limit(name)
            slot = concurrency(name, occupy=1, timeout_seconds=self.timeout_seconds, strict=True)
            slot.__enter__()
        except Exception as exc:  # Prefect's own errors vary (httpx, timeouts, acquisition errors)
            raise SlotUnavailable(f"Prefect 并发限制 {name} 不可用（{exc}）") from exc
        try:
            yield
        finally:
            slot.__exit__(None, None, None)


def _ensure_limit(name: str) -> None:
    """Create the limit (1 slot) the first time: Prefect ignores limits that do not exist."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
    from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            client.read_global_concurrency_limit_by_name(name)
        except ObjectNotFound:
            with suppress(ObjectAlreadyExists):
                client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=1))
