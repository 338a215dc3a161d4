"""What must hold on a county server after any fault and its recovery (issue 13, item 5), checked in one place
for every scenario of tests/faults/:

- every file an editor dropped is still under content/ (by sha256: inbox, archive, rejected or returned);
- one delivery per (version, channel, action): the ledger has at most one `published` entry per (version,
  channel); the WeChat stand-in holds at most one submitted publish and one article per item; the web site lists
  the item once;
- no unsigned publication: every version any channel received passes the delivery gate (every stage signed
  its current hash by distinct, active reviewers, backed by the ledger);
- `rongmei audit verify` exits 0;
- after one reconciler pass (`rongmei reconcile`), nothing is stranded.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from pathlib import Path
from typing import Any

from sqlalchemy import select

from tests.support.faults import FaultSystem

__all__ = ["check_invariants", "lost_files", "site_file", "wechat_articles"]


def check_invariants(system: FaultSystem, wechat: Any, *, reconcile: bool = True) -> None:
    """Fail with every broken invariant named (not only the first). `wechat` is the stand-in's state."""
    problems: list[str] = []
    if reconcile:
        problems += _left_over(system)
    problems += lost_files(system)
    problems += _deliveries(system, wechat)
    problems += _audit(system)
    assert not problems, "invariants broken after recovery:\n- " + "\n- ".join(problems)


def lost_files(system: FaultSystem) -> list[str]:
    """Dropped files whose bytes are nowhere under content/ any more."""
    present = Counter(hashlib.sha256(p.read_bytes()).hexdigest()
                      for p in system.settings.content_dir.rglob("*") if p.is_file() and not p.is_symlink())
    wanted = Counter(system.dropped.values())
    missing = wanted - present
    if not missing:
        return []
    names = sorted(name for name, sha in system.dropped.items() if sha in missing)
    return [f"{len(names)} dropped file(s) no longer under content/: {names[:10]}"]


def _left_over(system: FaultSystem) -> list[str]:
    from rongmei.runtime.reconciler import stranded

    done = system.cli("reconcile")
    problems = [] if done.returncode == 0 else [
        f"`rongmei reconcile` exited {done.returncode}:\n{done.stdout[-2000:]}{done.stderr[-2000:]}"]
    with system.prefect():
        left = stranded(system.settings)
    if left:
        problems.append("stranded after one reconciler pass: " + "; ".join(
            f"{s.kind} {s.item_id} v{s.version} {s.channel} ({s.why})" for s in left[:10]))
    return problems


def _audit(system: FaultSystem) -> list[str]:
    verified = system.cli("audit", "verify")
    if verified.returncode == 0:
        return []
    return [f"`rongmei audit verify` exited {verified.returncode}: {verified.stdout[-1000:]}{verified.stderr[-1000:]}"]


def wechat_articles(wechat: Any) -> tuple[Counter[str], Counter[str]]:
    """Per title: how many publishes were submitted and how many articles the account shows (not deleted)."""
    snapshot = wechat.snapshot() if hasattr(wechat, "snapshot") else wechat
    submitted = Counter(p["title"] for p in snapshot["publishes"])
    articles = Counter(a["news_item"][0]["title"] for a in snapshot["articles"] if not a.get("is_deleted"))
    return submitted, articles


def site_file(system: FaultSystem, key: str) -> str | None:
    """A published file's text from the system's target (the site dir, or the S3 bucket)."""
    settings = system.settings
    if settings.s3_bucket:
        import boto3

        client = boto3.client("s3", endpoint_url=settings.s3_endpoint_url, aws_access_key_id="test",
                              aws_secret_access_key="test", region_name="us-east-1")
        try:
            return client.get_object(Bucket=settings.s3_bucket, Key=key)["Body"].read().decode("utf-8")
        except client.exceptions.NoSuchKey:
            return None
    path = Path(settings.site_dir) / key
    return path.read_text(encoding="utf-8") if path.is_file() else None


def _deliveries(system: FaultSystem, wechat: Any) -> list[str]:
    from rongmei.core.states import DONE_STATES
    from rongmei.delivery.gate import refusal_reason
    from rongmei.storage.store import Store
    from rongmei.storage.tables import Delivery, LedgerEntry, Version

    problems: list[str] = []
    store = Store.from_settings(system.settings)
    submitted, articles = wechat_articles(wechat)
    with store.session() as session:
        versions = {v.id: v for v in session.scalars(select(Version))}
        by_number = {(v.item_id, v.number): v for v in versions.values()}
        published = Counter(
            (e.item_id, e.version, (e.details or {}).get("channel"))
            for e in session.scalars(select(LedgerEntry).where(LedgerEntry.action == "published")))
        problems += [f"{item} v{number} has {n} `published` ledger entries for {channel}"
                     for (item, number, channel), n in published.items() if n > 1]
        done = [d for d in session.scalars(select(Delivery)) if d.state in DONE_STATES and d.action != "retract"]
        received = {d.version_id for d in done} | {by_number[(i, n)].id for (i, n, _) in published
                                                  if (i, n) in by_number}
        for version_id in sorted(received):
            version = versions[version_id]
            if (why := refusal_reason(session, system.settings, version)) is not None:
                problems.append(f"{version.item_id} v{version.number} went out unsigned: {why}")
        titles = {v.id: v.meta.get("title", "") for v in versions.values()}
        known_titles = {t: v for v, t in titles.items()}
        for title, n in articles.items():
            if n > 1:
                problems.append(f"WeChat holds {n} articles titled {title!r}")
            owner = known_titles.get(title)
            if owner is None:
                problems.append(f"WeChat holds an article {title!r} of no version in the store")
            elif (why := refusal_reason(session, system.settings, versions[owner])) is not None:
                problems.append(f"WeChat holds the article {title!r} of an unsigned version: {why}")
        problems += [f"WeChat received {n} submits of {title!r}" for title, n in submitted.items() if n > 1]
        for d in done:
            title = titles[d.version_id]
            if d.channel == "wechat" and d.state == "succeeded" and articles[title] != 1:
                problems.append(f"{d.item_id}: WeChat delivery succeeded but the account holds "
                                f"{articles[title]} articles titled {title!r}")
            if d.channel == "web":
                problems += _web_once(system, d.item_id)
    return problems


def _web_once(system: FaultSystem, item_id: str) -> list[str]:
    page = site_file(system, f"articles/{item_id}/index.html")
    if page is None:
        return [f"{item_id}: web delivery succeeded but articles/{item_id}/index.html is missing"]
    feed = site_file(system, "feed.xml") or ""
    entries = len(re.findall(rf"<link>[^<]*/articles/{re.escape(item_id)}/</link>", feed))
    return [] if entries == 1 else [f"{item_id}: feed.xml lists the article {entries} times"]
