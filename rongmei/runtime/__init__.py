"""Running the system: `rongmei up` and what it watches while it runs (`watch`), the private PostgreSQL for
Prefect, the warm-start client and server, our Prefect worker and work pool, the flow-run launcher, our runs in
Prefect (`runs`), riding out a Prefect API's passing trouble (`transient`) and the reconciler that finishes
stranded work.

This package's import must stay free (the warm-start client is imported on every flow run).
"""

__all__ = [
    "launch", "orchestration", "pgcluster", "prefect_db", "reconciler", "runs", "supervisor", "transient", "up",
    "warmstart", "warmstart_protocol", "warmstart_server", "watch", "worker", "workpool"
]
