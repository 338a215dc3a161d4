"""The reach report (issue 7 item 4) against real parts: page hits over HTTP to the distribution server,
statistics in the WeChat stand-in for articles published through the real WeChat publisher, and play
reports through the real /api/plays. Every number asserted here is one the test generated."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import requests
from PIL import Image

from publishers.base import Playable, Release
from publishers.wechat import WeChatPublisher
from rongmei.core.model import ItemMeta
from rongmei.core.settings import ScreenGroup, Settings, Zone
from rongmei.delivery.grants import replace_grants
from rongmei.distribution.server import serve_in_thread
from rongmei.distribution.terminals import enroll_terminal
from rongmei.reach.outputs import cli_report, format_report, summary_markdown, write_outputs
from rongmei.reach.report import gather, report_table
from rongmei.reach.window import report_window
from rongmei.storage.store import Store
from rongmei.storage.tables import Delivery, Item, Version
from standins.wechat import StandIn, start_standin
from tests.support.waiting import ANSWER_TIMEOUT

SHANGHAI = ZoneInfo("Asia/Shanghai")
BROWSER = "Mozilla/5.0 (Linux; Android 14; HarmonyOS) AppleWebKit/537.36 Chrome/126.0 Mobile Safari/537.36"
GOOGLEBOT = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"
SHA = hashlib.sha256(b"audio").hexdigest()
PREVIEW_TOKEN = "pv_" + "a" * 29
HARVEST, NOTICE, OTHER = "2026-harvest", "2026-water-notice", "2026-unlinked"
TITLES = {HARVEST: "我旗秋粮喜获丰收 总产量达12.5万吨", NOTICE: "关于巴彦镇停水的通知",
          OTHER: "公众号后台手工发的文章"}
ZONES = [
    Zone(code="150100001", name="巴彦镇"),
    Zone(code="150100001001", name="巴彦村", parent="150100001"),
    Zone(code="150100001002", name="新民村", parent="150100001"),
    Zone(code="150100002", name="乌兰苏木"),  # a township configured without villages
]
GROUPS = [ScreenGroup(id="hall", name="政务服务大厅"), ScreenGroup(id="square", name="文化广场")]


@pytest.fixture
def standin() -> Iterator[StandIn]:
    server = start_standin(app_id="wxreach0001", secret="reach-secret", publish_gets=1, publish_seconds=0)
    yield server
    server.stop()


@pytest.fixture
def reach_settings(tmp_path: Path, standin: StandIn) -> Settings:
    return Settings(
        content_dir=tmp_path / "content", data_dir=tmp_path / "data", zones=ZONES, screen_groups=GROUPS,
        wechat={"app_id": "wxreach0001", "app_secret": "reach-secret", "base_url": standin.base_url},
    )


@dataclass
class World:
    settings: Settings
    store: Store
    standin: StandIn
    today: date
    since: date


def add_item(store: Store, item_id: str) -> int:
    with store.session() as session:
        session.add(Item(id=item_id, drop_name=item_id, state="published", current_version=1))
        version = Version(item_id=item_id, number=1, content_hash="0" * 64, drop_name=item_id,
                          meta={"id": item_id, "title": TITLES[item_id], "author": "张晓梅"}, body="正文。",
                          state="published")
        session.add(version)
        session.flush()
        return version.id


def publish_on_wechat(settings: Settings, item_id: str, version_id: int, blobs: Path) -> dict[str, Any]:
    """Through the real publisher into the stand-in; returns the receipt details (msg_data_id, article_id)."""
    cover = io.BytesIO()
    Image.new("RGB", (900, 383), (10, 90, 160)).save(cover, "JPEG")
    sha = hashlib.sha256(cover.getvalue()).hexdigest()
    blobs.mkdir(exist_ok=True)
    (blobs / sha).write_bytes(cover.getvalue())
    release = Release(item_id=item_id, version=1, version_id=version_id, content_hash="0" * 64,
                      meta=ItemMeta(id=item_id, title=TITLES[item_id], author="张晓梅"),
                      body="今年全旗秋粮总产量达到12.5万吨。", files={"cover.jpg": {"sha256": sha, "bytes": 1}},
                      renditions={}, blob_path=lambda s: blobs / s)
    receipt = WeChatPublisher(settings, poll_delays=(0.01,) * 5).publish(release)
    assert receipt.state == "succeeded", receipt.message
    return receipt.details


def local(day: date, hour: int, minute: int = 0) -> datetime:
    return datetime.combine(day, time(hour, minute), SHANGHAI)


def play(item: str, start: datetime) -> dict[str, str]:
    return {"item": item, "sha256": SHA, "started_at": start.isoformat(),
            "ended_at": (start + timedelta(seconds=90)).isoformat()}


@pytest.fixture
def world(reach_settings: Settings, standin: StandIn, tmp_path: Path) -> World:
    settings = reach_settings
    store = Store.from_settings(settings)
    today = datetime.now(SHANGHAI).date()
    yesterday, since = today - timedelta(days=1), today - timedelta(days=3)
    versions = {item_id: add_item(store, item_id) for item_id in (HARVEST, NOTICE, OTHER)}
    # Plays count only for what the terminals were given: the grants a loudspeaker/screen delivery records.
    with store.session() as session:
        for item_id, audiences in {HARVEST: ("zone:150100001001", "zone:150100001002", "group:hall"),
                                   NOTICE: ("zone:150100002", "group:square")}.items():
            replace_grants(session, item_id=item_id, version_id=versions[item_id], channel="loudspeakers",
                           playables=[Playable(audience, SHA) for audience in audiences],
                           now=local(today - timedelta(days=30), 0), until=None)

    # WeChat: HARVEST and OTHER published for real; only HARVEST is a rongmei delivery.
    for item_id in (HARVEST, OTHER):
        details = publish_on_wechat(settings, item_id, versions[item_id], tmp_path / "blobs")
        numbers = {HARVEST: (40, 5, 7), OTHER: (900, 90, 9)}[item_id]
        requests.post(f"{standin.base_url}/_standin/stats", timeout=ANSWER_TIMEOUT, json={
            "article_id": details["article_id"], "read_user": numbers[0], "share_user": numbers[1],
            "like_user": numbers[2], "ref_date": yesterday.isoformat()}).raise_for_status()
        if item_id == HARVEST:
            with store.session() as session:
                session.add(Delivery(item_id=item_id, version_id=versions[item_id], channel="wechat",
                                     action="publish", state="succeeded", remote_id=details["article_id"],
                                     details=details))

    # Web: the pages exist on the site; a view from before the window is already in the log.
    for item_id in (HARVEST, NOTICE):
        page = settings.site_dir / "articles" / item_id / "index.html"
        page.parent.mkdir(parents=True)
        page.write_text(f"<h1>{TITLES[item_id]}</h1>", encoding="utf-8")
    preview = settings.data_dir / "preview" / PREVIEW_TOKEN / "articles" / HARVEST / "index.html"
    preview.parent.mkdir(parents=True)
    preview.write_text("<h1>预览</h1>", encoding="utf-8")
    log_file = settings.data_dir / "logs" / "access.jsonl"
    log_file.parent.mkdir(parents=True)
    old = local(today - timedelta(days=10), 9).astimezone(UTC).isoformat()
    log_file.write_text(json.dumps({"method": "GET", "path": f"/articles/{HARVEST}/", "kind": "page",
                                    "time": old, "status": 200, "ua": BROWSER}) + "\n", encoding="utf-8")

    tokens = {
        "spk-baiyan": enroll_terminal(store, "spk-baiyan", zone="150100001001"),
        "spk-xinmin": enroll_terminal(store, "spk-xinmin", zone="150100001002"),
        "spk-wulan": enroll_terminal(store, "spk-wulan", zone="150100002"),
        "scr-hall": enroll_terminal(store, "scr-hall", group="hall"),
        "scr-square": enroll_terminal(store, "scr-square", group="square"),
    }
    batches = {
        "spk-baiyan": [play(HARVEST, local(yesterday, 7)), play(HARVEST, local(yesterday, 12)),
                       play(HARVEST, local(today - timedelta(days=10), 7))],  # the last one: before the window
        "spk-xinmin": [play(HARVEST, local(today, 0, 5))],
        "spk-wulan": [play(NOTICE, local(today - timedelta(days=2), 18, 30))],
        "scr-hall": [play(HARVEST, local(yesterday, 9, m)) for m in (0, 10, 20)],
        "scr-square": [play(NOTICE, local(today, 0, 20))],
    }

    server = serve_in_thread(settings, port=0, store=store)
    try:
        base = server.url
        with requests.Session() as http:
            http.headers["User-Agent"] = BROWSER
            for _ in range(3):
                assert http.get(f"{base}/articles/{HARVEST}/").status_code == 200
            etag = http.get(f"{base}/articles/{HARVEST}/index.html").headers["etag"]
            assert http.get(f"{base}/articles/{HARVEST}/", headers={"If-None-Match": etag}).status_code == 304
            assert http.get(f"{base}/articles/{NOTICE}/").status_code == 200
            assert http.get(f"{base}/articles/{NOTICE}/").status_code == 200
            # None of these are reader views:
            assert http.get(f"{base}/articles/{HARVEST}/", headers={"User-Agent": GOOGLEBOT}).status_code == 200
            assert requests.get(f"{base}/articles/{HARVEST}/", timeout=ANSWER_TIMEOUT).status_code == 200  # python-requests UA
            assert http.head(f"{base}/articles/{HARVEST}/").status_code == 200
            assert http.get(f"{base}/preview/{PREVIEW_TOKEN}/articles/{HARVEST}/").status_code == 200
            assert http.get(f"{base}/articles/no-such-item/").status_code == 404
            for terminal, plays in batches.items():
                auth = {"Authorization": f"Bearer {tokens[terminal]}"}
                answer = http.post(f"{base}/api/plays", json={"plays": plays}, headers=auth)
                assert answer.json()["accepted"] == len(plays)
            # A backlog flushed twice counts once.
            again = http.post(f"{base}/api/plays", json={"plays": batches["scr-hall"]},
                              headers={"Authorization": f"Bearer {tokens['scr-hall']}"})
            assert again.json() == {"accepted": 0, "duplicates": 3, "batch_id": "", "refused": []}
    finally:
        server.stop()  # flushes the access log
    return World(settings, store, standin, today, since)


EXPECTED = {
    # web: 3 GETs + index.html + a 304 revisit; WeChat from the stand-in; plays inside the window only
    HARVEST: {"web_views": 5, "wechat_reads": 40, "wechat_shares": 5, "wechat_likes": 7, "screen_plays": 3,
              "loudspeaker_plays": 3, "total_reach": 51},
    NOTICE: {"web_views": 2, "wechat_reads": 0, "wechat_shares": 0, "wechat_likes": 0, "screen_plays": 1,
             "loudspeaker_plays": 1, "total_reach": 4},
}


def numbers(row: dict[str, Any]) -> dict[str, Any]:
    return {key: row[key] for key in EXPECTED[HARVEST]}


def test_report_counts_exactly_what_was_generated(world: World) -> None:
    report = gather(world.store, world.settings, world.since, world.today)
    rows = {row["item_id"]: row for row in report.rows()}

    assert set(rows) == {HARVEST, NOTICE}  # OTHER is not a rongmei delivery: its WeChat reads are not ours
    assert numbers(rows[HARVEST]) == EXPECTED[HARVEST]
    assert numbers(rows[NOTICE]) == EXPECTED[NOTICE]
    assert rows[HARVEST]["title"] == TITLES[HARVEST]
    assert [row["item_id"] for row in report.rows()] == [HARVEST, NOTICE]  # most reached first

    yesterday = world.today - timedelta(days=1)
    assert report.daily[(world.today, "web")] == 7
    assert report.daily[(yesterday, "wechat")] == 40 and report.daily[(world.today, "wechat")] == 0
    assert report.daily[(yesterday, "loudspeakers")] == 2 and report.daily[(world.today, "loudspeakers")] == 1
    assert report.daily[(world.today - timedelta(days=2), "loudspeakers")] == 1
    assert report.daily[(yesterday, "screens")] == 3 and report.daily[(world.today, "screens")] == 1
    assert {name: dict(c) for name, c in report.townships.items()} == {
        "巴彦镇": {"loudspeakers": 3}, "乌兰苏木": {"loudspeakers": 1}}
    assert dict(report.groups) == {"政务服务大厅": 3, "文化广场": 1}
    assert any(f"微信数据截至昨日（{yesterday}）" in note for note in report.notes)


def test_window_excludes_days_outside_it(world: World) -> None:
    yesterday = world.today - timedelta(days=1)
    rows = {row["item_id"]: row for row in report_table(world.store, world.settings, yesterday, yesterday).rows}
    # Yesterday only: no web views (they are all today), the WeChat reads, HARVEST's yesterday plays.
    assert numbers(rows[HARVEST]) == {"web_views": 0, "wechat_reads": 40, "wechat_shares": 5, "wechat_likes": 7,
                                      "screen_plays": 3, "loudspeaker_plays": 2, "total_reach": 45}
    assert NOTICE not in rows


def test_chart_is_a_png_and_csv_opens_in_excel_encoding(world: World) -> None:
    report = gather(world.store, world.settings, world.since, world.today)
    files = write_outputs(report, world.settings, run_day=world.today)

    reports = world.settings.data_dir / "reports" / world.today.isoformat()
    assert all(path.parent == reports for path in files.values())
    assert not (world.settings.site_dir / "reports").exists()  # never on the public site
    png = files["chart"].read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    with Image.open(files["chart"]) as image:
        image.verify()
    with Image.open(files["chart"]) as image:
        assert image.format == "PNG" and image.size == (1200, 500)
        # Not a blank canvas: lines, bars and labels were drawn.
        assert len(set(image.convert("RGB").resize((120, 50)).getdata())) > 20

    raw = files["csv"].read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf")
    parsed = list(csv.DictReader(io.StringIO(raw.decode("utf-8-sig"))))
    assert [row["稿件编号"] for row in parsed] == [HARVEST, NOTICE]
    assert parsed[0]["标题"] == TITLES[HARVEST]
    assert int(parsed[0]["微信阅读"]) == 40 and int(parsed[0]["总到达"]) == 51
    assert int(parsed[1]["村村响播放"]) == 1

    daily = list(csv.DictReader(io.StringIO(files["daily_csv"].read_bytes().decode("utf-8-sig"))))
    assert len(daily) == 4 and daily[-1]["日期"] == world.today.isoformat()
    assert sum(int(row["合计"]) for row in daily) == 55
    assert daily[-1]["微信公众号"] == "" and daily[-2]["微信公众号"] == "40"  # today: no WeChat data yet, not 0

    summary = summary_markdown(report, files)
    assert "总到达 **55**" in summary and "微信数据截至昨日" in summary
    assert files["chart"].resolve().as_uri() in summary
    assert "| 巴彦镇 | 3 | 0 |" in summary and "| 政务服务大厅 | 3 |" in summary


def test_wechat_trouble_is_reported_and_other_channels_still_count(world: World) -> None:
    world.standin.set_faults(ip_whitelist=True)
    report = gather(world.store, world.settings, world.since, world.today)
    harvest = report.items[HARVEST]
    assert harvest.numbers["wechat_reads"] == 0 and harvest.numbers["web_views"] == 5
    assert harvest.numbers["screen_plays"] == 3
    assert any("微信统计获取失败" in note and "40164" in note for note in report.notes), report.notes


def test_format_report_and_cli(world: World, monkeypatch: pytest.MonkeyPatch,
                               capsys: pytest.CaptureFixture[str]) -> None:
    text = format_report(report_table(world.store, world.settings, world.since, world.today))
    lines = text.splitlines()
    assert "网站浏览" in lines[0] and "总到达" in lines[0]
    assert lines[-1].startswith("合计") and lines[-1].split()[-1] == "55"
    harvest_line = next(line for line in lines if line.startswith(HARVEST))
    assert harvest_line.split()[-7:] == ["5", "40", "5", "7", "3", "3", "51"]
    # Columns line up although titles are Chinese (two cells wide per character).
    def cells(line: str) -> int:
        return sum(2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in line)

    assert len({cells(line) for line in lines}) == 1

    monkeypatch.setenv("RONGMEI_DATA_DIR", str(world.settings.data_dir))
    monkeypatch.setenv("RONGMEI_WECHAT__APP_ID", "wxreach0001")
    monkeypatch.setenv("RONGMEI_WECHAT__APP_SECRET", "reach-secret")
    monkeypatch.setenv("RONGMEI_WECHAT__BASE_URL", world.standin.base_url)
    assert cli_report(world.since.isoformat(), None) == 0
    out = capsys.readouterr().out
    assert TITLES[HARVEST][:8] in out and "微信数据截至昨日" in out
    assert out.splitlines()[-3].split()[-1] == "55"
    assert cli_report("2026-13-01", None) == 2
    assert "无法识别" in capsys.readouterr().err


def test_window_defaults_and_errors(reach_settings: Settings) -> None:
    today = date(2026, 5, 20)
    assert report_window(reach_settings, None, None, today=today) == (date(2026, 5, 14), today)
    assert report_window(reach_settings, "2026-05-01", "2026-05-03") == (date(2026, 5, 1), date(2026, 5, 3))
    with pytest.raises(Exception, match="晚于"):
        report_window(reach_settings, "2026-05-04", "2026-05-03")


@pytest.mark.prefect
def test_flow_leaves_table_and_summary_artifacts(world: World, prefect_server: str,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId
    from prefect.logging.handlers import APILogHandler

    from flows.reach import reach_report

    monkeypatch.setenv("RONGMEI_DATA_DIR", str(world.settings.data_dir))
    monkeypatch.setenv("RONGMEI_WECHAT__APP_ID", "wxreach0001")
    monkeypatch.setenv("RONGMEI_WECHAT__APP_SECRET", "reach-secret")
    monkeypatch.setenv("RONGMEI_WECHAT__BASE_URL", world.standin.base_url)
    state = reach_report(since=world.since.isoformat(), until=world.today.isoformat(), return_state=True)
    assert state.is_completed(), state.message
    result = state.result()
    assert Path(result["files"]["chart"]).read_bytes().startswith(b"\x89PNG")

    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(artifact_filter=ArtifactFilter(
            flow_run_id=ArtifactFilterFlowRunId(any_=[state.state_details.flow_run_id])))
    by_key = {artifact.key: artifact for artifact in artifacts}
    assert {"reach-report", "reach-summary"} <= set(by_key)
    table = by_key["reach-report"].data
    table = json.loads(table) if isinstance(table, str) else table
    harvest = next(row for row in table if row["稿件编号"] == HARVEST)
    assert harvest["总到达"] == 51 and harvest["微信阅读"] == 40
    assert table[-1]["稿件编号"] == "合计" and table[-1]["总到达"] == 55
    summary = by_key["reach-summary"].data
    assert "总到达 **55**" in summary and Path(result["files"]["chart"]).resolve().as_uri() in summary
    APILogHandler().flush()  # send the run's logs now, not at exit when the session's server is gone
