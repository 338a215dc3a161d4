"""The process `rongmei up` runs in: it starts the stack (rongmei.runtime.up), prints where everything is,
then watches it (rongmei.runtime.watch: a service that dies is started again, so is Prefect's PostgreSQL, and a
filling disk is announced) until Ctrl-C or SIGTERM, and stops it all.

Apart from the CLI so that the command stays a thin call and the stack's lifetime is one readable function.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from collections.abc import Callable

from rongmei.core.settings import load_settings
from rongmei.runtime import up as stack_mod
from rongmei.runtime.watch import Watch
from rongmei.storage.privacy import make_private
from rongmei.storage.store import Store

__all__ = ["Echo", "run_stack"]

Echo = Callable[..., None]  # called as echo(text) and echo(text, err=True), like typer.echo


def run_stack(*, prefect_port: int | None, samples: bool, demo: bool, echo: Echo) -> int:
    """Run the whole stack in the foreground until stopped; the process's exit code (1: it could not start).

    `prefect_port` overrides settings.prefect_port; `samples` copies the sample items into the inbox once;
    `demo` turns demo mode on (for the worker's flow runs too)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    if demo:
        os.environ["RONGMEI_DEMO"] = "true"  # the worker's flow runs read it from the environment too
    settings = load_settings()
    make_private(settings)
    for folder in (settings.inbox, settings.archive, settings.rejected, settings.returned):
        folder.mkdir(parents=True, exist_ok=True)
    store = Store.from_settings(settings)
    from rongmei.review.reviewers import sync_demo_flags

    sync_demo_flags(store, settings)
    stack = stack_mod.Stack(settings)
    stopping = False

    def on_signal(signum: int, _frame: object) -> None:
        nonlocal stopping
        if stopping:
            return
        stopping = True
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_signal)
    try:
        echo("starting the Prefect server …")
        api_url = stack_mod.start_prefect(stack, settings, prefect_port or settings.prefect_port)
        for hook in stack_mod.extra_services(stack, settings, store):
            echo(hook)
        echo("registering deployments from prefect.yaml …")
        stack_mod.deploy(settings, api_url)
        stack_mod.start_worker(stack, settings, api_url)
        demo_ids = stack_mod.enroll_demo_reviewers(settings, store)
        seeded = stack_mod.seed_samples(settings) if samples else 0
        ui = api_url.removesuffix("/api")
        auth, auth_where = stack_mod.api_auth(settings)
        echo(
            "\n".join(
                [
                    "",
                    "rongmei is up.",
                    f"  Prefect UI (review and sign-off): {ui}",
                    f"  Site, playlists, screens:         {settings.public_url}",
                    f"  Drop items into:                  {settings.inbox.resolve()}",
                    f"  Data dir:                         {settings.data_dir.resolve()}",
                    f"  Logs:                             {(settings.data_dir / 'logs').resolve()}",
                    f"  Prefect's database:               {stack.prefect_db}",
                    f"  Prefect UI login:                 {auth}",
                    f"    (kept in {auth_where}; `rongmei ui-login` prints it again)",
                    f"  Sample items copied:              {seeded}",
                    "Press Ctrl-C to stop.",
                ]
            )
        )
        if stack.prefect_db_problem:  # said when it happened, and again here where it cannot scroll away
            echo(stack.prefect_db_problem, err=True)
        if demo_ids:
            echo(
                "DEMO MODE (not for a real installation): demo reviewers " + ", ".join(demo_ids) + ". In the "
                "Prefect UI open a run named '审核 · …', press Resume and sign with reviewer id and the code from\n"
                "  rongmei reviewers demo-code demo-editor   (then demo-desk, demo-chief)\n"
                "Turn demo mode off (demo = false, no --demo) before real use; demo sign-offs are refused then."
            )
        else:
            if left := stack_mod.demo_reviewers_left(store):
                echo(f"Demo mode is off: the demo reviewers {', '.join(left)} are refused. Deactivate them "
                     f"with `rongmei reviewers deactivate ID`.")
            echo("Enrol reviewers with: rongmei reviewers add ID --name NAME --role editor|desk_head|chief_editor")
        watch = Watch(stack, prefect_port or settings.prefect_port, echo)
        while True:
            watch.tick()
            time.sleep(1)
    except KeyboardInterrupt:
        echo("\nstopping: worker first, then the servers …")
    except Exception as exc:
        echo(f"could not start: {exc}", err=True)
        stack.stop()
        return 1
    stack.stop()
    echo("stopped.")
    return 0
