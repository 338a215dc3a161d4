"""The pull-feeds Prefect flow, run against the real Prefect server of the test session."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from tests.support.feeds import feed_server
from tests.support.paths import FIXTURES
from tests.support.waiting import ANSWER_TIMEOUT

FIXTURES = FIXTURES / "feeds"


pytestmark = pytest.mark.prefect


def test_flow_pulls_every_source_and_reports_health(
    prefect_server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from prefect.artifacts import Artifact

    from flows.feeds import pull_feeds
    from rongmei.intake.drops import find_drops

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        refused = f"http://127.0.0.1:{s.getsockname()[1]}/feed.xml"
    with feed_server() as server:
        server.serve("/rss.xml", (FIXTURES / "rss-gb2312.xml").read_bytes(), "text/xml")
        server.serve("/bad.xml", (FIXTURES / "malformed.xml").read_bytes(), "application/rss+xml")
        config = tmp_path / "rongmei.toml"
        config.write_text(
            f'[[feeds]]\nname = "拒绝连接"\nurl = "{refused}"\n\n'
            f'[[feeds]]\nname = "某市日报"\nurl = "{server.base}/rss.xml"\n\n'
            f'[[feeds]]\nname = "某县广播电视台"\nurl = "{server.base}/bad.xml"\n',
            encoding="utf-8",
        )
        monkeypatch.setenv("RONGMEI_CONFIG", str(config))
        monkeypatch.setenv("RONGMEI_CONTENT_DIR", str(tmp_path / "content"))
        monkeypatch.setenv("RONGMEI_DATA_DIR", str(tmp_path / "data"))

        # No source here is slow on purpose: a generous read timeout costs nothing and holds on a busy machine.
        first = pull_feeds(timeout=ANSWER_TIMEOUT)
        second = pull_feeds(timeout=ANSWER_TIMEOUT)

    assert first["sources"] == 3 and first["new"] == 5 and first["failed"] == ["拒绝连接"]
    assert [r["status"] for r in first["results"]] == ["error", "ok", "warning"]
    assert second["new"] == 0
    assert [r["status"] for r in second["results"]] == ["error", "not_modified", "not_modified"]
    assert len(find_drops(tmp_path / "content" / "inbox")) == 5

    artifact = Artifact.get("feed-health")
    assert artifact is not None
    assert "新增转载稿 0 篇" in str(artifact.data)
    assert "拒绝连接" in str(artifact.data) and "无法连接源站" in str(artifact.data)
    assert "格式有误" in str(artifact.data)
