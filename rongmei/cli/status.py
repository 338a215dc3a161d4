"""What `rongmei status` shows: items, versions, checks, sign-offs and deliveries, from the store, and for each
channel of an item what the channel says it does (`Capabilities.note`), so a technician reads a delivery's
outcome next to what the channel can and cannot do.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError
from sqlalchemy import select

from publishers import channels_of, registry_for
from rongmei.core.labels import DELIVERY_ZH, STATE_ZH
from rongmei.core.model import ItemMeta
from rongmei.storage.store import Store
from rongmei.storage.tables import Delivery, Item, SignOff, Version

__all__ = ["channel_notes", "collect", "format_detail", "format_table"]


def _version_json(store: Store, session: Any, version: Version) -> dict[str, Any]:
    signoffs = session.scalars(select(SignOff).where(SignOff.version_id == version.id).order_by(SignOff.id))
    deliveries = session.scalars(select(Delivery).where(Delivery.version_id == version.id).order_by(Delivery.id))
    return {
        "version": version.number,
        "state": version.state,
        "content_hash": version.content_hash,
        "created_at": version.created_at.isoformat(),
        "drop": version.drop_name,
        "archived_to": version.archived_to,
        "title": version.meta.get("title", ""),
        "kind": version.meta.get("kind", ""),
        "checks": version.checks,
        "renditions": sorted(version.renditions),
        "signoffs": [
            {"stage": s.stage, "reviewer": s.reviewer_id, "decision": s.decision, "at": s.signed_at.isoformat()}
            for s in signoffs
        ],
        "deliveries": [
            {
                "channel": d.channel,
                "action": d.action,
                "state": d.state,
                "attempts": d.attempts,
                "url": d.url,
                "message": d.message,
            }
            for d in deliveries
        ],
    }


def _with_settings(settings: Any, shown: dict[str, Any], version: Version) -> dict[str, Any]:
    """What only the settings tell: the render in progress, and the item's channels with their notes."""
    from rongmei.review.prepare import read_progress

    if settings is None:
        return shown
    if progress := read_progress(settings, version.id):
        shown["rendering"] = progress
    shown["channels"] = channel_notes(settings, version.meta, [d["channel"] for d in shown["deliveries"]])
    return shown


def channel_notes(settings: Any, meta: dict[str, Any], delivered: list[str]) -> list[dict[str, str]]:
    """The item's channels (where it goes, then any other it was delivered to), each with its label and note,
    or why it could not be loaded."""
    try:
        routed = channels_of(ItemMeta.model_validate(meta), settings)
    except ValidationError:  # an old version's front matter the model no longer takes: show the deliveries only
        routed = []
    registry = registry_for(settings)
    notes = []
    for name in dict.fromkeys([*routed, *delivered]):
        channel = registry.publishers.get(name)
        if channel is not None:
            notes.append({"channel": name, "label": channel.display_name(), "note": channel.capabilities.note})
        else:
            notes.append({"channel": name, "label": name, "note": "",
                          "error": registry.errors.get(name, "没有以此为名注册的渠道")})
    return notes


def collect(store: Store, item_id: str | None = None, settings: Any = None) -> list[dict[str, Any]]:
    with store.session() as session:
        query = select(Item).order_by(Item.updated_at.desc())
        if item_id:
            query = query.where(Item.id == item_id)
        result = []
        for item in session.scalars(query):
            versions = session.scalars(
                select(Version).where(Version.item_id == item.id).order_by(Version.number.desc())
            ).all()
            shown = versions if item_id else versions[:1]
            result.append(
                {
                    "id": item.id,
                    "state": item.state,
                    "current_version": item.current_version,
                    "versions": [_with_settings(settings, _version_json(store, session, v), v) for v in shown],
                }
            )
        return result


def format_table(items: list[dict[str, Any]]) -> str:
    if not items:
        return "还没有稿件。把稿件放进 content/inbox/ 即可。"
    lines = []
    for item in items:
        latest = item["versions"][0] if item["versions"] else {}
        checks = latest.get("checks", [])
        warnings = sum(1 for c in checks if c.get("severity") == "warning")
        delivered = ", ".join(
            f"{d['channel']}:{DELIVERY_ZH.get(d['state'], d['state'])}" for d in latest.get("deliveries", [])
        )
        rendering = latest.get("rendering")
        if rendering:
            delivered = f"渲染中 {rendering['label']} {rendering['fraction']:.0%}" + (f" {delivered}" if delivered else "")
        lines.append(
            f"{item['id']:<28} v{item['current_version']:<3} {STATE_ZH.get(item['state'], item['state']):<8} "
            f"{latest.get('title', '')[:30]:<30}  提醒 {warnings}" + (f"  [{delivered}]" if delivered else "")
        )
    return "\n".join(lines)


def format_detail(item: dict[str, Any]) -> str:
    out = [f"稿件 {item['id']} · 当前版本 v{item['current_version']} · {STATE_ZH.get(item['state'], item['state'])}"]
    for v in item["versions"]:
        out.append(f"\n  v{v['version']}  {v['title']}  ({STATE_ZH.get(v['state'], v['state'])})")
        if v.get("rendering"):
            out.append(f"    渲染中：{v['rendering']['label']} {v['rendering']['fraction']:.0%}")
        out.append(f"    内容哈希 {v['content_hash'][:16]}…  收稿 {v['created_at'][:19]}  原稿 {v['archived_to']}")
        for c in v["checks"]:
            mark = "✗" if c["severity"] == "blocking" else "!"
            out.append(f"    {mark} {c['message']}")
        if v["renditions"]:
            out.append("    渲染：" + ", ".join(v["renditions"]))
        for s in v["signoffs"]:
            out.append(f"    签字 {s['stage']} {s['reviewer']} {s['decision']} {s['at'][:19]}")
        for d in v["deliveries"]:
            state = DELIVERY_ZH.get(d["state"], d["state"])
            extra = f" {d['url']}" if d["url"] else ""
            msg = f" — {d['message']}" if d["message"] else ""
            out.append(f"    分发 {d['channel']}/{d['action']}: {state}（{d['attempts']} 次）{extra}{msg}")
        for c in v.get("channels", []):
            about = c["note"] if "error" not in c else f"渠道模块加载失败：{c['error']}"
            out.append(f"    渠道 {c['channel']}（{c['label']}）：{about}")
    return "\n".join(out)
