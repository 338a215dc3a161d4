"""The domain model: what an item is, as editors describe it in front matter.

Channels are not part of it: `channels` is a list of names, checked against the registered channels by the
pre-checks (rongmei.intake.checks), so a plugin channel is as good as a built-in one.
"""

from __future__ import annotations

import re
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any
from zoneinfo import ZoneInfo

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator

__all__ = [
    "ITEM_ID", "SHANGHAI", "CheckResult", "ItemMeta", "Kind", "Language", "Priority", "Severity",
    "as_local_time"
]

SHANGHAI = ZoneInfo("Asia/Shanghai")
ITEM_ID = re.compile(r"^[A-Za-z0-9\u4e00-\u9fff][A-Za-z0-9_\-.\u4e00-\u9fff]{0,99}$")


class Kind(StrEnum):
    article = "article"
    video = "video"
    audio = "audio"
    notice = "notice"


class Priority(StrEnum):
    normal = "normal"
    urgent = "urgent"
    emergency = "emergency"


class Language(StrEnum):
    zh = "zh"
    mn = "mn"
    zh_mn = "zh+mn"


class Severity(StrEnum):
    blocking = "blocking"
    warning = "warning"


def as_local_time(value: Any) -> datetime | None:
    """Parse an ISO 8601 time; a time without an offset is Asia/Shanghai (the newsroom's clock)."""
    if value in (None, ""):
        return None
    parsed = value if isinstance(value, datetime) else datetime.fromisoformat(str(value).strip())
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=SHANGHAI)


def _as_list(value: Any) -> list[Any]:
    """Front matter may give one value where a list is meant (`zones: 150121101`); numbers become codes."""
    if value is None:
        return []
    if isinstance(value, str | int):
        return [str(value)]
    return [str(v) if isinstance(v, int) else v for v in value]


# A list field of the front matter that also takes a single value.
_NameList = Annotated[list[str], BeforeValidator(_as_list)]


class ItemMeta(BaseModel):
    """Front matter of a drop, validated. Field names are the contract in DESIGN.md."""

    model_config = ConfigDict(extra="forbid", use_enum_values=False)

    id: str
    title: str
    author: str
    kind: Kind = Kind.article
    summary: str = ""
    channels: _NameList = Field(default_factory=list)  # names of registered channels
    zones: _NameList = Field(default_factory=list)
    screens: _NameList = Field(default_factory=list)
    tags: _NameList = Field(default_factory=list)
    publish_at: datetime | None = None
    expires: datetime | None = None
    priority: Priority = Priority.normal
    source: str = ""
    source_url: str = ""
    language: Language = Language.zh
    # Traditional Mongolian title and summary for `language: mn | zh+mn` (bilingual screen cards, issue 6).
    title_mn: str = ""
    summary_mn: str = ""

    @field_validator("publish_at", "expires", mode="before")
    @classmethod
    def _local_time(cls, value: Any) -> datetime | None:
        return as_local_time(value)

    @field_validator("title", "author", "summary", "source", mode="before")
    @classmethod
    def _strip(cls, value: Any) -> Any:
        return value.strip() if isinstance(value, str) else value

    @property
    def is_reprint(self) -> bool:
        return bool(self.source or self.source_url)

    def to_json(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


class CheckResult(BaseModel):
    """One finding of the automatic pre-checks, in the editors' language."""

    code: str = Field(description="Stable machine name, e.g. 'title.missing'.")
    severity: Severity
    message: str = Field(description="What is wrong, in Chinese.")
    fix: str = Field(default="", description="How to fix it, in Chinese.")
    channel: str | None = None

    @property
    def blocking(self) -> bool:
        return self.severity is Severity.blocking
