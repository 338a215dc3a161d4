"""rongmei.core.faults.fault_point on its own: unarmed it does nothing; armed it kills, holds or raises, once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from rongmei.core.faults import FAULTS_DIR_VARIABLE, InjectedFault, fault_point
from tests.support.faults import wait_until
from tests.support.paths import ROOT
from tests.support.processes import alive

CALL_TWICE = ("from rongmei.core.faults import fault_point\n"
              "fault_point('demo.point'); print('passed once', flush=True)\n"
              "fault_point('demo.point'); print('passed twice', flush=True)\n")


def run_point(faults: Path, **popen: object) -> subprocess.Popen:
    env = {**os.environ, FAULTS_DIR_VARIABLE: str(faults),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    return subprocess.Popen([sys.executable, "-c", CALL_TWICE], env=env, cwd=ROOT, stdout=subprocess.PIPE,
                            text=True, **popen)  # type: ignore[call-overload]


def test_unarmed_or_without_the_variable_nothing_happens(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv(FAULTS_DIR_VARIABLE, raising=False)
    (tmp_path / "demo.point").write_text("raise")
    fault_point("demo.point")  # the variable is not set: the armed file is not even looked at
    assert (tmp_path / "demo.point").exists()
    monkeypatch.setenv(FAULTS_DIR_VARIABLE, str(tmp_path))
    fault_point("other.point")  # set, but this point is not armed


def test_raise_fires_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv(FAULTS_DIR_VARIABLE, str(tmp_path))
    (tmp_path / "demo.point").write_text("raise\n")
    with pytest.raises(InjectedFault, match=r"demo\.point") as raised:
        fault_point("demo.point")
    assert isinstance(raised.value, OSError)  # handled like a full disk or a dropped connection
    assert not (tmp_path / "demo.point").exists()
    fault_point("demo.point")  # disarmed by firing


def test_kill_is_sigkill_and_fires_once(tmp_path: Path):
    (tmp_path / "demo.point").write_text("kill")
    proc = run_point(tmp_path)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == -signal.SIGKILL and out == ""  # died at the first call, nothing after it ran
    assert not (tmp_path / "demo.point").exists()
    proc = run_point(tmp_path)  # the point fired: the next process passes it
    assert proc.communicate(timeout=120)[0].splitlines() == ["passed once", "passed twice"]


def test_an_empty_file_means_kill(tmp_path: Path):
    (tmp_path / "demo.point").touch()
    proc = run_point(tmp_path)
    proc.communicate(timeout=120)
    assert proc.returncode == -signal.SIGKILL


def test_hold_waits_until_killed_and_says_who(tmp_path: Path):
    (tmp_path / "demo.point").write_text("hold")
    proc = run_point(tmp_path)
    reached = tmp_path / "demo.point.reached"
    pid = wait_until(lambda: reached.exists() and reached.read_text().strip(), "hold reached", 120)
    assert int(pid) == proc.pid and alive(proc.pid)
    assert not (tmp_path / "demo.point").exists()  # disarmed before it held: nobody else stops there
    proc.kill()
    out, _ = proc.communicate(timeout=120)
    assert out == "" and proc.returncode == -signal.SIGKILL


def test_two_processes_racing_for_one_point_only_one_acts(tmp_path: Path):
    (tmp_path / "demo.point").write_text("kill")
    procs = [run_point(tmp_path) for _ in range(4)]
    codes = sorted(p.wait(timeout=120) for p in procs)
    assert codes.count(-signal.SIGKILL) == 1 and codes.count(0) == 3
