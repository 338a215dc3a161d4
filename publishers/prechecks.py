"""Findings several channels' pre-checks make, worded once for editors: a field too long for the channel, and
names in a front-matter field the configuration does not know. Each channel decides its own rules; only the
wording is shared.
"""

from __future__ import annotations

from collections.abc import Mapping

from rongmei.core.model import CheckResult, ItemMeta, Severity

__all__ = ["FIELD_LABELS", "too_long", "unknown_names"]

FIELD_LABELS = {"title": "标题", "author": "作者", "summary": "摘要"}


def too_long(channel: str, channel_label: str, meta: ItemMeta, limits: Mapping[str, int]) -> list[CheckResult]:
    """Blocking findings for every front-matter field longer than the channel allows (`limits`: field -> chars)."""
    found: list[CheckResult] = []
    for field_name, limit in limits.items():
        value = str(getattr(meta, field_name) or "")
        if len(value) > limit:
            label = FIELD_LABELS[field_name]
            found.append(CheckResult(
                code=f"{channel}.{field_name}.too_long",
                severity=Severity.blocking,
                message=f"{label}有 {len(value)} 个字，{channel_label}最多允许 {limit} 个字。",
                fix=f"请把{label}缩短到 {limit} 字以内，或从 channels 里去掉 {channel}。",
                channel=channel,
            ))
    return found


def unknown_names(channel: str, code: str, missing: list[str], message: str, fix: str) -> list[CheckResult]:
    """One blocking finding for the names in `missing` (none when it is empty); `message` ends in the list."""
    if not missing:
        return []
    return [CheckResult(code=code, severity=Severity.blocking, message=f"{message}{'、'.join(missing)}。", fix=fix,
                        channel=channel)]
