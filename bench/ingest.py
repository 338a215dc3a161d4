"""Benchmark: 1,000 generated article drops → stored and checked.

    .venv/bin/python bench/ingest.py [--items 1000] [--prefect]

Without --prefect it times the ingest functions the flow runs; with --prefect it starts a real Prefect
server and times the `ingest` flow itself (one task run per drop). Prints items/s and peak memory (RSS).
"""

from __future__ import annotations

import argparse
import os
import random
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("RONGMEI_CONFIG", "/nonexistent/rongmei.toml")

from rongmei.core.settings import Lexicon, Settings
from rongmei.storage.store import Store

WORDS = ["全旗", "秋粮", "丰收", "牧民", "草原", "防火", "供热", "通知", "乡村振兴", "合作社", "旅游", "那达慕", "学校", "医院", "道路", "建设", "生态", "治理"]


def make_drops(inbox: Path, n: int) -> None:
    rng = random.Random(42)
    old = time.time() - 3600
    for i in range(n):
        folder = inbox / f"bench-{i:05d}"
        folder.mkdir(parents=True)
        body = "\n\n".join("".join(rng.choice(WORDS) for _ in range(60)) + "。" for _ in range(8))
        (folder / "index.md").write_text(
            f"---\ntitle: 基准测试稿件{i}号 {rng.choice(WORDS)}\nauthor: 编辑{i % 17}\nsummary: 摘要{i}\n"
            f"tags: [{rng.choice(WORDS)}]\nchannels: [web, wechat]\n---\n{body}\n",
            encoding="utf-8",
        )
        for p in (folder / "index.md", folder):
            os.utime(p, (old, old))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--items", type=int, default=1000)
    parser.add_argument("--prefect", action="store_true", help="run through the Prefect flow on a real server")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        settings = Settings(
            content_dir=root / "content",
            data_dir=root / "data",
            settle_seconds=1,
            lexicon=Lexicon(forbidden=["赌博网站"], sensitive=["伤亡"], exact={"内蒙古自治区": ["内蒙自治区"]}),
        )
        make_drops(settings.inbox, args.items)
        store = Store.from_settings(settings)
        os.environ["RONGMEI_CONTENT_DIR"] = str(settings.content_dir)
        os.environ["RONGMEI_DATA_DIR"] = str(settings.data_dir)
        os.environ["RONGMEI_LEXICON__FORBIDDEN"] = '["赌博网站"]'
        if args.prefect:
            from rongmei.runtime.up import Stack, start_prefect

            stack = Stack(settings)
            api = start_prefect(stack, settings, 4299)
            os.environ["PREFECT_API_URL"] = api
            from flows.ingest import ingest

            try:
                start = time.perf_counter()
                results = ingest(start_reviews=False)
                elapsed = time.perf_counter() - start
            finally:
                stack.stop()
                from tests.support.stack import remove_private_cluster

                remove_private_cluster(settings.data_dir)  # as root it lives outside the temporary data dir
            stored = sum(1 for r in results if r["status"] == "ingested")
        else:
            from rongmei.intake.ingest import ingest_inbox

            start = time.perf_counter()
            outcomes = ingest_inbox(settings, store)
            elapsed = time.perf_counter() - start
            stored = sum(1 for o in outcomes if o.status == "ingested")
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        mode = "prefect flow" if args.prefect else "ingest functions"
        print(f"{mode}: {stored}/{args.items} drops stored and checked in {elapsed:.1f} s "
              f"= {stored / elapsed:.1f} items/s; peak RSS {peak_mb:.0f} MB (target: 1,000 in <= 60 s)")
        if stored != args.items:
            raise SystemExit(f"only {stored} of {args.items} drops were stored")


if __name__ == "__main__":
    main()
