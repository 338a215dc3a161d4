"""Benchmark: time from the final `resume_flow_run` (终审) to the article answering 200 on the site.

    .venv/bin/python bench/approval_to_live.py [--items 20] [--cold-items 10] [--prefect-db postgresql|sqlite]

Starts the same stack as `rongmei up` (Prefect server, deployments from prefect.yaml, the warm-start server, a
process worker, the distribution server) in a temporary data dir and takes every item through 初审 and 复审.
Then, one item at a time, it times the final sign-off until GET /articles/<id>/ answers 200: first `--items`
items with warm start (flow runs forked from `rongmei.runtime.warmstart`), then `--cold-items` items after stopping the
warm server, where each run starts as its own `python -m rongmei.runtime.launch` process (the deployment check, then
Prefect's engine in the same process): the raw way, in the same run. For every item it also prints when the run reached each state after the click (Resuming = the
server took the sign-off, Pending = a worker picked it up, Running = the engine started it).

The Prefect server runs on a private PostgreSQL cluster in the data dir, as under `rongmei up`; with
`--prefect-db sqlite` it runs on Prefect's own SQLite file instead (`prefect_database_url = "sqlite"`).

Target: p50 <= 3 s with warm start.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent)]
os.environ.update({"RONGMEI_CONFIG": "/nonexistent/rongmei.toml", "DO_NOT_TRACK": "1",
                   "PREFECT_SERVER_ANALYTICS_ENABLED": "false"})


def phases(run_id, clicked: float) -> str:
    """When the run reached each state after the click, from the Prefect server's own state history."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        states = client.read_flow_run_states(run_id)
    return " ".join(f"{state.name} +{state.timestamp.timestamp() - clicked:.2f}"
                    for state in states if state.timestamp.timestamp() >= clicked - 0.5)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--items", type=int, default=20, help="items timed with warm start")
    parser.add_argument("--cold-items", type=int, default=10, help="items timed after stopping the warm server")
    parser.add_argument("--prefect-db", choices=("postgresql", "sqlite"), default="postgresql",
                        help="the Prefect server's database: the private cluster `rongmei up` runs, or SQLite")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["RONGMEI_PREFECT_DATABASE_URL"] = "" if args.prefect_db == "postgresql" else "sqlite"
        root = Path(tmp)
        os.environ.update({"RONGMEI_CONTENT_DIR": str(root / "content"), "RONGMEI_DATA_DIR": str(root / "data"),
                           "RONGMEI_SETTLE_SECONDS": "0.2"})
        import requests

        from bench._support import summary
        from rongmei.core.settings import Settings
        from rongmei.distribution.server import serve_in_thread
        from rongmei.review.reviewers import enroll
        from rongmei.storage.store import Store
        from tests.support.drops import write_drop
        from tests.support.environment import PREFECT_PORT, free_port
        from tests.support.stack import PrefectStack

        settings = Settings()
        for sub in ("inbox", "archive", "rejected", "returned"):
            (settings.content_dir / sub).mkdir(parents=True, exist_ok=True)
        server = serve_in_thread(settings, port=free_port())
        stack = PrefectStack(settings, PREFECT_PORT)  # tests.support.environment pointed PREFECT_API_URL there
        stack.start_server()
        stack.deploy_and_work()
        try:
            from prefect.flow_runs import resume_flow_run

            from flows.ingest import ingest
            from tests.support.review import await_pause, code_for, review_run_id

            store = Store.from_settings(settings)
            total = args.items + args.cold_items
            ids = [f"bench-{i:02d}" for i in range(total)]
            # A code counts once per reviewer and 30-second step, so each item gets its own three reviewers.
            for n in range(total):
                for prefix, role in (("e", "editor"), ("d", "desk_head"), ("c", "chief_editor")):
                    enroll(store, settings, f"{prefix}{n}", f"{prefix}{n}", [role])
            for item in ids:
                write_drop(settings.inbox, item, f"title: 基准稿件 {item}\nauthor: 张三\nsummary: 测试\nchannels: [web]")
            ingest()
            runs = {item: review_run_id(item) for item in ids}
            for stage, prefix in (("first-0", "e"), ("second-0", "d")):
                for n, item in enumerate(ids):
                    await_pause(runs[item], stage, timeout=300)
                    resume_flow_run(runs[item], run_input={"decision": "approve", "reviewer": f"{prefix}{n}",
                                                           "code": code_for(settings, f"{prefix}{n}")})
            for item in ids:  # every run waits at 终审 before the clock starts: no queue in front of the worker
                await_pause(runs[item], "final-0", timeout=600)
            time.sleep(3)
            timings: dict[str, list[float]] = {"warm": [], "cold": []}
            for n, item in enumerate(ids):
                mode = "warm" if n < args.items else "cold"
                if n == args.items:
                    stack.stop_process("warmstart")
                    time.sleep(3)
                url = f"{server.url}/articles/{item}/"
                clicked, start = time.time(), time.perf_counter()
                resume_flow_run(runs[item], run_input={"decision": "approve", "reviewer": f"c{n}",
                                                       "code": code_for(settings, f"c{n}")})
                while requests.get(url, timeout=5).status_code != 200:
                    if time.perf_counter() - start > 120:
                        raise SystemExit(f"{item} not live after 120 s")
                    time.sleep(0.05)
                timings[mode].append(time.perf_counter() - start)
                print(f"{item} ({mode}): live after {timings[mode][-1]:.2f} s; {phases(runs[item], clicked)}",
                      flush=True)
            for mode, values in timings.items():
                if values:
                    print(f"approval → live, {mode} start, {len(values)} items: {summary(values)}")
            if timings["warm"] and timings["cold"]:
                ratio = statistics.median(timings["warm"]) / statistics.median(timings["cold"])
                print(f"warm / cold (raw `python -m rongmei.runtime.launch` per run) p50 ratio: {ratio:.2f}")
            print(f"Prefect server database: {args.prefect_db}; target: p50 <= 3 s with warm start")
        finally:
            stack.stop()
            stack.remove_cluster()  # as root it lives outside the temporary data dir
            server.stop()


if __name__ == "__main__":
    main()
