"""Shared fixtures: isolated settings per test, a private PostgreSQL, and one real Prefect stack per session."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.environment import PREFECT_PORT  # first: sets the environment Prefect reads at import

# isort: split
from rongmei.core.settings import Settings
from rongmei.storage.store import Store
from tests.support.paths import ROOT
from tests.support.stack import PrefectStack, private_postgres, stack_worker_env


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


# PostgreSQL ------------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    with private_postgres() as url:
        yield url


# Prefect ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def wechat_standin() -> Iterator[object]:
    """The WeChat stand-in on 127.0.0.1; the session's worker publishes to it."""
    from standins.wechat import start_standin

    standin = start_standin(app_id="wx-test-stack", secret="stack-secret")
    try:
        yield standin
    finally:
        standin.stop()


@pytest.fixture(scope="session")
def prefect_stack(wechat_standin) -> Iterator[PrefectStack]:
    # Outside pytest's tmp dir, whose base outlives the session; the Prefect server's private PostgreSQL goes
    # where `rongmei up` puts it (as root: /var/lib/rongmei/prefect-pg/, removed at the end).
    root = Path(tempfile.mkdtemp(prefix="rongmei-stack-"))
    # Flow runs in the worker read their settings from the environment, as under `rongmei up`.
    os.environ.update(
        {
            "RONGMEI_SETTLE_SECONDS": "0.5",
            "RONGMEI_PUBLISH_RETRIES": "3",
            "RONGMEI_PUBLISH_RETRY_DELAY": "0.2",
            "RONGMEI_EXTRA_PUBLISHERS": '{"flaky": "tests.plugins.testchannels:FlakyPublisher", '
            '"broken": "tests.plugins.testchannels:BrokenPublisher"}',
            "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
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
        stack.remove_cluster()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def prefect_server(prefect_stack: PrefectStack) -> str:
    return prefect_stack.api_url
