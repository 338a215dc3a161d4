"""Running the distribution server under uvicorn: binding its port, in a thread of this process (`rongmei up`,
tests) or in the foreground (`python -m rongmei.distribution.server`, used by bench/terminals.py).

What it serves is rongmei.distribution.app; the HTTP protocol with its guards is rongmei.distribution.protocol.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from dataclasses import dataclass
from typing import Any

from rongmei.core.errors import ConfigError
from rongmei.core.settings import Settings
from rongmei.distribution.app import DistributionApp, make_app
from rongmei.distribution.protocol import guarded_protocol

__all__ = ["RunningServer", "bind", "run", "serve_in_thread"]

log = logging.getLogger(__name__)


def _config(app: DistributionApp) -> Any:
    import uvicorn

    return uvicorn.Config(
        app,
        http=guarded_protocol(app.settings.server_header_timeout),
        # The stdlib loop, not uvloop: measured with 2,000 terminals (bench/terminals.py), uvloop served
        # ~1.5x more requests but left ~70% of freshly connected terminals unanswered for the whole run,
        # while the stdlib loop answered every terminal evenly.
        loop="asyncio",
        lifespan="on",
        access_log=False,  # we write our own, in the format the reach report reads
        log_level="warning",
        server_header=False,
        timeout_keep_alive=75,  # terminals poll on one kept-alive connection
        backlog=4096,
    )


def bind(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ConfigError(
            f"分发服务器无法监听 {host}:{port}（{exc.strerror}）：端口可能已被占用，"
            "请在 rongmei.toml 里改 server_port 或设置 RONGMEI_SERVER_PORT"
        ) from exc
    sock.listen(4096)
    sock.setblocking(False)
    return sock


@dataclass
class RunningServer:
    url: str
    port: int
    _server: Any
    _thread: threading.Thread

    def stop(self, timeout: float = 10.0) -> None:
        """Stop accepting, finish open requests, flush the access log."""
        self._server.should_exit = True
        self._thread.join(timeout)
        if self._thread.is_alive():
            self._server.force_exit = True
            self._thread.join(timeout)


def serve_in_thread(settings: Settings, host: str = "127.0.0.1", port: int = 0,
                    store: Any = None) -> RunningServer:
    """Start the server on its own event loop in a daemon thread; returns once it accepts connections."""
    import uvicorn

    sock = bind(host, port)
    bound_port = sock.getsockname()[1]
    server = uvicorn.Server(_config(make_app(settings, store)))
    failure: list[BaseException] = []

    def run() -> None:
        try:
            server.run(sockets=[sock])
        except BaseException as exc:
            failure.append(exc)
        finally:
            sock.close()

    thread = threading.Thread(target=run, name=f"rongmei-server-{bound_port}", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if failure or not thread.is_alive():
            raise ConfigError(f"分发服务器启动失败：{failure[0] if failure else '线程已退出'}")
        if time.monotonic() > deadline:
            server.should_exit = True
            raise ConfigError("分发服务器 30 秒内没有启动完成")
        time.sleep(0.01)
    shown = f"[{host}]" if ":" in host else host
    return RunningServer(url=f"http://{shown}:{bound_port}", port=bound_port, _server=server, _thread=thread)


def run(settings: Settings) -> None:
    """Serve until Ctrl-C (SIGINT/SIGTERM), in the foreground."""
    import uvicorn

    sock = bind(settings.server_host, settings.server_port)
    log.info("distribution server on %s:%s serving %s", settings.server_host, sock.getsockname()[1],
             settings.site_dir)
    uvicorn.Server(_config(make_app(settings))).run(sockets=[sock])


if __name__ == "__main__":  # `python -m rongmei.distribution.server`: used by bench/terminals.py
    logging.basicConfig(level=logging.INFO)
    run(Settings())
