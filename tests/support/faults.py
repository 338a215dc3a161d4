"""The fault suite's harness: the real `rongmei up` in its own process group, broken at named points.

`FaultSystem` starts `python -m rongmei.cli.commands up` with a rongmei.toml of its own in a temporary root (outside
pytest's root-only tmp dir, so that the postgres user can run Prefect's private cluster in the data dir), with
`RONGMEI_FAULTS_DIR` set so that a test can arm a fault point (rongmei.core.faults) in processes that are
already running. The WeChat stand-in (and, for the S3 system, moto's S3 server) run in the test process: they
play remote services, which a power cut of the county's server does not reset, and the test reads their state.

Everything waits on conditions with generous deadlines (a file appearing, a line in the log, a process gone),
never on a fixed sleep: the suite must hold on a loaded 2-core machine.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from rongmei.core.faults import FAULTS_DIR_VARIABLE
from rongmei.core.settings import Settings
from tests.support.drops import write_drop
from tests.support.environment import free_port
from tests.support.paths import ROOT
from tests.support.processes import Process, descendants, dies_with_this_process, kill_tree, wait_gone

__all__ = ["READY_LINE", "WECHAT_APP_ID", "WECHAT_SECRET", "FaultSystem", "wait_until"]

READY_LINE = "Press Ctrl-C to stop."
WECHAT_APP_ID, WECHAT_SECRET = "wx-faults", "faults-secret"


def wait_until(condition: Callable[[], Any], what: str, timeout: float = 180, every: float = 0.25,
               diagnose: Callable[[], str] | None = None) -> Any:
    """Poll `condition` until it returns something truthy (returned); fail naming `what` after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout:.0f} s" + (f"\n{diagnose()}" if diagnose else ""))
        time.sleep(every)


class FaultSystem:
    """One county server: `rongmei up` on a data dir that outlives its restarts."""

    def __init__(self, name: str, wechat_url: str, *, data_dir: Path | None = None,
                 s3: tuple[str, str] | None = None, extra: dict[str, Any] | None = None) -> None:
        self.root = Path(tempfile.mkdtemp(prefix=f"rongmei-faults-{name}-"))
        self.root.chmod(0o755)
        self.faults_dir = self.root / "faults"
        self.faults_dir.mkdir()
        self.log = self.root / "up.log"
        self.prefect_port, self.server_port = free_port(), free_port()
        demo = tomllib.loads((ROOT / "rongmei.toml").read_text(encoding="utf-8"))
        self.config: dict[str, Any] = {
            "center_name": "故障演练融媒体中心", "demo": False,
            "content_dir": str(self.root / "content"), "data_dir": str(data_dir or self.root / "data"),
            "settle_seconds": 1.0, "public_url": f"http://127.0.0.1:{self.server_port}",
            "server_port": self.server_port, "prefect_port": self.prefect_port,
            "zones": demo["zones"], "screen_groups": demo["screen_groups"], "extra_publishers": {},
            "publish_retries": 3, "publish_retry_delay": 0.5,
            "s3_bucket": s3[1] if s3 else "", "s3_endpoint_url": s3[0] if s3 else "",
            "wechat": {"app_id": WECHAT_APP_ID, "base_url": wechat_url},
            **(extra or {}),
        }
        self.config_file = self.root / "rongmei.toml"
        self.config_file.write_text(_toml(self.config), encoding="utf-8")
        # The test process reads the same settings; init values win over any RONGMEI_* other tests left behind.
        self.settings = Settings(**self.config)
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("RONGMEI_", "PREFECT_"))}
        self.env.update({
            "RONGMEI_CONFIG": str(self.config_file), FAULTS_DIR_VARIABLE: str(self.faults_dir),
            "RONGMEI_WECHAT__APP_SECRET": WECHAT_SECRET, "DO_NOT_TRACK": "1",
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        })
        if s3:
            self.env.update({"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
                             "AWS_DEFAULT_REGION": "us-east-1"})
        self.proc: subprocess.Popen | None = None
        self.dropped: dict[str, str] = {}  # "<drop>/<file>" -> sha256 of every file an editor dropped
        self.starts = 0

    # The system's lifetime ---------------------------------------------------------------------------
    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.prefect_port}/api"

    def start(self, timeout: float = 300) -> None:
        """`rongmei up` (same data dir every time) in a new session, i.e. its own process group; returns when
        it printed that it is up."""
        assert self.proc is None or self.proc.poll() is not None, "already running"
        offset = self.log.stat().st_size if self.log.exists() else 0
        with open(self.log, "ab") as out:
            out.write(f"\n===== start {self.starts + 1} =====\n".encode())
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "rongmei.cli.commands", "up", "--no-samples"], env=self.env, cwd=ROOT,
                stdout=out, stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=dies_with_this_process())
        self.starts += 1

        def ready() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"rongmei up exited with {self.proc.returncode}:\n{self.log_tail(offset)}")
            return READY_LINE in self.log.read_text(errors="replace")[offset:]

        wait_until(ready, "rongmei up ready", timeout, diagnose=lambda: self.log_tail(offset))

    def log_tail(self, offset: int = 0, size: int = 4000) -> str:
        text = self.log.read_text(errors="replace")[offset:] if self.log.exists() else ""
        return text[-size:]

    def stop(self) -> None:
        """Ctrl-C, as an operator stops it; a power cut if it does not stop."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            self.power_cut()

    def power_cut(self) -> set[int]:
        """SIGKILL the whole `rongmei up`: its process group and everything below it (Prefect server, worker, warm
        server, flow runs, which `rongmei up` starts in sessions of their own) and the private PostgreSQL it
        started, as the server losing power does. Returns the pids killed."""
        assert self.proc is not None
        roots = {self.proc.pid, *self._postgres_pids()}
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        killed = kill_tree(*roots)
        self.proc.wait(timeout=60)
        wait_gone(killed)
        return killed

    def _postgres_pids(self) -> list[int]:
        pidfile = self.settings.data_dir / "prefect-pg" / "data" / "postmaster.pid"
        try:
            return [int(pidfile.read_text().split()[0])]
        except (OSError, ValueError, IndexError):
            return []

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def child(self, name: str) -> int:
        """The pid of one of `rongmei up`'s services (prefect, worker, warmstart) by its command line."""
        marks = {"prefect": "prefect server start", "worker": "rongmei.runtime.worker",
                 "warmstart": "rongmei.runtime.warmstart serve"}
        assert self.proc is not None
        for pid in descendants(self.proc.pid) - {self.proc.pid}:
            with contextlib.suppress(OSError):
                if marks[name] in Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode():
                    return pid
        raise AssertionError(f"no {name} process under rongmei up")

    def teardown(self) -> None:
        if self.running():
            self.power_cut()  # quicker than a clean stop, and the data dir is thrown away
        with contextlib.suppress(Exception):
            for point in self.faults_dir.iterdir():
                point.unlink()

    # Fault points ------------------------------------------------------------------------------------
    def arm(self, point: str, action: str = "hold") -> None:
        """Arm a fault point for the running system: the next process that reaches it acts, once."""
        (self.faults_dir / point).write_text(action, encoding="utf-8")
        (self.faults_dir / f"{point}.reached").unlink(missing_ok=True)

    def armed(self, point: str) -> bool:
        return (self.faults_dir / point).exists()

    def await_reached(self, point: str, timeout: float = 240, every: float = 0.25) -> Process:
        """Wait until a process holds at `point`; returns it (by pid and start time)."""
        reached = self.faults_dir / f"{point}.reached"

        def held() -> int:
            if not self.running():
                raise AssertionError(f"rongmei up died before {point} was reached:\n{self.log_tail()}")
            try:
                text = reached.read_text(encoding="utf-8").strip()
            except FileNotFoundError:
                return 0
            return int(text) if text else 0  # written but not yet flushed: look again

        return Process(wait_until(held, f"fault point {point} reached", timeout, every=every,
                                  diagnose=self.log_tail))

    def await_fired(self, point: str, timeout: float = 240) -> None:
        """Wait until an armed `kill`/`raise` point was taken (its file gone)."""
        wait_until(lambda: not self.armed(point), f"fault point {point} fired", timeout, diagnose=self.log_tail)

    @staticmethod
    def kill(proc: Process) -> None:
        """SIGKILL one process (a flow run held at a fault point) and wait until it is gone."""
        assert proc.signal(signal.SIGKILL), f"{proc} had already ended before the test killed it"
        wait_until(lambda: not proc.same(), f"{proc} gone after SIGKILL", 60)

    # Talking to it -----------------------------------------------------------------------------------
    def prefect_login(self) -> str:
        return (self.settings.secrets_dir / "prefect-api-auth").read_text(encoding="utf-8").strip()

    @contextlib.contextmanager
    def prefect(self) -> Iterator[None]:
        """Prefect clients in this block (the test's own) talk to this system's server with its login."""
        from prefect.settings import PREFECT_API_AUTH_STRING, PREFECT_API_URL, temporary_settings

        with temporary_settings(updates={PREFECT_API_URL: self.api_url,
                                         PREFECT_API_AUTH_STRING: self.prefect_login()}):
            yield

    def cli(self, *args: str, check: bool = False, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        """The `rongmei` command as an operator on this server runs it."""
        env = {**self.env, "PREFECT_API_URL": self.api_url, "PREFECT_API_AUTH_STRING": self.prefect_login()}
        return subprocess.run([sys.executable, "-m", "rongmei.cli.commands", *args], env=env, cwd=ROOT,
                              capture_output=True, text=True, check=check, timeout=timeout)

    def drop(self, name: str, front: str, body: str = "正文。", files: dict[str, bytes] | None = None) -> Path:
        """An editor's drop (settled), with the sha256 of each of its files kept for the invariants."""
        staging = self.root / "staging"
        folder = write_drop(staging, name, front, body, files)
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            self.dropped[f"{name}/{path.relative_to(folder)}"] = hashlib.sha256(path.read_bytes()).hexdigest()
        self.settings.inbox.mkdir(parents=True, exist_ok=True)
        target = self.settings.inbox / name
        os.rename(folder, target)  # appears whole, as a copy the editor finished
        return target


def _toml(config: dict[str, Any]) -> str:
    """The few TOML shapes the config uses: scalars, lists of scalars, tables and arrays of tables."""
    def value(v: Any) -> str:
        return json.dumps(v, ensure_ascii=False) if not isinstance(v, bool) else str(v).lower()

    lines, tables, arrays = [], [], []
    for key, v in config.items():
        if isinstance(v, dict):
            tables.append((key, v))
        elif isinstance(v, list) and v and isinstance(v[0], dict):
            arrays.append((key, v))
        else:
            lines.append(f"{key} = {value(v)}")
    for key, rows in arrays:
        for row in rows:
            lines += ["", f"[[{key}]]", *(f"{k} = {value(x)}" for k, x in row.items())]
    for key, table in tables:
        lines += ["", f"[{key}]", *(f"{k} = {value(x)}" for k, x in table.items())]
    return "\n".join(lines) + "\n"
