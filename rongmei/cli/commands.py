"""The `rongmei` command line."""

from __future__ import annotations

import json
import os
import sys
from typing import Annotated

import typer

from rongmei.cli.channel_commands import ChannelCommandsGroup
from rongmei.core.settings import Settings, load_settings
from rongmei.storage import ledger
from rongmei.storage.store import Store

__all__ = [
    "app", "audit_app", "audit_verify", "ingest", "main", "reconcile", "report", "retract", "reviewers_activate",
    "reviewers_add", "reviewers_app", "reviewers_deactivate", "reviewers_demo_code", "reviewers_list",
    "reviewers_rotate", "status", "terminal_sim", "terminals_add", "terminals_app", "terminals_list",
    "ui_login", "up"
]

app = typer.Typer(help="融媒 rongmei: review, sign-off and distribution for county media centers.", no_args_is_help=True,
                  cls=ChannelCommandsGroup)  # each channel's own commands: `rongmei <channel> …`
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
    from rongmei.cli.status import collect, format_detail, format_table

    settings, store = _store()
    items = collect(store, item, settings)
    if item and not items:
        typer.echo(f"没有编号为 {item} 的稿件。用 `rongmei status` 查看全部。", err=True)
        raise typer.Exit(1)
    from rongmei.intake.feeds.health import feed_health, health_markdown

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
    """Walk the keyed hash chain and hold it against its checkpoints (file, S3); exit 1 and name the first bad
    entry if anything was edited, removed, reordered or rewritten."""
    _, store = _store()
    with store.session() as session:
        verdict = ledger.verify(session)
    if verdict.ok:
        message = (f"ledger OK: {verdict.entries} entries, chain intact, anchored at #{verdict.anchored_seq} "
                   f"(checkpoint {verdict.anchored_at})")
        if store.ledger.anchors.s3_bucket:
            s3 = verdict.s3_seq
            message += f", S3 checkpoint at #{s3}" if s3 is not None else ", no S3 checkpoint yet"
        if verdict.anchored_seq is not None and verdict.entries > verdict.anchored_seq:
            message += (f"; #{verdict.anchored_seq + 1}–#{verdict.entries} chain correctly and are anchored by the "
                        "next append")
        typer.echo(message)
        return
    where = f" (first bad entry: #{verdict.first_bad_seq})" if verdict.first_bad_seq is not None else ""
    typer.echo(f"{'LEDGER NOT VERIFIED' if verdict.inconclusive else 'LEDGER TAMPERED'}: {verdict.reason}{where}",
               err=True)
    raise typer.Exit(1)


@reviewers_app.command("add")
def reviewers_add(
    reviewer_id: Annotated[str, typer.Argument(metavar="ID", help="Short id the reviewer types into the form.")],
    name: Annotated[str, typer.Option(help="Full name, e.g. 王主任.")],
    role: Annotated[list[str], typer.Option(help="editor | desk_head | chief_editor (repeatable).")],
    qr: Annotated[bool, typer.Option(help="Also print the QR code in the terminal.")] = True,
) -> None:
    """Enrol a reviewer and print the TOTP secret and otpauth URI once."""
    from rongmei.review.reviewers import enroll

    settings, store = _store()
    enrolment = enroll(store, settings, reviewer_id, name, role, actor=_cli_actor())
    if enrolment is None:
        typer.echo(f"{reviewer_id} already enrolled; roles updated. The secret is not shown again "
                   f"(`rongmei reviewers rotate {reviewer_id}` issues a new one).")
        return
    typer.echo(f"Enrolled {reviewer_id} ({name}) as {', '.join(role)}.")
    _print_secret(enrolment, qr)


@reviewers_app.command("list")
def reviewers_list() -> None:
    """Enrolled reviewers and their roles (never their secrets)."""
    from rongmei.core.labels import ROLE_ZH
    from rongmei.review.reviewers import list_reviewers

    _, store = _store()
    reviewers = list_reviewers(store)
    if not reviewers:
        typer.echo("no reviewers yet: rongmei reviewers add ID --name NAME --role ROLE")
    for r in reviewers:
        roles = "、".join(ROLE_ZH.get(x, x) for x in r.roles)
        typer.echo(f"{r.id:<16} {r.name:<10} {roles}{'' if r.active else '（已停用）'}")


def _cli_actor() -> str:
    import getpass

    return f"cli:{getpass.getuser()}"


def _print_secret(enrolment, qr: bool) -> None:  # type: ignore[no-untyped-def]
    from rongmei.review.reviewers import qr_ascii

    typer.echo("Add this to the reviewer's authenticator app (shown only now):")
    typer.echo(f"  secret: {enrolment.secret}")
    typer.echo(f"  URI:    {enrolment.uri}")
    if enrolment.qr_png:
        typer.echo(f"  QR image: {enrolment.qr_png} (delete it once scanned)")
    if qr:
        typer.echo(qr_ascii(enrolment.uri))


@reviewers_app.command("deactivate")
def reviewers_deactivate(reviewer_id: Annotated[str, typer.Argument(metavar="ID")]) -> None:
    """Stop a reviewer: their codes no longer count, and versions they signed no longer go out unsigned again."""
    from rongmei.review.reviewers import set_active

    _, store = _store()
    reviewer = set_active(store, reviewer_id, False, actor=_cli_actor())
    typer.echo(f"{reviewer.id}（{reviewer.name}）已停用：其验证码立即失效，已签但尚未发出的稿件需重新签字。")


@reviewers_app.command("activate")
def reviewers_activate(reviewer_id: Annotated[str, typer.Argument(metavar="ID")]) -> None:
    """Let a deactivated (or locked) reviewer sign again."""
    from rongmei.review.reviewers import set_active

    _, store = _store()
    reviewer = set_active(store, reviewer_id, True, actor=_cli_actor())
    typer.echo(f"{reviewer.id}（{reviewer.name}）已启用（如曾被锁定，已解锁）。")


@reviewers_app.command("rotate")
def reviewers_rotate(
    reviewer_id: Annotated[str, typer.Argument(metavar="ID")],
    qr: Annotated[bool, typer.Option(help="Also print the QR code in the terminal.")] = True,
) -> None:
    """Give a reviewer a new secret (lost or exposed phone); codes of the old one stop working at once."""
    from rongmei.review.reviewers import rotate

    settings, store = _store()
    enrolment = rotate(store, settings, reviewer_id, actor=_cli_actor())
    typer.echo(f"New secret for {reviewer_id}; every code of the old one is invalid from now on.")
    _print_secret(enrolment, qr)


@reviewers_app.command("demo-code")
def reviewers_demo_code(reviewer_id: Annotated[str, typer.Argument(metavar="ID")]) -> None:
    """Print the current code of a DEMO reviewer; only in demo mode (`rongmei up --demo`), never a real one's."""
    from rongmei.core.errors import StoreError
    from rongmei.review.reviewers import current_code

    settings, _ = _store()
    try:
        typer.echo(current_code(settings, reviewer_id))
    except StoreError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(1) from exc


@app.command("ui-login")
def ui_login() -> None:
    """Print the Prefect UI/API login (what the UI's login page asks for) and where it is kept."""
    from rongmei.runtime.up import api_auth

    settings = load_settings()
    auth, where = api_auth(settings)
    typer.echo(f"Prefect UI login: {auth}\n(kept in {where}; anyone holding it can start deployments and answer "
               "sign-off forms, but signing needs a reviewer's own code)")


@app.command()
def retract(
    item: Annotated[str, typer.Argument(help="Item id.")],
    reason: Annotated[str, typer.Option(help="Why it is withdrawn (recorded in the ledger).")],
    reviewer: Annotated[str, typer.Option(help="Id of the desk head or chief editor who orders it.")],
    code: Annotated[str | None, typer.Option(help="Their 6-digit code; asked for (hidden) when omitted.")] = None,
) -> None:
    """Withdraw an item from every channel that received it (needs a desk head's or chief editor's code)."""
    import getpass

    from rongmei.core.errors import SignOffRefused
    from rongmei.core.labels import DELIVERY_ZH
    from rongmei.delivery.retraction import authorise_retraction, retract_item_everywhere
    from rongmei.runtime.orchestration import cancel_item_runs, use_local_prefect

    settings, store = _store()
    via = f"cli:{getpass.getuser()}"
    if code is None:
        code = typer.prompt(f"{reviewer} 的动态验证码", hide_input=True)
    try:
        actor = authorise_retraction(store, settings, item, reason, reviewer, code, via=via)
    except SignOffRefused as refusal:
        typer.echo(f"撤稿未执行：{refusal}（已记入审计记录）", err=True)
        raise typer.Exit(1) from refusal
    prefect = use_local_prefect(settings)
    if prefect is None:
        typer.echo("注意：Prefect 服务器没有响应，未能取消该稿件的定时发布和待审运行；"
                   "它们届时会被签发核验拒绝，不会发出。", err=True)
    results = retract_item_everywhere(store, settings, item, reason, actor, via=via,
                                      cancel_runs=cancel_item_runs if prefect else None)
    if not results:
        typer.echo(f"{item} 尚未在任何渠道发布；已记录撤稿。")
    for r in results:
        typer.echo(f"{r.channel:<14} {DELIVERY_ZH.get(r.state, r.state)} {r.message}")
    if any(r.state != "succeeded" for r in results):
        raise typer.Exit(1)


@app.command()
def reconcile(
    items: Annotated[list[str] | None, typer.Argument(metavar="[ITEM]...", help="Only these items.")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only list what is stranded; change nothing.")] = False,
) -> None:
    """自动核对: find work crashed or killed runs left stranded (reviews with no run, approvals never published,
    abandoned or unconfirmed deliveries, half-done retractions, stale scheduled runs) and finish it."""
    from rongmei.runtime.orchestration import use_local_prefect

    settings = load_settings()
    if (api := use_local_prefect(settings)) is None:
        typer.echo(f"Prefect 服务器没有响应（{os.environ.get('PREFECT_API_URL')}）：自动核对要对照它的运行。"
                   "请先启动 `rongmei up`，或设置 PREFECT_API_URL。", err=True)
        raise typer.Exit(1)
    from rongmei.runtime.reconciler import reconcile as reconcile_pass

    report = reconcile_pass(settings, dry_run=dry_run, item_ids=items or None)
    typer.echo("\n".join(report.lines()) + f"\n（Prefect：{api}）")
    if report.failed:
        raise typer.Exit(1)


@terminals_app.command("add")
def terminals_add(
    terminal_id: Annotated[str, typer.Argument(metavar="ID", help="Terminal id, e.g. hongqi-01.")],
    zone: Annotated[str, typer.Option(help="Village/township code of a loudspeaker terminal.")] = "",
    group: Annotated[str, typer.Option(help="Display group of a screen.")] = "",
) -> None:
    """Enrol a terminal and print its bearer token once (for POST /api/plays)."""
    from rongmei.distribution.terminals import check_assignment, enroll_terminal

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
    from rongmei.distribution.terminals import list_terminals

    _, store = _store()
    for t in list_terminals(store):
        typer.echo(f"{t.id:<20} zone={t.zone or '-':<14} group={t.group or '-'}")


@app.command("terminal-sim", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def terminal_sim(ctx: typer.Context) -> None:
    """Poll a zone's playlist or a group's manifest like a terminal (see --help of the simulator)."""
    from rongmei.distribution.terminal_sim import main as sim_main

    raise typer.Exit(sim_main(list(ctx.args)))


@app.command()
def report(
    since: Annotated[str, typer.Option("--since", help="First day, YYYY-MM-DD.")],
    until: Annotated[str | None, typer.Option("--until", help="Last day, YYYY-MM-DD; default today.")] = None,
) -> None:
    """传播监测: reach per item and channel (web, WeChat, screens, loudspeakers)."""
    from rongmei.reach.outputs import cli_report

    raise typer.Exit(cli_report(since, until))


@app.command()
def ingest() -> None:
    """Take in settled drops once, without Prefect (for scripts and troubleshooting)."""
    from rongmei.intake.ingest import ingest_inbox

    settings, store = _store()
    for outcome in ingest_inbox(settings, store):
        typer.echo(f"{outcome.status:<10} {outcome.drop} -> {outcome.item_id} v{outcome.version} {outcome.moved_to}")


@app.command()
def up(
    prefect_port: Annotated[int | None, typer.Option(help="Prefect server/UI port.")] = None,
    no_samples: Annotated[bool, typer.Option("--no-samples", help="Do not copy the sample items.")] = False,
    demo: Annotated[bool, typer.Option("--demo", help="Demo mode: demo reviewers whose codes `rongmei reviewers "
                                                      "demo-code` prints. Never on a real installation.")] = False,
) -> None:
    """Start everything on embedded defaults and print the URLs. Ctrl-C stops cleanly."""
    from rongmei.runtime.supervisor import run_stack

    raise typer.Exit(run_stack(prefect_port=prefect_port, samples=not no_samples, demo=demo, echo=typer.echo))


def main() -> None:  # pragma: no cover - console entry point
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
