"""rongmei (融媒): the domain core, one subpackage per floor of the pipeline, lowest first: core, storage,
targets, renditions, intake, review, delivery, distribution, reach, runtime, cli (docs/architecture.md).

This import stays free: the warm-start client imports `rongmei.runtime` on every flow run."""

__all__ = [
    "cli", "core", "delivery", "distribution", "intake", "reach", "renditions", "review", "runtime",
    "storage", "targets"
]

