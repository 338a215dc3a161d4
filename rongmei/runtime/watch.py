"""What `rongmei up` watches while it runs, once a second (rongmei.runtime.supervisor):

- its services: one that dies on its own (the Prefect server killed by the OOM killer, the worker giving up after
  the server was away for ~20 s) is started again, after 1, 2, 5 … up to 60 s if it keeps dying, and the wait
  starts over once it has stayed up for STABLE_AFTER seconds. Waiting reviews live in the Prefect server's
  database and our store, so a restarted server or worker continues where they were;
- the private PostgreSQL of the Prefect server: PostgreSQL shuts itself down when its disk fills mid-write
  and cannot finish its recovery, and nothing would start it again once space is back; the watch does;
- the free space on the data dir's disk (blobs, renditions, both databases and the logs all live there): below
  LOW_SPACE the terminal says so once, with what to do, since no log file can be written any more then.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from rongmei.core.errors import ConfigError
from rongmei.runtime import up as stack_mod

__all__ = ["CHECK_EVERY", "LOW_SPACE", "RESTART_DELAYS", "STABLE_AFTER", "Watch", "free_bytes", "restart"]

RESTART_DELAYS = (1.0, 2.0, 5.0, 10.0, 30.0, 60.0)  # before the 1st, 2nd … restart in a row; then the last
STABLE_AFTER = 300.0  # seconds up after which a service's next death counts as the first again
CHECK_EVERY = 5.0  # seconds between looks at the database and the disk
LOW_SPACE = 64 * 1024 * 1024  # bytes free on the data dir's disk below which the terminal warns


def free_bytes(path: os.PathLike[str] | str) -> int:
    stat = os.statvfs(path)
    return stat.f_bavail * stat.f_frsize


def restart(stack: stack_mod.Stack, name: str, port: int) -> None:
    """Start one dead service again: the Prefect server alone, or the worker together with its warm server."""
    settings = stack.settings
    if name == "prefect":
        stack_mod.start_prefect(stack, settings, port)
        return
    for partner in ("worker", "warmstart"):  # start_worker starts both; the survivor goes first
        proc = stack.processes.pop(partner, None)
        if proc is not None and proc.poll() is None:
            proc.terminate()
            proc.wait(timeout=60)
    stack_mod.start_worker(stack, settings, stack.api_url)


@dataclass
class _Backoff:
    deaths: int = 0  # in a row
    due: float = 0.0  # when the next restart may happen
    started: float = 0.0  # when it was last started


@dataclass
class Watch:
    stack: stack_mod.Stack
    port: int
    echo: Callable[..., None]
    clock: Callable[[], float] = time.monotonic
    backoff: dict[str, _Backoff] = field(default_factory=dict)
    next_check: float = 0.0
    warned_space: bool = False
    database_down: str = ""  # why the private PostgreSQL could not be started again, once said

    def tick(self) -> None:
        now = self.clock()
        for name, proc in list(self.stack.processes.items()):
            if proc.poll() is not None and self.stack.processes.get(name) is proc:
                self._revive(name, proc.returncode, now)
        if now >= self.next_check:
            self.next_check = now + CHECK_EVERY
            self._database()
            self._space()

    def _revive(self, name: str, code: int | None, now: float) -> None:
        state = self.backoff.setdefault(name, _Backoff())
        if state.due == 0.0:  # just noticed
            if state.started and now - state.started >= STABLE_AFTER:
                state.deaths = 0
            delay = RESTART_DELAYS[min(state.deaths, len(RESTART_DELAYS) - 1)]
            state.deaths += 1
            state.due = now + delay
            self.echo(f"{name} exited with code {code}; starting it again in {delay:.0f} s …", err=True)
            return
        if now < state.due:
            return
        state.due, state.started = 0.0, self.clock()
        try:
            restart(self.stack, name, self.port)
        except (ConfigError, OSError) as exc:  # noticed again next tick: the next try waits longer
            self.echo(f"{name} did not start again: {exc}", err=True)
            return
        self.echo(f"{name} is running again")

    def _database(self) -> None:
        cluster = self.stack.cluster
        if cluster is None or cluster.running():
            if self.database_down:
                self.echo("the Prefect server's PostgreSQL is running again")
                self.database_down = ""
            return
        try:
            cluster.start()
        except (ConfigError, OSError) as exc:
            if not self.database_down:
                self.echo(f"the Prefect server's PostgreSQL in {cluster.root} stopped and does not start again "
                          f"(is its disk full?); trying again every {CHECK_EVERY:.0f} s: {exc}", err=True)
            self.database_down = str(exc)
            return
        self.echo("the Prefect server's PostgreSQL had stopped; started it again")
        self.database_down = ""

    def _space(self) -> None:
        data_dir = self.stack.settings.data_dir.resolve()
        try:
            free = free_bytes(data_dir)
        except OSError:
            return
        if free < LOW_SPACE and not self.warned_space:
            self.warned_space = True
            self.echo(f"数据目录所在的磁盘快满了：{data_dir} 只剩 {free // (1024 * 1024)} MB。稿件、渲染结果、两个数据库和日志都写在"
                      "这里，磁盘满时新稿件会留在收稿箱（不会丢失）、Prefect 会停止响应。请删除不需要的文件或扩大磁盘；"
                      "空间恢复后系统会自动继续。", err=True)
        elif free >= 2 * LOW_SPACE and self.warned_space:
            self.warned_space = False
            self.echo(f"数据目录所在的磁盘空间已恢复：{data_dir} 有 {free // (1024 * 1024)} MB 可用。")
