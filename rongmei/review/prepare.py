"""Before the first human stage: make every rendition the channels need and a preview for reviewers.

Reviewers approve what will actually go out, so the rendition manifest's hash is part of what each
sign-off covers (`Version.signed_hash`). While a version is in review this step runs on every (re-)run of
the review flow; renditions come from a content-addressed cache, and a changed result voids earlier
approvals. After the final approval the renditions are frozen.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import shutil
import time
from collections.abc import Callable
from pathlib import Path

from publishers import channels_of, registry_for
from publishers.base import Release
from rongmei.core.files import extension_for
from rongmei.core.settings import Settings
from rongmei.core.states import ItemState
from rongmei.storage import ledger
from rongmei.storage.snapshots import VersionSnapshot
from rongmei.storage.store import Store

__all__ = [
    "prepare_preview", "prepare_renditions", "progress_path", "read_progress", "render_channel_previews"
]

log = logging.getLogger(__name__)


def progress_path(settings: Settings, version_id: int) -> Path:
    return settings.data_dir / "progress" / f"v{version_id}.json"


def read_progress(settings: Settings, version_id: int) -> dict | None:
    """The render in progress for `rongmei status`: {"label", "fraction", "at"} or None."""
    try:
        return json.loads(progress_path(settings, version_id).read_text(encoding="utf-8"))
    except (FileNotFoundError, ValueError):
        return None


def _recording(settings: Settings, version_id: int,
               report: Callable[[str, float], None] | None) -> Callable[[str, float], None]:
    path = progress_path(settings, version_id)
    path.parent.mkdir(parents=True, exist_ok=True)

    def progress(label: str, fraction: float) -> None:
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"label": label, "fraction": round(fraction, 3), "at": time.time()},
                                  ensure_ascii=False), encoding="utf-8")
        os.replace(tmp, path)
        if report is not None:
            report(label, fraction)

    return progress


def prepare_renditions(store: Store, settings: Settings, snapshot: VersionSnapshot,
                       progress: Callable[[str, float], None] | None = None) -> bool:
    """Produce the renditions; returns True when they changed (which voids earlier approvals). The snapshot no
    longer shows them: load the version again to read them."""
    from rongmei.renditions import manifest_hash, produce_renditions

    if snapshot.state != ItemState.in_review:
        return False
    version_id, meta, body, files = snapshot.id, snapshot.meta, snapshot.body, dict(snapshot.files)
    work_dir = settings.data_dir / "work" / f"v{version_id}"
    work_dir.mkdir(parents=True, exist_ok=True)
    try:
        manifest = produce_renditions(
            meta=meta, body=body, files=files, blob_path=store.blob_path, put_file=store.put_file,
            settings=settings, channels=channels_of(meta, settings), work_dir=work_dir,
            progress=_recording(settings, version_id, progress),
        )
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)
        progress_path(settings, version_id).unlink(missing_ok=True)
    digest = manifest_hash(manifest)
    with store.session() as session:
        version = store.version(session, version_id)
        if version.renditions_hash == digest:
            return False
        had = bool(version.renditions_hash)
        version.renditions = manifest
        version.renditions_hash = digest
        ledger.record(session, "renditions_changed" if had else "rendered", actor="system:renditions",
                      item_id=version.item_id, version=version.number, content_hash=version.signed_hash,
                      details={"renditions": {k: v.get("sha256") for k, v in manifest.items()},
                               "manifest_hash": digest})
        return had


def prepare_preview(store: Store, settings: Settings, snapshot: VersionSnapshot, release: Release) -> str:
    """Render the reviewer's preview of `release` (the version as it would go out) under an unguessable token;
    returns the token."""
    with store.session() as session:
        version = store.version(session, snapshot.id)  # the token as stored now: another run may have made it
        token = version.preview_token or secrets.token_urlsafe(18)
        version.preview_token = token
    renditions = snapshot.renditions
    render_channel_previews(release, settings, token)
    folder = settings.data_dir / "preview" / token / "renditions"
    folder.mkdir(parents=True, exist_ok=True)
    for key, facts in renditions.items():
        target = folder / f"{key}.{extension_for(facts.get('mime'))}"
        if not target.exists():
            store.copy_blob(str(facts["sha256"]), target)
    return token


def render_channel_previews(release: Release, settings: Settings, token: str) -> list[str]:
    """Each of the item's channels renders its view of the item (`Publisher.preview`); returns the pages.

    Reviewers read the item on a page even when none of its channels has one (a loudspeaker notice): then the
    first channel, in channel order, that renders a page does it, as the preview always was."""
    registry = registry_for(settings)
    own = [registry.publishers[name] for name in channels_of(release.meta, settings) if name in registry.publishers]
    pages = [page for channel in own if (page := channel.preview(release, settings, token))]
    if not pages:
        for channel in registry.publishers.values():
            if channel not in own and (page := channel.preview(release, settings, token)):
                return [page]
    return pages
