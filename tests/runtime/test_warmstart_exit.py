"""The warm-start client dies of its flow run's signal, SIGKILL included (the OOM killer's, a power-cut test's):
SIGKILL takes no handler, so setting one first must not turn the death into a traceback and exit code 1."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from tests.support.paths import ROOT


@pytest.mark.parametrize("signum", [signal.SIGKILL, signal.SIGTERM, signal.SIGINT])
def test_the_client_dies_of_the_signal_its_run_died_of(signum: signal.Signals):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    done = subprocess.run([sys.executable, "-c", f"from rongmei.runtime.warmstart import exit_like; exit_like({-signum})"],
                          env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == -signum, done.stderr
    assert "Traceback" not in done.stderr
