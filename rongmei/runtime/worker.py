"""The worker `rongmei up` runs: Prefect's process worker, except that nobody else decides what it executes.

Prefect's process worker builds each flow run's command, environment and working directory from the work
pool's base job template merged with the deployment's and the run's `job_variables`. All three can be set by
anyone with the Prefect API login (`create_flow_run` accepts `job_variables.command`, and the pool's template
can be edited), which would let them run any shell command as the worker's user. This worker ignores those
values: every flow run is `<this Python> -m rongmei.runtime.warmstart` (which checks the deployment in
`rongmei.runtime.launch`), in the checkout, with the worker's own environment plus the per-run variables Prefect
itself sets (flow run id, attribution). The pool's template is kept to the same values (see
`rongmei.runtime.workpool.base_job_template`), so the UI shows what really runs and the API refuses other variables up front.

    python -m rongmei.runtime.worker --pool rongmei --limit 4
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import threading
import warnings
from typing import Any

from prefect.workers.process import ProcessJobConfiguration, ProcessWorker

from rongmei.runtime.workpool import PROJECT_ROOT, WORK_POOL, flow_run_command

__all__ = ["STOP_GRACE_SECONDS", "RongmeiJobConfiguration", "main", "record_override", "run_worker"]

log = logging.getLogger(__name__)


class RongmeiJobConfiguration(ProcessJobConfiguration):
    def prepare_for_flow_run(self, flow_run: Any, deployment: Any = None, flow: Any = None, work_pool: Any = None,
                             worker_name: str | None = None, worker_id: Any = None) -> None:
        # Whatever the template and job variables said: our command, our directory, and no extra environment
        # (the base class then adds Prefect's per-run variables and this worker's own environment).
        asked = {"command": self.command, "env": dict(self.env or {}), "working_dir": str(self.working_dir or "")}
        ours = {"command": flow_run_command(), "env": {}, "working_dir": str(PROJECT_ROOT)}
        if asked != ours:
            record_override(flow_run, {k: v for k, v in asked.items() if v != ours[k]})
        self.command = flow_run_command()
        self.working_dir = PROJECT_ROOT
        self.env = {}
        super().prepare_for_flow_run(flow_run, deployment, flow, work_pool, worker_name, worker_id=worker_id)


def record_override(flow_run: Any, asked: dict[str, Any]) -> None:
    """Someone asked (through the pool's template or the run's job variables) for another command, environment
    or directory: it is ignored, and the ledger says who asked for what."""
    log.warning("flow run %s asked for %s; ignored, running rongmei's own command", flow_run.id, sorted(asked))
    try:
        from rongmei.core.settings import load_settings
        from rongmei.storage import ledger
        from rongmei.storage.store import Store

        with Store.from_settings(load_settings()).session() as session:
            ledger.record(session, "job_variables_ignored", actor=f"prefect:flow-run/{flow_run.id}",
                          details={"flow_run_name": flow_run.name, "asked": json.loads(json.dumps(asked, default=str)),
                                   "deployment_id": str(flow_run.deployment_id or "")})
    except Exception as exc:  # the override holds even if the ledger cannot be reached; say so
        log.error("could not record the ignored job variables of flow run %s in the ledger: %s", flow_run.id, exc)


with warnings.catch_warnings():
    # Prefect registers worker classes by type and warns that ours replaces the process worker: that is the
    # point, in this process (the pool is an ordinary process pool; only what we launch differs).
    warnings.filterwarnings("ignore", message=".*has key 'process' that matches existing registered type")

    class RongmeiWorker(ProcessWorker):
        type = "process"
        job_configuration = RongmeiJobConfiguration


STOP_GRACE_SECONDS = 20.0  # after SIGTERM/SIGINT, what the worker gets to wind down before it just exits


async def run_worker(pool: str, limit: int) -> None:
    """Run the worker until SIGTERM or SIGINT, then stop taking runs and end.

    The signals cancel the worker's task from inside the event loop. Prefect's own CLI turns SIGTERM into a
    KeyboardInterrupt instead, which can land inside any callback of the loop; the suite caught a worker that
    then hung for ever in asyncio's shutdown, holding `rongmei up` (and every run) hostage. A second signal, or
    STOP_GRACE_SECONDS after the first, ends the process outright: flow-run processes are children of their
    own and carry on (warm-started ones are stopped by the warm server when their client goes)."""
    from prefect.settings import PREFECT_WORKER_HEARTBEAT_SECONDS, PREFECT_WORKER_PREFETCH_SECONDS

    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    stopping = threading.Event()

    def stop(signum: int) -> None:
        if stopping.is_set():
            os._exit(128 + signum)
        stopping.set()
        print(f"received {signal.Signals(signum).name}: stopping the worker", flush=True)
        deadline = threading.Timer(STOP_GRACE_SECONDS, os._exit, args=(0,))
        deadline.daemon = True
        deadline.start()
        task.cancel()

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop, signum)
    try:
        async with RongmeiWorker(work_pool_name=pool, limit=limit,
                                 prefetch_seconds=PREFECT_WORKER_PREFETCH_SECONDS.value(),
                                 heartbeat_interval_seconds=int(PREFECT_WORKER_HEARTBEAT_SECONDS.value())) as worker:
            await worker.start(with_healthcheck=False, printer=print)
    except asyncio.CancelledError:
        if not stopping.is_set():
            raise


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m rongmei.runtime.worker")
    parser.add_argument("--pool", default=WORK_POOL)
    parser.add_argument("--limit", type=int, default=4)
    options = parser.parse_args(argv)
    asyncio.run(run_worker(options.pool, options.limit))
    print("worker stopped", flush=True)
    os._exit(0)  # no lingering threads (the grace timer among them) may keep the process alive


if __name__ == "__main__":
    main()
