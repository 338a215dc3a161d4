"""Terminal simulator: behaves like a village loudspeaker or a screen polling the distribution server.

One `TerminalState` per simulated device. `poll_zone` / `poll_group` fetch the playlist or manifest with
If-None-Match, download every file it names and check its sha256 (a file that does not verify is never
"aired"), `play_due` / `play_schedule` decide what the device would air at a given moment and record the
completed plays, and `report_plays` posts them to /api/plays with the device's bearer token, keeping them
for later when the server cannot take them. The clock is always passed in, so tests never sleep.

Used by the tests, by `bench/terminals.py`, and as `rongmei terminal-sim` (see `main`).
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import requests

__all__ = [
    "MAX_BATCH", "TIMEOUT", "PollResult", "TerminalState", "active_schedule", "due_now", "main", "play_due",
    "play_schedule", "poll_group", "poll_zone", "report_plays"
]

log = logging.getLogger(__name__)
TIMEOUT = 10.0
MAX_BATCH = 500  # the server refuses batches over 1000 plays


@dataclass
class TerminalState:
    """What one device remembers between polls."""

    token: str = ""
    etag: str = ""
    manifest: dict[str, Any] | None = None
    files: dict[str, bytes] = field(default_factory=dict)  # sha256 -> verified bytes
    rejected: list[str] = field(default_factory=list)  # URLs whose bytes did not match their sha256
    backlog: list[dict[str, Any]] = field(default_factory=list)  # completed plays not yet accepted
    aired: set[tuple[str, str]] = field(default_factory=set)  # (item, started_at) already recorded
    polls: int = 0
    not_modified: int = 0
    reported: int = 0
    session: requests.Session = field(default_factory=requests.Session, repr=False)


@dataclass
class PollResult:
    status: int  # HTTP status, or 0 when the server could not be reached
    changed: bool = False
    version: int = 0
    downloaded: int = 0
    failed: list[str] = field(default_factory=list)


def _media_of(manifest: dict[str, Any]) -> list[dict[str, Any]]:
    """Every file a playlist (loudspeakers) or manifest (screens) depends on: url, sha256."""
    if "files" in manifest:
        return list(manifest["files"])
    return [entry["media"] for entry in [*manifest.get("emergency", []), *manifest.get("items", [])]]


def _poll(url: str, state: TerminalState) -> PollResult:
    state.polls += 1
    headers = {"If-None-Match": state.etag} if state.etag else {}
    try:
        response = state.session.get(url, headers=headers, timeout=TIMEOUT)
    except requests.RequestException as exc:
        log.info("poll %s failed (%s); keeping the manifest we have", url, exc)
        return PollResult(status=0)
    if response.status_code == 304:
        state.not_modified += 1
        return PollResult(status=304, version=(state.manifest or {}).get("manifest_version", 0))
    if response.status_code != 200:
        return PollResult(status=response.status_code)
    manifest = response.json()
    result = PollResult(status=200, changed=True, version=manifest.get("manifest_version", 0))
    for media in _media_of(manifest):
        sha = media["sha256"]
        if sha in state.files:
            continue
        try:
            data = state.session.get(media["url"], timeout=TIMEOUT)
        except requests.RequestException:
            result.failed.append(media["url"])
            continue
        if data.status_code == 200 and hashlib.sha256(data.content).hexdigest() == sha:
            state.files[sha] = data.content
            result.downloaded += 1
        else:
            result.failed.append(media["url"])
            if data.status_code == 200:
                state.rejected.append(media["url"])
    state.manifest = manifest
    # Missing files: forget the ETag so the next poll gets the manifest again and retries them.
    state.etag = "" if result.failed else response.headers.get("ETag", "")
    keep = {m["sha256"] for m in _media_of(manifest)}
    state.files = {sha: data for sha, data in state.files.items() if sha in keep}
    return result


def poll_zone(base_url: str, zone: str, state: TerminalState) -> PollResult:
    return _poll(f"{base_url.rstrip('/')}/loudspeakers/{zone}/playlist.json", state)


def poll_group(base_url: str, group: str, state: TerminalState) -> PollResult:
    return _poll(f"{base_url.rstrip('/')}/screens/{group}/manifest.json", state)


def _t(value: str) -> datetime:
    return datetime.fromisoformat(value)


def due_now(playlist: dict[str, Any], now: datetime, files: dict[str, bytes] | None = None) -> dict[str, Any] | None:
    """What a loudspeaker airs at `now`: the highest-priority active emergency (the newest wins a tie),
    else the routine item whose slot covers `now`. Cancelled or unverified items never air."""
    cancelled = {c["id"] for c in playlist.get("cancelled", [])}

    def playable(entry: dict[str, Any]) -> bool:
        verified = files is None or entry["media"]["sha256"] in files
        return entry["id"] not in cancelled and verified and _t(entry["expires"]) > now

    interrupts = [e for e in playlist.get("emergency", []) if playable(e) and _t(e["start"]) <= now]
    if interrupts:
        return max(interrupts, key=lambda e: (e["priority"], _t(e["start"])))
    for entry in playlist.get("items", []):
        if playable(entry) and _t(entry["start"]) <= now < _t(entry["end"]):
            return entry
    return None


def play_due(state: TerminalState, now: datetime) -> dict[str, Any] | None:
    """Air what is due at `now` (loudspeaker) and record it as one completed play."""
    if not state.manifest:
        return None
    entry = due_now(state.manifest, now, state.files)
    if entry is None:
        return None
    _record(state, entry["id"], entry["media"]["sha256"], now, float(entry["media"]["duration_s"]))
    return entry


def active_schedule(manifest: dict[str, Any], now: datetime) -> list[dict[str, Any]]:
    """Screen schedule entries on air at `now` (from/to, play_days, daily window in the manifest's zone)."""
    local = now.astimezone(_t(manifest["lookahead_until"]).tzinfo)
    minute = local.hour * 60 + local.minute
    entries = []
    for entry in manifest.get("schedule", []):
        if entry.get("from") and _t(entry["from"]) > now:
            continue
        if entry.get("to") and _t(entry["to"]) <= now:
            continue
        if local.isoweekday() not in entry.get("play_days", range(1, 8)):
            continue
        start, end = (_minutes(entry.get("time_from", "00:00")), _minutes(entry.get("time_to", "24:00")))
        inside = start <= minute < end if start <= end else (minute >= start or minute < end)
        if inside:
            entries.append(entry)
    return entries


def _minutes(hhmm: str) -> int:
    hours, _, minutes = hhmm.partition(":")
    return int(hours) * 60 + int(minutes or 0)


def play_schedule(state: TerminalState, now: datetime) -> list[dict[str, Any]]:
    """Loop once through the screen schedule starting at `now`; returns the plays recorded."""
    if not state.manifest:
        return []
    files = {f["id"]: f for f in state.manifest.get("files", [])}
    cursor, plays = now, []
    for entry in active_schedule(state.manifest, now):
        if not all(files.get(d, {}).get("sha256") in state.files for d in entry.get("dependents", [])):
            continue  # not every file verified: the item stays off the screen
        for item in entry["items"]:
            file = files.get(item.get("file", ""))
            seconds = float(item.get("duration") or 10)
            if file:
                plays.append(_record(state, entry["id"], file["sha256"], cursor, seconds))
            cursor += timedelta(seconds=seconds)
    return [p for p in plays if p]


def _record(state: TerminalState, item: str, sha256: str, start: datetime, seconds: float) -> dict[str, Any]:
    started = start.astimezone(UTC).isoformat(timespec="milliseconds")
    if (item, started) in state.aired:
        return {}
    state.aired.add((item, started))
    play = {"item": item, "sha256": sha256, "started_at": started,
            "ended_at": (start + timedelta(seconds=seconds)).astimezone(UTC).isoformat(timespec="milliseconds")}
    state.backlog.append(play)
    return play


def report_plays(base_url: str, state: TerminalState) -> int:
    """Post the backlog to /api/plays in batches; returns how many the server accepted this time.

    Plays stay in the backlog when the server is unreachable or answers 401/5xx; a batch refused as
    malformed (400/413) is dropped, since sending it again could never succeed."""
    sent = 0
    while state.backlog:
        batch = state.backlog[:MAX_BATCH]
        try:
            response = state.session.post(f"{base_url.rstrip('/')}/api/plays", json={"plays": batch},
                                          headers={"Authorization": f"Bearer {state.token}"}, timeout=TIMEOUT)
        except requests.RequestException as exc:
            log.info("play report failed (%s); %d plays kept for later", exc, len(state.backlog))
            break
        if response.ok:
            sent += len(batch)
        elif response.status_code in (400, 413, 422):
            log.warning("play batch refused (%s): %s", response.status_code, response.text[:200])
        else:
            log.info("play report answered %s; kept for later", response.status_code)
            break
        del state.backlog[: len(batch)]
    state.reported += sent
    return sent


def main(argv: list[str] | None = None) -> int:
    """`rongmei terminal-sim`: one simulated terminal polling, airing and reporting until Ctrl-C."""
    parser = argparse.ArgumentParser(prog="rongmei terminal-sim", description=__doc__.splitlines()[0])
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--zone", help="village zone code (loudspeaker terminal)")
    where.add_argument("--group", help="display group id (screen terminal)")
    parser.add_argument("--base-url", default="http://127.0.0.1:8800", help="distribution server")
    parser.add_argument("--token", default="", help="terminal token from `rongmei terminals add`")
    parser.add_argument("--interval", type=float, default=30.0, help="seconds between polls")
    parser.add_argument("--once", action="store_true", help="poll, air and report once, then exit")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    state = TerminalState(token=args.token)
    try:
        while True:
            now = datetime.now(UTC)
            if args.zone:
                result = poll_zone(args.base_url, args.zone, state)
                aired = play_due(state, now)
                what = aired["title"] if aired else "（静音）"
            else:
                result = poll_group(args.base_url, args.group, state)
                what = f"{len(play_schedule(state, now))} 个画面"
            sent = report_plays(args.base_url, state) if args.token else 0
            log.info("poll %s v%s, +%d files, %d failed · 播出：%s · reported %d, backlog %d",
                     result.status, result.version, result.downloaded, len(result.failed), what, sent,
                     len(state.backlog))
            if args.once:
                return 0 if result.status in (200, 304) else 1
            time.sleep(args.interval)
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
