"""Warm start: flow runs start as forks of a server that has Prefect and our flows imported.

The client (`python -m rongmei.runtime.warmstart`, the deployments' command) must behave like `python -m prefect.engine`
in every way the worker can see: output on its own stdout/stderr, the same exit code, death by the same
signal; and it must run cold, never fail, when the server is missing or was started with other settings.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.waiting import ANSWER_TIMEOUT, PATIENCE, wait_until

CLIENT = [sys.executable, "-m", "rongmei.runtime.warmstart"]
BAD_ID_MESSAGE = "Invalid flow run id"


class WarmServer:
    def __init__(self, tmp_path: Path, env: dict[str, str], kill_grace: float = 2) -> None:
        self.socket = tmp_path / "run" / "warm.sock"
        self.log = tmp_path / "warmstart.log"
        self.env = env
        self.kill_grace = kill_grace
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen([*CLIENT, "serve", "--socket", str(self.socket), "--kill-grace",
                                          str(kill_grace)], env=env, stdout=out, stderr=subprocess.STDOUT)
        self.wait_for_log("ready in", count=1)

    def text(self) -> str:
        return self.log.read_text(encoding="utf-8")

    def wait_for_log(self, needle: str, count: int = 1, timeout: float = PATIENCE) -> str:
        def logged() -> str | None:
            text = self.text()
            if text.count(needle) >= count:
                return text
            assert self.proc.poll() is None, f"warm server exited:\n{text}"
            return None

        return wait_until(logged, timeout=timeout, message=lambda: f"{needle!r} not in the warm server's log:\n{self.text()}")

    def client_env(self, **extra: str) -> dict[str, str]:
        return {**self.env, "RONGMEI_WARMSTART_SOCKET": str(self.socket), **extra}

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=ANSWER_TIMEOUT)


@pytest.fixture
def silent_api() -> Iterator[str]:
    """An API address that accepts connections and never answers: a flow run started against it hangs."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}/api"
    finally:
        listener.close()


@pytest.fixture
def warm(tmp_path: Path, silent_api: str) -> Iterator[WarmServer]:
    env = {**os.environ, "PREFECT_API_URL": silent_api, "PREFECT_HOME": str(tmp_path / "prefect"),
           "PREFECT_LOGGING_LEVEL": "INFO"}
    server = WarmServer(tmp_path, env)
    try:
        yield server
    finally:
        server.stop()


def warm_pid(server: WarmServer, run_id: str) -> int:
    text = server.wait_for_log(f"flow run {run_id} started warm")
    return int(re.search(rf"flow run {re.escape(run_id)} started warm as pid (\d+)", text).group(1))


def process_states(pid: int) -> set[str]:
    """The scheduler states of the process's threads (R, S, T stopped, Z zombie, ...); empty once it is reaped."""
    states = set()
    for stat in Path(f"/proc/{pid}/task").glob("*/stat"):
        try:
            states.add(stat.read_text().rpartition(")")[2].split()[0])
        except (FileNotFoundError, ProcessLookupError, IndexError):
            continue
    return states


def dead(pid: int) -> bool:
    """Gone, or a zombie its parent (the warm server) has not reaped yet: either way it runs no more."""
    return process_states(pid) <= {"Z", "X"}


def gone(pid: int, timeout: float = PATIENCE) -> bool:
    with contextlib.suppress(AssertionError):
        return wait_until(lambda: dead(pid), timeout=timeout)
    return False


def catches(pid: int, signum: int) -> bool:
    """Whether the process has a handler installed for the signal (SigCgt in /proc/PID/status)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigCgt:"):
            return bool(int(line.split()[1], 16) >> (signum - 1) & 1)
    return False


def test_the_client_imports_nothing_outside_the_standard_library() -> None:
    # Every flow run starts with this import: it must stay cheap, and the server's imports must stay out of it.
    probe = ("import json, sys; before = set(sys.modules); import rongmei.runtime.warmstart; "
             "print(json.dumps(sorted(set(sys.modules) - before)))")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=PATIENCE, check=True)
    added = json.loads(result.stdout)
    outside = [name for name in added if name.partition(".")[0] not in sys.stdlib_module_names]
    ours = ["rongmei", "rongmei.runtime", "rongmei.runtime.warmstart", "rongmei.runtime.warmstart_protocol"]
    assert outside == ours, outside


def test_a_warm_run_writes_to_the_clients_own_output_and_exits_with_the_engines_code(warm: WarmServer) -> None:
    result = subprocess.run(CLIENT, env=warm.client_env(PREFECT__FLOW_RUN_ID="not-a-uuid"), capture_output=True,
                            text=True, timeout=PATIENCE)
    assert result.returncode == 1
    assert BAD_ID_MESSAGE in result.stderr  # Prefect's engine said it, on the client's stderr
    assert "usual (slower) way" not in result.stderr
    assert "flow run not-a-uuid started warm" in warm.text()
    assert BAD_ID_MESSAGE not in warm.text()  # nothing of the run leaks into the server's log


def test_without_a_server_the_client_runs_the_engine_itself(tmp_path: Path, warm: WarmServer) -> None:
    env = warm.client_env(PREFECT__FLOW_RUN_ID="not-a-uuid", RONGMEI_WARMSTART_SOCKET=str(tmp_path / "none.sock"))
    result = subprocess.run(CLIENT, env=env, capture_output=True, text=True, timeout=PATIENCE)
    assert result.returncode == 1
    assert "no warm server at" in result.stderr and BAD_ID_MESSAGE in result.stderr
    assert "started warm" not in warm.text()


def test_other_prefect_settings_run_cold_and_say_which(warm: WarmServer) -> None:
    env = warm.client_env(PREFECT__FLOW_RUN_ID="not-a-uuid", PREFECT_LOGGING_LEVEL="DEBUG")
    result = subprocess.run(CLIENT, env=env, capture_output=True, text=True, timeout=PATIENCE)
    assert result.returncode == 1 and BAD_ID_MESSAGE in result.stderr
    assert "PREFECT_LOGGING_LEVEL" in result.stderr and "usual (slower) way" in result.stderr
    assert "started warm" not in warm.text()
    # An environment that only spells out what the server has anyway (as a worker does, defaults included)
    # still runs warm.
    env = warm.client_env(PREFECT__FLOW_RUN_ID="not-a-uuid", PREFECT_API_REQUEST_TIMEOUT="60")
    subprocess.run(CLIENT, env=env, capture_output=True, text=True, timeout=PATIENCE)
    assert "started warm" in warm.text()


def test_a_signal_to_the_client_reaches_the_flow_run(warm: WarmServer) -> None:
    run_id = str(uuid.uuid4())  # the engine will wait on the silent API for this run
    client = subprocess.Popen(CLIENT, env=warm.client_env(PREFECT__FLOW_RUN_ID=run_id), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE)
    child = warm_pid(warm, run_id)
    # The client forwards signals once it knows its child's pid; a SIGTERM before that would only kill the
    # client (and the server would then stop the child), which is not what this test is about.
    wait_until(lambda: catches(client.pid, signal.SIGTERM), message="the client never installed its signal forwarding")
    assert client.poll() is None and not dead(child)
    client.send_signal(signal.SIGTERM)  # what a worker does to cancel a run
    client.wait(timeout=PATIENCE)
    assert gone(child)
    assert client.returncode != 0
    # The child ended from the forwarded signal, not from the server noticing a client that died.
    assert f"the worker's process for pid {child} is gone" not in warm.text()


def test_a_killed_client_takes_its_flow_run_down(warm: WarmServer) -> None:
    run_id = str(uuid.uuid4())
    client = subprocess.Popen(CLIENT, env=warm.client_env(PREFECT__FLOW_RUN_ID=run_id), stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    child = warm_pid(warm, run_id)
    client.kill()  # SIGKILL: nothing left to forward it, the server notices the closed connection
    client.wait(timeout=ANSWER_TIMEOUT)
    assert gone(child)
    assert f"the worker's process for pid {child} is gone" in warm.text()


def test_a_flow_run_that_ignores_sigterm_is_killed_after_the_grace_period(warm: WarmServer) -> None:
    run_id = str(uuid.uuid4())
    client = subprocess.Popen(CLIENT, env=warm.client_env(PREFECT__FLOW_RUN_ID=run_id), stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    child = warm_pid(warm, run_id)
    os.kill(child, signal.SIGSTOP)  # a stopped process cannot act on SIGTERM: it stays pending
    # SIGSTOP takes effect when the child next runs; on a busy machine that may be after the server's SIGTERM
    # arrives, and SIGTERM (the lower number) would be taken first. So the client dies only once all of the
    # child's threads are stopped.
    wait_until(lambda: process_states(child) == {"T"}, message=lambda: f"pid {child} not stopped: {process_states(child)}")
    client_killed = time.monotonic()
    client.kill()
    client.wait(timeout=ANSWER_TIMEOUT)
    assert gone(child)
    # Only SIGKILL ends a stopped process, and the server sends it a grace period after its SIGTERM, which came
    # after the client's death: so the child cannot have died sooner than the grace period after it.
    assert time.monotonic() - client_killed >= warm.kill_grace
    text = warm.wait_for_log(f"pid {child} did not stop within 2 s; killing it")
    assert text.index(f"the worker's process for pid {child} is gone; stopping it") < text.index(
        f"pid {child} did not stop within 2 s; killing it")


def test_a_run_whose_client_gave_up_waiting_is_not_started_a_second_time(warm: WarmServer) -> None:
    # On a busy machine the server may answer after the client stopped waiting; that client then runs the flow
    # cold itself, so the server must not start a second copy. Played by stopping the server while a client
    # hands over its run and hangs up.
    from rongmei.runtime.warmstart import send_message

    run_id = str(uuid.uuid4())
    server = warm.proc.pid
    os.kill(server, signal.SIGSTOP)
    try:
        wait_until(lambda: process_states(server) == {"T"}, message="the warm server did not stop")
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock, open(os.devnull, "rb") as null:
            sock.connect(str(warm.socket))  # queued by the kernel while the server is stopped
            send_message(sock, {"argv": [], "env": warm.client_env(PREFECT__FLOW_RUN_ID=run_id), "cwd": os.getcwd(),
                                "python": sys.executable}, fds=[null.fileno()] * 3)
    finally:
        os.kill(server, signal.SIGCONT)
    text = warm.wait_for_log(f"flow run {run_id}")  # started, or not
    assert f"flow run {run_id} started warm" not in text
    assert f"flow run {run_id}: the client gave up waiting; not starting it here" in text


def test_changed_code_runs_cold_once_and_the_server_reloads(tmp_path: Path, silent_api: str) -> None:
    # A channel of the center's own (extra_publishers) is preloaded and watched like our code; it lives in
    # this test's directory, so that no other test's warm server sees it change.
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    channel = plugins / "warm_probe_channel.py"
    channel.write_text("VERSION = 1\n", encoding="utf-8")
    env = {**os.environ, "PREFECT_API_URL": silent_api, "PREFECT_HOME": str(tmp_path / "prefect"),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(plugins), os.environ.get("PYTHONPATH")])),
           "RONGMEI_EXTRA_PUBLISHERS": '{"probe": "warm_probe_channel:ProbePublisher"}'}
    server = WarmServer(tmp_path, env)
    try:
        client_env = server.client_env(PREFECT__FLOW_RUN_ID="not-a-uuid")
        subprocess.run(CLIENT, env=client_env, capture_output=True, text=True, timeout=PATIENCE)
        assert "flow run not-a-uuid started warm" in server.text()
        before = channel.stat().st_mtime_ns
        channel.write_text("VERSION = 2\n", encoding="utf-8")
        os.utime(channel, ns=(before + 2_000_000_000, before + 2_000_000_000))
        first = subprocess.run(CLIENT, env=client_env, capture_output=True, text=True, timeout=PATIENCE)
        assert "code changed" in first.stderr and "warm_probe_channel.py" in first.stderr
        assert BAD_ID_MESSAGE in first.stderr  # the run itself still ran, cold
        server.wait_for_log("ready in", count=2)  # restarted with the new code loaded
        subprocess.run(CLIENT, env=client_env, capture_output=True, text=True, timeout=PATIENCE)
        assert server.text().count("flow run not-a-uuid started warm") == 2
    finally:
        server.stop()


def test_the_stacks_flow_runs_start_warm(prefect_stack) -> None:
    from prefect.client.orchestration import get_client
    from prefect.deployments import run_deployment

    # Not housekeeping (nor any deployment with a schedule and a concurrency limit): its slot may be held by the
    # scheduled run, and this run would wait behind it. Publish has neither; a publish of a version that does
    # not exist starts like any run and fails at once in our code.
    with get_client(sync_client=True) as client:
        deployment = client.read_deployment_by_name("publish/publish")
    assert not deployment.schedules and deployment.global_concurrency_limit is None, "publish now waits for slots"
    run = run_deployment("publish/publish", parameters={"version_id": 10**9}, timeout=PATIENCE)
    assert run.state.is_failed() and "no version with id" in run.state.message, run.state
    log = (prefect_stack.settings.data_dir / "logs" / "warmstart.log").read_text(encoding="utf-8")
    assert f"flow run {run.id} started warm" in log
