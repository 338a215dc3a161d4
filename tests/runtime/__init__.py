"""Running the system: `rongmei up`, the warm start, Prefect on PostgreSQL."""
