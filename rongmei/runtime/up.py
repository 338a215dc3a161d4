"""`rongmei up`: the whole system on embedded defaults, in one terminal.

Starts the Prefect server (its private PostgreSQL, telemetry off, an API login: see `api_auth`), registers the
deployments from prefect.yaml, starts our process worker (`rongmei.runtime.worker`), the distribution server and
what the channels run locally (the WeChat stand-in without real credentials), and seeds the sample items. Ctrl-C stops the worker
first, then the servers. Everything lives in the data dir (under root the Prefect server's cluster lives in
/var/lib/rongmei, and the data dir records where: see rongmei.runtime.pgcluster), so a second `rongmei up`
continues where the first stopped.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import requests

from rongmei.core.errors import ConfigError
from rongmei.core.files import PROJECT_ROOT
from rongmei.core.settings import Settings
from rongmei.runtime.orchestration import api_auth_file
from rongmei.runtime.pgcluster import PrivateCluster
from rongmei.runtime.prefect_db import choose_prefect_database, client_env, record_choice
from rongmei.runtime.transient import flow_run_environment
from rongmei.runtime.warmstart_protocol import SOCKET_ENV
from rongmei.storage.privacy import private_file

__all__ = [
    "CLIENT_AUTH_ENV", "DEMO_REVIEWERS", "SERVER_AUTH_ENV", "WORK_POOL", "Stack", "api_auth",
    "demo_reviewers_left", "deploy", "enroll_demo_reviewers", "extra_services", "prefect_database",
    "prefect_env", "seed_samples", "start_prefect", "start_worker", "wait_for"
]

log = logging.getLogger(__name__)
WORK_POOL = "rongmei"
SERVER_AUTH_ENV = "PREFECT_SERVER_API_AUTH_STRING"
CLIENT_AUTH_ENV = "PREFECT_API_AUTH_STRING"


def api_auth(settings: Settings) -> tuple[str, str]:
    """The Prefect API login (`user:password`, what the UI's login asks for) and where it comes from.

    An operator's own PREFECT_SERVER_API_AUTH_STRING (or PREFECT_API_AUTH_STRING) is used as is; otherwise one
    is generated on first start and kept in the secrets dir (0600). Without it anyone who reaches the Prefect
    port could start any deployment, read the runs and resume the sign-off forms."""
    for name in (SERVER_AUTH_ENV, CLIENT_AUTH_ENV):
        if value := os.environ.get(name):
            return value, f"the environment ({name})"
    path = api_auth_file(settings)
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".auth-")
        with os.fdopen(fd, "w") as out:  # mkstemp: 0600 from the start
            out.write(f"rongmei:{secrets.token_urlsafe(24)}\n")
        try:
            os.link(tmp, path)  # never replaces a login another start wrote meanwhile
        except FileExistsError:
            pass
        finally:
            os.unlink(tmp)
    return path.read_text(encoding="utf-8").strip(), str(path.resolve())


def prefect_env(settings: Settings, api_url: str) -> dict[str, str]:
    """Environment shared by the Prefect server, `prefect deploy`, the worker and every flow run."""
    env = dict(os.environ)
    auth, _ = api_auth(settings)
    env.update(
        {
            CLIENT_AUTH_ENV: auth,
            "PREFECT_HOME": str((settings.data_dir / "prefect").resolve()),
            "PREFECT_API_URL": api_url,
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "DO_NOT_TRACK": "1",
            "PREFECT_UI_API_URL": api_url,
            "PREFECT_WORKER_QUERY_SECONDS": "0.5",  # a resumed sign-off waits for this poll
            "PREFECT_WORKER_PREFETCH_SECONDS": "5",
            "PREFECT_LOGGING_LEVEL": "INFO",
            "RONGMEI_HOME": str(PROJECT_ROOT),
            SOCKET_ENV: str((settings.data_dir / "run" / "warmstart.sock").resolve()),
            "RONGMEI_CONTENT_DIR": str(settings.content_dir.resolve()),
            "RONGMEI_DATA_DIR": str(settings.data_dir.resolve()),
        }
    )
    env.update(client_env(settings))  # e.g. longer retries when the server runs on SQLite
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
    prefect_db: str = "SQLite (Prefect's own file)"  # what `prefect_database` chose, as printed
    prefect_db_problem: str = ""  # why the private PostgreSQL is not used, with the fix
    cluster: PrivateCluster | None = None  # the private PostgreSQL this stack started (rongmei.runtime.watch)

    def start_process(self, name: str, args: list[str], env: dict[str, str], log_file: Path) -> subprocess.Popen:
        out = private_file(log_file)  # kept open for the child's lifetime
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


def prefect_database(stack: Stack, settings: Settings) -> dict[str, str]:
    """Choose the Prefect server's database (rongmei.runtime.prefect_db), start the private cluster when it is
    the choice, record the choice for the stack's clients and `rongmei status`, and say loudly why the
    private cluster is not used when it is not. Returns the settings the server needs for it."""
    database = choose_prefect_database(settings)
    record_choice(settings, database)
    stack.prefect_db, stack.prefect_db_problem = database.description, database.problem
    if database.problem:
        log.warning("%s", database.problem)
    cluster = database.cluster
    if cluster is not None and all(name != "prefect-pg" for name, _ in stack.stoppers):  # a restart reuses it
        stack.stoppers.insert(0, ("prefect-pg", cluster.stop))  # stoppers run last-first: after every service
    if cluster is not None:
        stack.cluster = cluster
    return database.server_env()


def start_prefect(stack: Stack, settings: Settings, port: int) -> str:
    api_url = f"http://127.0.0.1:{port}/api"
    database_env = prefect_database(stack, settings)  # first: the clients' settings depend on the choice
    env = prefect_env(settings, api_url)
    env[SERVER_AUTH_ENV] = env[CLIENT_AUTH_ENV]  # the server checks what every client sends
    env.update(database_env)  # only the server talks to its database
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
    """Create the work pool (with the template that fixes what runs, see rongmei.runtime.worker) and register every
    deployment in prefect.yaml."""
    from rongmei.runtime.workpool import base_job_template

    env = prefect_env(settings, api_url)
    prefect = [sys.executable, "-m", "prefect"]
    with tempfile.NamedTemporaryFile("w", suffix=".json", encoding="utf-8") as template:
        json.dump(base_job_template(), template)
        template.flush()
        created = subprocess.run(
            [*prefect, "work-pool", "create", WORK_POOL, "--type", "process", "--base-job-template", template.name,
             "--overwrite"],
            env=env, cwd=PROJECT_ROOT, capture_output=True, text=True,
        )
    if created.returncode != 0:
        raise ConfigError(f"could not create the work pool {WORK_POOL}:\n{created.stdout[-2000:]}\n"
                          f"{created.stderr[-2000:]}")
    result = subprocess.run(
        [*prefect, "--no-prompt", "deploy", "--all"], env=env, cwd=PROJECT_ROOT, capture_output=True, text=True
    )
    if result.returncode != 0:
        raise ConfigError(f"`prefect deploy --all` failed:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}")


def start_worker(stack: Stack, settings: Settings, api_url: str) -> None:
    """The warm server first (flow runs start as its forks, see rongmei.runtime.warmstart), then the worker."""
    env = prefect_env(settings, api_url)
    env.update(flow_run_environment(settings))  # more client retries, and heartbeats (rongmei.runtime.transient)
    socket_path = Path(env[SOCKET_ENV])
    socket_path.unlink(missing_ok=True)  # left by a run that was killed: the new server binds it when ready
    warm = stack.start_process(
        "warmstart", [sys.executable, "-m", "rongmei.runtime.warmstart", "serve"], env, settings.data_dir / "logs" / "warmstart.log"
    )
    # Runs the worker picks up before the warm server listens would start cold (slowly): wait for its socket.
    deadline = time.monotonic() + 120
    while not socket_path.exists() and warm.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    if not socket_path.exists():
        log.warning("the warm-start server is not listening (see %s): flow runs start cold until it does",
                    settings.data_dir / "logs" / "warmstart.log")
    stack.start_process(
        "worker", [sys.executable, "-m", "rongmei.runtime.worker", "--pool", WORK_POOL, "--limit", "4"], env,
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
    """Distribution server, and what each channel runs locally (`Publisher.local_services`, e.g. a stand-in of
    its remote API when no real credentials are configured)."""
    from publishers import registry_for
    from rongmei.distribution.server import serve_in_thread

    messages = []
    server = serve_in_thread(settings, host=settings.server_host, port=settings.server_port)
    stack.stoppers.append(("distribution server", server.stop))
    messages.append(f"distribution server on {server.url}")
    for channel in registry_for(settings).publishers.values():
        for service in channel.local_services(settings):
            stack.stoppers.append((service.name, service.stop))
            os.environ.update(service.environment)  # flow runs read these through the worker's environment
            if service.message:
                messages.append(service.message)
    return messages


DEMO_REVIEWERS = (
    ("demo-editor", "演示编辑", ["editor"]),
    ("demo-desk", "演示主任", ["desk_head"]),
    ("demo-chief", "演示总编", ["chief_editor"]),
)


def enroll_demo_reviewers(settings: Settings, store: object) -> list[str]:
    """In demo mode, demo reviewers whose codes `rongmei reviewers demo-code ID` prints (once per data dir)."""
    from rongmei.review.reviewers import enroll, list_reviewers

    if not settings.demo:
        return []
    known = {r.id for r in list_reviewers(store)}  # type: ignore[arg-type]
    for reviewer_id, name, roles in DEMO_REVIEWERS:
        if reviewer_id not in known:
            enroll(store, settings, reviewer_id, name, roles, demo=True, actor="system:up")  # type: ignore[arg-type]
    return [r[0] for r in DEMO_REVIEWERS]


def demo_reviewers_left(store: object) -> list[str]:
    """Demo reviewers enrolled by an earlier demo start: refused while demo mode is off (warn about them)."""
    from rongmei.review.reviewers import list_reviewers

    return [r.id for r in list_reviewers(store) if r.demo and r.active]  # type: ignore[arg-type]
