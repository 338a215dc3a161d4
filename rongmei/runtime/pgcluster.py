"""A private PostgreSQL cluster in the data dir, started from Debian's binaries (package `postgresql`).

`rongmei up` gives it to the Prefect server. On Prefect's default SQLite file the server answers some state
changes with 503 "database is locked" while it records other runs; its client retries ~2 s later and the UI
may show the reviewer an error. Our own cluster on a unix socket removes that without asking the technician
to set up a database. The tests use the same class for theirs.

It holds every run, sign-off form and answer of the center, so it accepts only the service's own OS user: no
TCP port, a socket directory and socket only its owner may use, and `peer` authentication mapped to the user
that started it (and `postgres`, which runs it when that user is root).
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from rongmei.core.errors import ConfigError

__all__ = ["SOCKET_PORT", "PrivateCluster", "available", "pg_binary"]

SOCKET_PORT = 5432  # only names the socket file: the cluster listens on no TCP address


def pg_binary(name: str) -> str | None:
    for candidate in sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"), reverse=True):
        return str(candidate)
    return shutil.which(name)


def available() -> bool:
    return all(pg_binary(name) for name in ("initdb", "pg_ctl"))


@dataclass
class PrivateCluster:
    root: Path
    durable: bool = True  # False for throw-away test clusters: fsync off
    database: str = "prefect"
    _as_postgres: list[str] = field(default_factory=list, init=False)

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def socket_dir(self) -> Path:
        return self.root / "run"

    def url(self, database: str | None = None, driver: str = "asyncpg") -> str:
        return (f"postgresql+{driver}://postgres@/{database or self.database}"
                f"?host={self.socket_dir}&port={SOCKET_PORT}")

    def start(self) -> str:
        """Create the cluster on first use, start it, make sure the database exists; returns its URL."""
        if not available():
            raise ConfigError("PostgreSQL is not installed (Debian package `postgresql`)")
        self.socket_dir.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:  # PostgreSQL refuses to run as root: it runs as the postgres user
            self._as_postgres = ["runuser", "-u", "postgres", "--"]
            for path in (self.root, self.socket_dir):
                shutil.chown(path, "postgres")
            if self._run("test", "-w", str(self.root)).returncode != 0:
                raise ConfigError(f"the postgres user cannot write {self.root} (a parent directory is closed to it)")
        os.chmod(self.socket_dir, 0o700)
        if not (self.data / "PG_VERSION").exists():
            self._check(pg_binary("initdb"), "-D", str(self.data), "-A", "peer", "-U", "postgres", "-E", "UTF8",
                        "--locale=C.UTF-8")
        self._write_access_rules()
        if self.running():  # `rongmei up` restarting its Prefect server, or a second start
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
            if self._as_postgres:
                shutil.chown(path, "postgres")

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
        return subprocess.run([*self._as_postgres, *map(str, args)], capture_output=True, text=True, cwd="/")

    def _check(self, *args: str | None) -> None:
        result = self._run(*args)
        if result.returncode != 0:
            log = self.root / "server.log"
            tail = log.read_text(errors="replace")[-1500:] if log.exists() else ""
            raise ConfigError(f"{Path(str(args[0])).name} failed: {result.stderr.strip() or result.stdout.strip()}"
                              f"\n{tail}")
