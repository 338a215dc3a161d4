"""The checks and the table at the end of bench/bursts.py: what was measured, and whether anything was lost,
doubled, published unsigned or answered 5xx. Returns the failed checks; the script exits 1 on any."""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

import requests

from bench._newcomer import FIVE_XX, Newcomer
from bench._support import DROP_CHANNELS, Memory, p50_p90

__all__ = ["flow_run_logs", "report"]


def flow_run_logs(api: Any) -> tuple[list[str], Counter[str]]:
    """What the flow runs sent to the API at WARNING and above: the lines that report a 5xx, and every error."""
    lines: list[str] = []
    errors: Counter[str] = Counter()
    offset = 0
    while True:
        page = api.call("POST", "/logs/filter", {"logs": {"level": {"ge_": 30}}, "limit": 200, "offset": offset,
                                                 "sort": "TIMESTAMP_ASC"}, "POST /logs/filter")
        if page is None:
            return [*lines, "(the flow runs' logs could not be read)"], errors
        for entry in page.json():
            first = entry["message"].splitlines()[0] if entry["message"] else ""
            if FIVE_XX.search(entry["message"]):
                lines.append(first[:300])
            if entry["level"] >= 40:
                errors[first[:160]] += 1
        offset += len(page.json())
        if len(page.json()) < 200:
            return lines, errors


def site_5xx_logged(stack: Newcomer) -> int:
    """5xx answers in the distribution server's own access log (one JSON line per request)."""
    path = stack.data_dir / "logs" / "access.jsonl"
    if not path.exists():
        return 0
    return sum(1 for line in path.read_text(errors="replace").splitlines()
               if line.strip() and json.loads(line).get("status", 0) >= 500)


def report(burst: Any) -> list[str]:
    """Checks and tables for a `bench.bursts.Burst` after its phases; returns the failed checks."""
    from sqlalchemy import select

    from rongmei.storage.tables import Delivery, Version

    stack, api, prober, store, settings = burst.stack, burst.api, burst.prober, burst.store, burst.settings
    items, approved, titles, times, resumes = burst.items, burst.approved, burst.titles, burst.times, burst.resumes
    live, on_wechat, site_5xx = burst.live, burst.on_wechat, burst.site_5xx

    drops, approvals, first = len(items), len(approved), settings.stages[0]
    unapproved = [i for i in items if i not in set(approved)]
    waiting = api.waiting_at(first.name)
    broken = api.runs({"state": {"type": {"any_": ["FAILED", "CRASHED"]}}})
    with store.session() as session:
        versions = {v.item_id: str(v.state) for v in session.scalars(select(Version))}
        deliveries = [(d.item_id, d.channel, d.action, d.state, d.message) for d in session.scalars(select(Delivery))]
    per_delivery = Counter((item, channel, action) for item, channel, action, _, _ in deliveries)
    succeeded = {(item, channel) for item, channel, action, state, _ in deliveries
                 if action == "publish" and state == "succeeded"}
    lost = [f"{item} → {channel}" for item in approved for channel in DROP_CHANNELS if (item, channel) not in succeeded]
    doubled = [f"{key[0]} → {key[1]} ({key[2]}) ×{n}" for key, n in per_delivery.items() if n > 1]
    unsigned = sorted({item for item, *_ in deliveries if item not in set(approved)})
    site = {item: requests.get(f"{stack.site_url}/articles/{item}/", timeout=30).status_code for item in items}
    for status in site.values():
        if status >= 500:
            site_5xx[f"GET /articles/<id>/ {status}"] += 1
    standin = requests.get(f"{stack.standin_url}/_standin/state", timeout=30).json()
    by_title = {title: item for item, title in titles.items()}
    articles = Counter(by_title.get(a["news_item"][0]["title"], "?") for a in standin["articles"] if not a["is_deleted"])
    submits = Counter(by_title.get(p["title"], "?") for p in standin["publishes"])
    logs = stack.scan_logs()
    run_log_5xx, run_errors = flow_run_logs(api)
    five_xx = [  # each source on its own: one 5xx shows in several (the server's log and the client's)
        ("5xx answered by the Prefect server (its access log: every client)", sum(logs.server_5xx.values())),
        ("5xx answered by the distribution server (its access log)", site_5xx_logged(stack)),
        ("5xx seen by our probes and requests (Prefect API, site)", sum(api.five_xx.values()) + sum(site_5xx.values())),
        ("5xx reported in the flow runs' logs (Prefect API)", len(run_log_5xx)),
        ("5xx reported in the services' log files", sum(len(v) for v in logs.other.values())),
    ]
    print(f"\n== bursts on the default install (`rongmei up`, Prefect on {stack.prefect_db}) ==")
    for warning in stack.warnings():
        print(f"  rongmei up warned: {warning.split(' WARNING ', 1)[1][:200]}")
    rows = [(f"{drops} drops → all stored", f"{times['stored']:.1f} s" if "stored" in times else "not reached"),
            (f"{drops} drops → all waiting at {first.label}",
             f"{times['waiting']:.1f} s ({drops / times['waiting']:.1f} items/s)" if "waiting" in times
             else "not reached"),
            (f"{'+'.join(s.label for s in settings.stages[:-1])} of {approvals} (until all wait at "
             f"{settings.stages[-1].label})", f"{times['sign-offs']:.1f} s" if "sign-offs" in times else "not reached")]
    for what, values in ((f"{approvals} final approvals at once → site 200", live),
                         (f"{approvals} final approvals at once → WeChat article", on_wechat)):
        if values:
            p50, p90 = p50_p90(list(values.values()))
            rows.append((what, f"p50 {p50:.2f} s, p90 {p90:.2f} s, max {max(values.values()):.2f} s"))
    print(table(["timed", "result"], rows))
    probe_rows = []
    for (name, phase), seconds in sorted(prober.timings.items(), key=lambda kv: (kv[0][0], _phase(kv[0][1]))):
        p50, p90 = p50_p90(seconds)
        probe_rows.append((name, phase, str(len(seconds)), f"{p50 * 1000:.0f}", f"{p90 * 1000:.0f}",
                           f"{max(seconds) * 1000:.0f}", str(prober.failed[(name, phase)])))
    print(table(["Prefect API probe (every 5 s)", "phase", "n", "p50 ms", "p90 ms", "max ms", "5xx/no answer"],
                probe_rows))
    phases = sorted(prober.memory, key=_phase)
    roles = sorted({role for peaks in prober.memory.values() for role in peaks})
    memory_rows = [(role, str(max(prober.memory[p].get(role, Memory()).processes for p in phases)),
                    *(f"{used.rss_mb:.0f} / {used.pss_mb:.0f}" for used in (prober.memory[p].get(role, Memory())
                                                                            for p in phases)))
                   for role in roles]
    print(table(["process: peak MB RSS / PSS", "procs", *phases], memory_rows))

    checks = [
        *((name, seen, 0) for name, seen in five_xx),
        ("our requests with no answer (timeout, refused)", sum(api.no_answer.values()), 0),
        ("sign-off form answers not accepted", sum(n for k, n in resumes.items() if not k.endswith(" ACCEPT")), 0),
        ("flow runs failed or crashed", len(broken), 0),
        (f"unapproved items still waiting at {first.label}", sum(i in waiting for i in unapproved), len(unapproved)),
        ("unapproved items in state in_review", sum(versions.get(i) == "in_review" for i in unapproved),
         len(unapproved)),
        ("approved items in state published", sum(versions.get(i) == "published" for i in approved), approvals),
        ("lost deliveries (approved × channel without one succeeded)", len(lost), 0),
        ("doubled deliveries (rows per version, channel, action > 1)", len(doubled), 0),
        ("unapproved items with any delivery", len(unsigned), 0),
        ("approved items answering 200 on the site", sum(site[i] == 200 for i in approved), approvals),
        ("unapproved items answering 200 on the site", sum(site[i] == 200 for i in unapproved), 0),
        ("approved items with exactly one WeChat article", sum(articles[i] == 1 for i in approved), approvals),
        ("approved items with exactly one WeChat submit", sum(submits[i] == 1 for i in approved), approvals),
        ("WeChat articles of unapproved or unknown items", sum(n for i, n in articles.items() if i not in approved), 0),
    ]
    print(table(["check", "seen", "expected", ""], [(name, str(seen), str(want), "ok" if seen == want else "FAILED")
                                                    for name, seen, want in checks]))
    details = [f"sign-off form answers (HTTP status, orchestration result): {dict(resumes)}"]
    details += [f"our 5xx: {k} ×{n}" for k, n in api.five_xx.items()] + [f"no answer: {k} ×{n}"
                                                                          for k, n in api.no_answer.items()]
    details += [f"site 5xx: {k} ×{n}" for k, n in site_5xx.items()]
    details += [f"Prefect server answered {k} ×{n}" for k, n in logs.server_5xx.most_common()]
    details += [f"Prefect server logged: {cause} ×{n}" for cause, n in Counter(logs.server_errors).most_common(5)]
    details += [f"{name}: {line}" for name, lines in logs.other.items() for line in lines[:5]]
    details += [f"flow-run log: {line}" for line in run_log_5xx[:10]]
    details += [f"flow-run error ×{n}: {text}" for text, n in run_errors.most_common(8)]
    details += [f"{r['name']}: {r['state_type']} {((r['state'] or {}).get('message') or '')[:200]}" for r in broken[:10]]
    details += [f"lost: {x}" for x in lost[:10]] + [f"doubled: {x}" for x in doubled[:10]]
    details += [f"unsigned delivery: {x}" for x in unsigned[:10]]
    details += [f"delivery {item} → {channel}: {state} {message[:160]}" for item, channel, _, state, message
                in deliveries if item in set(approved) and state != "succeeded"][:10]
    print("\n".join(f"  {line}" for line in details))
    return [f"{name}: {seen} (expected {want})" for name, seen, want in checks if seen != want]


PHASES = ("start", "drops", "sign-offs", "burst", "end")


def _phase(name: str) -> int:
    return PHASES.index(name) if name in PHASES else len(PHASES)


def table(header: list[str], rows: list[tuple[str, ...]]) -> str:
    """A plain text table; widths count a CJK character as two columns."""
    def width(text: str) -> int:
        return sum(2 if ord(c) > 0x2E7F else 1 for c in text)

    widths = [max(width(str(r[i])) for r in [tuple(header), *rows]) for i in range(len(header))]
    lines = ["  ".join(str(c) + " " * (w - width(str(c))) for c, w in zip(r, widths, strict=True)).rstrip()
             for r in [tuple(header), tuple("-" * w for w in widths), *rows]]
    return "\n" + "\n".join(lines)
