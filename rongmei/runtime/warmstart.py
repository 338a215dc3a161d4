"""Warm start for flow runs: the client of a fork server that keeps Prefect and rongmei imported.

A process worker starts every flow run as a new Python process. Out of the box that is two of them (Prefect's
workspace supervisor, then `python -m prefect.engine`), each importing Prefect: about 2.5 s of the time between
a chief editor's 终审 and the page going live. Our deployments' command is `python -m rongmei.runtime.warmstart`
instead. That client uses the standard library only (it starts in ~20 ms); it hands its stdin/stdout/stderr,
environment and working directory to the warm server over a unix socket, and the server forks a child that has
everything imported already and runs the Prefect engine there. The client stays the run's process as far as the
worker is concerned: it forwards signals (cancellation) to the child and exits the way the child exited.

When warm start cannot be used (no server, a server started with other Prefect settings, code changed since
the server started), the client becomes `python -m rongmei.runtime.launch` itself (exec, same PID): a flow run never
depends on the warm server, it is only slower without it. Either way the run goes through `rongmei.runtime.launch`,
which refuses runs of deployments this checkout does not ship, then becomes Prefect's engine.

    python -m rongmei.runtime.warmstart            # client: the deployments' command (prefect.yaml)
    python -m rongmei.runtime.warmstart serve      # server: started by `rongmei up` next to the worker

This module is the client and imports nothing outside the standard library (rongmei.runtime.warmstart_protocol
is what both sides share), so the client stays fast; the server is rongmei.runtime.warmstart_server, imported
only for `serve`.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
import time
from collections.abc import Iterator

from rongmei.runtime.warmstart_protocol import FORWARDED, HEADER, SOCKET_ENV, forward

__all__ = [
    "CONNECT_TIMEOUT", "FIRST_REPLY_TIMEOUT", "LAUNCH_MODULE", "alive", "client", "exit_like", "main", "read_lines",
    "run_cold", "send_message",
]

LAUNCH_MODULE = "rongmei.runtime.launch"  # checks the run's deployment, then runs prefect.engine
CONNECT_TIMEOUT = 10  # seconds to reach the server and hand over the run
# Seconds the server may take to check the run and fork it (a first run's settings check costs seconds on a
# busy machine). A client that gives up runs cold; the server then sees it gone and does not start it too.
FIRST_REPLY_TIMEOUT = 30


def run_cold(reason: str | None) -> None:
    """Become `python -m rongmei.runtime.launch` in this very process (the worker keeps the PID it knows)."""
    if reason:
        print(f"rongmei.runtime.warmstart: {reason}; starting the flow run the usual (slower) way", file=sys.stderr,
              flush=True)
    os.execv(sys.executable, [sys.executable, "-m", LAUNCH_MODULE, *sys.argv[1:]])


def send_message(sock: socket.socket, message: dict, fds: list[int] | None = None) -> None:
    payload = json.dumps(message).encode()
    data = HEADER.pack(len(payload)) + payload
    sent = socket.send_fds(sock, [data], fds) if fds else sock.send(data)
    if sent < len(data):
        sock.sendall(data[sent:])


def client() -> None:
    """Run one flow run in a child of the warm server, or cold when there is no usable server."""
    path = os.environ.get(SOCKET_ENV)
    if not path:
        run_cold(None)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(CONNECT_TIMEOUT)
    try:
        sock.connect(path)
        send_message(
            sock,
            {"argv": sys.argv[1:], "env": dict(os.environ), "cwd": os.getcwd(), "python": sys.executable},
            fds=[0, 1, 2],
        )
        sock.settimeout(FIRST_REPLY_TIMEOUT)
        replies = read_lines(sock)
        first = next(replies, None)
    except OSError as exc:
        run_cold(f"no warm server at {path} ({exc.strerror or exc})")
    if first is None or "cold" in first:
        run_cold(first["cold"] if first else "the warm server closed the connection")
    child = int(first["pid"])
    for signum in FORWARDED:
        signal.signal(signum, lambda signum, _frame: forward(child, signum))
    sock.settimeout(None)
    last = next(replies, None)
    if last is None:  # the server went away: the child still runs, and is ours to wait for
        while alive(child):
            time.sleep(0.2)
        print("rongmei.runtime.warmstart: lost the warm server; the flow run's exit code is unknown", file=sys.stderr)
        sys.exit(70)
    exit_like(int(last["exit"]))


def read_lines(sock: socket.socket) -> Iterator[dict]:
    buffer = b""
    while True:
        while b"\n" in buffer:
            line, buffer = buffer.split(b"\n", 1)
            yield json.loads(line)
        try:
            chunk = sock.recv(4096)
        except InterruptedError:
            continue
        if not chunk:
            return
        buffer += chunk


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def exit_like(code: int) -> None:
    """Exit with the child's code, or die of the child's signal, as the cold engine process would have."""
    if code < 0:
        if -code not in (signal.SIGKILL, signal.SIGSTOP):  # those two take no handler (EINVAL): they need none
            signal.signal(-code, signal.SIG_DFL)
        os.kill(os.getpid(), -code)
        time.sleep(1)
        code = 128 - code
    sys.exit(code)


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] != "serve":
        client()
        return
    from rongmei.runtime.warmstart_server import main as serve_main

    serve_main(args)


if __name__ == "__main__":
    main()
