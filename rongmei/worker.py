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
import os
import warnings
from typing import Any

from prefect.workers.process import ProcessJobConfiguration, ProcessWorker

from rongmei.workpool import PROJECT_ROOT, WORK_POOL, flow_run_command


class RongmeiJobConfiguration(ProcessJobConfiguration):
    def prepare_for_flow_run(self, flow_run: Any, deployment: Any = None, flow: Any = None, work_pool: Any = None,
                             worker_name: str | None = None, worker_id: Any = None) -> None:
        # Whatever the template and job variables said: our command, our directory, and no extra environment
        # (the base class then adds Prefect's per-run variables and this worker's own environment).
        self.command = flow_run_command()
        self.working_dir = PROJECT_ROOT
        self.env = {}
        super().prepare_for_flow_run(flow_run, deployment, flow, work_pool, worker_name, worker_id=worker_id)


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
