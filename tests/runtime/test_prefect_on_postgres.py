"""The Prefect server's database under `rongmei up` (`prefect_database_url`).

On Prefect's SQLite file the server answers some state changes with 503 "database is locked" while it records
other runs, so a sign-off can wait seconds (see the README's benchmarks). By default `rongmei up` therefore
runs a private PostgreSQL cluster in the data dir for it; a URL points it at the center's own server.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import requests
import sqlalchemy as sa

from rongmei.core.settings import Settings
from rongmei.runtime.up import Stack, prefect_database, start_prefect
from tests.support.environment import free_port, prefect_auth_header
from tests.support.waiting import ANSWER_TIMEOUT

pytestmark = [pytest.mark.prefect, pytest.mark.postgres]


def test_the_prefect_server_runs_on_a_given_postgresql(tmp_path: Path, postgres_url: str) -> None:
    with sa.create_engine(postgres_url, isolation_level="AUTOCOMMIT").connect() as conn:
        conn.execute(sa.text("DROP DATABASE IF EXISTS prefect_on_pg"))
        conn.execute(sa.text("CREATE DATABASE prefect_on_pg"))
    url = postgres_url.replace("/postgres?", "/prefect_on_pg?")
    settings = Settings(data_dir=tmp_path / "data", content_dir=tmp_path / "content", prefect_database_url=url)
    assert settings.prefect_db_url().startswith("postgresql+asyncpg://")
    stack = Stack(settings)
    try:
        api = start_prefect(stack, settings, free_port())
        requests.post(f"{api}/flows/", json={"name": "签发检查"}, headers=prefect_auth_header(),
                      timeout=ANSWER_TIMEOUT).raise_for_status()
        with sa.create_engine(url).connect() as conn:
            assert conn.execute(sa.text("SELECT count(*) FROM flow WHERE name = '签发检查'")).scalar() == 1
        assert not (settings.data_dir / "prefect" / "prefect.db").exists()  # nothing went to SQLite
    finally:
        stack.stop()


def test_by_default_the_stack_runs_prefect_on_its_private_cluster(prefect_stack) -> None:
    data_dir = prefect_stack.settings.data_dir
    assert (data_dir / "prefect-pg" / "data" / "PG_VERSION").is_file()
    assert not (data_dir / "prefect" / "prefect.db").exists()
    requests.get(f"{prefect_stack.api_url}/health", timeout=ANSWER_TIMEOUT).raise_for_status()


def test_an_existing_sqlite_history_is_kept_and_sqlite_can_be_chosen(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data", content_dir=tmp_path / "content")
    (settings.data_dir / "prefect").mkdir(parents=True)
    (settings.data_dir / "prefect" / "prefect.db").write_bytes(b"")  # a center that ran on SQLite before
    assert prefect_database(Stack(settings), settings) is None  # its waiting reviews stay where they are
    assert not (settings.data_dir / "prefect-pg").exists()
    chosen = Settings(data_dir=tmp_path / "other", content_dir=tmp_path / "content", prefect_database_url="sqlite")
    assert prefect_database(Stack(chosen), chosen) is None
    assert not (chosen.data_dir / "prefect-pg").exists()
