"""The bundled sample article, approved in three stages, reaches all four channels.

Runs on the session's real stack: Prefect server + worker, the WeChat stand-in (over HTTP), the
distribution server, real renditions (TTS with espeak-ng, cards with Pillow), the demo zones and groups.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import requests
from sqlalchemy import select

from flows.ingest import ingest
from rongmei.distribution.server import serve_in_thread
from rongmei.review.reviewers import enroll
from rongmei.storage import ledger
from rongmei.storage.store import Store
from rongmei.storage.tables import Delivery
from tests.support.drops import age_tree
from tests.support.review import await_final, fresh_code, review_run_id, sign
from tests.support.waiting import ANSWER_TIMEOUT

pytestmark = [pytest.mark.prefect, pytest.mark.media]
SAMPLES = Path(__file__).resolve().parent.parent / "content" / "samples"


def test_sample_article_goes_out_on_every_channel(prefect_stack, wechat_standin, monkeypatch):
    # ingest runs in this process and checks the sample's zones and screen groups against the demo config
    for key, value in prefect_stack.worker_env.items():
        monkeypatch.setenv(key, value)
    settings = prefect_stack.settings
    store = Store.from_settings(settings)
    for prefix, role in (("e", "editor"), ("d", "desk_head"), ("c", "chief_editor")):
        enroll(store, settings, f"{prefix}-sample", f"{prefix}-sample", [role])
    shutil.copytree(SAMPLES / "2026-11-harvest", settings.inbox / "2026-11-harvest")
    age_tree(settings.inbox / "2026-11-harvest")
    assert [r["status"] for r in ingest()] == ["ingested"]
    run = review_run_id("2026-11-harvest")
    sign(run, "first-0", "e-sample", fresh_code(settings, "e-sample"))
    with store.session() as s:
        version = store.latest_version(s, "2026-11-harvest")
        renditions = set(version.renditions)
        assert {"cover_900x383", "share_image", "screen_card", "loudspeaker_audio"} <= renditions
        assert version.renditions["loudspeaker_audio"]["source"] == "tts"
        assert version.signed_hash != version.content_hash  # the sign-offs cover the renditions too
    sign(run, "second-0", "d-sample", fresh_code(settings, "d-sample"))
    sign(run, "final-0", "c-sample", fresh_code(settings, "c-sample"))
    assert await_final(run).state.is_completed()

    with store.session() as s:
        deliveries = {d.channel: d for d in s.scalars(select(Delivery).where(Delivery.item_id == "2026-11-harvest"))}
        assert ledger.verify(s).ok
    assert {c: d.state for c, d in deliveries.items()} == {
        "web": "succeeded", "wechat": "succeeded", "screens": "succeeded", "loudspeakers": "succeeded"}
    wechat_state = requests.get(f"{wechat_standin.base_url}/_standin/state", timeout=ANSWER_TIMEOUT).json()
    [article] = [a for a in wechat_state["articles"] if a["url"] == deliveries["wechat"].url]
    content = article["news_item"][0]["content"]
    assert "巴彦镇" in content and "<style" not in content and "class=" not in content

    server = serve_in_thread(settings)
    try:
        page = requests.get(f"{server.url}/articles/2026-11-harvest/", timeout=ANSWER_TIMEOUT)
        assert page.status_code == 200 and "秋粮" in page.text
        village = requests.get(f"{server.url}/loudspeakers/150121101201/playlist.json", timeout=ANSWER_TIMEOUT).json()
        other_township = requests.get(f"{server.url}/loudspeakers/150121102201/playlist.json", timeout=ANSWER_TIMEOUT)
        hall = requests.get(f"{server.url}/screens/hall/manifest.json", timeout=ANSWER_TIMEOUT).json()
    finally:
        server.stop()
    assert "2026-11-harvest" in json.dumps(village, ensure_ascii=False)
    assert "2026-11-harvest" not in other_township.text  # zones: [巴彦镇] reaches only its villages
    assert "2026-11-harvest" in json.dumps(hall, ensure_ascii=False)
