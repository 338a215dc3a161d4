"""Running the system: `rongmei up` and what it watches while it runs, the private PostgreSQL for Prefect, the
warm-start client and server, our Prefect worker and work pool, and the flow-run launcher.

This package's import must stay free (the warm-start client is imported on every flow run).
"""

__all__ = [
    "launch", "orchestration", "pgcluster", "supervisor", "up", "warmstart", "warmstart_protocol",
    "warmstart_server", "watch", "worker", "workpool"
]
