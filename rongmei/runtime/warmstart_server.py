"""The warm-start server: keeps Prefect, our flows and the channels imported, and forks a child for every flow
run a client (rongmei.runtime.warmstart) hands it. Apart from the client, so the client's file stays the
standard library only and its import costs nothing.

    python -m rongmei.runtime.warmstart serve      # started by `rongmei up` next to the worker

A run whose environment means other Prefect settings, another Python, or code changed since the server
started is told to run cold; after code changed, the server restarts itself (exec) once it is idle.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from rongmei.runtime.warmstart_protocol import FORWARDED, HEADER, SOCKET_ENV, forward

__all__ = [
    "IMPORT_TIME_ENV", "KILL_GRACE_SECONDS", "PRELOADED", "Request", "SettingsCheck", "changed", "client_gone",
    "main", "preload", "receive", "reply", "run_engine", "say", "serve", "source_files", "why_cold"
]

# Imported once in the server so that no flow run pays for them. Our flows come on top (see `preload`).
PRELOADED = (
    "prefect.engine",
    "rongmei.runtime.launch",
    "prefect.flow_engine",
    "prefect.task_engine",
    "prefect.flow_runs",
    "prefect.input",
    "prefect.artifacts",
    "prefect.futures",
    "prefect.deployments",
    "prefect.deployments.steps",
    "prefect.runner._control_channel",
    "prefect._internal.metrics",
    "sqlalchemy.dialects.sqlite.pysqlite",
)
# Prefect reads its settings and Python its path at import time, and the server imported both before any
# request came: a flow run whose environment means other settings than the server's must run cold.
IMPORT_TIME_ENV = ("PYTHONPATH", "PYTHONHOME")
KILL_GRACE_SECONDS = 30  # as Prefect's workers give a cancelled run before SIGKILL


@dataclass
class Request:
    argv: list[str]
    env: dict[str, str]
    cwd: str
    python: str
    fds: list[int]


def say(message: str) -> None:
    print(f"{time.strftime('%Y-%m-%d %H:%M:%S')} warmstart: {message}", file=sys.stderr, flush=True)


def preload() -> dict[Path, float]:
    """Import what flow runs need; return our own source files with their mtimes, to notice edits."""
    import importlib

    for name in PRELOADED:
        importlib.import_module(name)
    from rongmei.runtime.launch import shipped_deployments

    # The flows our prefect.yaml deploys (the only ones a run may start), named there: the runtime reads them
    # as data rather than importing the flows package above it.
    for entrypoint in sorted(set(shipped_deployments().values())):
        importlib.import_module(entrypoint.rpartition(".")[0])
    from publishers import load_publishers

    load_publishers()  # the installed channels, scanned once here instead of in every run
    try:  # the center's own channels (extra_publishers) start warm too
        from rongmei.core.settings import load_settings

        plugins = {spec.partition(":")[0] for spec in load_settings().extra_publishers.values()}
    except Exception as exc:  # a broken configuration is for the flow run to report, not for us
        say(f"not preloading extra channels: {exc}")
        plugins = set()
    for name in sorted(plugins):
        try:
            importlib.import_module(name)
        except Exception as exc:
            say(f"could not preload {name}: {exc}")
    return source_files()


def source_files() -> dict[Path, float]:
    """Every imported module's file, ours and the installed packages' (an upgrade counts as a change too)."""
    files = {}
    for module in list(sys.modules.values()):
        origin = getattr(module, "__file__", None)
        if origin and (path := Path(origin)).is_file():
            files[path] = path.stat().st_mtime
    return files


def changed(files: dict[Path, float]) -> list[Path]:
    stale = []
    for path, mtime in files.items():
        try:
            if path.stat().st_mtime != mtime:
                stale.append(path)
        except FileNotFoundError:
            stale.append(path)
    return stale


def receive(conn: socket.socket) -> Request | None:
    conn.settimeout(5)
    data, fds, _flags, _addr = socket.recv_fds(conn, 1 << 16, 3)
    try:
        while len(data) < HEADER.size or len(data) < HEADER.size + HEADER.unpack_from(data)[0]:
            chunk = conn.recv(1 << 16)
            if not chunk:
                raise ConnectionError("request cut short")
            data += chunk
        message = json.loads(data[HEADER.size:])
    except (OSError, ValueError) as exc:
        for fd in fds:
            os.close(fd)
        say(f"bad request: {exc}")
        return None
    if len(fds) != 3:
        for fd in fds:
            os.close(fd)
        say("bad request: a client must pass its stdin, stdout and stderr")
        return None
    conn.settimeout(None)
    return Request(message["argv"], message["env"], message["cwd"], message["python"], fds)


class SettingsCheck:
    """Whether a flow run's environment gives the Prefect settings this server imported Prefect with.

    The worker hands runs its own view of the settings (under canonical names, defaults included), so the
    environments differ in form even when they agree; what counts is the settings they make. Worked out once
    per distinct environment (~80 ms), since a worker sends the same one every time."""

    def __init__(self) -> None:
        self.ours = self.settings_of(dict(os.environ))
        self.known: dict[tuple, list[str]] = {}

    @staticmethod
    def relevant(env: dict[str, str]) -> tuple:
        # PREFECT__* are per run (flow run id, control port), not settings.
        return tuple(sorted((k, v) for k, v in env.items() if k.startswith("PREFECT_") and not k.startswith("PREFECT__")))

    @staticmethod
    def settings_of(env: dict[str, str]) -> dict[str, str]:
        from prefect.settings import Settings

        saved = dict(os.environ)
        os.environ.clear()
        os.environ.update(env)
        try:
            values = Settings().to_environment_variables(exclude_unset=False)
        finally:
            os.environ.clear()
            os.environ.update(saved)
        return values | {key: env.get(key, "") for key in IMPORT_TIME_ENV}

    def differences(self, env: dict[str, str]) -> list[str]:
        key = (*self.relevant(env), *((k, env.get(k, "")) for k in IMPORT_TIME_ENV))
        if key not in self.known:
            theirs = self.settings_of(env)
            self.known[key] = sorted(k for k in self.ours.keys() | theirs.keys() if self.ours.get(k) != theirs.get(k))
        return self.known[key]


def why_cold(request: Request, settings: SettingsCheck, sources: dict[Path, float]) -> str | None:
    if Path(request.python).resolve() != Path(sys.executable).resolve():
        return f"the flow run uses another Python ({request.python})"
    if differences := settings.differences(request.env):
        return f"the warm server was started with other settings ({', '.join(differences)})"
    if stale := changed(sources):
        return f"code changed since the warm server started ({stale[0]})"
    return None


def client_gone(conn: socket.socket) -> bool:
    """Whether the client hung up. It sends nothing after its request, so a readable end means end of file:
    it gave up waiting for our answer (a busy machine) and is running the flow cold itself."""
    import select

    if not select.select([conn], [], [], 0)[0]:
        return False
    try:
        return conn.recv(1, socket.MSG_PEEK) == b""
    except OSError:
        return True


def reply(conn: socket.socket, message: dict) -> None:
    with contextlib.suppress(OSError):
        conn.sendall(json.dumps(message).encode() + b"\n")


def serve(path: Path, kill_grace: float = KILL_GRACE_SECONDS) -> Request | None:
    """Accept flow runs until stopped. Returns only in a forked child, with the flow run it must run."""
    import selectors

    started = time.monotonic()
    sources = preload()
    settings = SettingsCheck()
    say(f"ready in {time.monotonic() - started:.1f} s ({len(sys.modules)} modules imported) at {path}")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old_umask = os.umask(0o077)  # only our own user may hand us flow runs
    try:
        listener.bind(str(path))
    finally:
        os.umask(old_umask)
    listener.listen(64)
    wake_read, wake_write = os.pipe()
    os.set_blocking(wake_read, False)
    os.set_blocking(wake_write, False)
    signal.set_wakeup_fd(wake_write)
    stopping = False

    def stop(_signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGCHLD, lambda *_: None)
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    selector = selectors.DefaultSelector()
    selector.register(listener, selectors.EVENT_READ)
    selector.register(wake_read, selectors.EVENT_READ)
    children: dict[int, socket.socket | None] = {}  # pid -> its client's connection (None: client gone)
    doomed: dict[int, float] = {}  # pid -> when to kill it, if SIGTERM has not ended it by then
    reload_when_idle = False

    def reap() -> None:
        while children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            code = os.waitstatus_to_exitcode(status)
            conn = children.pop(pid, None)
            if conn is not None:
                selector.unregister(conn)
                reply(conn, {"exit": code})
                conn.close()

    while not stopping:
        if reload_when_idle and not children:
            say("code changed: restarting to load it")
            listener.close()
            path.unlink(missing_ok=True)
            os.execv(sys.executable, [sys.executable, "-m", "rongmei.runtime.warmstart", *sys.argv[1:]])
        for key, _events in selector.select(timeout=1):
            if key.fileobj is listener:
                conn, _ = listener.accept()
                request = receive(conn)
                if request is None:
                    conn.close()
                    continue
                if reason := why_cold(request, settings, sources):
                    say(f"run cold: {reason}")
                    for fd in request.fds:
                        os.close(fd)
                    reply(conn, {"cold": reason})
                    conn.close()
                    reload_when_idle = reload_when_idle or reason.startswith("code changed")
                    continue
                if client_gone(conn):  # a second copy of a run the client is starting cold: not ours to start
                    say(f"flow run {request.env.get('PREFECT__FLOW_RUN_ID', '?')}: the client gave up waiting; "
                        "not starting it here")
                    for fd in request.fds:
                        os.close(fd)
                    conn.close()
                    continue
                sys.stdout.flush()
                sys.stderr.flush()
                # A signal for the child that lands before it drops our handlers must wait, not be swallowed.
                signal.pthread_sigmask(signal.SIG_BLOCK, FORWARDED)
                pid = os.fork()
                if pid == 0:
                    for signum in (signal.SIGCHLD, signal.SIGTERM, signal.SIGHUP):
                        signal.signal(signum, signal.SIG_DFL)
                    signal.signal(signal.SIGINT, signal.default_int_handler)
                    signal.pthread_sigmask(signal.SIG_UNBLOCK, FORWARDED)
                    signal.set_wakeup_fd(-1)
                    for fd in (wake_read, wake_write):
                        os.close(fd)
                    for other in [listener, conn, *filter(None, children.values())]:
                        other.close()
                    selector.close()
                    return request
                signal.pthread_sigmask(signal.SIG_UNBLOCK, FORWARDED)
                for fd in request.fds:
                    os.close(fd)
                children[pid] = conn
                selector.register(conn, selectors.EVENT_READ)
                reply(conn, {"pid": pid})
                say(f"flow run {request.env.get('PREFECT__FLOW_RUN_ID', '?')} started warm as pid {pid}")
            elif key.fileobj == wake_read:
                try:
                    while os.read(wake_read, 512):
                        pass
                except BlockingIOError:
                    pass
                reap()
            else:  # a client's connection: readable only when the client is gone, so its child must go too
                conn = key.fileobj
                selector.unregister(conn)
                conn.close()
                for pid, owner in children.items():
                    if owner is conn:
                        children[pid] = None
                        say(f"the worker's process for pid {pid} is gone; stopping it")
                        forward(pid, signal.SIGTERM)
                        doomed[pid] = time.monotonic() + kill_grace
        reap()
        for pid, deadline in list(doomed.items()):
            if pid not in children:
                del doomed[pid]
            elif time.monotonic() > deadline:  # e.g. stuck flushing logs to a server that is gone
                say(f"pid {pid} did not stop within {kill_grace:g} s; killing it")
                forward(pid, signal.SIGKILL)
                del doomed[pid]
    for pid in doomed:  # nobody waits for these any more
        forward(pid, signal.SIGKILL)
    say("stopping (running flow runs carry on)")
    listener.close()
    path.unlink(missing_ok=True)
    return None


def run_engine(request: Request) -> int:
    """In the forked child: become the client's flow-run process and run it through rongmei.runtime.launch."""
    from rongmei.runtime import launch

    for target, fd in enumerate(request.fds):
        os.dup2(fd, target)
        os.close(fd)
    os.chdir(request.cwd)
    os.environ.clear()
    os.environ.update(request.env)
    return launch.main(request.argv)


def main(args: list[str]) -> None:
    """`serve [--socket PATH] [--kill-grace SECONDS]`, as passed to `python -m rongmei.runtime.warmstart`."""
    parser = argparse.ArgumentParser(prog="python -m rongmei.runtime.warmstart serve")
    parser.add_argument("serve")
    parser.add_argument("--socket", type=Path, default=os.environ.get(SOCKET_ENV))
    parser.add_argument("--kill-grace", type=float, default=KILL_GRACE_SECONDS,
                        help="seconds a run whose worker process is gone gets between SIGTERM and SIGKILL")
    options = parser.parse_args(args)
    if not options.socket:
        parser.error(f"give --socket or set {SOCKET_ENV}")
    request = serve(options.socket.resolve(), options.kill_grace)
    if request is not None:  # we are a forked child
        sys.exit(run_engine(request))
