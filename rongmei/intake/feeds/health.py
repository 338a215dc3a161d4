"""Each source's health as `rongmei status` and the pull-feeds flow's artifact show it: how it answered last,
what it brought, and how many of its entries were ever taken.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select

from rongmei.core.model import SHANGHAI
from rongmei.intake.feeds.pull import ensure_tables
from rongmei.storage.store import Store
from rongmei.storage.tables import FeedEntry, FeedSource

__all__ = ["STATUS_LABELS", "feed_health", "health_markdown"]


def feed_health(store: Store) -> list[dict[str, Any]]:
    """Per-source health for `rongmei status`: one dict per source ever pulled, sorted by name."""
    ensure_tables(store)
    with store.session() as session:
        seen = dict(
            session.execute(select(FeedEntry.source, func.count(FeedEntry.id)).group_by(FeedEntry.source)).all()
        )
        rows = session.scalars(select(FeedSource).order_by(FeedSource.name, FeedSource.url)).all()
        return [
            {
                "name": row.name,
                "url": row.url,
                "last_status": row.last_status,
                "last_http_status": row.last_http_status,
                "last_error": row.last_error,
                "last_checked": _local_iso(row.last_checked),
                "last_success": _local_iso(row.last_success),
                "last_new": row.last_new,
                "entries_seen": int(seen.get(row.url, 0)),
            }
            for row in rows
        ]


def _local_iso(stamp: datetime | None) -> str | None:
    # SQLite hands back naive datetimes; we only ever store UTC.
    if stamp is None:
        return None
    aware = stamp if stamp.tzinfo else stamp.replace(tzinfo=UTC)
    return aware.astimezone(SHANGHAI).isoformat(timespec="seconds")


STATUS_LABELS = {"ok": "正常", "not_modified": "无更新", "warning": "格式有误", "error": "失败", "": "未抓取"}


def health_markdown(health: list[dict[str, Any]]) -> str:
    """The health table as Markdown (Prefect artifact, CLI)."""
    rows = ["| 来源 | 状态 | 本次新增 | 累计条目 | 最近检查 | 问题 |", "|---|---|---|---|---|---|"]
    for h in health:
        problem = (h["last_error"] or "—").replace("|", "\\|").replace("\n", " ")
        rows.append(
            f"| [{h['name']}]({h['url']}) | {STATUS_LABELS.get(h['last_status'], h['last_status'])} | "
            f"{h['last_new']} | {h['entries_seen']} | {h['last_checked'] or '—'} | {problem} |"
        )
    return "\n".join(rows)
