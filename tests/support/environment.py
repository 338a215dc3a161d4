"""The session's process environment, set before anything imports Prefect (it reads its settings once, at
import): the Prefect server's address and login, no demo rongmei.toml, no telemetry. `tests/conftest.py`
imports this first."""

from __future__ import annotations

import base64
import os
import secrets
import socket

# Tests never read the demo rongmei.toml in the checkout; each builds the settings it needs.
os.environ["RONGMEI_CONFIG"] = "/nonexistent/rongmei.toml"
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# The `prefect_stack` fixture starts the session's server at this address.
PREFECT_PORT = free_port()
os.environ["PREFECT_API_URL"] = f"http://127.0.0.1:{PREFECT_PORT}/api"
# The session's Prefect server requires a login, as under `rongmei up`; every client in the tests sends it.
PREFECT_AUTH = f"rongmei-test:{secrets.token_urlsafe(16)}"
os.environ["PREFECT_API_AUTH_STRING"] = PREFECT_AUTH


def prefect_auth_header(auth: str = PREFECT_AUTH) -> dict[str, str]:
    """What Prefect's own clients send: HTTP Basic with the whole auth string as `user:password`."""
    return {"Authorization": "Basic " + base64.b64encode(auth.encode()).decode()}
