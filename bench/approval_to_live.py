"""Benchmark: time from the final `resume_flow_run` (终审) to the article answering 200 on the site.

    .venv/bin/python bench/approval_to_live.py [--items 20]

Starts the same stack as `rongmei up` (Prefect server, deployments from prefect.yaml, a process worker, the
distribution server) in a temporary data dir, takes N items through 初审 and 复审, then for each item times
the final sign-off until GET /articles/<id>/ answers 200. Prints p50 and p90 (target: p50 <= 3 s).
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
sys.path[:0] = [str(HERE.parent), str(HERE.parent / "tests")]
os.environ.update({"RONGMEI_CONFIG": "/nonexistent/rongmei.toml", "DO_NOT_TRACK": "1",
                   "PREFECT_SERVER_ANALYTICS_ENABLED": "false"})


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--items", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        os.environ.update({"RONGMEI_CONTENT_DIR": str(root / "content"), "RONGMEI_DATA_DIR": str(root / "data"),
                           "RONGMEI_SETTLE_SECONDS": "0.2"})
        import requests

        from conftest import PREFECT_PORT, PrefectStack, free_port, write_drop
        from rongmei.reviewers import enroll
        from rongmei.server import serve_in_thread
        from rongmei.settings import Settings
        from rongmei.store import Store

        settings = Settings()
        for sub in ("inbox", "archive", "rejected", "returned"):
            (settings.content_dir / sub).mkdir(parents=True, exist_ok=True)
        server = serve_in_thread(settings, port=free_port())
        stack = PrefectStack(settings, PREFECT_PORT)  # conftest pointed PREFECT_API_URL there at import
        stack.start_server()
        stack.deploy_and_work()
        try:
            from prefect.flow_runs import resume_flow_run

            from flows.ingest import ingest
            from review_helpers import await_pause, code_for, review_run_id

            store = Store.from_settings(settings)
            ids = [f"bench-{i:02d}" for i in range(args.items)]
            # A code counts once per reviewer and 30-second step, so each item gets its own three reviewers.
            for n in range(args.items):
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
            timings = []
            for n, item in enumerate(ids):
                url = f"{server.url}/articles/{item}/"
                start = time.perf_counter()
                resume_flow_run(runs[item], run_input={"decision": "approve", "reviewer": f"c{n}",
                                                       "code": code_for(settings, f"c{n}")})
                while requests.get(url, timeout=5).status_code != 200:
                    if time.perf_counter() - start > 120:
                        raise SystemExit(f"{item} not live after 120 s")
                    time.sleep(0.05)
                timings.append(time.perf_counter() - start)
                print(f"{item}: {timings[-1]:.2f} s", flush=True)
            q = statistics.quantiles(timings, n=10)
            print(f"approval → live over {len(timings)} items: p50 {statistics.median(timings):.2f} s, "
                  f"p90 {q[8]:.2f} s, min {min(timings):.2f} s, max {max(timings):.2f} s (target p50 <= 3 s)")
        finally:
            stack.stop()
            server.stop()


if __name__ == "__main__":
    main()
