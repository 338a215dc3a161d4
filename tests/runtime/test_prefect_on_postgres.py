"""The Prefect server's database under `rongmei up` (`prefect_database_url`).

On Prefect's SQLite file the server answers some state changes with 503 "database is locked" while it records
other runs, so a sign-off can wait seconds (see the README's benchmarks). By default `rongmei up` therefore
runs a private PostgreSQL cluster for it (tests/runtime/test_private_postgres.py: where, and that it starts);
a URL points it at the center's own server. When the cluster cannot start, `rongmei up` says why and how to fix
it, and runs Prefect on SQLite with the settings that make it wait rather than fail.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest
import requests
import sqlalchemy as sa

from rongmei.core.settings import Settings
from rongmei.runtime.pgcluster import LOCATION_FILE, cluster_for
from rongmei.runtime.prefect_db import SQLITE_SERVER_ENV, describe_recorded, read_choice
from rongmei.runtime.up import Stack, prefect_database, prefect_env, start_prefect
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
    settings = prefect_stack.settings
    cluster = prefect_stack.cluster
    assert (cluster.data / "PG_VERSION").is_file() and cluster.running()
    assert (settings.data_dir / LOCATION_FILE).read_text().strip() == str(cluster.root)
    assert not (settings.data_dir / "prefect" / "prefect.db").exists()
    requests.get(f"{prefect_stack.api_url}/health", timeout=ANSWER_TIMEOUT).raise_for_status()
    assert read_choice(settings)["kind"] == "postgresql" and not read_choice(settings)["problem"]
    assert f"Prefect 数据库：PostgreSQL (private cluster at {cluster.root})" in describe_recorded(settings)
    assert "PREFECT_CLIENT_MAX_RETRIES" not in prefect_env(settings, prefect_stack.api_url)  # Prefect's own 5


def test_an_existing_sqlite_history_is_kept_and_sqlite_can_be_chosen(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data", content_dir=tmp_path / "content")
    (settings.data_dir / "prefect").mkdir(parents=True)
    (settings.data_dir / "prefect" / "prefect.db").write_bytes(b"")  # a center that ran on SQLite before
    kept = Stack(settings)
    assert prefect_database(kept, settings) == SQLITE_SERVER_ENV  # its waiting reviews stay where they are
    assert not cluster_for(settings.data_dir).root.exists()
    assert "keeps its SQLite file" in kept.prefect_db_problem and 'prefect_database_url = "sqlite"' in \
        kept.prefect_db_problem
    chosen = Settings(data_dir=tmp_path / "other", content_dir=tmp_path / "content", prefect_database_url="sqlite")
    stack = Stack(chosen)
    assert prefect_database(stack, chosen) == SQLITE_SERVER_ENV
    assert not cluster_for(chosen.data_dir).root.exists()
    assert stack.prefect_db == f"SQLite ({chosen.data_dir / 'prefect' / 'prefect.db'}) — sign-offs may wait for " \
        "its write lock" and not stack.prefect_db_problem  # chosen: nothing to warn about


@pytest.fixture
def broken_cluster(tmp_path: Path) -> Settings:
    """A data dir whose recorded cluster the postgres user (or, not as root, anyone) cannot make."""
    settings = Settings(data_dir=tmp_path / "data", content_dir=tmp_path / "content")
    settings.data_dir.mkdir(parents=True)
    if os.geteuid() == 0:  # the ordinary failure: a parent closed to postgres (pytest's tmp dir is root-only)
        closed = tmp_path / "closed"
        closed.mkdir(mode=0o700)
        (settings.data_dir / LOCATION_FILE).write_text(f"{closed / 'cluster'}\n")
    else:
        (tmp_path / "a-file").write_text("")
        (settings.data_dir / LOCATION_FILE).write_text(f"{tmp_path / 'a-file' / 'cluster'}\n")
    return settings


def test_a_cluster_that_cannot_start_is_said_loudly_and_sqlite_is_made_safe(broken_cluster: Settings, caplog,
                                                                             monkeypatch) -> None:
    settings = broken_cluster
    stack = Stack(settings)
    with caplog.at_level(logging.WARNING):
        server_env = prefect_database(stack, settings)
    assert server_env == {"PREFECT_SERVER_DATABASE_TIMEOUT": "60", "PREFECT_CLIENT_MAX_RETRIES": "8"}
    problem = stack.prefect_db_problem
    assert problem in caplog.text and len(problem.splitlines()) >= 4
    assert "did not start" in problem and "Fix:" in problem and 'prefect_database_url = "postgresql://' in problem
    assert "runs on SQLite" in problem and "PREFECT_CLIENT_MAX_RETRIES=8" in problem
    if os.geteuid() == 0:
        assert f"cannot reach {settings.data_dir.parent / 'closed' / 'cluster'}" in problem
        assert f"{settings.data_dir.parent / 'closed'} drwx------" in problem  # each closed parent, named
        assert "`chmod o+x " in problem and f"{settings.data_dir.parent / 'closed'}`" in problem
    assert stack.prefect_db.startswith("SQLite (") and "write lock" in stack.prefect_db
    recorded = read_choice(settings)
    assert recorded["kind"] == "sqlite" and recorded["problem"] == problem
    env = prefect_env(settings, "http://127.0.0.1:1/api")  # deploy, the worker and its flow runs
    assert env["PREFECT_CLIENT_MAX_RETRIES"] == "8"
    status = describe_recorded(settings)
    assert status.startswith("Prefect 数据库：SQLite (") and "sign-offs may wait for its write lock" in status
    assert problem in status
    monkeypatch.setenv("PREFECT_CLIENT_MAX_RETRIES", "3")  # an operator's own choice wins
    assert prefect_env(settings, "http://127.0.0.1:1/api")["PREFECT_CLIENT_MAX_RETRIES"] == "3"


def test_the_prefect_server_on_the_sqlite_fallback_runs_with_the_safe_settings(broken_cluster: Settings) -> None:
    settings = broken_cluster
    stack = Stack(settings)
    try:
        api = start_prefect(stack, settings, free_port())
        shown = requests.get(f"{api}/admin/settings", headers=prefect_auth_header(), timeout=30)
        shown.raise_for_status()
        assert shown.json()["server"]["database"]["timeout"] == 60.0
        assert shown.json()["client"]["max_retries"] == 8
        requests.post(f"{api}/flows/", json={"name": "签发检查"}, headers=prefect_auth_header(),
                      timeout=30).raise_for_status()
        with sa.create_engine(f"sqlite:///{settings.data_dir / 'prefect' / 'prefect.db'}").connect() as conn:
            assert conn.execute(sa.text("PRAGMA journal_mode")).scalar() == "wal"  # Prefect's own setting
            assert conn.execute(sa.text("SELECT count(*) FROM flow WHERE name = '签发检查'")).scalar() == 1
    finally:
        stack.stop()
