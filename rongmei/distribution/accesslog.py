"""The rule that makes a line of the distribution server's access log a page view (`is_page_view`).

Minimal stand-in while the server is being split: it re-exports the rule from `rongmei.distribution.server` so
the reach report can import it from its lasting home; the split moves the access log itself here.
"""

from __future__ import annotations

from rongmei.distribution.server import is_page_view

__all__ = ["is_page_view"]
