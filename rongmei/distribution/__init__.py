"""The distribution server terminals and readers poll, and the terminals with their grants and proof of play.

`server` runs it; `app` routes to `files` (site and previews), `plays_api` (POST /api/plays) and `accesslog`;
`protocol` guards the HTTP; `terminals` (enrolment, grants) and `plays` (proof of play) are the data side.
"""

__all__ = [
    "accesslog", "app", "files", "plays", "plays_api", "protocol", "responses", "server", "terminal_sim",
    "terminals"
]
