"""The worker `rongmei up` runs: Prefect's process worker, except that nobody else decides what it executes.

Prefect's process worker builds each flow run's command, environment and working directory from the work
pool's base job template merged with the deployment's and the run's `job_variables`. All three can be set by
anyone with the Prefect API login (`create_flow_run` accepts `job_variables.command`, and the pool's template
can be edited), which would let them run any shell command as the worker's user. This worker ignores those
values: every flow run is `<this Python> -m rongmei.warmstart` (which checks the deployment in
`rongmei.launch`), in the checkout, with the worker's own environment plus the per-run variables Prefect
itself sets (flow run id, attribution). The pool's template is kept to the same values (see
`rongmei.workpool.base_job_template`), so the UI shows what really runs and the API refuses other variables up front.

    python -m rongmei.worker --pool rongmei --limit 4
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import warnings
from typing import Any

from prefect.workers.process import ProcessJobConfiguration, ProcessWorker

from rongmei.workpool import PROJECT_ROOT, WORK_POOL, flow_run_command

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
        from rongmei import ledger
        from rongmei.settings import load_settings
        from rongmei.store import Store

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


async def run_worker(pool: str, limit: int) -> None:
    from prefect.settings import PREFECT_WORKER_HEARTBEAT_SECONDS, PREFECT_WORKER_PREFETCH_SECONDS

    async with RongmeiWorker(work_pool_name=pool, limit=limit,
                             prefetch_seconds=PREFECT_WORKER_PREFETCH_SECONDS.value(),
                             heartbeat_interval_seconds=int(PREFECT_WORKER_HEARTBEAT_SECONDS.value())) as worker:
        await worker.start(with_healthcheck=False, printer=print)


def main(argv: list[str] | None = None) -> None:
    from prefect.utilities.processutils import setup_signal_handlers_worker

    parser = argparse.ArgumentParser(prog="python -m rongmei.worker")
    parser.add_argument("--pool", default=WORK_POOL)
    parser.add_argument("--limit", type=int, default=4)
    options = parser.parse_args(argv)
    # As `prefect worker start`: SIGTERM becomes SIGINT (stop taking runs), a second one kills.
    setup_signal_handlers_worker(os.getpid(), "the rongmei worker", print)
    try:
        asyncio.run(run_worker(options.pool, options.limit))
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("worker stopped")


if __name__ == "__main__":
    main()
