"""The report's window: which local days a reach report covers, and how they map to UTC and back.

Days are local days in `settings.timezone`; the store and the access log keep UTC.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from rongmei.core.errors import RongmeiError
from rongmei.core.settings import Settings

__all__ = [
    "DEFAULT_DAYS", "ReportError", "local_day", "local_today", "parse_day", "report_window", "utc_bounds"
]

DEFAULT_DAYS = 7


class ReportError(RongmeiError):
    """Raised when a report cannot be made as asked (bad dates, window backwards)."""


def local_today(settings: Settings) -> date:
    return datetime.now(ZoneInfo(settings.timezone)).date()


def parse_day(text: str, what: str) -> date:
    try:
        return date.fromisoformat(text.strip())
    except ValueError as exc:
        raise ReportError(f"{what}日期 {text!r} 无法识别：请写成 2026-05-01 这样的 年-月-日") from exc


def report_window(settings: Settings, since: str | date | None = None, until: str | date | None = None,
                  *, today: date | None = None) -> tuple[date, date]:
    """(since, until) inclusive local days; defaults: until today, since `DEFAULT_DAYS` days before."""
    today = today or local_today(settings)
    end = parse_day(until, "截止") if isinstance(until, str) else (until or today)
    start = parse_day(since, "起始") if isinstance(since, str) else (since or end - timedelta(days=DEFAULT_DAYS - 1))
    if start > end:
        raise ReportError(f"起始日期 {start} 晚于截止日期 {end}：请对调两者")
    return start, end


def utc_bounds(settings: Settings, since: date, until: date) -> tuple[datetime, datetime]:
    """[start, end) in UTC of the local days since..until."""
    zone = ZoneInfo(settings.timezone)
    start = datetime.combine(since, time.min, zone).astimezone(UTC)
    end = datetime.combine(until + timedelta(days=1), time.min, zone).astimezone(UTC)
    return start, end


def local_day(moment: datetime, zone: ZoneInfo) -> date:
    if moment.tzinfo is None:  # SQLite hands back naive datetimes; the store writes UTC
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(zone).date()
