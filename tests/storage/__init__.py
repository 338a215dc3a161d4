"""Storage: the store, the ledger, state transitions and snapshots."""
