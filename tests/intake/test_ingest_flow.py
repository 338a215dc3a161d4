"""The ingest flow against a real Prefect server."""

from __future__ import annotations

import pytest
from prefect.client.orchestration import get_client
from prefect.settings import PREFECT_API_URL, temporary_settings

from flows.ingest import ingest
from rongmei.storage.store import Store
from tests.support.drops import write_drop

pytestmark = pytest.mark.prefect


def test_ingest_flow_stores_versions_and_reports(settings, monkeypatch, prefect_server):
    monkeypatch.setenv("RONGMEI_CONTENT_DIR", str(settings.content_dir))
    monkeypatch.setenv("RONGMEI_DATA_DIR", str(settings.data_dir))
    write_drop(settings.inbox, "good", "title: 秋粮丰收\nauthor: 张三\nchannels: [web]")
    write_drop(settings.inbox, "bad", "author: 张三")
    with temporary_settings({PREFECT_API_URL: prefect_server}):
        state = ingest(start_reviews=False, return_state=True)
        assert state.is_completed()
        result = {r["drop"]: r for r in state.result()}
        assert result["good"]["status"] == "ingested" and result["bad"]["status"] == "rejected"

        async def artifact_markdown():
            async with get_client() as client:
                from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

                arts = await client.read_artifacts(
                    artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["ingest-summary"]))
                )
                return [a.data for a in arts]

        import anyio

        assert any("秋粮丰收" not in d and "good" in d and "退稿" in d for d in anyio.run(artifact_markdown))
    store = Store.from_settings(settings)
    with store.session() as s:
        assert store.latest_version(s, "good").number == 1
