"""What `rongmei status` shows: items, versions, checks, sign-offs and deliveries, from the store."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from rongmei.core.labels import DELIVERY_ZH, STATE_ZH
from rongmei.storage.store import Delivery, Item, SignOff, Store, Version


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


def _with_progress(settings: Any, version: dict[str, Any], version_id: int) -> dict[str, Any]:
    from rongmei.review.prepare import read_progress

    if settings is not None and (progress := read_progress(settings, version_id)):
        version["rendering"] = progress
    return version


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
                    "versions": [_with_progress(settings, _version_json(store, session, v), v.id) for v in shown],
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
    return "\n".join(out)
