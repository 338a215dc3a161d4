"""rongmei.runtime.watch on its own: a dead service is started again after a growing wait, the wait starts over
once it stayed up, a stopped PostgreSQL is started again, and a filling disk is announced once each way.
(tests/faults/ runs it for real under `rongmei up`.)"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from rongmei.core.errors import ConfigError
from rongmei.runtime import watch as watch_mod
from rongmei.runtime.watch import LOW_SPACE, RESTART_DELAYS, STABLE_AFTER, Watch


class Proc:
    def __init__(self, code: int | None = None) -> None:
        self.returncode = code

    def poll(self) -> int | None:
        return self.returncode


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def parts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    stack = SimpleNamespace(processes={"prefect": Proc(), "worker": Proc()}, cluster=None, api_url="",
                            settings=SimpleNamespace(data_dir=tmp_path))
    said: list[str] = []
    restarted: list[str] = []

    def fake_restart(stack, name, port):  # type: ignore[no-untyped-def]
        restarted.append(name)
        stack.processes[name] = Proc()

    monkeypatch.setattr(watch_mod, "restart", fake_restart)
    clock = Clock()
    watch = Watch(stack, 4200, lambda text, err=False: said.append(text), clock=clock)  # type: ignore[arg-type]
    return SimpleNamespace(stack=stack, said=said, restarted=restarted, clock=clock, watch=watch)


def test_a_dead_service_is_started_again_after_a_growing_wait(parts):
    for attempt in range(3):
        parts.stack.processes["worker"] = Proc(-9)
        parts.watch.tick()
        assert "worker exited with code -9" in parts.said[-1]
        parts.clock.now += RESTART_DELAYS[attempt] - 0.5
        parts.watch.tick()
        assert parts.restarted == ["worker"] * attempt  # not yet
        parts.clock.now += 0.5
        parts.watch.tick()
        assert parts.restarted == ["worker"] * (attempt + 1) and parts.said[-1] == "worker is running again"
    parts.clock.now += STABLE_AFTER  # up long enough: the next death waits the first delay again
    parts.stack.processes["worker"] = Proc(1)
    parts.watch.tick()
    parts.clock.now += RESTART_DELAYS[0]
    parts.watch.tick()
    assert parts.restarted == ["worker"] * 4
    assert parts.stack.processes["prefect"].poll() is None and "prefect" not in parts.restarted


def test_a_restart_that_fails_is_tried_again_later(parts, monkeypatch):
    def broken(stack, name, port):  # type: ignore[no-untyped-def]
        raise ConfigError("The Prefect server did not answer")

    monkeypatch.setattr(watch_mod, "restart", broken)
    parts.stack.processes["prefect"] = Proc(1)
    parts.watch.tick()
    parts.clock.now += RESTART_DELAYS[0]
    parts.watch.tick()
    assert "did not start again" in parts.said[-1]
    parts.watch.tick()  # noticed as dead again: the next try waits the second delay
    assert f"in {RESTART_DELAYS[1]:.0f} s" in parts.said[-1]


def test_a_stopped_database_is_started_again_and_said_once_while_it_cannot(parts):
    class Cluster:
        root, up, tries = Path("/data/prefect-pg"), False, 0

        def running(self) -> bool:
            return self.up

        def start(self) -> str:
            self.tries += 1
            if self.tries < 3:
                raise ConfigError("pg_ctl failed: could not write to file: No space left on device")
            self.up = True
            return "postgresql://"

    parts.stack.cluster = cluster = Cluster()
    for _ in range(3):
        parts.watch.tick()
        parts.clock.now += watch_mod.CHECK_EVERY
    assert cluster.tries == 3 and cluster.up
    assert sum("does not start again" in s for s in parts.said) == 1
    assert parts.said[-1] == "the Prefect server's PostgreSQL had stopped; started it again"


def test_a_filling_disk_is_announced_once_and_its_recovery_too(parts, monkeypatch):
    free = {"bytes": LOW_SPACE * 4}
    monkeypatch.setattr(watch_mod, "free_bytes", lambda path: free["bytes"])
    for value in (LOW_SPACE * 4, LOW_SPACE // 2, 0, LOW_SPACE * 3, LOW_SPACE * 3):
        free["bytes"] = value
        parts.watch.tick()
        parts.clock.now += watch_mod.CHECK_EVERY
    assert [s.split("：")[0] for s in parts.said] == ["数据目录所在的磁盘快满了", "数据目录所在的磁盘空间已恢复"]
    assert str(parts.stack.settings.data_dir) in parts.said[0]
