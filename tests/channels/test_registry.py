"""How the core gets its channels: one loader for installed and local channels, channel order, routing defaults
from each channel's `default_kinds`, previews from the channels, and the channels' notes in `rongmei status`."""

from __future__ import annotations

import pytest

from publishers import channels_of, load_publishers, registry_for
from rongmei.cli.status import collect, format_detail
from rongmei.core.model import ItemMeta
from rongmei.core.settings import Settings
from rongmei.intake.checks import run_checks
from rongmei.intake.ingest import ingest_inbox
from rongmei.review.prepare import render_channel_previews
from rongmei.storage.store import Store
from tests.channels.support import TEST_PLUGINS, Blobs, make_release
from tests.plugins.testchannels import FlakyPublisher
from tests.support.drops import write_drop

BUILT_IN = ["web", "wechat", "screens", "loudspeakers"]


def test_built_in_channels_come_in_their_order_and_local_ones_after_them() -> None:
    registry = load_publishers(TEST_PLUGINS)
    assert list(registry.publishers) == [*BUILT_IN, "flaky", "broken"]
    assert registry.errors == {}


def test_broken_foreign_and_clashing_local_channels_are_reported_not_fatal(settings: Settings) -> None:
    settings.extra_publishers = {
        "missing": "no_such_module_here:Channel",
        "foreign": "tests.plugins.testchannels:json",  # a module, not a Publisher
        "web": "tests.plugins.testchannels:FlakyPublisher",  # a center's own channel in place of a built-in one
        "flaky": TEST_PLUGINS["flaky"],
    }
    registry = registry_for(settings)
    assert registry.errors["missing"].startswith("ModuleNotFoundError: ")
    assert registry.errors["foreign"] == "tests.plugins.testchannels:json is not a Publisher subclass"
    assert "tests.plugins.testchannels:FlakyPublisher" in registry.errors["web"]  # the clash is named
    assert registry.publishers["web"] is FlakyPublisher  # and the later registration is used, as before
    assert {"wechat", "screens", "loudspeakers", "flaky"} <= set(registry.publishers)
    assert not {"missing", "foreign"} & set(registry.publishers)

    meta = ItemMeta(id="x", title="标题", author="作者", summary="摘要", channels=["missing", "nowhere"])
    unknown = [c for c in run_checks(meta, "正文", {}, settings) if c.code == "channel.unknown"]
    assert [c.blocking for c in unknown] == [True, True]
    assert "ModuleNotFoundError" in unknown[0].message and "“nowhere”不存在" in unknown[1].message


@pytest.mark.parametrize(("kind", "expected"), [
    ("article", ["web", "wechat", "screens", "loudspeakers"]),
    ("video", ["web", "wechat", "screens"]),
    ("audio", ["web", "loudspeakers"]),
    ("notice", ["web", "screens", "loudspeakers"]),
])
def test_default_routing_comes_from_the_channels_default_kinds(settings: Settings, kind: str,
                                                                expected: list[str]) -> None:
    settings.extra_publishers = TEST_PLUGINS  # channels without default kinds take nothing by default
    meta = ItemMeta(id="x", title="t", author="a", kind=kind)
    assert channels_of(meta, settings) == expected
    assert channels_of(meta.model_copy(update={"channels": ["flaky"]}), settings) == ["flaky"]


def test_default_channels_in_the_configuration_win_for_the_kinds_they_name(settings: Settings) -> None:
    settings.default_channels = {"article": ["web"]}
    assert channels_of(ItemMeta(id="x", title="t", author="a"), settings) == ["web"]
    assert channels_of(ItemMeta(id="x", title="t", author="a", kind="audio"), settings) == ["web", "loudspeakers"]


def test_reviewers_get_the_page_preview_even_when_no_channel_of_the_item_has_one(settings: Settings,
                                                                                 blobs: Blobs) -> None:
    for channels in (["web", "loudspeakers"], ["loudspeakers"]):
        release = make_release(blobs, "notice", channels=channels)
        token = f"token-{len(channels)}-abcdef"
        assert render_channel_previews(release, settings, token) == [f"/preview/{token}/"]
        page = (settings.data_dir / "preview" / token / "index.html").read_text(encoding="utf-8")
        assert "预览 · 未发布" in page and "标题 notice" in page


def test_status_shows_each_channel_with_its_note_or_why_it_is_missing(settings: Settings, store: Store) -> None:
    settings.extra_publishers = TEST_PLUGINS
    write_drop(settings.inbox, "notes", "title: 渠道说明\nauthor: 张三\nchannels: [web, flaky]", "正文。")
    (outcome,) = ingest_inbox(settings, store)
    assert outcome.status == "ingested"
    [item] = collect(store, "notes", settings)
    assert [(c["channel"], c["label"]) for c in item["versions"][0]["channels"]] == [
        ("web", "网站"), ("flaky", "测试渠道（时好时坏）")]
    detail = format_detail(item)
    assert f"渠道 web（网站）：{registry_for(settings).publishers['web'].capabilities.note}" in detail
    assert "渠道 flaky（测试渠道（时好时坏））：test channel: fails twice, then works" in detail

    settings.extra_publishers = {"flaky": "no_such_module_here:Flaky"}  # the plugin went missing since
    detail = format_detail(collect(store, "notes", settings)[0])
    assert "渠道 flaky（flaky）：渠道模块加载失败：ModuleNotFoundError" in detail


NOTICEBOARD = '''"""A village notice board: a whole new channel in one file, registered with one line of rongmei.toml."""

from typing import ClassVar

from pydantic import BaseModel

from publishers.base import Capabilities, Publisher, Receipt, Release
from rongmei.core.model import CheckResult, Severity


class BoardSettings(BaseModel):
    board_width: int = 24  # characters a line of the board shows


class NoticeBoard(Publisher):
    name: ClassVar[str] = "noticeboard"
    label = "村务公开栏"
    color = "#8c564b"
    default_kinds = ("notice",)
    config_model = BoardSettings
    capabilities = Capabilities(can_update=False, can_retract=False, note="Printed and pinned by hand.")
    reach_columns = (("board_readers", "公开栏读者"),)

    @classmethod
    def precheck(cls, meta, body, files, settings):
        width = cls.config_of(settings).board_width
        if len(meta.title) <= width:
            return []
        return [CheckResult(code="noticeboard.title", severity=Severity.blocking, channel=cls.name,
                            message=f"标题超过公开栏一行的 {width} 个字。", fix="请缩短标题。")]

    def publish(self, release: Release) -> Receipt:
        return Receipt(message="已打印张贴")
'''


def test_a_new_channel_is_one_module_and_one_line_of_configuration(settings: Settings, store: Store, tmp_path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """What a newcomer touches to add a channel: its module, and its registration (here `extra_publishers`;
    an installed channel has an entry point instead). Routing, pre-checks, its own configuration section, the
    status view and the reach report then know it without an edit anywhere else."""
    from rongmei.reach.report import report_channels

    (tmp_path / "noticeboard_channel.py").write_text(NOTICEBOARD, encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("RONGMEI_NOTICEBOARD__BOARD_WIDTH", "8")  # its own section, as [noticeboard] in rongmei.toml
    settings = Settings(content_dir=settings.content_dir, data_dir=settings.data_dir, settle_seconds=2.0,
                        extra_publishers={"noticeboard": "noticeboard_channel:NoticeBoard"})

    assert registry_for(settings).errors == {}
    assert "noticeboard" in channels_of(ItemMeta(id="water", title="停水通知", author="村委会", kind="notice"), settings)
    assert "noticeboard" not in channels_of(ItemMeta(id="harvest", title="秋粮丰收", author="张三", kind="article"), settings)
    assert registry_for(settings).publishers["noticeboard"].config_of(settings).board_width == 8
    found = run_checks(ItemMeta(id="water", title="明日上午全村停水检修的通知", author="村委会", kind="notice"), "正文。", {}, settings)
    assert [c.code for c in found if c.channel == "noticeboard"] == ["noticeboard.title"]
    assert [(c.name, c.label) for c in report_channels(settings)][-1] == ("noticeboard", "村务公开栏")

    write_drop(settings.inbox, "water", "title: 停水\nauthor: 村委会\nkind: notice")
    outcome, = ingest_inbox(settings, store)
    assert outcome.status == "ingested"
    detail = format_detail(collect(store, outcome.item_id, settings)[0])
    assert "渠道 noticeboard（村务公开栏）：Printed and pinned by hand." in detail
