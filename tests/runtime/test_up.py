"""`rongmei up` as a newcomer runs it: samples appear as ingested; Ctrl-C stops cleanly; a restart continues; and
as root from a checkout in root's own 0700 home, Prefect runs on its private PostgreSQL."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import requests

from rongmei.runtime import pgcluster
from rongmei.runtime.pgcluster import LOCATION_FILE, SYSTEM_CLUSTERS, PrivateCluster
from tests.support.environment import free_port
from tests.support.paths import ROOT
from tests.support.stack import remove_private_cluster
from tests.support.waiting import ANSWER_TIMEOUT, PATIENCE, wait_until

pytestmark = pytest.mark.prefect
ROOT = ROOT


def start_up(env: dict[str, str], log: Path, cwd: Path = ROOT, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "rongmei.cli.commands", "up", *args], env=env, cwd=cwd,
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


def status_json(env: dict[str, str], cwd: Path = ROOT) -> dict:
    out = subprocess.run([sys.executable, "-m", "rongmei.cli.commands", "status", "--json"], env=env, cwd=cwd,
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def stop_up(proc: subprocess.Popen) -> None:
    """After a failed assertion: Ctrl-C, as an operator would, so that no server outlives the test."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=PATIENCE)
        except subprocess.TimeoutExpired:
            proc.kill()


def test_up_ingests_samples_stops_cleanly_and_restarts(tmp_path):
    try:
        run_samples_stop_and_restart(tmp_path)
    finally:
        remove_private_cluster(tmp_path / "data")


def run_samples_stop_and_restart(tmp_path: Path) -> None:
    prefect_port, server_port = free_port(), free_port()
    env = {**os.environ, "RONGMEI_CONFIG": str(ROOT / "rongmei.toml"),  # the demo config a newcomer gets
           "RONGMEI_CONTENT_DIR": str(tmp_path / "content"), "RONGMEI_DATA_DIR": str(tmp_path / "data"),
           "RONGMEI_PREFECT_PORT": str(prefect_port), "RONGMEI_SERVER_PORT": str(server_port),
           "RONGMEI_PUBLIC_URL": f"http://127.0.0.1:{server_port}", "RONGMEI_SETTLE_SECONDS": "1"}
    for name in ("PREFECT_API_URL", "PREFECT_API_AUTH_STRING", "PREFECT_SERVER_API_AUTH_STRING"):
        env.pop(name, None)  # as a newcomer runs it: `rongmei up` makes the Prefect login itself
    log = tmp_path / "up.log"
    proc = start_up(env, log)
    try:
        items = check_first_start(env, log, proc, prefect_port, tmp_path)
    finally:
        stop_up(proc)
    proc = start_up(env, log)
    try:
        wait_for_line(log, "Sample items copied:              0", proc)
        assert (tmp_path / "data" / "secrets" / "prefect-api-auth").read_text().strip() == items["login"]
        assert {i["id"] for i in status_json(env)["items"]} == items["ids"]  # nothing ingested twice
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=PATIENCE) == 0
    finally:
        stop_up(proc)


def check_first_start(env: dict[str, str], log: Path, proc: subprocess.Popen, prefect_port: int,
                      tmp_path: Path) -> dict:
    output = wait_for_line(log, "Press Ctrl-C to stop.", proc)
    assert f"http://127.0.0.1:{prefect_port}" in output and "demo-editor" in output
    if pgcluster.available():  # the data dir is in pytest's root-only tmp dir: the cluster starts anyway
        assert "Prefect's database:               PostgreSQL (private cluster at" in output, output
    api = f"http://127.0.0.1:{prefect_port}/api"
    assert requests.get(f"{api}/health", timeout=ANSWER_TIMEOUT).ok
    login_file = tmp_path / "data" / "secrets" / "prefect-api-auth"
    login = login_file.read_text().strip()
    assert login_file.stat().st_mode & 0o077 == 0 and f"Prefect UI login:                 {login}" in output
    assert requests.post(f"{api}/deployments/filter", json={}, timeout=30).status_code == 401  # anonymous
    named = requests.post(f"{api}/deployments/filter", json={}, timeout=30, auth=tuple(login.split(":", 1)))
    assert {d["name"] for d in named.json()} >= {"ingest", "review", "publish", "retract"}
    samples = {p.stem if p.suffix in (".md", ".mp3") else p.name
               for p in (ROOT / "content" / "samples").iterdir() if p.suffix != ".yaml"}
    seen: set[str] = set()

    def all_ingested() -> set[str] | None:
        seen.clear()
        seen.update(i["id"] for i in status_json(env)["items"])
        return set(seen) if samples <= seen else None

    items = wait_until(all_ingested, interval=1, max_interval=2, message=lambda: (
        f"samples not ingested: {samples - seen}; log:\n{log.read_text()[-2000:]}"))

    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=PATIENCE) == 0
    assert "stopped." in log.read_text()
    with pytest.raises(requests.ConnectionError):
        requests.get(f"http://127.0.0.1:{prefect_port}/api/health", timeout=2)
    return {"login": login, "ids": items}  # the same login and items on the next start


@pytest.mark.postgres
@pytest.mark.skipif(os.geteuid() != 0, reason="the case of root in its own 0700 home")
@pytest.mark.skipif(not pgcluster.available(), reason="Debian's postgresql is not installed")
def test_up_as_root_from_a_checkout_in_its_closed_home_runs_prefect_on_its_private_postgresql(tmp_path):
    home = Path(tempfile.mkdtemp(dir="/root", prefix="rongmei-checkout-"))  # 0700, in /root (0700)
    config = (ROOT / "rongmei.toml").read_text(encoding="utf-8")
    assert 'data_dir = "var"' in config  # relative, as a newcomer's checkout has it
    (home / "rongmei.toml").write_text(config, encoding="utf-8")
    prefect_port, server_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RONGMEI_", "PREFECT_"))}  # a newcomer's
    env.update({"PYTHONPATH": str(ROOT), "RONGMEI_PREFECT_PORT": str(prefect_port),
                "RONGMEI_SERVER_PORT": str(server_port), "RONGMEI_PUBLIC_URL": f"http://127.0.0.1:{server_port}",
                "DO_NOT_TRACK": "1"})
    log = tmp_path / "up.log"
    proc = start_up(env, log, home, "--no-samples")
    try:
        output = wait_for_line(log, "Press Ctrl-C to stop.", proc)
        assert "SQLite" not in output and "!!" not in output, output
        cluster = PrivateCluster(Path((home / "var" / LOCATION_FILE).read_text().strip()))
        assert cluster.root.parent == SYSTEM_CLUSTERS  # outside the home the postgres user cannot pass
        assert f"Prefect's database:               PostgreSQL (private cluster at {cluster.root})" in output
        assert (cluster.root / "data-dir").read_text().strip() == str(home / "var")
        assert cluster.running()
        deployments = subprocess.run(
            ["psql", "-h", str(cluster.socket_dir), "-U", "postgres", "-d", "prefect", "-tAc",
             "SELECT name FROM deployment"], capture_output=True, text=True, check=True).stdout.split()
        assert {"ingest", "review", "publish", "retract"} <= set(deployments)  # `prefect deploy` wrote there
        assert not (home / "var" / "prefect" / "prefect.db").exists()
        recorded = status_json(env, home)["prefect_database"]
        assert recorded["kind"] == "postgresql" and str(cluster.root) in recorded["description"]
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=PATIENCE) == 0
        assert "stopped." in log.read_text()
        assert not cluster.running() and not (cluster.data / "postmaster.pid").exists()
    finally:
        stop_up(proc)
        remove_private_cluster(home / "var")
        shutil.rmtree(home, ignore_errors=True)
