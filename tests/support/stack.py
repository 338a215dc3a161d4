"""The real services the suite runs on: a private PostgreSQL, and a Prefect server with our deployments and
worker started the way `rongmei up` starts them."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import tomllib
from collections.abc import Iterator
from pathlib import Path

from rongmei.core.settings import Settings
from rongmei.runtime.pgcluster import LOCATION_FILE, PrivateCluster, cluster_for
from tests.support.paths import ROOT
from tests.support.waiting import PATIENCE


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


def remove_private_cluster(data_dir: Path) -> None:
    """Stop and remove the Prefect server's private cluster of a throw-away data dir, wherever it lives (run as
    root: in /var/lib/rongmei/prefect-pg/, outside the data dir; see rongmei.runtime.pgcluster)."""
    if not (data_dir / LOCATION_FILE).is_file():
        return  # never started: nothing was made (and nothing of another data dir is touched)
    cluster = cluster_for(data_dir)
    cluster.stop()
    for path in (cluster.root, cluster.socket_dir):
        shutil.rmtree(path, ignore_errors=True)


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
        pause_background_reconcile()
        self._start_worker()

    def stop_process(self, name: str) -> None:
        proc = self.stack.processes.pop(name)
        proc.terminate()
        proc.wait(timeout=PATIENCE)  # stopping cleanly takes a while on a busy machine

    def restart_all(self) -> None:
        """Worker first, then the server, as `rongmei up` stops them; then both again."""
        for name in ("worker", "warmstart", "prefect"):
            self.stop_process(name)
        self.start_server()
        self._start_worker()

    @property
    def cluster(self) -> PrivateCluster:
        """The Prefect server's private PostgreSQL (under root in /var/lib/rongmei/prefect-pg/, see pgcluster)."""
        return cluster_for(self.settings.data_dir)

    def stop(self) -> None:
        self.stack.stop()

    def remove_cluster(self) -> None:
        remove_private_cluster(self.settings.data_dir)


def pause_background_reconcile() -> None:
    """Pause the reconcile deployment's schedule in the test stack: a pass every two minutes would finish the work
    other tests strand on purpose, under their feet. tests/runtime/test_reconciler.py runs its passes itself."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        client.pause_deployment(client.read_deployment_by_name("reconcile/reconcile").id)


def stack_worker_env(wechat_base_url: str) -> dict[str, str]:
    """The WeChat stand-in and the demo zones and screen groups, as `rongmei up` gives its worker."""
    demo = tomllib.loads((ROOT / "rongmei.toml").read_text(encoding="utf-8"))
    return {
        "RONGMEI_WECHAT__BASE_URL": wechat_base_url,
        "RONGMEI_WECHAT__APP_ID": "wx-test-stack",
        "RONGMEI_WECHAT__APP_SECRET": "stack-secret",
        "RONGMEI_ZONES": json.dumps(demo["zones"], ensure_ascii=False),
        "RONGMEI_SCREEN_GROUPS": json.dumps(demo["screen_groups"], ensure_ascii=False),
    }
