"""The ground floor: the item model, errors, settings, states, editor-facing labels, zones and file naming.

Nothing here imports anything of ours from a floor above.
"""

__all__ = ["errors", "faults", "files", "labels", "media_settings", "model", "settings", "states", "zones"]
