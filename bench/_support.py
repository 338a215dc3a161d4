"""What the benchmarks share: free ports, latency summaries, generated article drops, and the memory of a
process tree read from /proc (no psutil in the venv).

Imported as `bench._support` by scripts that put the checkout first on sys.path.
"""

from __future__ import annotations

import os
import random
import socket
import statistics
import time
from collections.abc import Iterable
from pathlib import Path

__all__ = ["DROP_CHANNELS", "WORDS", "Memory", "children_of", "cmdline", "descendants", "free_port", "make_drops", "memory_of",
           "p50_p90", "summary"]

DROP_CHANNELS = ("web", "wechat")  # what `make_drops` asks for
WORDS = ["全旗", "秋粮", "丰收", "牧民", "草原", "防火", "供热", "通知", "乡村振兴", "合作社", "旅游", "那达慕", "学校",
         "医院", "道路", "建设", "生态", "治理"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def p50_p90(values: list[float]) -> tuple[float, float]:
    # inclusive: the 90th percentile of the values seen, never above their maximum
    p90 = statistics.quantiles(values, n=10, method="inclusive")[8] if len(values) > 1 else values[0]
    return statistics.median(values), p90


def summary(values: list[float]) -> str:
    p50, p90 = p50_p90(values)
    return f"p50 {p50:.2f} s, p90 {p90:.2f} s, min {min(values):.2f} s, max {max(values):.2f} s"


def make_drops(inbox: Path, n: int, *, age: float | None = 3600.0, prefix: str = "bench") -> dict[str, str]:
    """`n` article drops `<prefix>-00000` … for web and WeChat (folder + index.md); returns item id -> title.

    `age`: the files' mtime is that many seconds ago, so they count as settled at once; None keeps the real
    mtimes (the drops settle after `settle_seconds`, as an editor's copy does)."""
    rng = random.Random(42)
    titles = {}
    for i in range(n):
        item_id = f"{prefix}-{i:05d}"
        folder = inbox / item_id
        folder.mkdir(parents=True)
        body = "\n\n".join("".join(rng.choice(WORDS) for _ in range(60)) + "。" for _ in range(8))
        titles[item_id] = f"基准测试稿件{i}号 {rng.choice(WORDS)}"
        (folder / "index.md").write_text(
            f"---\ntitle: {titles[item_id]}\nauthor: 编辑{i % 17}\nsummary: 摘要{i}\n"
            f"tags: [{rng.choice(WORDS)}]\nchannels: [{', '.join(DROP_CHANNELS)}]\n---\n{body}\n",
            encoding="utf-8",
        )
        if age is not None:
            old = time.time() - age
            for p in (folder / "index.md", folder):
                os.utime(p, (old, old))
    return titles


# Processes -------------------------------------------------------------------------------------------
def _parent_of(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[1])  # the command name may hold spaces and parentheses


def children_of(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and _parent_of(int(entry.name)) == pid:
            found.append(int(entry.name))
    return found


def descendants(pid: int) -> list[int]:
    """Every process below `pid` (children, their children …), from one pass over /proc."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (parent := _parent_of(int(entry.name))) is not None:
            parents.setdefault(parent, []).append(int(entry.name))
    found, queue = [], list(parents.get(pid, []))
    while queue:
        child = queue.pop()
        found.append(child)
        queue.extend(parents.get(child, []))
    return found


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


class Memory:
    """Resident (RSS) and proportional (PSS: shared pages split between their users) memory, in MB, of a set of
    processes. Forks of one warm server share most pages, so their RSS sum counts those pages many times over;
    their PSS sum does not."""

    def __init__(self, processes: int = 0, rss_mb: float = 0.0, pss_mb: float = 0.0) -> None:
        self.processes, self.rss_mb, self.pss_mb = processes, rss_mb, pss_mb

    def peak(self, other: Memory) -> Memory:
        return Memory(max(self.processes, other.processes), max(self.rss_mb, other.rss_mb),
                      max(self.pss_mb, other.pss_mb))


def memory_of(pids: Iterable[int]) -> Memory:
    total = Memory()
    for pid in pids:
        try:
            text = Path(f"/proc/{pid}/smaps_rollup").read_text()
        except OSError:  # gone meanwhile, or not ours to read
            continue
        fields = {line.split(":")[0]: line.split()[1] for line in text.splitlines()[1:] if ":" in line}
        total.processes += 1
        total.rss_mb += int(fields.get("Rss", 0)) / 1024
        total.pss_mb += int(fields.get("Pss", 0)) / 1024
    return total
