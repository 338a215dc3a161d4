"""The `rongmei` command line."""

from __future__ import annotations

import json
import logging
import signal
import sys
import time
from typing import Annotated

import typer

from rongmei import ledger
from rongmei.settings import Settings, load_settings
from rongmei.store import Store

app = typer.Typer(help="融媒 rongmei: review, sign-off and distribution for county media centers.", no_args_is_help=True)
audit_app = typer.Typer(help="The tamper-evident ledger.", no_args_is_help=True)
app.add_typer(audit_app, name="audit")


def _store(settings: Settings | None = None) -> tuple[Settings, Store]:
    settings = settings or load_settings()
    return settings, Store.from_settings(settings)


@app.command()
def status(
    item: Annotated[str | None, typer.Argument(help="Item id; omit for all items.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Items, versions, check results, sign-offs and deliveries."""
    from rongmei.status import collect, format_detail, format_table

    _, store = _store()
    items = collect(store, item)
    if item and not items:
        typer.echo(f"没有编号为 {item} 的稿件。用 `rongmei status` 查看全部。", err=True)
        raise typer.Exit(1)
    if as_json:
        typer.echo(json.dumps(items if not item else items[0], ensure_ascii=False, indent=2))
    elif item:
        typer.echo(format_detail(items[0]))
    else:
        typer.echo(format_table(items))


@audit_app.command("verify")
def audit_verify() -> None:
    """Walk the hash chain; exit 1 and name the first bad entry if anything was edited, removed or reordered."""
    _, store = _store()
    with store.session() as session:
        verdict = ledger.verify(session)
    if verdict.ok:
        typer.echo(f"ledger OK: {verdict.entries} entries, chain intact")
        return
    typer.echo(f"LEDGER TAMPERED: {verdict.reason} (first bad entry: #{verdict.first_bad_seq})", err=True)
    raise typer.Exit(1)


@app.command()
def ingest() -> None:
    """Take in settled drops once, without Prefect (for scripts and troubleshooting)."""
    from rongmei.ingest import ingest_inbox

    settings, store = _store()
    for outcome in ingest_inbox(settings, store):
        typer.echo(f"{outcome.status:<10} {outcome.drop} -> {outcome.item_id} v{outcome.version} {outcome.moved_to}")


@app.command()
def up(
    prefect_port: Annotated[int | None, typer.Option(help="Prefect server/UI port.")] = None,
    no_samples: Annotated[bool, typer.Option("--no-samples", help="Do not copy the sample items.")] = False,
) -> None:
    """Start everything on embedded defaults and print the URLs. Ctrl-C stops cleanly."""
    from rongmei import up as stack_mod

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    settings = load_settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    for folder in (settings.inbox, settings.archive, settings.rejected, settings.returned):
        folder.mkdir(parents=True, exist_ok=True)
    store = Store.from_settings(settings)
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
        typer.echo("starting the Prefect server …")
        api_url = stack_mod.start_prefect(stack, settings, prefect_port or settings.prefect_port)
        for hook in stack_mod.extra_services(stack, settings, store):
            typer.echo(hook)
        typer.echo("registering deployments from prefect.yaml …")
        stack_mod.deploy(settings, api_url)
        stack_mod.start_worker(stack, settings, api_url)
        seeded = 0 if no_samples else stack_mod.seed_samples(settings)
        ui = api_url.removesuffix("/api")
        typer.echo(
            "\n".join(
                [
                    "",
                    "rongmei is up.",
                    f"  Prefect UI (review and sign-off): {ui}",
                    f"  Site, playlists, screens:         {settings.public_url}",
                    f"  Drop items into:                  {settings.inbox.resolve()}",
                    f"  Data dir:                         {settings.data_dir.resolve()}",
                    f"  Logs:                             {(settings.data_dir / 'logs').resolve()}",
                    f"  Sample items copied:              {seeded}",
                    "Press Ctrl-C to stop.",
                ]
            )
        )
        while True:
            for name, proc in stack.processes.items():
                if proc.poll() is not None:
                    typer.echo(f"{name} exited with code {proc.returncode}; stopping", err=True)
                    raise KeyboardInterrupt
            time.sleep(1)
    except KeyboardInterrupt:
        typer.echo("\nstopping: worker first, then the servers …")
    except Exception as exc:
        typer.echo(f"could not start: {exc}", err=True)
        stack.stop()
        raise typer.Exit(1) from exc
    stack.stop()
    typer.echo("stopped.")


def main() -> None:  # pragma: no cover - console entry point
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
