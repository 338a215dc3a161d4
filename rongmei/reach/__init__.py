"""Reach (传播监测): how far each item went on every channel, from the numbers the channels give.

`window` (which days), `sources` (what the core reads for the channels), `report` (adding it up), `outputs`
(table, CSVs, chart, summary, CLI). The channels' side of the hook is `publishers.reach`.
"""

__all__ = ["outputs", "report", "sources", "window"]
