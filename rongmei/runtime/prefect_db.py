"""Which database the Prefect server of `rongmei up` runs on, why, and what `rongmei status` says about it.

By default it is the private PostgreSQL cluster of the data dir (`rongmei.runtime.pgcluster`); an operator's
`prefect_database_url` names another PostgreSQL, or `sqlite`. When the private cluster cannot be used, the
reason and its fix are said loudly, and Prefect's own SQLite file is made as safe as it gets:

- Prefect's SQLite engine already sets `journal_mode = WAL` and `busy_timeout = 60000` on every connection
  (prefect/server/database/configurations.py: `AioSqliteConfiguration.setup_sqlite`); the connect-time wait
  (`PREFECT_SERVER_DATABASE_TIMEOUT`, 10 s by default) is raised to the same 60 s.
- A write that loses the race for the lock anyway (SQLITE_BUSY_SNAPSHOT returns at once, whatever the busy
  timeout) is answered with 503, which Prefect's clients retry with exponential backoff (2, 4, 8 … s).
  `PREFECT_CLIENT_MAX_RETRIES` goes from 5 (about one minute) to 8 (about eight and a half minutes), so a
  flow run that meets a burst of 503s waits instead of crashing. 503 is retried by default: no
  `PREFECT_CLIENT_RETRY_EXTRA_CODES` is needed, and 500 must not be retried (not every route is idempotent).

`rongmei up` records its choice in `<data dir>/run/prefect-database` (JSON, no secrets): the worker's
environment and `rongmei status` read it from there.
"""

from __future__ import annotations

import json
import os
import textwrap
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from rongmei.core.errors import ConfigError
from rongmei.core.settings import Settings
from rongmei.runtime import pgcluster
from rongmei.runtime.pgcluster import PrivateCluster

__all__ = [
    "RECORD", "SQLITE_CLIENT_ENV", "SQLITE_SERVER_ENV", "PrefectDatabase", "choose_prefect_database",
    "client_env", "describe_recorded", "read_choice", "record_choice", "sqlite_file"
]

RECORD = Path("run") / "prefect-database"  # in the data dir
_SQLITE_CLIENT_RETRIES = 8
SQLITE_CLIENT_ENV = {"PREFECT_CLIENT_MAX_RETRIES": str(_SQLITE_CLIENT_RETRIES)}
SQLITE_SERVER_ENV = {"PREFECT_SERVER_DATABASE_TIMEOUT": "60", **SQLITE_CLIENT_ENV}
_RETRY_BUDGET_MINUTES = sum(2**n for n in range(1, _SQLITE_CLIENT_RETRIES + 1)) / 60  # Prefect's backoff: 2**n s


@dataclass
class PrefectDatabase:
    kind: Literal["postgresql", "sqlite"]
    description: str  # what `rongmei up` and `rongmei status` print
    url: str | None = None  # for the Prefect server; None: its own SQLite file
    problem: str = ""  # why the private cluster is not used, with the fix (printed loudly)
    cluster: PrivateCluster | None = field(default=None, repr=False)

    def server_env(self) -> dict[str, str]:
        if self.url:
            return {"PREFECT_API_DATABASE_CONNECTION_URL": self.url}
        return _unless_set(SQLITE_SERVER_ENV)


def _unless_set(values: dict[str, str]) -> dict[str, str]:
    """An operator's own value in the environment wins over ours."""
    return {name: os.environ.get(name, value) for name, value in values.items()}


def sqlite_file(settings: Settings) -> Path:
    return (settings.data_dir / "prefect" / "prefect.db").resolve()  # PREFECT_HOME is data_dir/prefect


def _on_sqlite(settings: Settings, problem: str = "") -> PrefectDatabase:
    return PrefectDatabase("sqlite", f"SQLite ({sqlite_file(settings)}) — sign-offs may wait for its write lock",
                           problem=problem)


def _loudly(headline: str, details: str, settings: Settings) -> str:
    """Several lines a technician cannot miss: what failed, the fix, and what runs meanwhile."""
    return "\n".join([
        f"!! {headline}",
        textwrap.indent(details.strip(), "   "),
        "   Then restart `rongmei up`. Or give Prefect a PostgreSQL of the center's own: "
        'prefect_database_url = "postgresql://…" in rongmei.toml.',
        f"   Until then the Prefect server runs on SQLite ({sqlite_file(settings)}): sign-offs may wait for its "
        f"write lock, and Prefect's clients retry a locked write for up to {_RETRY_BUDGET_MINUTES:g} minutes "
        f"(PREFECT_CLIENT_MAX_RETRIES={_SQLITE_CLIENT_RETRIES}).",
    ])


def choose_prefect_database(settings: Settings) -> PrefectDatabase:
    """Decide, and start the private cluster when it is the choice (a running one is reused)."""
    choice = settings.prefect_database_url
    if choice == "sqlite":
        return _on_sqlite(settings)
    if choice:
        from sqlalchemy.engine import make_url

        url = settings.prefect_db_url()
        return PrefectDatabase("postgresql", f"PostgreSQL ({make_url(url).render_as_string(hide_password=True)}, "
                               "prefect_database_url)", url)
    if not pgcluster.available():
        return _on_sqlite(settings, _loudly(
            "PostgreSQL is not installed, so the Prefect server has no private PostgreSQL.",
            f"Fix: {pgcluster.INSTALL_HINT}.", settings))
    cluster = pgcluster.cluster_for(settings.data_dir)
    if sqlite_file(settings).exists() and not cluster.data.exists():
        return _on_sqlite(settings, _loudly(
            "The Prefect server keeps its SQLite file: it holds this center's runs (waiting reviews among them).",
            "To move to the private PostgreSQL, let the waiting reviews finish, stop `rongmei up` and move "
            f"{sqlite_file(settings)} aside; to stay on SQLite and silence this, set "
            'prefect_database_url = "sqlite".', settings))
    try:
        url = cluster.start()
    except ConfigError as exc:
        return _on_sqlite(settings, _loudly(
            f"The private PostgreSQL for the Prefect server (in {cluster.root}) did not start:", str(exc), settings))
    return PrefectDatabase("postgresql", f"PostgreSQL (private cluster at {cluster.root})", url, cluster=cluster)


def record_choice(settings: Settings, database: PrefectDatabase) -> None:
    """Written by `rongmei up` on every start of its Prefect server (atomically: status may read meanwhile)."""
    path = settings.data_dir / RECORD
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    shown = {k: v for k, v in asdict(database).items() if k not in ("url", "cluster")}  # a URL may hold a password
    shown["chosen_at"] = datetime.now().astimezone().isoformat(timespec="seconds")
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(shown, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def read_choice(settings: Settings) -> dict[str, Any] | None:
    try:
        return json.loads((settings.data_dir / RECORD).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def client_env(settings: Settings) -> dict[str, str]:
    """What every Prefect client of the stack (deploy, worker, flow runs) needs for the recorded database."""
    recorded = read_choice(settings)
    return _unless_set(SQLITE_CLIENT_ENV) if recorded and recorded.get("kind") == "sqlite" else {}


def describe_recorded(settings: Settings) -> str:
    """One line for `rongmei status`: the database the last `rongmei up` gave the Prefect server."""
    recorded = read_choice(settings)
    if recorded is None:
        return "Prefect 数据库：尚未记录（`rongmei up` 启动后记下所用的数据库）"
    line = f"Prefect 数据库：{recorded.get('description', '?')}（{recorded.get('chosen_at', '?')} 由 `rongmei up` 选定）"
    if recorded.get("problem"):
        line += "\n" + recorded["problem"]
    return line
