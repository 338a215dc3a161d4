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
reviewers_app = typer.Typer(help="Reviewers and their sign-off codes.", no_args_is_help=True)
app.add_typer(reviewers_app, name="reviewers")
terminals_app = typer.Typer(help="Screens and loudspeaker terminals that poll us and report plays.",
                            no_args_is_help=True)
app.add_typer(terminals_app, name="terminals")


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

    settings, store = _store()
    items = collect(store, item, settings)
    if item and not items:
        typer.echo(f"没有编号为 {item} 的稿件。用 `rongmei status` 查看全部。", err=True)
        raise typer.Exit(1)
    from rongmei.feeds import feed_health, health_markdown

    feeds = [] if item else feed_health(store)
    if as_json:
        payload = items[0] if item else {"items": items, "feeds": feeds}
        typer.echo(json.dumps(payload, ensure_ascii=False, indent=2, default=str))
    elif item:
        typer.echo(format_detail(items[0]))
    else:
        typer.echo(format_table(items))
        if feeds:
            typer.echo("\n订阅源（转载来源）\n" + health_markdown(feeds))


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


@reviewers_app.command("add")
def reviewers_add(
    reviewer_id: Annotated[str, typer.Argument(metavar="ID", help="Short id the reviewer types into the form.")],
    name: Annotated[str, typer.Option(help="Full name, e.g. 王主任.")],
    role: Annotated[list[str], typer.Option(help="editor | desk_head | chief_editor (repeatable).")],
    qr: Annotated[bool, typer.Option(help="Also print the QR code in the terminal.")] = True,
) -> None:
    """Enrol a reviewer and print the TOTP secret and otpauth URI once."""
    from rongmei.reviewers import enroll, qr_ascii

    settings, store = _store()
    enrolment = enroll(store, settings, reviewer_id, name, role)
    if enrolment is None:
        typer.echo(f"{reviewer_id} already enrolled; roles updated. The secret is not shown again.")
        return
    typer.echo(f"Enrolled {reviewer_id} ({name}) as {', '.join(role)}.")
    typer.echo("Add this to the reviewer's authenticator app (shown only now):")
    typer.echo(f"  secret: {enrolment.secret}")
    typer.echo(f"  URI:    {enrolment.uri}")
    if enrolment.qr_png:
        typer.echo(f"  QR image: {enrolment.qr_png} (delete it once scanned)")
    if qr:
        typer.echo(qr_ascii(enrolment.uri))


@reviewers_app.command("list")
def reviewers_list() -> None:
    """Enrolled reviewers and their roles (never their secrets)."""
    from rongmei.reviewers import ROLE_ZH, list_reviewers

    _, store = _store()
    reviewers = list_reviewers(store)
    if not reviewers:
        typer.echo("no reviewers yet: rongmei reviewers add ID --name NAME --role ROLE")
    for r in reviewers:
        roles = "、".join(ROLE_ZH.get(x, x) for x in r.roles)
        typer.echo(f"{r.id:<16} {r.name:<10} {roles}{'' if r.active else '（已停用）'}")


@reviewers_app.command("demo-code")
def reviewers_demo_code(reviewer_id: Annotated[str, typer.Argument(metavar="ID")]) -> None:
    """Print the current code of a DEMO reviewer (enrolled by `rongmei up`); real reviewers are refused."""
    from rongmei.reviewers import current_code

    settings, _ = _store()
    typer.echo(current_code(settings, reviewer_id))


@app.command()
def retract(
    item: Annotated[str, typer.Argument(help="Item id.")],
    reason: Annotated[str, typer.Option(help="Why it is withdrawn (recorded in the ledger).")],
) -> None:
    """Withdraw an item from every channel that received it."""
    import getpass

    from rongmei.retraction import retract_item_everywhere
    from rongmei.status import DELIVERY_ZH

    settings, store = _store()
    results = retract_item_everywhere(store, settings, item, reason, f"cli:{getpass.getuser()}")
    if not results:
        typer.echo(f"{item} 尚未在任何渠道发布；已记录撤稿。")
    for r in results:
        typer.echo(f"{r.channel:<14} {DELIVERY_ZH.get(r.state, r.state)} {r.message}")
    if any(r.state != "succeeded" for r in results):
        raise typer.Exit(1)


@terminals_app.command("add")
def terminals_add(
    terminal_id: Annotated[str, typer.Argument(metavar="ID", help="Terminal id, e.g. hongqi-01.")],
    zone: Annotated[str, typer.Option(help="Village/township code of a loudspeaker terminal.")] = "",
    group: Annotated[str, typer.Option(help="Display group of a screen.")] = "",
) -> None:
    """Enrol a terminal and print its bearer token once (for POST /api/plays)."""
    from rongmei.terminals import check_assignment, enroll_terminal

    if bool(zone) == bool(group):
        typer.echo("give exactly one of --zone (loudspeaker) or --group (screen)", err=True)
        raise typer.Exit(2)
    settings, store = _store()
    check_assignment(settings, zone=zone, group=group)
    token = enroll_terminal(store, terminal_id, zone=zone, group=group)
    typer.echo(f"terminal {terminal_id} enrolled. Token (shown only now): {token}")


@terminals_app.command("list")
def terminals_list() -> None:
    """Enrolled terminals (never their tokens)."""
    from rongmei.terminals import list_terminals

    _, store = _store()
    for t in list_terminals(store):
        typer.echo(f"{t.id:<20} zone={t.zone or '-':<14} group={t.group or '-'}")


@app.command("terminal-sim", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def terminal_sim(ctx: typer.Context) -> None:
    """Poll a zone's playlist or a group's manifest like a terminal (see --help of the simulator)."""
    from rongmei.terminal_sim import main as sim_main

    raise typer.Exit(sim_main(list(ctx.args)))


@app.command()
def report(
    since: Annotated[str, typer.Option("--since", help="First day, YYYY-MM-DD.")],
    until: Annotated[str | None, typer.Option("--until", help="Last day, YYYY-MM-DD; default today.")] = None,
) -> None:
    """传播监测: reach per item and channel (web, WeChat, screens, loudspeakers)."""
    from rongmei.reach import cli_report

    raise typer.Exit(cli_report(since, until))


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
        demo = stack_mod.enroll_demo_reviewers(settings, store)
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
                    f"  Prefect's database:               {stack.prefect_db}",
                    f"  Sample items copied:              {seeded}",
                    "Press Ctrl-C to stop.",
                ]
            )
        )
        if demo:
            typer.echo(
                "Demo reviewers enrolled: " + ", ".join(demo) + ". In the Prefect UI open a run named "
                "'审核 · …', press Resume and sign with reviewer id and the code from\n"
                "  rongmei reviewers demo-code demo-editor   (then demo-desk, demo-chief)\n"
                "Enrol real reviewers with: rongmei reviewers add ID --name NAME --role editor"
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
