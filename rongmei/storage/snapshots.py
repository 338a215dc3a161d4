"""A version as a flow run reads it: loaded once, frozen, and handed to the plain functions of the run.

A version's content never changes once stored, so reading it once per run is enough; its standing (state,
preview token) may change meanwhile, which is why every function that changes state re-reads the row inside its
own transaction and checks it there (rongmei.storage.transitions), never trusting the snapshot for that.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

from rongmei.core.model import ItemMeta
from rongmei.core.states import ItemState
from rongmei.storage.store import Store
from rongmei.storage.tables import Version

__all__ = ["VersionSnapshot", "load_version"]


@dataclass(frozen=True)
class VersionSnapshot:
    """One version as it stood when the run loaded it. Picklable (plain dicts), so it may be a task parameter."""

    id: int
    item_id: str
    number: int
    state: ItemState
    drop_name: str
    archived_to: str
    content_hash: str
    renditions_hash: str
    signed_hash: str  # what a sign-off covers: the content and the renditions (Version.signed_hash)
    meta: ItemMeta
    body: str
    files: dict[str, dict[str, Any]]
    checks: tuple[dict[str, Any], ...]
    renditions: dict[str, dict[str, Any]]
    preview_token: str

    @classmethod
    def of(cls, version: Version) -> VersionSnapshot:
        """Copy a row out of its session (the JSON columns deeply: nothing of the row is shared)."""
        return cls(
            id=version.id,
            item_id=version.item_id,
            number=version.number,
            state=ItemState(version.state),
            drop_name=version.drop_name,
            archived_to=version.archived_to or "",
            content_hash=version.content_hash,
            renditions_hash=version.renditions_hash or "",
            signed_hash=version.signed_hash,
            meta=ItemMeta.model_validate(version.meta),
            body=version.body or "",
            files=copy.deepcopy(dict(version.files or {})),
            checks=tuple(copy.deepcopy(list(version.checks or []))),
            renditions=copy.deepcopy(dict(version.renditions or {})),
            preview_token=version.preview_token or "",
        )


def load_version(store: Store, version_id: int) -> VersionSnapshot:
    """Read the version once; raises StoreError when there is no such version."""
    with store.session() as session:
        return VersionSnapshot.of(store.version(session, version_id))
