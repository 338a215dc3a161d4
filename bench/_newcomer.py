"""`rongmei up` as a newcomer gets it, for the benchmarks that measure the default install.

The checkout's own `rongmei.toml` is copied into a working directory, and `rongmei up --no-samples` (the
console script `make up` runs) is started there: relative `data_dir = "var"`, the embedded defaults (the
Prefect server on its private PostgreSQL when that starts, warm start, the WeChat stand-in). Only the ports
are free ones (other stacks may hold 4200 and 8800), and the Prefect server logs every request
(`PREFECT_SERVER_LOGGING_LEVEL=INFO`: uvicorn's access lines) and its retryable errors
(`PREFECT_API_LOG_RETRYABLE_ERRORS`), so that every 5xx it answers can be counted; neither changes what it does.
"""

from __future__ import annotations

import base64
import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from bench._support import Memory, children_of, cmdline, descendants, free_port, memory_of

__all__ = ["ACCESS_LINE", "FIVE_XX", "LogFindings", "Newcomer"]

CHECKOUT = Path(__file__).resolve().parent.parent
# uvicorn's access line: 127.0.0.1:40312 - "POST /api/flow_runs/filter HTTP/1.1" 503
ACCESS_LINE = re.compile(r'"(?P<method>[A-Z]+) (?P<path>\S+) HTTP/[\d.]+" (?P<status>\d{3})')
# How a 5xx shows in a client's log line (httpx, Prefect's client, our own messages) or a server's traceback.
FIVE_XX = re.compile(r"\b5\d\d (Service Unavailable|Internal Server Error|Bad Gateway|Gateway Timeout)"
                     r"|Server error '5\d\d|status code 5\d\d|Encountered (retryable )?exception in request",
                     re.IGNORECASE)
# Ids in API paths, so that one endpoint is one row.
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


@dataclass
class LogFindings:
    """5xx answers the Prefect server logged (by endpoint), and lines elsewhere that report one."""

    server_5xx: Counter[str] = field(default_factory=Counter)  # "POST /api/flow_runs/{id}/set_state 503" -> n
    server_errors: list[str] = field(default_factory=list)  # first line after each "Encountered … exception"
    other: dict[str, list[str]] = field(default_factory=dict)  # log file -> matching lines

    @property
    def total(self) -> int:
        return sum(self.server_5xx.values()) + sum(len(lines) for lines in self.other.values())


class Newcomer:
    """One `rongmei up` in `workdir`; `start()`, then the URLs and login, `memory()`, `scan_logs()`, `stop()`."""

    def __init__(self, workdir: Path, data_dir: Path | None = None) -> None:
        self.workdir = workdir
        self.own_data_dir = data_dir  # None: rongmei.toml's relative "var", as a newcomer has it
        self.prefect_port, self.site_port = free_port(), free_port()
        self.api_url = f"http://127.0.0.1:{self.prefect_port}/api"
        self.site_url = f"http://127.0.0.1:{self.site_port}"
        self.log_path = workdir / "rongmei-up.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.prefect_db = "?"
        self.standin_url = ""

    @property
    def data_dir(self) -> Path:
        return self.own_data_dir or self.workdir / "var"

    def environment(self) -> dict[str, str]:
        """The shell a newcomer has: nothing of ours or Prefect's set, except what this class documents."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("RONGMEI_", "PREFECT_"))}
        env.update({"RONGMEI_SERVER_PORT": str(self.site_port), "RONGMEI_PUBLIC_URL": self.site_url,
                    "PREFECT_SERVER_LOGGING_LEVEL": "INFO", "PREFECT_API_LOG_RETRYABLE_ERRORS": "true",
                    "PYTHONPATH": os.pathsep.join(filter(None, [str(CHECKOUT), os.environ.get("PYTHONPATH")]))})
        return env

    def start(self, timeout: float = 900) -> None:
        config = (CHECKOUT / "rongmei.toml").read_text(encoding="utf-8")
        if self.own_data_dir is not None:
            config, replaced = re.subn(r'(?m)^data_dir = "var"', f'data_dir = "{self.own_data_dir}"', config)
            if not replaced:
                raise SystemExit("rongmei.toml has no `data_dir = \"var\"` line to replace")
        (self.workdir / "rongmei.toml").write_text(config, encoding="utf-8")
        script = Path(sys.executable).with_name("rongmei")
        command = [str(script)] if script.exists() else [sys.executable, "-c", "from rongmei.cli import app; app()"]
        with open(self.log_path, "wb") as out:
            self.proc = subprocess.Popen([*command, "up", "--no-samples", "--prefect-port", str(self.prefect_port)],
                                         cwd=self.workdir, env=self.environment(), stdout=out,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while "rongmei is up." not in (text := self.log_path.read_text(errors="replace")):
            if self.proc.poll() is not None:
                raise SystemExit(f"`rongmei up` exited with code {self.proc.returncode}:\n{text[-3000:]}")
            if time.monotonic() > deadline:
                raise SystemExit(f"`rongmei up` did not come up within {timeout:.0f} s; see {self.log_path}")
            time.sleep(0.5)
        if found := re.search(r"Prefect's database:\s+(.+)", text):
            self.prefect_db = found.group(1).strip()
        if found := re.search(r"WeChat stand-in \(.*?\) on (\S+)", text):
            self.standin_url = found.group(1)

    def warnings(self) -> list[str]:
        """`rongmei up`'s own WARNING lines (e.g. why the private PostgreSQL did not start)."""
        return [line for line in self.log_path.read_text(errors="replace").splitlines() if " WARNING " in line]

    @property
    def prefect_auth(self) -> str:
        return (self.data_dir / "secrets" / "prefect-api-auth").read_text(encoding="utf-8").strip()

    def auth_header(self) -> dict[str, str]:
        """What the UI and Prefect's clients send: HTTP Basic with the whole login as `user:password`."""
        return {"Authorization": "Basic " + base64.b64encode(self.prefect_auth.encode()).decode()}

    # Processes --------------------------------------------------------------------------------------
    def roles(self) -> dict[str, list[int]]:
        """The stack's processes by what they are."""
        assert self.proc is not None
        found: dict[str, list[int]] = {"rongmei up (distribution server, WeChat stand-in)": [self.proc.pid]}
        for pid in children_of(self.proc.pid):
            line = cmdline(pid)
            if "prefect server start" in line:
                found["Prefect server"] = [pid, *descendants(pid)]
            elif "rongmei.runtime.warmstart serve" in line:
                found["warm-start server"] = [pid]
                found["flow runs (forks of the warm-start server)"] = descendants(pid)
            elif "rongmei.runtime.worker" in line:
                found["worker"] = [pid]
                found["warm-start clients (one per running flow run)"] = descendants(pid)
        pid_file = self.data_dir / "prefect-pg" / "data" / "postmaster.pid"
        try:
            postmaster = int(pid_file.read_text().split()[0])
            found["PostgreSQL (Prefect's database)"] = [postmaster, *descendants(postmaster)]
        except (OSError, ValueError, IndexError):
            pass  # not running (Prefect on SQLite)
        return found

    def memory(self) -> dict[str, Memory]:
        return {role: memory_of(pids) for role, pids in self.roles().items()}

    # Logs -------------------------------------------------------------------------------------------
    def scan_logs(self) -> LogFindings:
        findings = LogFindings()
        logs = self.data_dir / "logs"
        server_log = logs / "prefect-server.log"
        in_traceback = False  # after "Encountered … exception in request": its last line names the cause
        with open(server_log, errors="replace") if server_log.exists() else open(os.devnull) as lines:
            for line in lines:  # the access log of a long run is large: read it line by line
                if (access := ACCESS_LINE.search(line)) and access["status"].startswith("5"):
                    path = _UUID.sub("{id}", access["path"].split("?")[0])
                    findings.server_5xx[f"{access['method']} {path} {access['status']}"] += 1
                elif "Encountered" in line and "exception in request" in line:
                    in_traceback = True
                elif in_traceback and re.match(r"^[\w.]+(Error|Exception)\b", line):
                    findings.server_errors.append(line.strip()[:200])
                    in_traceback = False
        for path in sorted({*logs.glob("*.log"), self.log_path} - {server_log}):
            matches = [line.strip()[:300] for line in path.read_text(errors="replace").splitlines()
                       if FIVE_XX.search(line)]
            if matches:
                findings.other[path.name] = matches
        return findings

    # Stopping ---------------------------------------------------------------------------------------
    def stop(self, timeout: float = 300) -> str:
        """Ctrl-C, as a newcomer stops it; returns how it went. What is left after `timeout` is killed by pid."""
        if self.proc is None or self.proc.poll() is not None:
            return "already stopped"
        left = [pid for pids in self.roles().values() for pid in pids if pid != self.proc.pid]
        self.proc.send_signal(signal.SIGINT)
        try:
            code = self.proc.wait(timeout=timeout)
            return f"stopped cleanly (exit code {code})"
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        for pid in left:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        return f"did not stop within {timeout:.0f} s after Ctrl-C: killed it and {len(left)} processes of its stack"

