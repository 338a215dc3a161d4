"""Village loudspeakers (村村响): per-zone playlists that terminals poll.

For every leaf zone (village) the channel writes, under the distribution target:

- `loudspeakers/<zone>/playlist.json`: the manifest (shape in ../shared/reference/loudspeaker-screens.md
  §A3). Routine items sit in the configured dayparts (today and tomorrow, so a terminal can cache ahead
  until `valid_until`); emergency items are in a separate `emergency` list that takes effect at once,
  ordered by numeric priority so a higher emergency pre-empts a lower one; retracting an emergency leaves
  an explicit entry in `cancelled` instead of silently vanishing (lesson A5.5).
- `loudspeakers/<zone>/playlist.m3u8`: the same live items as a plain URL list for `playUrl`-only devices.
- `loudspeakers/<zone>/podcast.xml`: RSS with enclosures (feedgen).

Media go to `media/<sha256>.mp3` before any playlist names them. Loudness is metadata measured by the
renditions step (lesson A5.3); the channel only forwards it.

A publish or update receipt carries `playables`: `zone:<village>` and the sha256 of the MP3 for every
playlist that lists the item after the rebuild, which the delivery layer records as grants so that only
plays of what a village was given count (rongmei.distribution.terminals).
"""

from __future__ import annotations

import logging
from datetime import datetime, time, timedelta
from typing import Any, ClassVar

from feedgen.feed import FeedGenerator

from publishers.base import Capabilities, Correction, Playable, Receipt, Release, RenditionNeed
from publishers.channel_state import (
    AggregatePublisher,
    Clock,
    iso,
    local_zone,
    parse_time,
    public_url,
    upload_rendition,
    window_end,
    write_manifest,
)
from publishers.prechecks import unknown_names
from publishers.reach import ChannelReach, ReachWindow, count_plays
from rongmei.core.errors import ConfigError, PublishError
from rongmei.core.model import CheckResult, ItemMeta, Priority
from rongmei.core.settings import Settings
from rongmei.core.zones import leaf_zones, resolve_zones, unknown_zones, zone_name
from rongmei.targets.base import Target

__all__ = [
    "CANCEL_VISIBLE", "EMERGENCY_LEVELS", "PRIORITY_NUMBERS", "RENDITION", "LoudspeakerPublisher",
    "build_playlist", "numeric_priority", "playables_of", "playlist_keys", "render_m3u8", "render_podcast"
]

log = logging.getLogger(__name__)

RENDITION = "loudspeaker_audio"
# Numeric priorities: terminals air the highest active interrupt; routine slots sort by the same number.
PRIORITY_NUMBERS = {Priority.normal: 50, Priority.urgent: 100, Priority.emergency: 900}
# Warning levels (预警级别) raise an emergency's number so a red warning pre-empts a blue one already airing.
# Matched against the item's tags, e.g. `tags: [暴雨红色预警]` or `tags: [Ⅰ级]`.
EMERGENCY_LEVELS: tuple[tuple[tuple[str, ...], int], ...] = (
    (("红色", "Ⅰ级", "I级", "一级"), 1000),
    (("橙色", "Ⅱ级", "II级", "二级"), 975),
    (("黄色", "Ⅲ级", "III级", "三级"), 950),
    (("蓝色", "Ⅳ级", "IV级", "四级"), 925),
)
# A cancel stays in the playlist this long, so terminals that were offline still hear about it.
CANCEL_VISIBLE = timedelta(hours=24)


def numeric_priority(meta: ItemMeta) -> int:
    base = PRIORITY_NUMBERS[meta.priority]
    if meta.priority is not Priority.emergency:
        return base
    for words, number in EMERGENCY_LEVELS:
        for tag in meta.tags:
            # Roman numerals must match the whole tag ("I级" is inside "III级"); colours may be inside.
            if tag in words or any(word in tag for word in words if not word.endswith("级")):
                return number
    return base


def playlist_keys(zone: str) -> dict[str, str]:
    base = f"loudspeakers/{zone}"
    return {"json": f"{base}/playlist.json", "m3u8": f"{base}/playlist.m3u8", "podcast": f"{base}/podcast.xml"}


class LoudspeakerPublisher(AggregatePublisher):
    name: ClassVar[str] = "loudspeakers"
    label = "村村响"
    color = "#9467bd"
    default_kinds = ("article", "audio", "notice")
    capabilities: ClassVar[Capabilities] = Capabilities(
        can_update=True,
        can_retract=True,
        correction=Correction.in_place,
        renditions=(RenditionNeed(RENDITION, no_sound="{file} 没有声音轨，无法生成村村响音频。请附一段录音 audio.mp3，"
                                                  "或去掉 loudspeakers 渠道。"),),
        note="Per-village playlist.json / playlist.m3u8 / podcast.xml; emergencies interrupt, retraction cancels.",
    )
    polled_paths: ClassVar[tuple[str, ...]] = ("/loudspeakers/",)
    order = 40

    def __init__(self, settings: Settings, now: Clock | None = None, target: Target | None = None) -> None:
        super().__init__(settings, now, target)

    @classmethod
    def check_front_matter(cls, meta: ItemMeta, settings: Settings) -> list[CheckResult]:
        """Every code in `zones` must be a configured township or village (blocking)."""
        known = "、".join(f"{z.code}（{z.name}）" for z in settings.zones[:8]) or "（尚未配置任何区域）"
        return unknown_names(cls.name, "zones.unknown", unknown_zones(meta.zones, settings),
                             "播出区域（zones）中有未知的行政区划代码：",
                             f"请改用已配置的苏木镇街道或嘎查村社区代码，例如：{known}；如是新区域，请管理员在 rongmei.toml 中添加。")

    # Actions ---------------------------------------------------------------------------------------------
    def publish(self, release: Release) -> Receipt:
        return self._put(release, previous=None)

    def update(self, release: Release, previous: Receipt) -> Receipt:
        return self._put(release, previous=previous)

    def retract(self, item_id: str, previous: Receipt, reason: str) -> Receipt:
        now = self.now()
        with self.state.locked():
            record = self.state.load(item_id) or {
                "item_id": item_id, "zones": list(previous.details.get("zones", [])), "priority": "normal",
                "title": "", "version": 0,
            }
            record.update(status="retracted", retracted_at=iso(now), reason=reason)
            self.state.save(record)
            versions = _versions(self._rebuild(record["zones"], now))
        cancelled = record.get("priority") == Priority.emergency.value
        message = f"已从 {len(versions)} 个村的播放列表撤下" + ("，并向终端发出取消播报指令" if cancelled else "")
        return Receipt(remote_id=item_id, message=message,
                       details={"zones": record["zones"], "manifest_versions": versions, "cancelled": cancelled})

    def refresh(self, now: datetime) -> None:
        """Rebuild every zone at `now`: expired items leave, new dayparts roll in, old cancels age out."""
        with self.state.locked():
            self._rebuild(leaf_zones(self.settings), now)

    # Internals -------------------------------------------------------------------------------------------
    def _put(self, release: Release, previous: Receipt | None) -> Receipt:
        meta = release.meta
        try:
            zones = resolve_zones(meta.zones, self.settings)
        except ConfigError as exc:
            raise PublishError(f"村村响：{exc}", retryable=False) from exc
        if not zones:
            raise PublishError("村村响：没有配置任何播出区域（zones）。请在 rongmei.toml 中添加 [[zones]] 后重试。",
                               retryable=False)
        if RENDITION not in release.renditions:
            raise PublishError(
                f"村村响：{release.item_id} 第 {release.version} 版缺少播出音频（{RENDITION}），"
                "请重新生成稿件的渠道版本（renditions）后再发布。",
                retryable=False,
            )
        media = upload_rendition(self.target, release, RENDITION)  # media first, playlists after
        now = self.now()
        with self.state.locked():
            old = self.state.load(release.item_id) or {}
            record = self._record(release, media, zones, now, old)
            self.state.save(record)
            # The old zones too: an update that narrows the targeting must take the item off the others.
            affected = sorted(set(zones) | set(old.get("zones", [])))
            rebuilt = self._rebuild(affected, now)
        first = playlist_keys(zones[0])["json"]
        verb = "更新" if previous else "发布"
        return Receipt(
            remote_id=release.item_id,
            url=public_url(self.settings, first),
            message=f"已{verb}到 {len(zones)} 个村的播放列表" + ("（应急插播）" if record["interrupt"] else ""),
            details={"zones": zones, "media": media["key"], "manifest_versions": _versions(rebuilt)},
            playables=playables_of(release.item_id, rebuilt),
        )

    def _record(self, release: Release, media: dict[str, Any], zones: list[str], now: datetime,
                old: dict[str, Any]) -> dict[str, Any]:
        meta = release.meta
        rendition = release.renditions[RENDITION]
        duration = float(rendition.get("duration_s") or 0)
        # A correction keeps the original publication time, so the item keeps its place in the dayparts.
        published_at = old.get("published_at") if old.get("status") == "live" else None
        return {
            "item_id": release.item_id,
            "version": release.version,
            "title": meta.title,
            "summary": meta.summary,
            "kind": meta.kind.value,
            "priority": meta.priority.value,
            "level": numeric_priority(meta),
            "interrupt": meta.priority is Priority.emergency,
            "zones": zones,
            "publish_at": iso(meta.publish_at),
            "expires": iso(meta.expires),
            "published_at": published_at or iso(now),
            "updated_at": iso(now),
            "status": "live",
            "retracted_at": None,
            "reason": "",
            "media": {
                "url": public_url(self.settings, media["key"]),
                "sha256": rendition["sha256"],
                "bytes": int(rendition.get("bytes") or 0),
                "codec": "mp3",
                "kbps": rendition.get("kbps"),
                "channels": rendition.get("channels"),
                "sample_rate": rendition.get("sample_rate"),
                "duration_s": round(duration, 3),
                "integrated_lufs": rendition.get("integrated_lufs"),
                "true_peak_dbtp": rendition.get("true_peak_dbtp"),
            },
        }

    def _rebuild(self, zones: list[str], now: datetime) -> dict[str, tuple[int, dict[str, Any]]]:
        """Rewrite the playlists of `zones`; returns zone -> (manifest_version, playlist body)."""
        records = self.state.all()
        rebuilt: dict[str, tuple[int, dict[str, Any]]] = {}
        for zone in zones:
            body = build_playlist(zone, records, now, self.settings)
            keys = playlist_keys(zone)
            version, written = write_manifest(
                self.target, keys["json"], body, now,
                companions={
                    keys["m3u8"]: lambda _v, body=body: render_m3u8(body).encode("utf-8"),
                    keys["podcast"]: lambda _v, body=body, zone=zone: render_podcast(body, zone, now, self.settings),
                },
            )
            rebuilt[zone] = (version, body)
            if written:
                log.info("loudspeaker playlist %s is now version %d", zone, version)
        return rebuilt

    # Reach (传播监测) ---------------------------------------------------------------------------------------
    reach_columns = (("loudspeaker_plays", "村村响播放"),)

    @classmethod
    def reach(cls, window: ReachWindow) -> ChannelReach:
        """Proof-of-play reports of loudspeaker terminals, per item and local day, rolled up from the village
        to its township. A terminal enrolled with only a zone is a loudspeaker (one with a group is a screen)."""
        return count_plays(window, lambda count: not count.group, by_group=False)


def _versions(rebuilt: dict[str, tuple[int, dict[str, Any]]]) -> dict[str, int]:
    return {zone: version for zone, (version, _body) in rebuilt.items()}


def playables_of(item_id: str, rebuilt: dict[str, tuple[int, dict[str, Any]]]) -> tuple[Playable, ...]:
    """What each village's terminals were given of `item_id`: the files its rebuilt playlist lists for it.

    Read from the playlists as written, not from the item's targeting, so a village whose playlist does not
    list the item (narrowed by a correction, or expiring before its next slot) is given nothing."""
    given = {(f"zone:{zone}", entry["media"]["sha256"])
             for zone, (_version, body) in rebuilt.items()
             for entry in [*body["emergency"], *body["items"]] if entry["id"] == item_id}
    return tuple(Playable(audience, sha256) for audience, sha256 in sorted(given))


# Playlist building (pure functions of the per-item records and the clock) ------------------------------------
def _available_from(record: dict[str, Any]) -> datetime:
    published = parse_time(record["published_at"])
    scheduled = parse_time(record.get("publish_at"))
    assert published is not None
    return max(published, scheduled) if scheduled else published


def _is_live(record: dict[str, Any], zone: str, now: datetime) -> bool:
    if record.get("status") != "live" or zone not in record.get("zones", []):
        return False
    expires = parse_time(record.get("expires"))
    return expires is None or expires > now


def _slots(now: datetime, settings: Settings) -> list[tuple[str, datetime]]:
    """Today's and tomorrow's dayparts (local), as (label, start)."""
    tz = local_zone(settings)
    today = now.astimezone(tz).date()
    slots = []
    for offset in (0, 1):
        day = today + timedelta(days=offset)
        for label in sorted(settings.dayparts):
            hour, minute = (int(part) for part in label.split(":"))
            slots.append((label, datetime.combine(day, time(hour, minute), tzinfo=tz)))
    return slots


def _media_entry(record: dict[str, Any]) -> dict[str, Any]:
    media = dict(record["media"])
    media.pop("sample_rate", None)
    return media


def build_playlist(zone: str, records: list[dict[str, Any]], now: datetime, settings: Settings) -> dict[str, Any]:
    """The playlist.json body for one zone at `now` (without manifest_version / generated_at)."""
    valid_until = window_end(now, settings)
    live = [r for r in records if _is_live(r, zone, now)]
    order = sorted(live, key=lambda r: (-int(r["level"]), _available_from(r), r["item_id"]))

    emergency = []
    # Highest number first; at equal numbers the newest first, since it carries the latest instruction.
    interrupts = sorted((r for r in live if r.get("interrupt")),
                        key=lambda r: (-int(r["level"]), -_available_from(r).timestamp(), r["item_id"]))
    for record in interrupts:
        duration = record["media"]["duration_s"]
        emergency.append({
            "id": record["item_id"], "revision": record["version"], "title": record["title"],
            "kind": record["kind"], "start": iso(_available_from(record)),
            "expires": record.get("expires") or iso(valid_until), "priority": int(record["level"]),
            "interrupt": True, "resume": "restart", "media": _media_entry(record), "cue_in": 0,
            "cue_out": duration,
        })

    items = []
    routine = [r for r in order if not r.get("interrupt")]
    for label, slot_start in _slots(now, settings):
        cursor = slot_start
        for record in routine:
            expires = parse_time(record.get("expires"))
            if _available_from(record) > slot_start or (expires and expires <= slot_start):
                continue
            duration = float(record["media"]["duration_s"])
            end = cursor + timedelta(seconds=duration)
            items.append({
                "id": record["item_id"], "revision": record["version"], "title": record["title"],
                "kind": record["kind"], "slot": label, "start": iso(cursor), "end": iso(end),
                "expires": record.get("expires") or iso(valid_until), "priority": int(record["level"]),
                "interrupt": False, "media": _media_entry(record), "cue_in": 0, "cue_out": duration,
            })
            cursor = end

    cancelled = []
    for record in records:
        retracted_at = parse_time(record.get("retracted_at"))
        if (record.get("status") == "retracted" and record.get("priority") == Priority.emergency.value
                and zone in record.get("zones", []) and retracted_at and now - retracted_at < CANCEL_VISIBLE):
            cancelled.append({"id": record["item_id"], "revision": record.get("version", 0),
                              "title": record.get("title", ""), "cancelled_at": iso(retracted_at)})
    cancelled.sort(key=lambda c: (c["cancelled_at"], c["id"]))

    return {
        "zone": zone,
        "zone_name": zone_name(zone, settings),
        "zones": [zone],
        "valid_until": iso(valid_until),
        "report_url": public_url(settings, "api/plays"),
        "dayparts": sorted(settings.dayparts),
        "items": items,
        "emergency": emergency,
        "cancelled": cancelled,
    }


def _unique_live(body: dict[str, Any]) -> list[dict[str, Any]]:
    """Emergencies first, then each routine item once, in airing order."""
    seen: set[str] = set()
    ordered = []
    for entry in [*body["emergency"], *body["items"]]:
        if entry["id"] not in seen:
            seen.add(entry["id"])
            ordered.append(entry)
    return ordered


def render_m3u8(body: dict[str, Any]) -> str:
    lines = ["#EXTM3U", f"#PLAYLIST:{body['zone_name']}"]
    for entry in _unique_live(body):
        title = entry["title"].replace("\n", " ").replace(",", "，")
        lines.append(f"#EXTINF:{round(entry['media']['duration_s'])},{title}")
        lines.append(entry["media"]["url"])
    return "\n".join(lines) + "\n"


def render_podcast(body: dict[str, Any], zone: str, now: datetime, settings: Settings) -> bytes:
    feed = FeedGenerator()
    self_url = public_url(settings, f"loudspeakers/{zone}/podcast.xml")
    feed.id(self_url)
    feed.title(f"{settings.center_name} · {body['zone_name']} 村村响")
    feed.link(href=self_url, rel="self")
    feed.link(href=settings.public_url, rel="alternate")
    feed.description(f"{body['zone_name']}（{zone}）村村响节目单，每个节目附音频。")
    feed.language("zh-cn")
    feed.lastBuildDate(now)
    for entry in reversed(_unique_live(body)):  # feedgen prepends: reverse to keep airing order
        item = feed.add_entry()
        item.id(f"{entry['id']}#{entry['revision']}")
        item.guid(f"{entry['id']}#{entry['revision']}", permalink=False)
        item.title(entry["title"])
        item.description(entry["title"])
        item.enclosure(entry["media"]["url"], str(entry["media"]["bytes"]), "audio/mpeg")
        item.published(entry["start"])
    return feed.rss_str(pretty=True)
