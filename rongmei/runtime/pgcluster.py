"""A private PostgreSQL cluster for the Prefect server, started from Debian's binaries (package `postgresql`).

`rongmei up` gives it to the Prefect server. On Prefect's default SQLite file the server answers some state
changes with 503 "database is locked" while it records other runs; its client retries ~2 s later and the UI
may show the reviewer an error. Our own cluster on a unix socket removes that without asking the technician
to set up a database. The tests use the same class for theirs.

Where it lives (`cluster_for`): PostgreSQL refuses to run as root, so when `rongmei up` runs as root the
cluster runs as the `postgres` user, which often cannot reach the data dir (root's home is 0700). It then lives
in `/var/lib/rongmei/prefect-pg/<hash of the data dir's absolute path>/` (persistent, owned by `postgres`,
0700). Run as any other user, it runs as that user in `<data dir>/prefect-pg/`. Either way the data dir keeps
a record of the place (`prefect-pg.location`), so a later start finds the same cluster even after the data dir
moved, and the cluster keeps a note of the data dir it serves (`data-dir`).

It holds every run, sign-off form and answer of the center, so it accepts only the service's own OS user: no
TCP port, a socket directory and socket only the user running PostgreSQL may use (root passes anyway), and
`peer` authentication mapped to the user that started it (and `postgres`, which runs it when that user is root).

Only the standard library is imported here: the non-root test runs this module as `nobody` under the system
Python, which cannot see the project's virtualenv.
"""

from __future__ import annotations

import hashlib
import os
import pwd
import shutil
import stat
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from rongmei.core.errors import ConfigError

__all__ = [
    "INSTALL_HINT", "LOCATION_FILE", "SOCKET_PORT", "SYSTEM_CLUSTERS", "PrivateCluster", "available", "cluster_for",
    "pg_binary"
]

SOCKET_PORT = 5432  # only names the socket file: the cluster listens on no TCP address
SYSTEM_CLUSTERS = Path("/var/lib/rongmei/prefect-pg")  # root's clusters, one per data dir
LOCATION_FILE = "prefect-pg.location"  # in the data dir: the absolute path of its cluster
_SOCKET_PATH_MAX = 107  # sun_path is 108 bytes with its NUL; PostgreSQL refuses longer socket paths
INSTALL_HINT = "install Debian's `postgresql` package (`apt-get install postgresql`; `make up` does it)"


def pg_binary(name: str) -> str | None:
    for candidate in sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"), reverse=True):
        return str(candidate)
    return shutil.which(name)


def available() -> bool:
    return all(pg_binary(name) for name in ("initdb", "pg_ctl"))


def _short_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def cluster_for(data_dir: Path, *, durable: bool = True, clusters_dir: Path = SYSTEM_CLUSTERS) -> PrivateCluster:
    """The private cluster of a data dir: where its record says, else where it is made (see the module's doc).

    The same data dir always gets the same cluster: its absolute path (symlinks resolved) names the place, and
    the record keeps naming it after the data dir moved. A cluster already in the data dir (from a release that
    kept it there) stays there."""
    data_dir = Path(data_dir).resolve()
    record = data_dir / LOCATION_FILE
    if record.is_file() and (recorded := record.read_text(encoding="utf-8").strip()) and Path(recorded).is_absolute():
        return PrivateCluster(Path(recorded), durable=durable, record=record)
    in_data_dir = data_dir / "prefect-pg"
    if os.geteuid() != 0 or (in_data_dir / "data" / "PG_VERSION").exists():
        return PrivateCluster(in_data_dir, durable=durable, record=record)
    return PrivateCluster(Path(clusters_dir).resolve() / _short_hash(str(data_dir)), durable=durable, record=record)


@dataclass
class PrivateCluster:
    root: Path
    durable: bool = True  # False for throw-away test clusters: fsync off
    database: str = "prefect"
    record: Path | None = None  # where the data dir keeps this cluster's location (written on start)
    _socket_dir: Path | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        self.root = Path(self.root).resolve()  # commands run with cwd="/": a relative path would mean another place

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def socket_dir(self) -> Path:
        """`run/` in the cluster, unless that path is too long for a unix socket (a deep checkout): then a
        directory of the cluster's own in /tmp, named after the cluster."""
        if self._socket_dir is None:
            inside = self.root / "run"
            if len(f"{inside}/.s.PGSQL.{SOCKET_PORT}.lock".encode()) <= _SOCKET_PATH_MAX:
                self._socket_dir = inside
            else:
                self._socket_dir = Path("/tmp") / f"rongmei-pg-{os.geteuid()}-{_short_hash(str(self.root))}"
        return self._socket_dir

    @property
    def _runner(self) -> str:
        """The OS user PostgreSQL runs as: `postgres` under root (it refuses root), else ourselves."""
        return "postgres" if os.geteuid() == 0 else pwd.getpwuid(os.geteuid()).pw_name

    @property
    def _as_runner(self) -> list[str]:
        return ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []

    def url(self, database: str | None = None, driver: str = "asyncpg") -> str:
        return (f"postgresql+{driver}://postgres@/{database or self.database}"
                f"?host={self.socket_dir}&port={SOCKET_PORT}")

    def start(self) -> str:
        """Create the cluster on first use, start it, make sure the database exists; returns its URL."""
        if not available():
            raise ConfigError(f"PostgreSQL is not installed (no initdb/pg_ctl under /usr/lib/postgresql/*/bin "
                              f"or on PATH). Fix: {INSTALL_HINT}")
        try:
            self._prepare_directories()
        except OSError as exc:
            user = pwd.getpwuid(os.geteuid()).pw_name
            raise ConfigError(f"could not prepare the cluster's directory {self.root}: {exc}. Fix: make "
                              f"{self.root.parent} writable for {user}{self._replace_hint()}") from exc
        if not (self.data / "PG_VERSION").exists():
            self._check(pg_binary("initdb"), "-D", str(self.data), "-A", "peer", "-U", "postgres", "-E", "UTF8",
                        "--locale=C.UTF-8")
        self._write_record()
        self._write_access_rules()
        if self.running():  # `rongmei up` restarting its Prefect server, or a second start
            self._socket_dir = self._listening_socket_dir() or self.socket_dir
            self._run(pg_binary("pg_ctl"), "-D", str(self.data), "reload")  # rules of an older release
            return self.url()
        options = f"-k {self.socket_dir} -p {SOCKET_PORT} -c listen_addresses='' -c unix_socket_permissions=0700"
        if not self.durable:
            options += " -c fsync=off -c synchronous_commit=off"
        self._check(pg_binary("pg_ctl"), "-D", str(self.data), "-w", "-t", "60", "-l", str(self.root / "server.log"),
                    "-o", options, "start")
        if self.database != "postgres":
            self._create_database()
        return self.url()

    def _prepare_directories(self) -> None:
        """The cluster's directory and socket directory, 0700 and owned by the user PostgreSQL runs as."""
        if os.geteuid() == 0:
            try:
                pwd.getpwnam("postgres")
            except KeyError:
                raise ConfigError(f"there is no `postgres` OS user to run PostgreSQL as (it refuses root). "
                                  f"Fix: {INSTALL_HINT}; it creates that user") from None
        _make_dirs(self.root.parent, 0o755)  # created by us: passable, so that `postgres` reaches its own
        for path in (self.root, self.socket_dir):
            path.mkdir(mode=0o700, exist_ok=True)
            found = path.lstat()
            owner = pwd.getpwuid(found.st_uid).pw_name
            if not stat.S_ISDIR(found.st_mode) or owner not in {self._runner, pwd.getpwuid(os.geteuid()).pw_name}:
                # e.g. a squatter's directory or link in /tmp: never chown it, never put our socket there
                raise ConfigError(f"{path} is not a directory of {self._runner}'s (it is {owner}'s"
                                  f"{'' if stat.S_ISDIR(found.st_mode) else ', and not a directory'}). "
                                  f"Fix: remove it, then start again")
            if os.geteuid() == 0:
                os.chown(path, pwd.getpwnam("postgres").pw_uid, -1, follow_symlinks=False)
            os.chmod(path, 0o700)
        if self._run("test", "-w", str(self.root), "-a", "-w", str(self.socket_dir)).returncode != 0:
            closed = [p for p in reversed(self.root.parents) if not self._passable(p)] or [self.root.parent]
            modes = ", ".join(f"{p} {stat.filemode(p.stat().st_mode)}" for p in closed)
            raise ConfigError(f"the {self._runner} user cannot reach {self.root}: closed to it ({modes}). Fix: "
                              f"`chmod o+x {' '.join(map(str, closed))}`{self._replace_hint()}")

    def _replace_hint(self) -> str:
        if self.record is None:
            return ""
        return (f", or remove {self.record} so that `rongmei up` makes a new cluster where it would today "
                f"(Prefect's history stays in {self.root})")

    def _passable(self, path: Path) -> bool:
        return self._run("test", "-x", str(path)).returncode == 0

    def _write_record(self) -> None:
        """The data dir names its cluster, the cluster its data dir (for whoever finds it in /var/lib)."""
        if self.record is None:
            return
        self.record.parent.mkdir(parents=True, exist_ok=True)
        if not self.record.is_file() or self.record.read_text(encoding="utf-8").strip() != str(self.root):
            tmp = self.record.with_name(f".{self.record.name}.tmp")
            tmp.write_text(f"{self.root}\n", encoding="utf-8")
            os.replace(tmp, self.record)
        (self.root / "data-dir").write_text(f"{self.record.parent}\n", encoding="utf-8")

    def _write_access_rules(self) -> None:
        """Only the service user (and postgres) may connect, over the socket, as the `postgres` role."""
        service = pwd.getpwuid(os.geteuid()).pw_name
        users = sorted({service, "postgres"})
        rules = {
            "pg_hba.conf": "# rongmei: unix socket only, peer authentication, mapped users only\n"
                           "local all all peer map=rongmei\n",
            "pg_ident.conf": "# rongmei: OS users that may connect as the postgres role\n"
                             + "".join(f"rongmei {user} postgres\n" for user in users),
        }
        for name, text in rules.items():
            path = self.data / name
            path.write_text(text, encoding="utf-8")
            os.chmod(path, 0o600)
            if os.geteuid() == 0:
                shutil.chown(path, "postgres")

    def _listening_socket_dir(self) -> Path | None:
        """Where a running postmaster listens (line 5 of postmaster.pid): it may have been started with another
        socket directory than this process would choose."""
        try:
            lines = (self.data / "postmaster.pid").read_text(encoding="utf-8").splitlines()
        except OSError:
            return None
        return Path(lines[4]) if len(lines) > 4 and lines[4].startswith("/") else None

    def running(self) -> bool:
        return self._run(pg_binary("pg_ctl"), "-D", str(self.data), "status").returncode == 0

    def stop(self) -> None:
        if (self.data / "postmaster.pid").exists():
            self._run(pg_binary("pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop")

    def _create_database(self) -> None:
        psql = [pg_binary("psql") or "psql", "-h", str(self.socket_dir), "-p", str(SOCKET_PORT), "-U", "postgres",
                "-d", "postgres", "-tAc"]
        exists = self._run(*psql, f"SELECT 1 FROM pg_database WHERE datname = '{self.database}'")
        if exists.stdout.strip() != "1":
            self._check(*psql, f'CREATE DATABASE "{self.database}"')

    def _run(self, *args: str | None) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*self._as_runner, *map(str, args)], capture_output=True, text=True, cwd="/")

    def _check(self, *args: str | None) -> None:
        result = self._run(*args)
        if result.returncode != 0:
            log = self.root / "server.log"
            tail = log.read_text(errors="replace")[-1500:] if log.exists() else ""
            raise ConfigError(f"{Path(str(args[0])).name} failed: {result.stderr.strip() or result.stdout.strip()}"
                              f"\n{tail}\nFix what the lines above name (the whole log: {log})")


def _make_dirs(path: Path, mode: int) -> None:
    """mkdir -p, giving each directory it creates `mode` whatever the umask (a hardened 077 would close them)."""
    missing = [p for p in (path, *path.parents) if not p.exists()]
    for folder in reversed(missing):
        folder.mkdir(exist_ok=True)
        os.chmod(folder, mode)
