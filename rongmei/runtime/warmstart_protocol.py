"""What the warm-start client and server share: the socket's environment variable, the framing of the
client's request, the signals a client passes on and how. Its own module so that the server need not import
the client, and the client nothing but the standard library.
"""

from __future__ import annotations

import contextlib
import os
import signal
import struct

__all__ = ["FORWARDED", "HEADER", "SOCKET_ENV", "forward"]

SOCKET_ENV = "RONGMEI_WARMSTART_SOCKET"
HEADER = struct.Struct("!I")  # the length of the request's JSON, before it
FORWARDED = {signal.SIGTERM, signal.SIGINT, signal.SIGHUP}  # what the client passes on to its flow run


def forward(child: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(child, signum)
