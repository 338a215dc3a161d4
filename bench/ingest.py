"""Benchmark: 1,000 generated article drops → stored and checked.

    .venv/bin/python bench/ingest.py [--items 1000] [--prefect]

Without --prefect it times the ingest functions the flow runs; with --prefect it starts a real Prefect
server and times the `ingest` flow itself (one task run per drop). Prints items/s and peak memory (RSS).
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("RONGMEI_CONFIG", "/nonexistent/rongmei.toml")

from bench._support import make_drops
from rongmei.core.settings import Lexicon, Settings
from rongmei.storage.store import Store


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
