"""Shared fixtures: isolated settings per test, a private PostgreSQL, and one real Prefect stack per session."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

# Tests never read the demo rongmei.toml in the checkout; each builds the settings it needs.
os.environ["RONGMEI_CONFIG"] = "/nonexistent/rongmei.toml"
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

from rongmei.settings import Settings
from rongmei.store import Store

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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


# PostgreSQL ------------------------------------------------------------------------------------------
def _pg_bin(name: str) -> str:
    for candidate in sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"), reverse=True):
        return str(candidate)
    found = shutil.which(name)
    if not found:
        raise RuntimeError(f"{name} not found: install Debian's postgresql package (.ci/run does)")
    return found


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A private PostgreSQL server on a unix socket, started from Debian's binaries for this session."""
    # Not under pytest's tmp dir: its parents are root-only, and the server runs as the postgres user.
    base = Path(tempfile.mkdtemp(prefix="rongmei-pg-"))
    data, sock = base / "data", base / "sock"
    sock.mkdir()
    as_postgres: list[str] = []
    if os.geteuid() == 0:  # postgres refuses to run as root
        shutil.chown(base, "postgres")
        shutil.chown(sock, "postgres")
        as_postgres = ["runuser", "-u", "postgres", "--"]
    port = free_port()
    subprocess.run([*as_postgres, _pg_bin("initdb"), "-D", str(data), "-A", "trust", "-U", "postgres"],
                   check=True, capture_output=True)
    subprocess.run(
        [*as_postgres, _pg_bin("pg_ctl"), "-D", str(data), "-w", "-l", str(base / "log"), "-o",
         f"-p {port} -k {sock} -c listen_addresses='' -c fsync=off", "start"],
        check=True, capture_output=True,
    )
    try:
        yield f"postgresql+psycopg://postgres@/postgres?host={sock}&port={port}"
    finally:
        subprocess.run([*as_postgres, _pg_bin("pg_ctl"), "-D", str(data), "-m", "fast", "stop"], capture_output=True)
        shutil.rmtree(base, ignore_errors=True)


# Prefect ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def prefect_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real `prefect server start` (SQLite, telemetry off) for the whole test session."""
    from rongmei.up import Stack, start_prefect

    data = tmp_path_factory.mktemp("prefect-stack")
    stack_settings = Settings(content_dir=data / "content", data_dir=data / "data")
    stack = Stack(stack_settings)
    api_url = start_prefect(stack, stack_settings, free_port())
    os.environ["PREFECT_API_URL"] = api_url
    try:
        yield api_url
    finally:
        stack.stop()
