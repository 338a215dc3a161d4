"""The web channel: a static news site generated from approved versions.

`channel` delivers it (publish, correct, retract, expire), `records` keeps what the site knows per item and
makes the body safe HTML, `site` renders the pages, feed and sitemap, and `preview` renders the reviewers'
preview. The registry finds the channel here (entry point `publishers.web:WebPublisher`).
"""

from publishers.web.channel import WebPublisher

__all__ = ["WebPublisher", "channel", "preview", "records", "site"]
