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
