"""Riding out the Prefect API's passing trouble (rongmei.runtime.transient) and telling a dead run from a live one
(rongmei.runtime.runs.is_dead): plain functions, no server."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
import pytest
from prefect.exceptions import PrefectHTTPStatusError

from rongmei.core.errors import DeliveryRefused
from rongmei.runtime.runs import RunView, is_dead
from rongmei.runtime.transient import again_after_transient_errors, flow_run_environment, is_transient


def status_error(code: int) -> PrefectHTTPStatusError:
    request = httpx.Request("POST", "http://127.0.0.1:4200/api/flow_runs/x/set_state")
    return PrefectHTTPStatusError.from_httpx_error(httpx.HTTPStatusError(
        "server says no", request=request, response=httpx.Response(code, request=request, text="database is locked")))


def test_what_counts_as_the_apis_passing_trouble():
    assert is_transient(status_error(503)) and is_transient(status_error(429)) and is_transient(status_error(504))
    assert is_transient(httpx.ConnectError("refused")) and is_transient(httpx.ReadTimeout("slow"))
    assert not is_transient(status_error(404)) and not is_transient(status_error(422))
    assert not is_transient(status_error(500))  # a bug on the server: retrying a POST could do it twice
    assert not is_transient(DeliveryRefused("拒绝发布")) and not is_transient(ValueError("bug"))


def test_a_flow_body_runs_again_after_transient_errors_and_gives_up_in_the_end():
    calls, pauses = [], []

    def body(version_id: int) -> str:
        calls.append(version_id)
        if len(calls) < 3:
            raise status_error(503)
        return "approved"

    wrapped = again_after_transient_errors(body, delays=(1.0, 2.0, 3.0), sleep=pauses.append)
    assert wrapped(7) == "approved" and calls == [7, 7, 7] and pauses == [1.0, 2.0]
    assert wrapped.__wrapped__ is body  # Prefect reads the flow's parameters through it

    def always_down(version_id: int) -> str:
        calls.append(version_id)
        raise httpx.ConnectError("refused")

    calls.clear()
    pauses.clear()
    with pytest.raises(httpx.ConnectError):
        again_after_transient_errors(always_down, delays=(1.0, 2.0), sleep=pauses.append)(8)
    assert calls == [8, 8, 8] and pauses == [1.0, 2.0]


def test_other_errors_are_raised_at_once():
    calls = []

    def refused(version_id: int) -> str:
        calls.append(version_id)
        raise DeliveryRefused("拒绝发布：未经签发")

    with pytest.raises(DeliveryRefused):
        again_after_transient_errors(refused, sleep=lambda _: None)(9)
    assert calls == [9]  # retried, it would only write the refusal into the ledger again


def test_the_review_and_publish_flows_retry_transient_errors():
    from flows.publish import publish
    from flows.review import review

    for flow in (review, publish):
        assert flow.fn.__wrapped__.__name__ == flow.fn.__name__
        assert list(flow.parameters.properties) == ["version_id"]


def test_the_worker_gets_more_client_retries_and_heartbeats(settings, monkeypatch):
    monkeypatch.delenv("PREFECT_CLIENT_MAX_RETRIES", raising=False)
    monkeypatch.delenv("PREFECT_FLOWS_HEARTBEAT_FREQUENCY", raising=False)
    env = flow_run_environment(settings)
    assert int(env["PREFECT_CLIENT_MAX_RETRIES"]) > 5 and env["PREFECT_FLOWS_HEARTBEAT_FREQUENCY"] == "30"
    monkeypatch.setenv("PREFECT_CLIENT_MAX_RETRIES", "2")  # the operator's own choice stays
    settings.flow_heartbeat_seconds = 0
    env = flow_run_environment(settings)
    assert "PREFECT_CLIENT_MAX_RETRIES" not in env and "PREFECT_FLOWS_HEARTBEAT_FREQUENCY" not in env


def run(state_type: str, since: datetime) -> RunView:
    return RunView(id="r", name="审核 · x", flow="review", version_id=1, item_id="x", state_type=state_type,
                   state_name=state_type.title(), since=since)


def test_a_run_is_dead_only_after_a_long_silence_and_only_when_heartbeats_are_on(settings):
    now = datetime.now(UTC)
    long_ago = now - timedelta(seconds=settings.reconcile_dead_run_seconds + 60)
    assert is_dead(run("RUNNING", long_ago), None, settings, now)
    assert is_dead(run("PENDING", long_ago), long_ago, settings, now)
    assert not is_dead(run("RUNNING", long_ago), now - timedelta(seconds=40), settings, now)  # it beats
    assert not is_dead(run("RUNNING", now - timedelta(seconds=60)), None, settings, now)  # just started
    assert not is_dead(run("PAUSED", long_ago), None, settings, now)  # waiting runs hold no process
    assert not is_dead(run("SCHEDULED", long_ago), None, settings, now)
    settings.flow_heartbeat_seconds = 0
    assert not is_dead(run("RUNNING", long_ago), None, settings, now)  # a long run and a dead one look alike
