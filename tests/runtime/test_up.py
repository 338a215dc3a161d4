"""`rongmei up` as a newcomer runs it: samples appear as ingested; Ctrl-C stops cleanly; a restart continues."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from tests.support.environment import free_port
from tests.support.paths import ROOT
from tests.support.waiting import ANSWER_TIMEOUT, PATIENCE, wait_until

pytestmark = pytest.mark.prefect
ROOT = ROOT


def start_up(env: dict[str, str], log: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "rongmei.cli.commands", "up"], env=env, cwd=ROOT,
                            stdout=open(log, "ab"), stderr=subprocess.STDOUT)


def wait_for_line(log: Path, text: str, proc: subprocess.Popen, timeout: float = PATIENCE) -> str:
    def printed() -> str | None:
        content = log.read_text(errors="replace") if log.exists() else ""
        if text in content:
            return content
        if proc.poll() is not None:
            raise AssertionError(f"rongmei up exited early:\n{content[-3000:]}")
        return None

    return wait_until(printed, timeout=timeout,
                      message=lambda: f"{text!r} not printed:\n{log.read_text(errors='replace')[-3000:]}")


def status_json(env: dict[str, str]) -> list[dict]:
    out = subprocess.run([sys.executable, "-m", "rongmei.cli.commands", "status", "--json"], env=env, cwd=ROOT,
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout)["items"]


def test_up_ingests_samples_stops_cleanly_and_restarts(tmp_path):
    prefect_port, server_port = free_port(), free_port()
    env = {**os.environ, "RONGMEI_CONFIG": str(ROOT / "rongmei.toml"),  # the demo config a newcomer gets
           "RONGMEI_CONTENT_DIR": str(tmp_path / "content"), "RONGMEI_DATA_DIR": str(tmp_path / "data"),
           "RONGMEI_PREFECT_PORT": str(prefect_port), "RONGMEI_SERVER_PORT": str(server_port),
           "RONGMEI_PUBLIC_URL": f"http://127.0.0.1:{server_port}", "RONGMEI_SETTLE_SECONDS": "1"}
    for name in ("PREFECT_API_URL", "PREFECT_API_AUTH_STRING", "PREFECT_SERVER_API_AUTH_STRING"):
        env.pop(name, None)  # as a newcomer runs it: `rongmei up` makes the Prefect login itself
    log = tmp_path / "up.log"
    proc = start_up(env, log)
    output = wait_for_line(log, "Press Ctrl-C to stop.", proc)
    assert f"http://127.0.0.1:{prefect_port}" in output and "demo-editor" in output
    api = f"http://127.0.0.1:{prefect_port}/api"
    assert requests.get(f"{api}/health", timeout=ANSWER_TIMEOUT).ok
    login_file = tmp_path / "data" / "secrets" / "prefect-api-auth"
    login = login_file.read_text().strip()
    assert login_file.stat().st_mode & 0o077 == 0 and f"Prefect UI login:                 {login}" in output
    assert requests.post(f"{api}/deployments/filter", json={}, timeout=ANSWER_TIMEOUT).status_code == 401  # anonymous
    named = requests.post(f"{api}/deployments/filter", json={}, timeout=ANSWER_TIMEOUT, auth=tuple(login.split(":", 1)))
    assert {d["name"] for d in named.json()} >= {"ingest", "review", "publish", "retract"}
    samples = {p.stem if p.suffix in (".md", ".mp3") else p.name
               for p in (ROOT / "content" / "samples").iterdir() if p.suffix != ".yaml"}
    seen: set[str] = set()

    def all_ingested() -> set[str] | None:
        seen.clear()
        seen.update(i["id"] for i in status_json(env))
        return set(seen) if samples <= seen else None

    items = wait_until(all_ingested, interval=1, max_interval=2, message=lambda: (
        f"samples not ingested: {samples - seen}; log:\n{log.read_text()[-2000:]}"))

    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=PATIENCE) == 0
    assert "stopped." in log.read_text()
    with pytest.raises(requests.ConnectionError):
        requests.get(f"http://127.0.0.1:{prefect_port}/api/health", timeout=2)

    proc = start_up(env, log)
    output = wait_for_line(log, "Sample items copied:              0", proc)
    assert login_file.read_text().strip() == login  # the same login on every start
    assert {i["id"] for i in status_json(env)} == items  # nothing ingested twice
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=PATIENCE) == 0
