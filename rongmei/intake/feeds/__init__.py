"""Upstream feeds (issue 7, item 1): RSS/Atom sources pulled on a schedule and turned into reprint drops.

A pull never publishes anything: each new entry becomes an ordinary drop in `content/inbox/` (front matter
with `source` and `source_url`), so it goes through the same ingest, checks and three-stage sign-off as an
editor's own work. The package owns the conversation with the upstream server (`fetch`: conditional GET),
turning a feed entry into a drop (`html2md`, `drops`), one pull of a source and remembering which entries it
has already taken (`pull`, with the tables `FeedSource` and `FeedEntry` in rongmei.storage.tables), so a
re-published or edited entry upstream never comes in twice, and each source's health (`health`).
"""

__all__ = ["drops", "fetch", "health", "html2md", "pull"]
