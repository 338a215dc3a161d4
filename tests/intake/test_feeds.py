"""Feed ingest (issue 7, item 1): real feeds over real HTTP on 127.0.0.1 become reprint drops once."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import frontmatter
import markdown as markdown_lib
import pytest
from sqlalchemy import func, select

from rongmei.core.model import ItemMeta
from rongmei.core.settings import FeedSourceConfig, Settings
from rongmei.intake.drops import find_drops
from rongmei.intake.feeds.drops import write_drop
from rongmei.intake.feeds.health import feed_health
from rongmei.intake.feeds.html2md import html_to_markdown, plain_text
from rongmei.intake.feeds.pull import configured_sources, pull_all, pull_source
from rongmei.storage.ledger import verify
from rongmei.storage.store import Store
from rongmei.storage.tables import FeedEntry, LedgerEntry
from tests.support.feeds import FeedServer, feed_server
from tests.support.paths import FIXTURES

FIXTURES = FIXTURES / "feeds"


@pytest.fixture
def server() -> Iterator[FeedServer]:
    with feed_server() as srv:
        # Served as many Chinese sites do: `text/xml` without a charset, the encoding only in the prolog.
        srv.serve("/rss.xml", (FIXTURES / "rss-gb2312.xml").read_bytes(), "text/xml")
        srv.serve("/news/atom.xml", (FIXTURES / "atom.xml").read_bytes(), "application/atom+xml")
        srv.serve("/bad.xml", (FIXTURES / "malformed.xml").read_bytes(), "application/rss+xml")
        srv.serve("/page.html", "<html><body><h1>首页</h1></body></html>".encode(), "text/html; charset=utf-8")
        yield srv


def sources(srv: FeedServer) -> list[FeedSourceConfig]:
    return [
        FeedSourceConfig(name="某市日报", url=f"{srv.base}/rss.xml", tags=["转载", "要闻"], channels=["web"]),
        FeedSourceConfig(name="自治区新闻网", url=f"{srv.base}/news/atom.xml"),
        FeedSourceConfig(name="某县广播电视台", url=f"{srv.base}/bad.xml"),
    ]


def drops(inbox: Path) -> dict[str, frontmatter.Post]:
    return {d.name: frontmatter.load(d.path / "index.md") for d in find_drops(inbox)}


def by_title(posts: dict[str, frontmatter.Post]) -> dict[str, frontmatter.Post]:
    return {str(p["title"]): p for p in posts.values()}


def refused_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/feed.xml"  # nothing listens there any more


def entry_count(store: Store) -> int:
    with store.session() as session:
        return session.scalar(select(func.count(FeedEntry.id))) or 0


def test_new_entries_become_valid_reprint_drops(server: FeedServer, settings: Settings, store: Store) -> None:
    results = pull_all(sources(server), settings.inbox, store)

    assert [r.status for r in results] == ["ok", "ok", "warning"]
    assert [len(r.new_items) for r in results] == [3, 2, 2]
    posts = drops(settings.inbox)
    assert len(posts) == 7
    for name, post in posts.items():
        meta = ItemMeta.model_validate(post.metadata)  # the contract: no unknown keys, valid values
        assert meta.id == name and meta.id.startswith("reprint-")
        assert meta.source and meta.source_url.startswith("http://")
        assert meta.is_reprint
        assert len(meta.summary) <= 120
        assert post.content.splitlines()[0].startswith(f"来源：{meta.source}")
        assert post.content.rstrip().endswith(f"({meta.source_url})"), "closing line names and links the source"
    titles = by_title(posts)

    # GB2312 RSS with CDATA: Chinese intact, the <font> tag in the title stripped, relative links resolved.
    grain = titles["全市夏粮收购工作全面展开"]
    assert grain["author"] == "记者 王晓红"
    assert grain["source"] == "某市日报" and grain["tags"] == ["转载", "要闻"] and grain["channels"] == ["web"]
    assert grain["source_url"] == f"{server.base}/yw/2024-06/04/content_1001.htm"
    assert "原文发布于 2024-06-04 08:30（北京时间）" in grain.content
    assert f"![收购现场]({server.base}/images/2024-06/04/shougou.jpg)" in grain.content
    assert f"[夏粮收购专题]({server.base}/zt/xialiang/index.htm)" in grain.content
    assert grain["summary"].startswith("本报讯 6月3日，全市夏粮收购工作全面展开")
    assert "<" not in grain["summary"]
    # An audio enclosure stays remote (nothing but the feed is downloaded): an article linking it, tagged 音频.
    audio = titles["《新闻早班车》6月4日"]
    assert audio["kind"] == "article" and audio["tags"] == ["转载", "要闻", "音频"]
    assert f"[收听原音频]({server.base}/audio/zaobanche/0604.mp3)" in audio.content
    assert titles["市政府召开常务会议 研究部署防汛工作"]["author"] == "本报记者"

    # Atom: xml:base + relative hrefs, HTML title with an escaped ampersand, video enclosure, author fallback.
    steppe = titles["草原旅游季开幕 & 多项活动同步启动"]
    assert steppe["source_url"] == "http://region.example.cn/news/2024/06/2001.html"
    assert steppe["author"] == "新华社记者 其木格"
    assert "**那达慕**" in steppe.content and "![草原](http://region.example.cn/static/img/caoyuan.jpg)" in steppe.content
    school = titles["牧区寄宿制学校迎来新学期（视频）"]
    assert school["kind"] == "article" and school["tags"] == ["视频"] and school["author"] == "自治区新闻网"
    assert "[观看原视频](http://region.example.cn/video/2002.mp4)" in school.content

    # Every drop was built in a hidden temp dir and renamed: none is left behind.
    assert not [p for p in settings.inbox.iterdir() if p.name.startswith(".")]
    with store.session() as session:
        dropped = session.scalars(select(LedgerEntry).where(LedgerEntry.action == "reprint.dropped")).all()
        assert {e.item_id for e in dropped} == set(posts)
        assert verify(session).ok


def test_second_pull_answered_304_adds_nothing(server: FeedServer, settings: Settings, store: Store) -> None:
    pull_all(sources(server), settings.inbox, store)
    before = sorted(p.name for p in settings.inbox.iterdir())

    results = pull_all(sources(server), settings.inbox, store)

    assert [r.status for r in results] == ["not_modified"] * 3
    assert all(not r.new_items for r in results)
    assert server.statuses("/rss.xml") == [200, 304]
    conditional = next(h for p, s, h in server.log if p == "/rss.xml" and s == 304)
    assert conditional["If-None-Match"] == server.files["/rss.xml"].etag
    assert conditional["If-Modified-Since"] == server.files["/rss.xml"].last_modified
    assert conditional["User-Agent"].startswith("rongmei-feeds/")
    assert sorted(p.name for p in settings.inbox.iterdir()) == before
    health = {h["name"]: h for h in feed_health(store)}
    assert health["某市日报"]["last_status"] == "not_modified" and health["某市日报"]["entries_seen"] == 3


def test_changed_feed_with_same_guids_adds_nothing(server: FeedServer, settings: Settings, store: Store) -> None:
    pull_all(sources(server), settings.inbox, store)
    seen = entry_count(store)
    # Upstream edits the titles (and so the ETag changes) but keeps the GUIDs: nothing is new.
    original = server.files["/rss.xml"].body
    server.serve("/rss.xml", original.replace("全面展开".encode("gb2312"), "有序推进".encode("gb2312")), "text/xml")
    assert server.files["/rss.xml"].body != original

    result = pull_source(sources(server)[0], settings.inbox, store)

    assert server.statuses("/rss.xml") == [200, 200]
    assert result.status == "ok" and result.entries == 3 and result.new_items == []
    assert entry_count(store) == seen
    assert len(find_drops(settings.inbox)) == 7


def test_drop_taken_by_ingest_is_not_written_again(server: FeedServer, settings: Settings, store: Store) -> None:
    """Dedup lives in the store, not in the inbox: once the ingest has moved a drop away it stays away."""
    source = sources(server)[1]
    first = pull_source(source, settings.inbox, store)
    for name in first.new_items:
        (settings.inbox / name).rename(settings.archive / name)
    server.serve("/news/atom.xml", server.files["/news/atom.xml"].body + b"\n", "application/atom+xml")

    again = pull_source(source, settings.inbox, store)

    assert again.status == "ok" and again.new_items == []
    assert find_drops(settings.inbox) == []


def test_malformed_feed_is_recovered_and_its_health_shows_why(
    server: FeedServer, settings: Settings, store: Store
) -> None:
    result = pull_source(sources(server)[2], settings.inbox, store)

    assert result.status == "warning" and len(result.new_items) == 2
    titles = by_title(drops(settings.inbox))
    assert set(titles) == {"县里举办农民丰收节", "乡村振兴培训班开班"}
    (health,) = feed_health(store)
    assert health["last_status"] == "warning"
    assert "格式有误" in health["last_error"] and "not well-formed" in health["last_error"]
    assert health["entries_seen"] == 2

    # The same bytes again (304) are still malformed: the warning stays until the feed changes.
    assert pull_source(sources(server)[2], settings.inbox, store).status == "not_modified"
    (health,) = feed_health(store)
    assert health["last_status"] == "warning" and "not well-formed" in health["last_error"]
    server.serve("/bad.xml", (FIXTURES / "atom.xml").read_bytes(), "application/atom+xml")  # upstream fixed
    assert pull_source(sources(server)[2], settings.inbox, store).status == "ok"
    assert feed_health(store)[0]["last_error"] == ""


def test_broken_sources_do_not_stop_the_others(server: FeedServer, settings: Settings, store: Store) -> None:
    server.serve("/slow.xml", (FIXTURES / "atom.xml").read_bytes(), "application/atom+xml")
    server.stalled.add("/slow.xml")
    broken = [
        FeedSourceConfig(name="拒绝连接", url=refused_url()),
        FeedSourceConfig(name="已下线", url=f"{server.base}/gone.xml"),
        FeedSourceConfig(name="不是订阅源", url=f"{server.base}/page.html"),
        FeedSourceConfig(name="超时", url=f"{server.base}/slow.xml"),
    ]
    # The stalled source answers only after the test: that the pull returns at all is the read timeout at work.
    # The timeout leaves the good local source room to answer on a busy machine.
    results = pull_all([*broken, sources(server)[0]], settings.inbox, store, timeout=3.0)

    assert [r.status for r in results] == ["error", "error", "error", "error", "ok"]
    assert len(results[-1].new_items) == 3 and len(find_drops(settings.inbox)) == 3
    health = {h["name"]: h for h in feed_health(store)}
    assert "无法连接源站" in health["拒绝连接"]["last_error"] and "Connection refused" in health["拒绝连接"]["last_error"]
    assert "HTTP 404" in health["已下线"]["last_error"] and health["已下线"]["last_http_status"] == 404
    assert "不是有效的 RSS/Atom" in health["不是订阅源"]["last_error"]
    assert "超时" in health["超时"]["last_error"]
    assert health["某市日报"]["last_status"] == "ok" and health["某市日报"]["last_error"] == ""
    assert all(h["last_checked"].endswith("+08:00") for h in health.values())


def test_failure_keeps_validators_and_recovery_clears_the_error(
    server: FeedServer, settings: Settings, store: Store
) -> None:
    source = sources(server)[0]
    pull_source(source, settings.inbox, store)
    served = server.files.pop("/rss.xml")
    assert pull_source(source, settings.inbox, store).status == "error"
    server.files["/rss.xml"] = served

    assert pull_source(source, settings.inbox, store).status == "not_modified"
    (health,) = feed_health(store)
    assert health["last_status"] == "not_modified" and health["last_error"] == ""


def test_gbk_characters_in_a_feed_declared_gb2312(server: FeedServer, settings: Settings, store: Store) -> None:
    """Real "GB2312" feeds carry GBK-only characters (镕, 堃); they must not turn into mojibake."""
    xml = (
        '<?xml version="1.0" encoding="GB2312"?><rss version="2.0"><channel><title>旧站</title>'
        "<item><title>朱镕基与王堃的故事</title><link>/a/1.htm</link><description>正文</description></item>"
        "</channel></rss>"
    )
    server.serve("/old.xml", xml.encode("gbk"), "text/xml; charset=utf-8")  # and a wrong header charset

    result = pull_source(FeedSourceConfig(name="旧站", url=f"{server.base}/old.xml"), settings.inbox, store)

    assert len(result.new_items) == 1
    assert by_title(drops(settings.inbox)).keys() == {"朱镕基与王堃的故事"}


def test_write_drop_never_overwrites(settings: Settings) -> None:
    from rongmei.intake.feeds.drops import Reprint

    reprint = Reprint(key="k", item_id="reprint-000000000001", meta={"id": "reprint-000000000001", "title": "甲",
                      "author": "乙"}, body="正文\n", link="")
    assert write_drop(settings.inbox, reprint) == settings.inbox / "reprint-000000000001"
    reprint.body = "改过的正文\n"
    assert write_drop(settings.inbox, reprint) is None
    assert "改过" not in (settings.inbox / "reprint-000000000001" / "index.md").read_text(encoding="utf-8")
    assert [p.name for p in settings.inbox.iterdir()] == ["reprint-000000000001"]


def test_sources_come_from_the_config_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "rongmei.toml"
    config.write_text(
        '[[feeds]]\nname = "新华网"\nurl = "http://127.0.0.1:1/xinhua.xml"\ntags = ["转载"]\n\n'
        '[[feeds]]\nname = "停用"\nurl = "http://127.0.0.1:1/off.xml"\nenabled = false\n\n'
        '[[feeds]]\nname = "广播"\nurl = "http://127.0.0.1:1/radio.xml"\nkind = "audio"\nchannels = ["loudspeakers"]\n',
        encoding="utf-8",
    )
    monkeypatch.setenv("RONGMEI_CONFIG", str(config))

    found = configured_sources(Settings())

    assert [s.name for s in found] == ["新华网", "广播"]
    assert found[0].tags == ["转载"] and found[1].kind == "audio" and found[1].channels == ["loudspeakers"]


def test_html_helpers() -> None:
    assert plain_text("<b>要闻</b>&nbsp;&amp; <script>x()</script>快讯") == "要闻 & 快讯"
    markdown = html_to_markdown(
        '<h2>标题</h2><p>第一段<br>第二行 <a href="http://a.cn/x">链接</a><a href="javascript:void(0)">坏</a></p>'
        '<ul><li>一</li><li><em>二</em></li></ul><p><img src="http://a.cn/p.jpg" alt="图[1]"></p><p><b></b></p>'
    )
    assert markdown == (
        "## 标题\n\n第一段\n\n第二行 [链接](http://a.cn/x)坏\n\n- 一\n\n- *二*\n\n![图1](http://a.cn/p.jpg)"
    )


def test_reprint_drops_pass_the_real_ingest(server: FeedServer, settings: Settings, store: Store) -> None:
    """The drops are well-formed for the normal ingest: accepted into review, reprint fields kept."""
    from rongmei.intake.ingest import ingest_drop, settled_drops

    # A channel that surely loads (the built-in ones are registered by other modules of the project).
    settings = settings.model_copy(update={"extra_publishers": {"flaky": "tests.plugins.testchannels:FlakyPublisher"}})
    pull_all([s.model_copy(update={"channels": ["flaky"]}) for s in sources(server)[:2]], settings.inbox, store)
    taken = settled_drops(settings, now=time.time() + 60)
    assert len(taken) == 5

    outcomes = [ingest_drop(drop, settings, store) for drop in taken]

    rejected = {o.drop: [p.message for p in o.problems] for o in outcomes if o.status == "rejected"}
    assert not rejected
    assert [o.status for o in outcomes] == ["ingested"] * 5
    with store.session() as session:
        version = store.latest_version(session, outcomes[0].item_id)
        assert version is not None and version.meta["source"] in {"某市日报", "自治区新闻网"}
        assert version.meta["source_url"].startswith("http://")


def test_upstream_text_cannot_become_markup() -> None:
    markdown = html_to_markdown('<p>&lt;script&gt;alert(1)&lt;/script&gt; [点我](javascript:x) 5*3 '
                                '<a href="http://a.cn/x (1).htm">原文</a></p>')
    rendered = markdown_lib.markdown(markdown)
    assert "<script>" not in rendered
    assert rendered == ('<p>&lt;script&gt;alert(1)&lt;/script&gt; [点我](javascript:x) 5*3 '
                        '<a href="http://a.cn/x%20%281%29.htm">原文</a></p>')


def test_unwritable_inbox_is_a_recorded_failure(server: FeedServer, tmp_path: Path, store: Store) -> None:
    inbox = tmp_path / "not-a-dir"
    inbox.write_text("x", encoding="utf-8")

    result = pull_source(sources(server)[0], inbox, store)

    assert result.status == "error" and "无法在收稿箱" in result.message
    (health,) = feed_health(store)
    assert health["last_status"] == "error" and health["entries_seen"] == 0


def test_tables_are_created_for_an_older_database(tmp_path: Path) -> None:
    from sqlalchemy import inspect

    from rongmei.storage.tables import Base

    older = Store(f"sqlite:///{tmp_path / 'old.db'}", tmp_path / "blobs")
    Base.metadata.create_all(older.engine, tables=[t for t in Base.metadata.sorted_tables if not t.name.startswith("feed_")])
    assert "feed_sources" not in inspect(older.engine).get_table_names()

    assert feed_health(older) == []
    assert {"feed_sources", "feed_entries"} <= set(inspect(older.engine).get_table_names())


def test_a_fresh_database_gets_the_feed_tables_from_the_schema_alone(tmp_path: Path) -> None:
    """The feed tables are models like the others: `create_schema` makes them without the feeds package loaded."""
    script = (
        "import sys\n"
        "from pathlib import Path\n"
        "from sqlalchemy import inspect\n"
        "from rongmei.storage.store import Store\n"
        "store = Store(sys.argv[1], Path(sys.argv[2]))\n"
        "store.create_schema()\n"
        "assert not any(name.startswith('rongmei.intake') for name in sys.modules), 'intake was imported'\n"
        "print(' '.join(sorted(inspect(store.engine).get_table_names())))\n"
    )
    done = subprocess.run([sys.executable, "-c", script, f"sqlite:///{tmp_path / 'fresh.db'}", str(tmp_path / "blobs")],
                          capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert {"feed_sources", "feed_entries"} <= set(done.stdout.split())
