"""Benchmark (issue 13): bursts on the default install: 1,000 drops at once, then 50 final approvals at once.

    .venv/bin/python bench/bursts.py [--drops 1000] [--approvals 50] [--workdir DIR] [--keep]

Runs `rongmei up` as a newcomer gets it (bench/_newcomer.py): the checkout's rongmei.toml in a fresh working
directory (0700 from mkdtemp, like a checkout in root's home), relative data dir `var`, embedded defaults.

1. Drops: `--drops` article drops for web and WeChat are written beside the inbox, then moved into it at once
   (real mtimes: they settle after `settle_seconds`, as an editor's copy does). Timed until every one is stored
   and its review run waits at the 初审 form.
2. Sign-offs: `--approvals` of them are signed at 初审 and 复审 (distinct reviewers, real TOTP codes; each form
   answered as the Prefect UI answers it: POST /api/flow_runs/<id>/resume with the run input) until all wait
   at 终审.
3. Burst: all their 终审 forms are answered at the same moment; each item is timed until /articles/<id>/
   answers 200 on the distribution server, and until its article is on the WeChat stand-in.

Every 5 s meanwhile the Prefect API's /health and a flow_runs/filter (the waiting runs, the list a reviewer
opens) are timed, and the memory of every process of the stack is read.

Then it checks, and exits 1 if any check fails: no 5xx answer seen by anyone (our probes and requests, the
site, the Prefect server's access log, the flow runs' logs in the API, the services' log files); no review run
failed or crashed; every unapproved item still waits at 初审 and is published nowhere; every approved one has
one succeeded delivery per channel (deliveries table), answers 200 on the site, and has exactly one submit and
one article on the WeChat stand-in.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._bursts_report import report
from bench._newcomer import Newcomer
from bench._support import Memory, make_drops

PROBE_EVERY = 5.0
WAITING = {"flow_runs": {"state": {"type": {"any_": ["PAUSED"]}}}, "sort": "START_TIME_DESC", "limit": 200}
UNFINISHED_DELIVERIES = ("pending", "in_progress", "retrying")


class Api:
    """The Prefect REST API, called as the UI calls it. Every answer is counted by status: Prefect's own client
    retries 5xx answers quietly, so going through it would hide them."""

    def __init__(self, base: str, headers: dict[str, str]) -> None:
        self.base, self.headers = base, headers
        self.lock = threading.Lock()
        self.five_xx: Counter[str] = Counter()  # "POST /flow_runs/filter 503" -> n
        self.no_answer: Counter[str] = Counter()

    def call(self, method: str, path: str, body: Any = None, label: str = "", tries: int = 4) -> requests.Response | None:
        label = label or f"{method} {path}"
        for attempt in range(tries):
            try:
                answer = requests.request(method, self.base + path, json=body, headers=self.headers, timeout=60)
            except requests.RequestException as exc:
                with self.lock:
                    self.no_answer[f"{label}: {type(exc).__name__}"] += 1
            else:
                if answer.status_code < 500:
                    return answer
                with self.lock:
                    self.five_xx[f"{label} {answer.status_code}"] += 1
            if attempt + 1 < tries:
                time.sleep(2 ** attempt)
        return None

    def runs(self, flow_runs: dict[str, Any]) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        while True:
            page = self.call("POST", "/flow_runs/filter", {"flow_runs": flow_runs, "sort": "ID_DESC", "limit": 200,
                                                           "offset": len(found)}, "POST /flow_runs/filter")
            if page is None:
                raise SystemExit("the Prefect API did not list flow runs (see the 5xx counts above)")
            found += page.json()
            if len(page.json()) < 200:
                return found

    def count(self, flow_runs: dict[str, Any]) -> int:
        answer = self.call("POST", "/flow_runs/count", {"flow_runs": flow_runs}, "POST /flow_runs/count")
        return int(answer.json()) if answer is not None else -1

    def waiting_at(self, stage: str) -> dict[str, str]:
        """item id -> run id of the review runs waiting at this stage's first form."""
        runs = self.runs({"tags": {"all_": [f"stage:{stage}"]}, "state": {"type": {"any_": ["PAUSED"]}}})
        return {tag[5:]: run["id"] for run in runs for tag in run["tags"] if tag.startswith("item:")
                and (run["state"]["state_details"] or {}).get("pause_key") == f"{stage}-0"}


class Prober(threading.Thread):
    """Every 5 s: the API's /health and the list of waiting runs, timed; the memory of the stack's processes."""

    def __init__(self, api: Api, stack: Newcomer) -> None:
        super().__init__(daemon=True)
        self.api, self.stack, self.phase = api, stack, "start"
        self.stopped = threading.Event()
        self.timings: dict[tuple[str, str], list[float]] = {}  # (probe, phase) -> seconds of answered probes
        self.failed: Counter[tuple[str, str]] = Counter()
        self.memory: dict[str, dict[str, Memory]] = {}  # phase -> role -> peak

    def run(self) -> None:
        while not self.stopped.is_set():
            began, phase = time.monotonic(), self.phase
            for name, method, path, body in (("GET /health", "GET", "/health", None),
                                              ("POST /flow_runs/filter", "POST", "/flow_runs/filter", WAITING)):
                start = time.perf_counter()
                answer = self.api.call(method, path, body, f"probe {name}", tries=1)
                if answer is None:
                    self.failed[(name, phase)] += 1
                else:
                    self.timings.setdefault((name, phase), []).append(time.perf_counter() - start)
            peaks = self.memory.setdefault(phase, {})
            for role, used in self.stack.memory().items():
                peaks[role] = peaks.get(role, Memory()).peak(used)
            self.stopped.wait(max(0.0, PROBE_EVERY - (time.monotonic() - began)))


class NotDone(Exception):
    """A phase that did not finish in time: the report still runs, on what was reached."""


def wait_until(what: str, done: Callable[[], bool], timeout: float, progress: Callable[[], str] | None = None,
               every: float = 1.0, since: float | None = None, count: Callable[[], int] | None = None) -> float:
    """Seconds until `done()`; prints `progress()` every 30 s, stamped with the seconds since `since`. With
    `count`, `timeout` is how long it may go on without `count()` rising (a stall), not the whole wait: on a
    busy machine a slow but moving phase is a figure, a stalled one a failure."""
    start = time.monotonic()
    last, since, best, moved = start, since or start, -1, start
    while not done():
        now = time.monotonic()
        if count is not None and (seen := count()) > best:
            best, moved = seen, now
        if now - moved > timeout:
            raise NotDone(f"not done, nothing moved for {timeout:.0f} s: {what}"
                          + (f" ({progress()})" if progress else ""))
        if progress and now - last >= 30:
            print(f"  … {now - since:.0f} s: {progress()}", flush=True)
            last = now
        time.sleep(every)
    return time.monotonic() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--drops", type=int, default=1000)
    parser.add_argument("--approvals", type=int, default=50)
    parser.add_argument("--workdir", type=Path, help="run here instead of a new temporary directory")
    parser.add_argument("--keep", action="store_true", help="keep the working directory (kept anyway on failure)")
    parser.add_argument("--data-dir", type=Path, help="an absolute data dir written into the copied rongmei.toml "
                        "instead of its relative \"var\" (not what a newcomer has: for comparisons)")
    args = parser.parse_args()
    if not 0 < args.approvals <= args.drops:
        parser.error("--approvals must be between 1 and --drops")
    for name in [k for k in os.environ if k.startswith(("RONGMEI_", "PREFECT_"))]:
        del os.environ[name]  # a newcomer's shell; the stack's own settings come from its working directory
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="rongmei-bursts-"))
    workdir.mkdir(parents=True, exist_ok=True)
    stack = Newcomer(workdir, args.data_dir.resolve() if args.data_dir else None)
    print(f"rongmei up in {workdir} (mode {workdir.stat().st_mode & 0o777:o}), {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.1f} before start", flush=True)
    failures: list[str] = ["the benchmark did not finish"]
    try:
        stack.start()
        print(f"up: Prefect on {stack.prefect_db}; site {stack.site_url}; WeChat stand-in {stack.standin_url}",
              flush=True)
        failures = run(stack, args.drops, args.approvals)
    finally:
        print(f"stopping rongmei up: {stack.stop()}")
        if args.keep or failures or args.workdir or args.data_dir:
            print(f"kept {workdir} (logs in {stack.data_dir / 'logs'}, {stack.log_path.name})")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    print("FAILED: " + "; ".join(failures) if failures else "all checks passed")
    return 1 if failures else 0


def run(stack: Newcomer, drops: int, approvals: int) -> list[str]:
    os.environ.update({"PREFECT_API_URL": stack.api_url, "PREFECT_API_AUTH_STRING": stack.prefect_auth,
                       "PREFECT_HOME": str(stack.workdir / "bench-prefect-home"),
                       "RONGMEI_CONFIG": str(stack.workdir / "rongmei.toml")})
    os.chdir(stack.workdir)  # the relative dirs of rongmei.toml, as `rongmei up` reads them
    burst = Burst(stack, drops, approvals)
    burst.prober.start()
    unfinished = []
    for phases in ((burst.drop_all,), (burst.sign_first_stages, burst.final_approvals)):
        try:  # the approvals go on when some other items were stranded on the way in
            for phase in phases:
                phase()
        except (NotDone, KeyboardInterrupt) as exc:
            unfinished.append(str(exc) or "interrupted (Ctrl-C)")
            print(unfinished[-1], flush=True)
            if isinstance(exc, KeyboardInterrupt):
                break
    burst.prober.phase = "end"
    burst.prober.stopped.set()
    burst.prober.join(timeout=120)
    return unfinished + report(burst)


class Burst:
    """The scenario's state: the items, the reviewers, what was timed; one method per phase."""

    def __init__(self, stack: Newcomer, drops: int, approvals: int) -> None:
        from rongmei.core.settings import load_settings
        from rongmei.review.reviewers import enroll
        from rongmei.storage.store import Store

        self.stack, self.drops, self.approvals = stack, drops, approvals
        self.settings = load_settings()
        self.store = Store.from_settings(self.settings)
        self.api = Api(stack.api_url, stack.auth_header())
        self.stages = self.settings.stages
        self.titles = make_drops(stack.workdir / "staging", drops, age=None)
        self.items = sorted(self.titles)
        self.approved = self.items[:approvals]
        for stage in self.stages:  # a code counts once per reviewer and 30-second step: one per item and stage
            for n in range(approvals):
                enroll(self.store, self.settings, f"{stage.name}-{n}", f"{stage.label}{n}", [stage.role],
                       actor="bench")
        self.prober = Prober(self.api, stack)
        self.times: dict[str, float] = {}
        self.resumes: Counter[str] = Counter()  # outcome of each sign-off form answer
        self.final: dict[str, str] = {}  # item -> review run waiting at the last stage
        self.live: dict[str, float] = {}  # item -> seconds from its final approval to the site answering 200
        self.on_wechat: dict[str, float] = {}  # item -> seconds from its final approval to its WeChat article
        self.site_5xx: Counter[str] = Counter()

    def form(self, stage_index: int, n: int) -> dict[str, str]:
        from tests.support.review import code_for

        reviewer = f"{self.stages[stage_index].name}-{n}"
        return {"decision": "approve", "reviewer": reviewer, "code": code_for(self.settings, reviewer)}

    def drop_all(self) -> None:
        self.prober.phase = "drops"
        first = self.stages[0]
        reviews = {"name": {"like_": "审核"}}
        waiting = {**reviews, "tags": {"all_": [f"stage:{first.name}"]}, "state": {"type": {"any_": ["PAUSED"]}}}
        broken = {**reviews, "state": {"type": {"any_": ["FAILED", "CRASHED", "CANCELLED"]}}}
        on_its_way = {"state": {"type": {"any_": ["SCHEDULED", "PENDING", "RUNNING", "CANCELLING"]}}}
        moving = [{**reviews, **on_its_way}, {"name": {"like_": "ingest"}, **on_its_way}]
        start = time.monotonic()
        for item in self.items:
            os.rename(self.stack.workdir / "staging" / item, self.settings.inbox / item)
        print(f"{self.drops} drops moved into {self.settings.inbox} in {time.monotonic() - start:.2f} s", flush=True)

        def progress() -> str:
            return (f"stored {store_count(self.store)}/{self.drops}, waiting at {first.label} "
                    f"{self.api.count(waiting)}/{self.drops}, review runs failed, crashed or cancelled {self.api.count(broken)}")

        stored = lambda: store_count(self.store)  # noqa: E731
        self.times["stored"] = wait_until("all drops stored", lambda: stored() >= self.drops, 900, progress,
                                          since=start, count=stored, every=2)
        checked, last_seen, idle = [time.monotonic()], [0], [0]  # one count per poll: the bench adds little load

        def all_waiting() -> bool:
            if (seen := self.api.count(waiting)) >= self.drops:
                return True
            if time.monotonic() - checked[0] >= 30:  # some missing, and twice in a row nothing on its way
                checked[0] = time.monotonic()
                idle[0] = idle[0] + 1 if all(self.api.count(runs) == 0 for runs in moving) else 0
                if idle[0] >= 2:
                    raise NotDone(f"{self.drops - seen} of {self.drops} items stranded: no ingest or review run "
                                  f"on its way ({progress()})")
            last_seen[0] = seen
            return False

        self.times["waiting"] = self.times["stored"] + wait_until(
            f"every review run waiting at {first.label}", all_waiting, 900, progress, since=start,
            count=lambda: last_seen[0], every=5)
        print(f"all {self.drops} stored after {self.times['stored']:.1f} s, all waiting at {first.label} after "
              f"{self.times['waiting']:.1f} s", flush=True)

    def waiting_runs(self, stage_index: int) -> dict[str, str]:
        runs: dict[str, str] = {}
        stage = self.stages[stage_index]
        wait_until(f"{self.approvals} runs waiting at {stage.label}",
                   lambda: bool(runs.update(self.api.waiting_at(stage.name))) or all(i in runs for i in self.approved),
                   600 + 10 * self.approvals)
        return runs

    def sign_first_stages(self) -> None:
        """Every stage but the last, one form after the other as its run comes to wait."""
        self.prober.phase = "sign-offs"
        start = time.monotonic()
        for index in range(len(self.stages) - 1):
            runs = self.waiting_runs(index)
            for n, item in enumerate(self.approved):
                self.resumes[resume(self.api, runs[item], self.form(index, n))] += 1
        self.final = self.waiting_runs(len(self.stages) - 1)
        self.times["sign-offs"] = time.monotonic() - start

    def final_approvals(self) -> None:
        """All final forms answered at the same moment; each item timed until it is out."""
        self.prober.phase = "burst"
        barrier, clicked = threading.Barrier(self.approvals), {}

        def click(n: int, item: str) -> None:
            form = self.form(len(self.stages) - 1, n)
            barrier.wait()
            clicked[item] = (time.perf_counter(), time.time())
            self.resumes[resume(self.api, self.final[item], form)] += 1

        with ThreadPoolExecutor(max_workers=self.approvals) as pool:
            list(pool.map(click, range(self.approvals), self.approved))
        article_titles = {title: item for item, title in self.titles.items()}
        standin_read = [0.0]  # its state holds every article's HTML: read it once a second, not every sweep

        def all_out() -> bool:
            for item in [i for i in self.approved if i not in self.live]:
                answer = requests.get(f"{self.stack.site_url}/articles/{item}/", timeout=30)
                if answer.status_code >= 500:
                    self.site_5xx[f"GET /articles/<id>/ {answer.status_code}"] += 1
                if answer.status_code == 200:
                    self.live[item] = time.perf_counter() - clicked[item][0]
            if time.monotonic() - standin_read[0] >= 1:
                standin_read[0] = time.monotonic()
                for article in requests.get(f"{self.stack.standin_url}/_standin/state", timeout=30).json()["articles"]:
                    item = article_titles.get(article["news_item"][0]["title"])
                    if item in clicked and item not in self.on_wechat:  # when the stand-in published it:
                        self.on_wechat[item] = article["published_at"] - clicked[item][1]
            return len(self.live) == len(self.on_wechat) == self.approvals

        wait_until("every approved item live on the site and on WeChat", all_out, 600 + 10 * self.approvals,
                   lambda: f"live {len(self.live)}/{self.approvals}, on WeChat {len(self.on_wechat)}/{self.approvals}",
                   every=0.25)
        ids = list(self.final.values())
        wait_until("the approved items' review runs finished", lambda: all(
            r["state_type"] in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED")
            for r in self.api.runs({"id": {"any_": ids}})), 900)
        wait_until("the approved items' deliveries settled",
                   lambda: not unfinished_deliveries(self.store, self.approved), 900)


def resume(api: Api, run_id: str, form: dict[str, str]) -> str:
    """Answer a sign-off form as the UI does. After a 5xx or no answer it is sent again only if the run still
    waits (a reviewer pressing Submit again); the outcome says which."""
    for _attempt in range(4):
        answer = api.call("POST", f"/flow_runs/{run_id}/resume", {"run_input": form}, "POST /flow_runs/{id}/resume",
                          tries=1)
        if answer is not None:
            return f"{answer.status_code} {answer.json().get('status', '')}".strip()
        run = api.call("GET", f"/flow_runs/{run_id}", label="GET /flow_runs/{id}")
        if run is not None and run.json()["state_type"] != "PAUSED":
            return "taken although answered 5xx"
        time.sleep(2)
    return "not taken after 4 tries"


def store_count(store: Any) -> int:
    from sqlalchemy import func, select

    from rongmei.storage.tables import Version

    with store.session() as session:
        return session.scalar(select(func.count()).select_from(Version)) or 0


def unfinished_deliveries(store: Any, items: list[str]) -> list[Any]:
    from sqlalchemy import select

    from rongmei.storage.tables import Delivery

    with store.session() as session:
        return list(session.scalars(select(Delivery.id).where(Delivery.item_id.in_(items),
                                                              Delivery.state.in_(UNFINISHED_DELIVERIES))))


if __name__ == "__main__":
    sys.exit(main())
