"""Where the Prefect server's private PostgreSQL lives, and that it starts in the ordinary cases: root with a
relative data dir under its own 0700 home, and a user other than root (rongmei.runtime.pgcluster).

Root's cluster runs as `postgres`, which cannot pass through a 0700 home, so it lives outside the data dir
(`/var/lib/rongmei/prefect-pg/<hash>` by default; these tests give it a directory of their own); any other
user runs it itself in the data dir. The data dir records where its cluster is.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from rongmei.core.settings import Settings
from rongmei.runtime import pgcluster
from rongmei.runtime.pgcluster import LOCATION_FILE, SYSTEM_CLUSTERS, cluster_for
from rongmei.storage.privacy import make_private
from tests.support.paths import ROOT

IS_ROOT = os.geteuid() == 0
needs_postgres = pytest.mark.skipif(not pgcluster.available(), reason="Debian's postgresql is not installed")
needs_root = pytest.mark.skipif(not IS_ROOT, reason="only root can try as the postgres user or as nobody")


@pytest.fixture
def closed_home() -> Iterator[Path]:
    """A 0700 directory in root's own 0700 home: the checkout of a technician who works as root."""
    home = Path(tempfile.mkdtemp(dir="/root", prefix="rongmei-home-"))
    try:
        yield home
    finally:
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture
def clusters_dir() -> Iterator[Path]:
    """Stands in for /var/lib/rongmei/prefect-pg: a directory the postgres user may pass through."""
    path = Path(tempfile.mkdtemp(prefix="rongmei-clusters-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def psql_as_root(cluster: pgcluster.PrivateCluster, sql: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["psql", "-h", str(cluster.socket_dir), "-U", "postgres", "-d", cluster.database, "-tAc",
                           sql], capture_output=True, text=True)


def test_the_place_of_a_cluster_is_stable_and_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "var").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "var")
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    as_root = cluster_for(Path("var"))
    assert as_root.root.parent == SYSTEM_CLUSTERS and as_root.root.is_absolute()
    assert cluster_for(tmp_path / "var").root == as_root.root == cluster_for(Path("link")).root  # one data dir
    assert cluster_for(tmp_path / "other").root != as_root.root
    assert as_root.record == tmp_path / "var" / LOCATION_FILE
    legacy = tmp_path / "old"  # a release that kept root's cluster in the data dir: it stays there
    (legacy / "prefect-pg" / "data").mkdir(parents=True)
    (legacy / "prefect-pg" / "data" / "PG_VERSION").write_text("15\n")
    assert cluster_for(legacy).root == legacy / "prefect-pg"
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    as_user = cluster_for(Path("var"))
    assert as_user.root == tmp_path / "var" / "prefect-pg" and as_user.socket_dir == as_user.root / "run"
    (tmp_path / "var" / LOCATION_FILE).write_text("/srv/moved/cluster\n")  # where an earlier start put it
    assert cluster_for(Path("var")).root == Path("/srv/moved/cluster")


def test_a_socket_path_too_long_for_unix_sockets_moves_to_tmp(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)  # a service user's cluster in its (deep) data dir
    deep = tmp_path / ("d" * 60) / ("e" * 40) / "var"
    cluster = cluster_for(deep)
    assert len(str(cluster.root / "run" / ".s.PGSQL.5432")) > 107
    assert cluster.socket_dir.parent == Path("/tmp") and cluster.socket_dir.name.startswith("rongmei-pg-")
    assert cluster_for(deep).socket_dir == cluster.socket_dir  # found again on the next start
    assert len(str(cluster.socket_dir / ".s.PGSQL.5432.lock")) <= 107


@needs_root
@needs_postgres
def test_root_with_a_relative_data_dir_in_its_closed_home_gets_a_cluster_that_starts(
    closed_home: Path, clusters_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert closed_home.stat().st_mode & 0o777 == 0o700 and Path("/root").stat().st_mode & 0o077 == 0
    monkeypatch.chdir(closed_home)
    cluster = cluster_for(Path("var"), durable=False, clusters_dir=clusters_dir)
    try:
        url = cluster.start()
        assert url.startswith("postgresql+asyncpg://postgres@/prefect?host=/")
        assert cluster.root.parent == clusters_dir and cluster.running()
        assert psql_as_root(cluster, "SELECT current_user").stdout.strip() == "postgres"
        postgres_uid = pgcluster.pwd.getpwnam("postgres").pw_uid
        for path in (cluster.root, cluster.socket_dir, cluster.data):
            assert path.stat().st_uid == postgres_uid and path.stat().st_mode & 0o077 == 0, path
        record = closed_home / "var" / LOCATION_FILE
        assert record.read_text().strip() == str(cluster.root)
        assert (cluster.root / "data-dir").read_text().strip() == str(closed_home / "var")
        # The data dir moves (a renamed checkout): its record still leads to the same cluster.
        (closed_home / "var").rename(closed_home / "moved")
        again = cluster_for(closed_home / "moved", durable=False, clusters_dir=clusters_dir)
        assert again.root == cluster.root
        assert again.start() == url  # the running cluster is reused
    finally:
        cluster.stop()
    assert not cluster.running()


@needs_root
@needs_postgres
def test_a_user_other_than_root_runs_the_cluster_itself_in_its_data_dir() -> None:
    """Run as `nobody` under the system Python (pgcluster imports only the standard library): the ordinary
    case, and a data dir so deep that the socket must go to /tmp."""
    python = shutil.which("python3", path="/usr/bin")
    version = subprocess.run([python or "python3", "-c", "import sys; print(sys.version_info >= (3, 11))"],
                             capture_output=True, text=True)
    if python is None or version.stdout.strip() != "True":
        pytest.skip("no system Python >= 3.11 that nobody may run")
    home = Path(tempfile.mkdtemp(prefix="rongmei-nobody-"))
    shutil.chown(home, "nobody")
    script = """
import json, os, subprocess, sys
from pathlib import Path
from rongmei.runtime.pgcluster import cluster_for
out = []
for data_dir in map(Path, sys.argv[1:]):
    cluster = cluster_for(data_dir, durable=False)
    try:
        url = cluster.start()
        who = subprocess.run(["psql", "-h", str(cluster.socket_dir), "-U", "postgres", "-d", "prefect", "-tAc",
                              "SELECT current_user"], capture_output=True, text=True)
        out.append({"root": str(cluster.root), "socket_dir": str(cluster.socket_dir), "url": url,
                    "running": cluster.running(), "psql": who.stdout.strip() or who.stderr,
                    "owner": (cluster.data / "PG_VERSION").stat().st_uid, "me": os.geteuid()})
    finally:
        cluster.stop()
        out[-1]["stopped"] = not cluster.running()
print(json.dumps(out))
"""
    ordinary = home / "center" / "var"
    deep = home / ("d" * 60) / ("e" * 40) / "var"
    socket_dirs = []
    try:
        ran = subprocess.run(["runuser", "-u", "nobody", "--", "env", f"PYTHONPATH={ROOT}", python, "-B", "-c",
                              script, str(ordinary), str(deep)], capture_output=True, text=True, cwd="/")
        assert ran.returncode == 0, ran.stderr
        first, second = json.loads(ran.stdout)
        socket_dirs = [Path(first["socket_dir"]), Path(second["socket_dir"])]
        nobody = pgcluster.pwd.getpwnam("nobody").pw_uid
        assert first == {"root": str(ordinary / "prefect-pg"), "socket_dir": str(ordinary / "prefect-pg" / "run"),
                         "url": first["url"], "running": True, "psql": "postgres", "owner": nobody, "me": nobody,
                         "stopped": True}
        assert (ordinary / LOCATION_FILE).read_text().strip() == str(ordinary / "prefect-pg")
        assert second["root"] == str(deep / "prefect-pg") and second["psql"] == "postgres" and second["stopped"]
        assert Path(second["socket_dir"]).parent == Path("/tmp")
        assert Path(second["socket_dir"]).stat().st_uid == nobody
        assert Path(second["socket_dir"]).stat().st_mode & 0o077 == 0
    finally:
        shutil.rmtree(home, ignore_errors=True)
        for path in socket_dirs:
            if path.parent == Path("/tmp"):
                shutil.rmtree(path, ignore_errors=True)


@needs_root
def test_a_socket_directory_someone_else_made_in_tmp_is_refused(tmp_path: Path) -> None:
    cluster = pgcluster.PrivateCluster(tmp_path / ("d" * 60) / ("e" * 40) / "prefect-pg")
    assert cluster.socket_dir.parent == Path("/tmp")
    cluster.socket_dir.mkdir()
    shutil.chown(cluster.socket_dir, "nobody")  # squatted before the first start
    try:
        with pytest.raises(pgcluster.ConfigError, match=r"not a directory of postgres's.*nobody's.*Fix: remove it"):
            cluster.start()
        assert cluster.socket_dir.stat().st_uid == pgcluster.pwd.getpwnam("nobody").pw_uid  # never chowned
    finally:
        shutil.rmtree(cluster.socket_dir, ignore_errors=True)


@needs_root
def test_the_data_dir_is_closed_unless_postgres_still_runs_a_cluster_inside(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data", content_dir=tmp_path / "content")
    make_private(settings)
    assert settings.data_dir.stat().st_mode & 0o777 == 0o700
    version = settings.data_dir / "prefect-pg" / "data" / "PG_VERSION"  # made by an older release, as root
    version.parent.mkdir(parents=True)
    version.write_text("15\n")
    shutil.chown(version, "postgres")
    make_private(settings)
    assert settings.data_dir.stat().st_mode & 0o777 == 0o711  # postgres passes through to it, lists nothing


def test_the_cluster_module_needs_only_the_standard_library() -> None:
    """The non-root test runs it under the system Python; keep it importable there."""
    code = ("import sys; import rongmei.runtime.pgcluster; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('pydantic', 'sqlalchemy', 'prefect')))")
    ran = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert ran.returncode == 0 and ran.stdout.strip() == "[]", ran.stderr
