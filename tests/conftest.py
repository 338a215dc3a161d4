"""Shared fixtures: isolated settings per test, a private PostgreSQL, and one real Prefect stack per session."""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import socket
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

# Tests never read the demo rongmei.toml in the checkout; each builds the settings it needs.
os.environ["RONGMEI_CONFIG"] = "/nonexistent/rongmei.toml"
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

from rongmei.core.settings import Settings
from rongmei.runtime.pgcluster import PrivateCluster
from rongmei.storage.store import Store

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# Prefect reads its settings once, at import: the session's server address is fixed before any test
# module imports prefect, and the `prefect_stack` fixture starts the server there.
PREFECT_PORT = free_port()
os.environ["PREFECT_API_URL"] = f"http://127.0.0.1:{PREFECT_PORT}/api"
# The session's Prefect server requires a login, as under `rongmei up`; every client in the tests sends it.
PREFECT_AUTH = f"rongmei-test:{secrets.token_urlsafe(16)}"
os.environ["PREFECT_API_AUTH_STRING"] = PREFECT_AUTH


def prefect_auth_header(auth: str = PREFECT_AUTH) -> dict[str, str]:
    """What Prefect's own clients send: HTTP Basic with the whole auth string as `user:password`."""
    import base64

    return {"Authorization": "Basic " + base64.b64encode(auth.encode()).decode()}


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    content = tmp_path / "content"
    for sub in ("inbox", "archive", "rejected", "returned"):
        (content / sub).mkdir(parents=True)
    return Settings(
        content_dir=content,
        data_dir=tmp_path / "data",
        settle_seconds=2.0,
        public_url="http://127.0.0.1:8800",
    )


@pytest.fixture
def store(settings: Settings) -> Store:
    return Store.from_settings(settings)


def write_drop(inbox: Path, name: str, front: str, body: str = "正文。", files: dict[str, bytes] | None = None,
               age: float = 60.0) -> Path:
    """Create a folder drop whose files look settled (mtime `age` seconds ago)."""
    folder = inbox / name
    folder.mkdir(parents=True)
    (folder / "index.md").write_text(f"---\n{front.strip()}\n---\n{body}\n", encoding="utf-8")
    for rel, data in (files or {}).items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_bytes(data)
    age_tree(folder, age)
    return folder


def age_tree(path: Path, age: float = 60.0) -> None:
    stamp = time.time() - age
    paths = [path, *path.rglob("*")] if path.is_dir() else [path]
    for p in paths:
        os.utime(p, (stamp, stamp), follow_symlinks=False)


# S3 ------------------------------------------------------------------------------------------------------
@contextlib.contextmanager
def s3_server() -> Iterator[str]:
    """moto's S3 server on 127.0.0.1, a real S3-protocol peer for boto3; yields its endpoint URL."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        yield f"http://{host}:{port}"
    finally:
        server.stop()


def fake_aws_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    """moto accepts any keys; real ones must never be needed (or picked up) by the tests."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.delenv("AWS_PROFILE", raising=False)


# PostgreSQL ------------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    with private_postgres() as url:
        yield url


@contextlib.contextmanager
def private_postgres() -> Iterator[str]:
    """A throw-away private PostgreSQL server on a unix socket, started from Debian's binaries."""
    # Not under pytest's tmp dir: its parents are root-only, and the server runs as the postgres user.
    base = Path(tempfile.mkdtemp(prefix="rongmei-pg-"))
    cluster = PrivateCluster(base, durable=False, database="postgres")
    try:
        cluster.start()
        yield cluster.url(driver="psycopg")
    finally:
        cluster.stop()
        shutil.rmtree(base, ignore_errors=True)


# Prefect ---------------------------------------------------------------------------------------------
class PrefectStack:
    """A real Prefect server + the deployments from prefect.yaml + a process worker, like `rongmei up`."""

    def __init__(self, settings: Settings, port: int, worker_env: dict[str, str] | None = None) -> None:
        from rongmei.runtime.up import Stack
        from rongmei.storage.privacy import make_private

        make_private(settings)  # as `rongmei up` does first
        self.settings = settings
        self.port = port
        self.stack = Stack(settings)
        self.api_url = ""
        # Settings only the worker's flow runs see (channels' zones, the WeChat stand-in), kept out of this
        # process so they do not leak into other tests' settings.
        self.worker_env = worker_env or {}

    def _start_worker(self) -> None:
        from rongmei.runtime.up import start_worker

        saved = {k: os.environ.get(k) for k in self.worker_env}
        os.environ.update(self.worker_env)
        try:
            start_worker(self.stack, self.settings, self.api_url)
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value

    def start_server(self) -> None:
        from rongmei.runtime.up import start_prefect

        self.api_url = start_prefect(self.stack, self.settings, self.port)

    def deploy_and_work(self) -> None:
        from rongmei.runtime.up import deploy

        deploy(self.settings, self.api_url)
        self._start_worker()

    def stop_process(self, name: str) -> None:
        proc = self.stack.processes.pop(name)
        proc.terminate()
        proc.wait(timeout=30)

    def restart_all(self) -> None:
        """Worker first, then the server, as `rongmei up` stops them; then both again."""
        for name in ("worker", "warmstart", "prefect"):
            self.stop_process(name)
        self.start_server()
        self._start_worker()

    def stop(self) -> None:
        self.stack.stop()


@pytest.fixture(scope="session")
def wechat_standin() -> Iterator[object]:
    """The WeChat stand-in on 127.0.0.1; the session's worker publishes to it."""
    from standins.wechat import start_standin

    standin = start_standin(app_id="wx-test-stack", secret="stack-secret")
    try:
        yield standin
    finally:
        standin.stop()


def stack_worker_env(wechat_base_url: str) -> dict[str, str]:
    """The WeChat stand-in and the demo zones and screen groups, as `rongmei up` gives its worker."""
    import json
    import tomllib

    demo = tomllib.loads((Path(__file__).resolve().parent.parent / "rongmei.toml").read_text(encoding="utf-8"))
    return {
        "RONGMEI_WECHAT__BASE_URL": wechat_base_url,
        "RONGMEI_WECHAT__APP_ID": "wx-test-stack",
        "RONGMEI_WECHAT__APP_SECRET": "stack-secret",
        "RONGMEI_ZONES": json.dumps(demo["zones"], ensure_ascii=False),
        "RONGMEI_SCREEN_GROUPS": json.dumps(demo["screen_groups"], ensure_ascii=False),
    }


@pytest.fixture(scope="session")
def prefect_stack(wechat_standin) -> Iterator[PrefectStack]:
    # Outside pytest's root-only tmp dir, so that the postgres user can run the Prefect server's private
    # PostgreSQL in the data dir, as under `rongmei up`.
    root = Path(tempfile.mkdtemp(prefix="rongmei-stack-"))
    root.chmod(0o755)
    # Flow runs in the worker read their settings from the environment, as under `rongmei up`.
    os.environ.update(
        {
            "RONGMEI_SETTLE_SECONDS": "0.5",
            "RONGMEI_PUBLISH_RETRIES": "3",
            "RONGMEI_PUBLISH_RETRY_DELAY": "0.2",
            "RONGMEI_EXTRA_PUBLISHERS": '{"flaky": "plugins.testchannels:FlakyPublisher", '
            '"broken": "plugins.testchannels:BrokenPublisher"}',
            "PYTHONPATH": os.pathsep.join(filter(None, [str(Path(__file__).parent), os.environ.get("PYTHONPATH")])),
        }
    )
    os.environ["RONGMEI_CONTENT_DIR"] = str(root / "content")
    os.environ["RONGMEI_DATA_DIR"] = str(root / "data")
    settings = Settings()
    for sub in ("inbox", "archive", "rejected", "returned"):
        (settings.content_dir / sub).mkdir(parents=True, exist_ok=True)
    stack = PrefectStack(settings, PREFECT_PORT, worker_env=stack_worker_env(wechat_standin.base_url))
    stack.start_server()
    stack.deploy_and_work()
    try:
        yield stack
    finally:
        stack.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def prefect_server(prefect_stack: PrefectStack) -> str:
    return prefect_stack.api_url
