"""The release: the exact approved version as the channels receive it, and the check that it may go out.

Kept apart from the deliveries so that what goes out (content, renditions, who signed it) is built in one place
for every channel, and the publish run's first question (may this version go out at all?) is answered by the
delivery gate before any channel is planned.
"""

from __future__ import annotations

import copy
from typing import Any

from sqlalchemy import select

from publishers.base import Release
from rongmei.core.errors import DeliveryRefused
from rongmei.core.settings import Settings
from rongmei.delivery.gate import Caller, record_refusal, refusal_reason
from rongmei.storage.snapshots import VersionSnapshot
from rongmei.storage.store import Store
from rongmei.storage.tables import SignOff

__all__ = ["build_release", "check_release"]


def build_release(store: Store, version: VersionSnapshot, *, previous: dict[str, Any] | None = None,
                  extra: dict[str, Any] | None = None) -> Release:
    """The release of `version` with the sign-offs that cover exactly it (content and renditions)."""
    with store.session() as session:
        signoffs = session.scalars(
            select(SignOff).where(SignOff.version_id == version.id, SignOff.signed_hash == version.signed_hash)
        ).all()
        approved_at = max((s.signed_at for s in signoffs), default=None)
        signed = tuple({"stage": s.stage, "reviewer": s.reviewer_id, "decision": s.decision} for s in signoffs)
    return Release(
        item_id=version.item_id,
        version=version.number,
        version_id=version.id,
        content_hash=version.content_hash,
        # Copies: releases of one snapshot go to channels in parallel threads, and none may see another's changes.
        meta=version.meta.model_copy(deep=True),
        body=version.body,
        files=copy.deepcopy(version.files),
        renditions=copy.deepcopy(version.renditions),
        blob_path=store.blob_path,
        approved_at=approved_at,
        signoffs=signed,
        previous=previous,
        extra=extra or {},
    )


def check_release(store: Store, settings: Settings, version_id: int, caller: Caller) -> VersionSnapshot:
    """The version, read once for the run, if it may go out now; otherwise raise DeliveryRefused (recorded in the
    ledger; see rongmei.delivery.gate). Raises StoreError when there is no such version."""
    with store.session() as session:
        version = store.version(session, version_id)
        reason = refusal_reason(session, settings, version)
        if reason is not None:
            record_refusal(session, version, caller, reason)
        snapshot = VersionSnapshot.of(version)
    if reason is not None:
        raise DeliveryRefused(f"拒绝发布：{reason}。已记入审计记录。")
    return snapshot
