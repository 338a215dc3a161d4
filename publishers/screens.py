"""Public screens (大屏): per display group, a manifest the self-contained player polls.

`screens/<group>/manifest.json` follows Xibo's RequiredFiles + Schedule with Anthias' time windows
(../shared/reference/loudspeaker-screens.md §B2): `files` first (id, url, sha256, bytes, mime), then the
`schedule` (one entry per item: from/to, play_days, daily window, dependents, items of type card / image /
video / ticker; duration 0 = play to the end), `overlays` (a ticker for urgent and emergency notices) and
`report.stats_url` for proof of play. An item is listed only once every file it depends on is on the
target (lesson B4.1). `screens/<group>/player.html` is the player from assets/player/.

A publish or update receipt carries `playables`: `group:<id>` and the sha256 of every file the item depends
on, for every group whose rebuilt manifest schedules it; the delivery layer records them as grants so that
only plays of what a group was given count (rongmei.distribution.terminals).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any, ClassVar

from publishers.base import Capabilities, Condition, Correction, Playable, Receipt, Release, RenditionNeed
from publishers.channel_state import (
    AggregatePublisher,
    Clock,
    iso,
    parse_time,
    public_url,
    upload_rendition,
    window_end,
    write_manifest,
)
from publishers.loudspeakers import numeric_priority
from publishers.prechecks import too_long, unknown_names
from publishers.reach import ChannelReach, ReachWindow, count_plays
from rongmei.core.errors import ConfigError, PublishError
from rongmei.core.model import CheckResult, ItemMeta, Priority
from rongmei.core.settings import Settings
from rongmei.core.zones import resolve_groups, unknown_groups
from rongmei.targets.base import Target

__all__ = [
    "ALL_DAYS", "CARD_SECONDS", "LIMITS", "PLAYER_ASSET", "SCREEN_RENDITIONS", "ScreenPublisher",
    "build_manifest", "manifest_key", "playables_of", "player_key"
]

log = logging.getLogger(__name__)

PLAYER_ASSET = Path(__file__).resolve().parent.parent / "assets" / "player" / "player.html"
CARD_SECONDS = 10  # how long a headline card stays up in the loop
# Renditions in the order they play; video plays to its end (duration 0, as in Xibo).
SCREEN_RENDITIONS = (("screen_card", "card"), ("screen_card_mn", "card"), ("video_screen", "video"))
ALL_DAYS = [1, 2, 3, 4, 5, 6, 7]
LIMITS = {"title": 40}  # lengths that make a poor fit on the screens; blocking at the door


def manifest_key(group: str) -> str:
    return f"screens/{group}/manifest.json"


def player_key(group: str) -> str:
    return f"screens/{group}/player.html"


class ScreenPublisher(AggregatePublisher):
    name: ClassVar[str] = "screens"
    label = "大屏"
    color = "#ff7f0e"
    default_kinds = ("article", "video", "notice")
    capabilities: ClassVar[Capabilities] = Capabilities(
        can_update=True,
        can_retract=True,
        correction=Correction.in_place,
        renditions=(
            RenditionNeed("screen_card"),
            RenditionNeed("screen_card_portrait", Condition.portrait_screen),
            RenditionNeed("screen_card_mn", Condition.mongolian_title),
            RenditionNeed("video_screen", Condition.has_video),
        ),
        note="Per-group manifest.json + player.html; files are verified by sha256 before an item shows.",
    )
    polled_paths: ClassVar[tuple[str, ...]] = ("/screens/",)
    order = 30

    def __init__(self, settings: Settings, now: Clock | None = None, target: Target | None = None,
                 card_seconds: int = CARD_SECONDS) -> None:
        super().__init__(settings, now, target)
        self.card_seconds = card_seconds

    @classmethod
    def precheck(cls, meta: ItemMeta, body: str, files: Mapping[str, Path], settings: Settings) -> list[CheckResult]:
        return too_long(cls.name, cls.label, meta, LIMITS)

    @classmethod
    def check_front_matter(cls, meta: ItemMeta, settings: Settings) -> list[CheckResult]:
        """Every group in `screens` must be a configured display group (blocking)."""
        known = "、".join(f"{g.id}（{g.name}）" for g in settings.screen_groups) or "（尚未配置任何大屏分组）"
        return unknown_names(cls.name, "screens.unknown", unknown_groups(meta.screens, settings),
                             "大屏分组（screens）中有未知的分组：",
                             f"请改用已配置的大屏分组：{known}；如是新分组，请管理员在 rongmei.toml 中添加。")

    def publish(self, release: Release) -> Receipt:
        return self._put(release, previous=None)

    def update(self, release: Release, previous: Receipt) -> Receipt:
        return self._put(release, previous=previous)

    def retract(self, item_id: str, previous: Receipt, reason: str) -> Receipt:
        now = self.now()
        with self.state.locked():
            record = self.state.load(item_id) or {"item_id": item_id,
                                                  "groups": list(previous.details.get("groups", []))}
            record.update(status="retracted", retracted_at=iso(now), reason=reason)
            self.state.save(record)
            versions = _versions(self._rebuild(record["groups"], now))
        return Receipt(remote_id=item_id, message=f"已从 {len(versions)} 个大屏分组撤下",
                       details={"groups": record["groups"], "manifest_versions": versions})

    def refresh(self, now: datetime) -> None:
        """Rebuild every group at `now`, so expired items leave the screens."""
        with self.state.locked():
            self._rebuild([group.id for group in self.settings.screen_groups], now)

    # Internals -------------------------------------------------------------------------------------------
    def _put(self, release: Release, previous: Receipt | None) -> Receipt:
        try:
            groups = resolve_groups(release.meta.screens, self.settings)
        except ConfigError as exc:
            raise PublishError(f"大屏：{exc}", retryable=False) from exc
        if not groups:
            raise PublishError("大屏：没有配置任何大屏分组（screen_groups）。请在 rongmei.toml 中添加后重试。",
                               retryable=False)
        present = [(key, kind) for key, kind in SCREEN_RENDITIONS if key in release.renditions]
        if not present:
            raise PublishError(
                f"大屏：{release.item_id} 第 {release.version} 版没有大屏版本（screen_card 或 video_screen），"
                "请重新生成稿件的渠道版本（renditions）后再发布。",
                retryable=False,
            )
        files, items = [], []
        for key, kind in present:  # upload every file before the manifest can name it
            media = upload_rendition(self.target, release, key)
            file_id = f"{key}-{str(media['sha256'])[:16]}"
            files.append({"id": file_id, "key": media["key"], "url": public_url(self.settings, media["key"]),
                          "sha256": media["sha256"], "bytes": int(media.get("bytes") or 0),
                          "mime": media["mime"]})
            items.append({"type": kind, "file": file_id, "duration": 0 if kind == "video" else self.card_seconds})
        meta = release.meta
        now = self.now()
        with self.state.locked():
            old = self.state.load(release.item_id) or {}
            record = {
                "item_id": release.item_id, "version": release.version, "title": meta.title,
                "summary": meta.summary, "kind": meta.kind.value, "priority": meta.priority.value,
                "level": numeric_priority(meta), "groups": groups, "publish_at": iso(meta.publish_at),
                "expires": iso(meta.expires),
                "published_at": (old.get("published_at") if old.get("status") == "live" else None) or iso(now),
                "updated_at": iso(now), "status": "live", "retracted_at": None, "reason": "",
                "files": files, "items": items,
            }
            self.state.save(record)
            rebuilt = self._rebuild(sorted(set(groups) | set(old.get("groups", []))), now)
        verb = "更新" if previous else "发布"
        return Receipt(remote_id=release.item_id, url=public_url(self.settings, player_key(groups[0])),
                       message=f"已{verb}到 {len(groups)} 个大屏分组",
                       details={"groups": groups, "files": [f["key"] for f in files],
                                "manifest_versions": _versions(rebuilt)},
                       playables=playables_of(release.item_id, rebuilt))

    def _rebuild(self, groups: list[str], now: datetime) -> dict[str, tuple[int, dict[str, Any]]]:
        """Rewrite the manifests of `groups`; returns group -> (manifest_version, manifest body)."""
        records = self.state.all()
        player = PLAYER_ASSET.read_bytes()
        rebuilt: dict[str, tuple[int, dict[str, Any]]] = {}
        for group in groups:
            if self.target.read_bytes(player_key(group)) != player:
                self.target.write_bytes(player_key(group), player)
            body = build_manifest(group, records, now, self.settings, self.target.exists)
            version, written = write_manifest(self.target, manifest_key(group), body, now)
            rebuilt[group] = (version, body)
            if written:
                log.info("screen manifest %s is now version %d", group, version)
        return rebuilt

    # Reach (传播监测) ---------------------------------------------------------------------------------------
    reach_columns = (("screen_plays", "大屏播放"),)

    @classmethod
    def reach(cls, window: ReachWindow) -> ChannelReach:
        """Proof-of-play reports of screens, per item and local day, rolled up to township and display group.
        A terminal enrolled with a display group is a screen, even when it also has a zone."""
        return count_plays(window, lambda count: bool(count.group), by_group=True)


def _versions(rebuilt: dict[str, tuple[int, dict[str, Any]]]) -> dict[str, int]:
    return {group: version for group, (version, _body) in rebuilt.items()}


def playables_of(item_id: str, rebuilt: dict[str, tuple[int, dict[str, Any]]]) -> tuple[Playable, ...]:
    """What each group's screens were given of `item_id`: the files its rebuilt manifest schedules for it.

    Read from the manifests as written, so a group where the item is held back (a file missing on the
    target, lesson B4.1) or no longer targeted is given nothing."""
    given = set()
    for group, (_version, body) in rebuilt.items():
        sha_of = {f["id"]: f["sha256"] for f in body["files"]}
        for entry in body["schedule"]:
            if entry["id"] == item_id:
                given.update((f"group:{group}", sha_of[file_id]) for file_id in entry["dependents"])
    return tuple(Playable(audience, sha256) for audience, sha256 in sorted(given))


def _available_from(record: dict[str, Any]) -> datetime:
    published = parse_time(record["published_at"])
    scheduled = parse_time(record.get("publish_at"))
    assert published is not None
    return max(published, scheduled) if scheduled else published


def build_manifest(group: str, records: list[dict[str, Any]], now: datetime, settings: Settings,
                   exists: Any) -> dict[str, Any]:
    """The manifest.json body for one group at `now`; `exists(key)` says whether a file is on the target."""
    config = next((g for g in settings.screen_groups if g.id == group), None)
    lookahead = window_end(now, settings)
    live = []
    for record in records:
        expires = parse_time(record.get("expires"))
        if record.get("status") != "live" or group not in record.get("groups", []):
            continue
        if expires is not None and expires <= now:
            continue
        if not all(exists(f["key"]) for f in record["files"]):
            log.warning("screens: %s not listed yet, a file is missing on the target", record["item_id"])
            continue
        live.append(record)
    live.sort(key=lambda r: (-int(r["level"]), _available_from(r), r["item_id"]))

    files: dict[str, dict[str, Any]] = {}
    schedule, overlays = [], []
    for record in live:
        for f in record["files"]:
            files.setdefault(f["id"], {k: f[k] for k in ("id", "url", "sha256", "bytes", "mime")})
        schedule.append({
            "id": record["item_id"], "revision": record["version"], "title": record["title"],
            "from": iso(_available_from(record)), "to": record.get("expires"), "priority": int(record["level"]),
            "play_days": ALL_DAYS, "time_from": "00:00", "time_to": "24:00",
            "dependents": [f["id"] for f in record["files"]], "items": record["items"],
        })
        if record["priority"] in (Priority.urgent.value, Priority.emergency.value):
            text = record["title"] + (f"：{record['summary']}" if record.get("summary") else "")
            overlays.append({"id": record["item_id"], "type": "ticker", "region": "bottom", "text": text,
                             "from": iso(_available_from(record)), "to": record.get("expires") or iso(lookahead),
                             "priority": int(record["level"])})

    boundaries = [parse_time(t) for e in [*schedule, *overlays] for t in (e["from"], e["to"]) if t]
    future = [b for b in boundaries if b and b > now]
    return {
        "display_group": group,
        "name": config.name if config else group,
        "design_size": list(config.size) if config else [1920, 1080],
        "lookahead_until": iso(lookahead),
        # When the screen should re-evaluate even without a new manifest (Anthias' deadline, lesson B4.2).
        "deadline": iso(min([*future, lookahead])),
        "default": None,
        "files": list(files.values()),
        "schedule": schedule,
        "overlays": overlays,
        "report": {"stats_url": public_url(settings, "api/plays")},
    }
