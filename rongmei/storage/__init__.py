"""Where facts are kept: the tables, the store (database and content-addressed blobs), the tamper-evident
ledger, and the private permissions of the data directory.
"""

__all__ = [
    "ledger", "ledger_chain", "ledger_checkpoints", "ledger_keeper", "privacy", "snapshots", "store",
    "tables", "transitions"
]
