"""Benchmark (issue 6): 2,000 simulated terminals against the distribution server, and nginx as reference.

Each terminal keeps one HTTP/1.1 connection open and, with no think time, polls its group's manifest or
its zone's playlist with `If-None-Match` (so most answers are 304; a few manifests are rewritten during
the run, which costs each of their terminals one 200). In the "polls + plays" phase every 20th request
is a proof-of-play batch. The same site directory is then served by Debian's nginx (one worker, etag on,
buffered access log) and polled the same way, in the same run.

    .venv/bin/python bench/terminals.py [--terminals 2000] [--seconds 8]

Everything is on 127.0.0.1 with ephemeral ports; both servers are child processes stopped at the end.
The load generator is one Python process (asyncio, raw HTTP/1.1), so on a small machine it competes with
the server for CPU and caps the figures of the faster server: read the ratio with that in mind.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._support import free_port
from publishers.base import Playable
from rongmei.core.settings import Settings
from rongmei.delivery.grants import replace_grants
from rongmei.distribution.terminals import hash_token
from rongmei.storage.store import Store
from rongmei.storage.tables import Play, Terminal
from rongmei.targets.directory import DirectoryTarget

GROUPS = 20
ZONES = 50
PLAY_EVERY = 20
SHA = "ab" * 32


def manifest(kind: str, name: str, version: int) -> str:
    items = [{"id": f"{name}-{i}", "url": f"http://127.0.0.1/media/{SHA}.mp3", "sha256": SHA, "bytes": 123456,
              "duration": 30, "title": "示例节目" * 3} for i in range(12)]
    return json.dumps({"manifest_version": version, kind: name, "items": items}, ensure_ascii=False)


def build_site(settings: Settings) -> list[str]:
    """Manifests for every group and zone; returns each terminal's poll path."""
    site = DirectoryTarget(settings.site_dir)
    for g in range(GROUPS):
        site.write_text(f"screens/g{g:02d}/manifest.json", manifest("display_group", f"g{g:02d}", 1))
    for z in range(ZONES):
        site.write_text(f"loudspeakers/1501{z:04d}/playlist.json", manifest("zone", f"1501{z:04d}", 1))
    site.write_text("index.html", "<!doctype html><title>首页</title>")
    return [f"/screens/g{g:02d}/manifest.json" for g in range(GROUPS)] + \
           [f"/loudspeakers/1501{z:04d}/playlist.json" for z in range(ZONES)]


def enroll(settings: Settings, count: int) -> list[str]:
    """Tokens for `count` terminals, inserted in one transaction (enroll_terminal does one each)."""
    store = Store.from_settings(settings)
    tokens = [f"bench-token-{i:05d}-{os.urandom(8).hex()}" for i in range(count)]
    with store.session() as session:
        session.add_all(Terminal(id=f"t{i:05d}", token_hash=hash_token(tok), group="bench")
                        for i, tok in enumerate(tokens))
        # Plays count only for what the terminals were given (rongmei.distribution.terminals): give them the bench item.
        replace_grants(session, item_id="bench-item", version_id=1, channel="screens",
                       playables=[Playable("group:bench", SHA)], now=datetime(2020, 1, 1, tzinfo=UTC), until=None)
    store.engine.dispose()
    return tokens


# Load generator --------------------------------------------------------------------------------------
class Connection(asyncio.Protocol):
    """One kept-alive HTTP/1.1 connection; one request in flight at a time."""

    def __init__(self) -> None:
        self.buffer = b""
        self.need: int | None = None
        self.status = 0
        self.etag = ""
        self.waiter: asyncio.Future | None = None
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport) -> None:  # type: ignore[no-untyped-def]
        self.transport = transport

    def connection_lost(self, exc) -> None:  # type: ignore[no-untyped-def]
        if self.waiter and not self.waiter.done():
            self.waiter.set_exception(ConnectionError("server closed the connection"))

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if self.need is None:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            lines = self.buffer[:end].split(b"\r\n")
            self.status = int(lines[0][9:12])
            length, self.etag = 0, ""
            for line in lines[1:]:
                name, _, value = line.partition(b":")
                name = name.lower()
                if name == b"content-length":
                    length = int(value)
                elif name == b"etag":
                    self.etag = value.strip().decode()
            self.need = end + 4 + length
        if len(self.buffer) >= self.need:
            self.buffer = self.buffer[self.need:]
            self.need = None
            if self.waiter and not self.waiter.done():
                self.waiter.set_result(self.status)

    async def request(self, data: bytes) -> int:
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(data)  # type: ignore[union-attr]
        return await self.waiter


@dataclass
class Stats:
    latencies: list[float] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)
    accepted_plays: int = 0
    errors: int = 0
    answered_terminals: int = 0  # terminals with at least one answer in the measured window (fairness)

    def add(self, status: int, seconds: float) -> None:
        self.latencies.append(seconds)
        self.statuses[status] = self.statuses.get(status, 0) + 1


async def terminal(port: int, path: str, token: str, number: int, plays: bool, stop_at: float,
                   measure_from: float, stats: Stats) -> None:
    loop = asyncio.get_running_loop()
    await asyncio.sleep((number % 200) * 0.002)  # stagger connects like a real fleet waking up
    try:
        _, conn = await loop.create_connection(Connection, "127.0.0.1", port)
    except OSError:
        stats.errors += 1
        return
    etag, count, started_play, measured = "", number % PLAY_EVERY, 0, 0  # reports spread over time
    base = datetime(2020, 6, 1, tzinfo=UTC) + timedelta(hours=number)  # in the past: reports of completed plays
    while (now := time.perf_counter()) < stop_at:
        count += 1
        if plays and count % PLAY_EVERY == 0:
            batch = []
            for _ in range(2):
                started_play += 1
                start = base + timedelta(seconds=started_play * 60)
                batch.append({"item": "bench-item", "sha256": SHA, "started_at": start.isoformat(),
                              "ended_at": (start + timedelta(seconds=30)).isoformat()})
            body = json.dumps({"plays": batch}).encode()
            request = (f"POST /api/plays HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer {token}\r\n"
                       f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body
        else:
            conditional = f"If-None-Match: {etag}\r\n" if etag else ""
            request = (f"GET {path} HTTP/1.1\r\nHost: bench\r\nUser-Agent: rongmei-terminal/bench\r\n"
                       f"X-Terminal-Id: t{number:05d}\r\n{conditional}\r\n").encode()
        try:
            status = await conn.request(request)
        except ConnectionError:
            stats.errors += 1
            return
        if request.startswith(b"GET") and status == 200:
            etag = conn.etag
        elif status == 200:
            stats.accepted_plays += 2
        if now >= measure_from:
            stats.add(status, time.perf_counter() - now)
            measured += 1
    stats.answered_terminals += measured > 0
    conn.transport.close()  # type: ignore[union-attr]


async def rewrite_some_manifests(settings: Settings, stop_at: float) -> None:
    """A publisher at work: one group's manifest changes every half second."""
    site, version = DirectoryTarget(settings.site_dir), 1
    while time.perf_counter() < stop_at:
        await asyncio.sleep(0.5)
        version += 1
        group = f"g{version % GROUPS:02d}"
        site.write_text(f"screens/{group}/manifest.json", manifest("display_group", group, version))


async def load(port: int, paths: list[str], tokens: list[str], seconds: float, plays: bool,
               settings: Settings) -> tuple[Stats, float]:
    stats = Stats()
    start = time.perf_counter()
    measure_from = start + 1.5  # connections opened and warm before we count
    stop_at = measure_from + seconds
    tasks = [terminal(port, paths[i % len(paths)], tokens[i], i, plays, stop_at, measure_from, stats)
             for i in range(len(tokens))]
    await asyncio.gather(rewrite_some_manifests(settings, stop_at), *tasks)
    return stats, seconds


def report(name: str, stats: Stats, seconds: float) -> dict[str, float]:
    lat = sorted(stats.latencies)
    if not lat:
        print(f"{name:<34} no completed requests (errors: {stats.errors})")
        return {"rps": 0.0, "p99_ms": 0.0}
    rps = len(lat) / seconds
    p50, p99 = lat[len(lat) // 2] * 1000, lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1000
    codes = ", ".join(f"{code}: {n}" for code, n in sorted(stats.statuses.items()))
    print(f"{name:<34} {rps:>9.0f} req/s   p50 {p50:7.1f} ms   p99 {p99:7.1f} ms   ({codes}; "
          f"terminals answered {stats.answered_terminals}; connection errors {stats.errors})")
    return {"rps": rps, "p99_ms": p99}


# Servers ---------------------------------------------------------------------------------------------
def wait_until_listening(port: int, proc: subprocess.Popen, what: str) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{what} exited with code {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"{what} did not listen on port {port} within 30 s")


def start_ours(settings: Settings, port: int, log_dir: Path) -> subprocess.Popen:
    env = dict(os.environ, RONGMEI_CONFIG="/nonexistent/rongmei.toml", RONGMEI_DATA_DIR=str(settings.data_dir),
               RONGMEI_SERVER_PORT=str(port), RONGMEI_SERVER_HOST="127.0.0.1")
    out = open(log_dir / "rongmei-server.log", "wb")  # noqa: SIM115 - closed with the process
    proc = subprocess.Popen([sys.executable, "-m", "rongmei.distribution.server"], env=env, stdout=out, stderr=subprocess.STDOUT)
    wait_until_listening(port, proc, "rongmei server")
    return proc


def start_nginx(site: Path, port: int, work: Path) -> subprocess.Popen:
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    user = "user root;" if os.geteuid() == 0 else ""  # the temp dir is private to us
    conf = work / "nginx.conf"
    conf.write_text(f"""
{user}
worker_processes 1;
pid {work}/nginx.pid;
error_log {work}/nginx-error.log warn;
events {{ worker_connections 8192; }}
http {{
    include /etc/nginx/mime.types;
    types {{ application/json json; }}
    access_log {work}/nginx-access.log combined buffer=64k flush=1s;
    sendfile on; tcp_nopush on;
    keepalive_timeout 75s; keepalive_requests 1000000;
    client_body_temp_path {work}/body; proxy_temp_path {work}/proxy; fastcgi_temp_path {work}/fcgi;
    uwsgi_temp_path {work}/uwsgi; scgi_temp_path {work}/scgi;
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        root {site};
        etag on;
        autoindex off;
        location / {{ add_header Cache-Control no-cache; }}
    }}
}}
""")
    proc = subprocess.Popen([nginx, "-p", str(work), "-c", str(conf), "-g", "daemon off;"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    wait_until_listening(port, proc, "nginx")
    return proc


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def run_phase(port: int, paths: list[str], tokens: list[str], seconds: float, plays: bool,
              settings: Settings) -> tuple[Stats, float]:
    try:
        import uvloop

        return uvloop.run(load(port, paths, tokens, seconds, plays, settings))
    except ImportError:
        return asyncio.run(load(port, paths, tokens, seconds, plays, settings))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--terminals", type=int, default=2000)
    parser.add_argument("--seconds", type=float, default=8.0, help="measured seconds per phase")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="rongmei-bench-") as tmp:
        work = Path(tmp)
        settings = Settings(_env_file=None, data_dir=work / "data", content_dir=work / "content")
        paths = build_site(settings)
        tokens = enroll(settings, args.terminals)
        print(f"{args.terminals} terminals, {len(paths)} manifests/playlists, {args.seconds:.0f} s per phase, "
              f"{os.cpu_count()} CPUs shared by server and load generator")
        results = {}
        ours_port = free_port()
        ours = start_ours(settings, ours_port, work)
        try:
            results["ours"] = report("rongmei: polls", *run_phase(ours_port, paths, tokens, args.seconds, False,
                                                                  settings))
            stats, seconds = run_phase(ours_port, paths, tokens, args.seconds, True, settings)
            results["ours_plays"] = report("rongmei: polls + plays (1 in 20)", stats, seconds)
        finally:
            stop(ours)
        store = Store.from_settings(settings)
        with store.session() as session:
            stored = session.query(Play).count()
        print(f"{'':<34} plays acknowledged {stats.accepted_plays}, stored {stored}")
        nginx_port = free_port()
        nginx = start_nginx(settings.site_dir, nginx_port, work)
        try:
            results["nginx"] = report("nginx 1.22 (1 worker): polls", *run_phase(
                nginx_port, paths, tokens, args.seconds, False, settings))
        finally:
            stop(nginx)
        if results["nginx"]["rps"]:
            ratio = results["ours"]["rps"] / results["nginx"]["rps"]
            print(f"rongmei / nginx throughput on polls: {ratio:.2f}; "
                  f"p99 {results['ours']['p99_ms']:.1f} ms vs {results['nginx']['p99_ms']:.1f} ms")


if __name__ == "__main__":
    main()
