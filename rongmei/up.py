"""`rongmei up`: the whole system on embedded defaults, in one terminal.

Starts the Prefect server (SQLite, telemetry off), registers the deployments from prefect.yaml, starts a
process worker, the distribution server and (without real WeChat credentials) the WeChat stand-in, and seeds
the sample items. Ctrl-C stops the worker first, then the servers. Everything lives in the data dir, so a
second `rongmei up` continues where the first stopped.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import requests

from rongmei import pgcluster
from rongmei.errors import ConfigError
from rongmei.pgcluster import PrivateCluster
from rongmei.settings import Settings
from rongmei.warmstart import SOCKET_ENV

log = logging.getLogger(__name__)
PROJECT_ROOT = Path(__file__).resolve().parent.parent
WORK_POOL = "rongmei"


def prefect_env(settings: Settings, api_url: str) -> dict[str, str]:
    """Environment shared by the Prefect server, `prefect deploy`, the worker and every flow run."""
    env = dict(os.environ)
    env.update(
        {
            "PREFECT_HOME": str((settings.data_dir / "prefect").resolve()),
            "PREFECT_API_URL": api_url,
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "DO_NOT_TRACK": "1",
            "PREFECT_UI_API_URL": api_url,
            "PREFECT_WORKER_QUERY_SECONDS": "0.5",  # a resumed sign-off waits for this poll
            "PREFECT_WORKER_PREFETCH_SECONDS": "5",
            "PREFECT_LOGGING_LEVEL": "INFO",
            "RONGMEI_HOME": str(PROJECT_ROOT),
            "RONGMEI_PYTHON": sys.executable,  # the deployments' command (prefect.yaml) runs this Python
            SOCKET_ENV: str((settings.data_dir / "run" / "warmstart.sock").resolve()),
            "RONGMEI_CONTENT_DIR": str(settings.content_dir.resolve()),
            "RONGMEI_DATA_DIR": str(settings.data_dir.resolve()),
        }
    )
    config = Path(os.environ.get("RONGMEI_CONFIG", "rongmei.toml"))
    if config.is_file():
        env["RONGMEI_CONFIG"] = str(config.resolve())
    return env


def wait_for(url: str, timeout: float, what: str, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise ConfigError(f"{what} exited with code {proc.returncode}; see the log above")
        try:
            if requests.get(url, timeout=2).ok:
                return
        except requests.RequestException:
            pass
        time.sleep(0.3)
    raise ConfigError(f"{what} did not answer at {url} within {timeout:.0f} s")


@dataclass
class Stack:
    """The running parts, stopped in reverse order of dependence."""

    settings: Settings
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)
    stoppers: list[tuple[str, Callable[[], None]]] = field(default_factory=list)
    api_url: str = ""
    prefect_db: str = "SQLite (Prefect's own file)"

    def start_process(self, name: str, args: list[str], env: dict[str, str], log_file: Path) -> subprocess.Popen:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        out = open(log_file, "ab")  # noqa: SIM115 - kept open for the child's lifetime
        proc = subprocess.Popen(
            args, env=env, cwd=PROJECT_ROOT, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
        self.processes[name] = proc
        return proc

    def stop(self) -> None:
        # Workers before the server: a worker that loses its server mid-run marks runs as crashed.
        for name in ("worker", "warmstart", "prefect"):
            proc = self.processes.get(name)
            if proc and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        for _name, stopper in reversed(self.stoppers):
            stopper()


def prefect_database(stack: Stack, settings: Settings) -> str | None:
    """The Prefect server's database URL, or None for Prefect's own SQLite file (see `prefect_database_url`)."""
    choice = settings.prefect_database_url
    if choice == "sqlite":
        return None
    if choice:
        stack.prefect_db = "PostgreSQL (prefect_database_url)"
        return settings.prefect_db_url()
    cluster = PrivateCluster(settings.data_dir / "prefect-pg")
    if not pgcluster.available():
        log.warning("PostgreSQL is not installed: the Prefect server uses SQLite, where sign-offs can wait "
                    "seconds for its write lock (install Debian's postgresql, or set prefect_database_url)")
        return None
    if (settings.data_dir / "prefect" / "prefect.db").exists() and not cluster.data.exists():
        log.warning("The Prefect server keeps its SQLite file, which holds this center's runs (waiting reviews "
                    "among them); set prefect_database_url = \"sqlite\" to silence this")
        return None
    try:
        url = cluster.start()
    except ConfigError as exc:
        log.warning("The private PostgreSQL for Prefect did not start (%s); using SQLite instead", exc)
        return None
    if all(name != "prefect-pg" for name, _ in stack.stoppers):  # a Prefect restart reuses the running cluster
        stack.stoppers.insert(0, ("prefect-pg", cluster.stop))  # stoppers run last-first: after every service
    stack.prefect_db = f"private PostgreSQL in {cluster.root}"
    return url


def start_prefect(stack: Stack, settings: Settings, port: int) -> str:
    api_url = f"http://127.0.0.1:{port}/api"
    env = prefect_env(settings, api_url)
    if database := prefect_database(stack, settings):  # only the server talks to its database
        env["PREFECT_API_DATABASE_CONNECTION_URL"] = database
    logs = settings.data_dir / "logs"
    proc = stack.start_process(
        "prefect",
        [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env,
        logs / "prefect-server.log",
    )
    wait_for(f"{api_url}/health", 120, "The Prefect server", proc)
    stack.api_url = api_url
    return api_url


def deploy(settings: Settings, api_url: str) -> None:
    """Create the work pool and register every deployment in prefect.yaml."""
    env = prefect_env(settings, api_url)
    prefect = [sys.executable, "-m", "prefect"]
    subprocess.run(
        [*prefect, "work-pool", "create", WORK_POOL, "--type", "process", "--overwrite"],
        env=env,
        cwd=PROJECT_ROOT,
        check=True,
        capture_output=True,
    )
    result = subprocess.run(
        [*prefect, "--no-prompt", "deploy", "--all"], env=env, cwd=PROJECT_ROOT, capture_output=True, text=True
    )
    if result.returncode != 0:
        raise ConfigError(f"`prefect deploy --all` failed:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}")


def start_worker(stack: Stack, settings: Settings, api_url: str) -> None:
    """The warm server first (flow runs start as its forks, see rongmei.warmstart), then the worker."""
    env = prefect_env(settings, api_url)
    stack.start_process(
        "warmstart", [sys.executable, "-m", "rongmei.warmstart", "serve"], env, settings.data_dir / "logs" / "warmstart.log"
    )
    stack.start_process(
        "worker",
        [sys.executable, "-m", "prefect", "worker", "start", "--pool", WORK_POOL, "--type", "process", "--limit", "4"],
        env,
        settings.data_dir / "logs" / "worker.log",
    )


def seed_samples(settings: Settings) -> int:
    """Copy the bundled sample drops into the inbox once per data dir, so a newcomer sees items flow."""
    marker = settings.data_dir / ".samples-seeded"
    samples = PROJECT_ROOT / "content" / "samples"
    if marker.exists() or not samples.is_dir():
        return 0
    settings.inbox.mkdir(parents=True, exist_ok=True)
    count = 0
    for sample in sorted(samples.iterdir()):
        target = settings.inbox / sample.name
        if target.exists():
            continue
        staging = settings.inbox / f".seed-{sample.name}"
        if sample.is_dir():
            shutil.copytree(sample, staging)
        else:
            shutil.copy2(sample, staging)
        os.rename(staging, target)
        count += 1
    # Samples are copied with their old mtimes, so they are settled at once.
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text("samples copied into the inbox once; delete this file to copy them again\n")
    return count


def extra_services(stack: Stack, settings: Settings, store: object) -> list[str]:
    """Distribution server, and the WeChat stand-in when no real credentials are configured."""
    from rongmei.server import serve_in_thread

    messages = []
    server = serve_in_thread(settings, host=settings.server_host, port=settings.server_port)
    stack.stoppers.append(("distribution server", server.stop))
    messages.append(f"distribution server on {server.url}")
    if not settings.wechat.app_id:
        from standins.wechat import start_standin

        standin = start_standin(host="127.0.0.1", port=0, app_id="wx-standin", secret="standin-secret")
        stack.stoppers.append(("wechat stand-in", standin.stop))
        # Flow runs read these through the worker's environment.
        os.environ["RONGMEI_WECHAT__BASE_URL"] = standin.base_url
        os.environ["RONGMEI_WECHAT__APP_ID"] = "wx-standin"
        os.environ["RONGMEI_WECHAT__APP_SECRET"] = "standin-secret"
        messages.append(f"WeChat stand-in (no real credentials configured) on {standin.base_url}")
    return messages


DEMO_REVIEWERS = (
    ("demo-editor", "演示编辑", ["editor"]),
    ("demo-desk", "演示主任", ["desk_head"]),
    ("demo-chief", "演示总编", ["chief_editor"]),
)


def enroll_demo_reviewers(settings: Settings, store: object) -> list[str]:
    """On first start, demo reviewers whose codes `rongmei reviewers demo-code ID` prints."""
    from rongmei.reviewers import enroll, list_reviewers

    if list_reviewers(store):  # type: ignore[arg-type]
        return []
    for reviewer_id, name, roles in DEMO_REVIEWERS:
        enroll(store, settings, reviewer_id, name, roles, demo=True)  # type: ignore[arg-type]
    return [r[0] for r in DEMO_REVIEWERS]
