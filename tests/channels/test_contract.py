"""The contract every registered channel keeps, run over each one the registry finds (the installed channels and
the test plugins): a new channel is tested by registering it, not by adding it to a list here.

A channel says who it is (name, label, colour, default kinds, a note for technicians), needs only renditions
the rendition step can make, and its pre-checks answer in CheckResults. A sample item, rendered by the real
rendition step for that channel alone, is published, corrected and retracted where the capabilities say the
channel can, and refused cleanly (PublishError, not retryable) where they say it cannot; every receipt carries a
delivery state, and the scheduled refresh runs. WeChat is the local stand-in over real HTTP.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from publishers import load_publishers
from publishers.base import (
    RECEIPT_STATES,
    Capabilities,
    Condition,
    Correction,
    Publisher,
    PublishError,
    Receipt,
    Release,
)
from rongmei.core.labels import DELIVERY_ZH
from rongmei.core.model import CheckResult, ItemMeta, Kind
from rongmei.core.settings import Settings
from rongmei.renditions import RECIPES, produce_renditions
from standins.wechat import StandIn, start_standin
from tests.channels.support import BAYAN, DEMO_GROUPS, DEMO_ZONES, TEST_PLUGINS, Blobs, make_release
from tests.support.media import make_image, make_speech_like

REGISTRY = load_publishers(TEST_PLUGINS)
BODY = "金秋时节，全旗秋粮喜获丰收。\n\n![田野](cover.jpg)\n\n科技助力，单产再创新高。"
APP_ID, APP_SECRET = "wx-contract", "contract-secret"


def needs_media(channel: type[Publisher]) -> bool:
    """Channels whose renditions run ffmpeg (audio, video) carry the `media` mark."""
    return any(RECIPES[need.key].suffix in (".mp3", ".mp4") for need in channel.capabilities.rendition_needs()
               if need.key in RECIPES)


CHANNELS = [pytest.param(name, id=name, marks=[pytest.mark.media] if needs_media(channel) else [])
            for name, channel in REGISTRY.publishers.items()]


@pytest.fixture(scope="module")
def standin() -> Iterator[StandIn]:
    server = start_standin(app_id=APP_ID, secret=APP_SECRET)
    yield server
    server.stop()


@pytest.fixture
def contract_settings(tmp_path: Path, standin: StandIn) -> Settings:
    """Every channel configured as on a real installation: demo zones and screen groups, WeChat on the stand-in
    (its section given as rongmei.toml would give it), and the test plugins."""
    settings = Settings(content_dir=tmp_path / "content", data_dir=tmp_path / "data",
                        public_url="http://127.0.0.1:8800", zones=DEMO_ZONES, screen_groups=DEMO_GROUPS,
                        extra_publishers=TEST_PLUGINS,
                        wechat={"app_id": APP_ID, "app_secret": APP_SECRET, "base_url": standin.base_url})
    settings.data_dir.mkdir(parents=True)  # as `rongmei up` makes it before any channel runs
    return settings


@pytest.fixture
def drop_files(tmp_path: Path) -> dict[str, bytes]:
    """The sample drop: a cover picture and a recording (so no speech engine is needed)."""
    return {"cover.jpg": make_image(tmp_path / "cover.jpg", (900, 600), fmt="JPEG").read_bytes(),
            "audio.wav": make_speech_like(tmp_path / "audio.wav", seconds=2).read_bytes()}


def sample_release(name: str, settings: Settings, blobs: Blobs, files: dict[str, bytes], work: Path,
                   version: int = 1, body: str = BODY) -> Release:
    """Version `version` of the sample item, with the renditions the real rendition step makes for `name`."""
    fields = {"id": "contract-item", "title": "我旗秋粮喜获丰收", "author": "张晓梅", "summary": "全旗秋粮总产量创新高。",
              "channels": [name], "zones": [BAYAN], "screens": ["hall"], "tags": ["农业"]}
    table = {rel: blobs.put(data) for rel, data in files.items()}
    manifest = produce_renditions(meta=ItemMeta.model_validate(fields), body=body, files=table,
                                  blob_path=blobs.path, put_file=blobs.put_file, settings=settings,
                                  channels=[name], work_dir=work / f"v{version}")
    item_id = fields.pop("id")
    return make_release(blobs, item_id, manifest, version, body=body, files=files, **fields)


def assert_receipt(receipt: object) -> Receipt:
    assert isinstance(receipt, Receipt)
    assert receipt.state in RECEIPT_STATES and receipt.state in DELIVERY_ZH
    assert isinstance(receipt.message, str) and isinstance(receipt.details, dict)
    return receipt


def publish_as_the_flow_does(channel: Publisher, release: Release, settings: Settings) -> Receipt | PublishError:
    """Publish, retrying errors the channel calls retryable as the publish flow does; a refusal is returned."""
    for _attempt in range(settings.publish_retries + 1):
        try:
            return assert_receipt(channel.publish(release))
        except PublishError as exc:
            if not exc.retryable:
                return exc
    pytest.fail(f"{channel.name}: still failing after {settings.publish_retries} retries")


def refuses(action: object, *args: object) -> None:
    with pytest.raises(PublishError) as refused:
        action(*args)  # type: ignore[operator]
    assert not refused.value.retryable and str(refused.value)


def test_every_installed_channel_loads() -> None:
    assert REGISTRY.errors == {}
    assert {"flaky", "broken"} <= set(REGISTRY.publishers)


@pytest.mark.parametrize("name", CHANNELS)
def test_channel_says_who_it_is(name: str, contract_settings: Settings) -> None:
    channel = REGISTRY.publishers[name]
    assert channel.name == name
    assert channel.label.strip() and channel.display_name() == channel.label
    assert re.fullmatch(r"#[0-9a-fA-F]{6}", channel.color)
    assert isinstance(channel.default_kinds, tuple) and set(channel.default_kinds) <= set(Kind)
    assert isinstance(channel.capabilities, Capabilities) and channel.capabilities.note.strip()
    assert isinstance(channel.order, int)


CONFIGURED = CHANNELS


@pytest.mark.parametrize("name", CONFIGURED)
def test_channel_configuration_validates(name: str, contract_settings: Settings) -> None:
    REGISTRY.publishers[name].config_of(contract_settings)


@pytest.mark.parametrize("name", CHANNELS)
def test_declared_renditions_are_ones_the_rendition_step_makes(name: str) -> None:
    for need in REGISTRY.publishers[name].capabilities.rendition_needs():
        assert need.key in RECIPES, f"{name} needs {need.key!r}, which rongmei.renditions cannot make"
        assert isinstance(need.when, Condition)
        if need.no_sound:
            assert "{file}" in need.no_sound


@pytest.mark.parametrize("name", CHANNELS)
def test_prechecks_answer_in_check_results(name: str, contract_settings: Settings, tmp_path: Path,
                                           drop_files: dict[str, bytes]) -> None:
    channel = REGISTRY.publishers[name]
    paths = {rel: tmp_path / rel for rel in drop_files}
    good = ItemMeta(id="x", title="秋粮丰收", author="张晓梅", channels=[name], zones=[BAYAN], screens=["hall"])
    overlong = good.model_copy(update={"title": "标题" * 60, "zones": ["150121999"], "screens": ["lobby"]})
    for meta in (good, overlong):
        found = [*channel.precheck(meta, BODY, paths, contract_settings),
                 *channel.check_front_matter(meta, contract_settings)]
        assert all(isinstance(c, CheckResult) for c in found)
        assert all(c.channel in (None, name) for c in found)
    assert not any(c.blocking for c in channel.precheck(good, BODY, paths, contract_settings))


@pytest.mark.parametrize("name", CHANNELS)
def test_publish_correct_retract_as_the_capabilities_say(name: str, contract_settings: Settings, blobs: Blobs,
                                                         drop_files: dict[str, bytes], tmp_path: Path) -> None:
    cls = REGISTRY.publishers[name]
    capabilities = cls.capabilities
    channel = cls(contract_settings)
    first = sample_release(name, contract_settings, blobs, drop_files, tmp_path / "work")
    always = {need.key for need in capabilities.rendition_needs() if need.when is Condition.always}
    assert always <= set(first.renditions)  # the rendition step made what the channel always needs
    published = publish_as_the_flow_does(channel, first, contract_settings)
    corrected = sample_release(name, contract_settings, blobs, drop_files, tmp_path / "work", version=2,
                               body=BODY.replace("再创新高", "再创历史新高"))
    can_correct = capabilities.can_update or capabilities.correction is Correction.new_article
    if isinstance(published, PublishError):  # refused for good: nothing is out there to correct or retract
        assert str(published)
        assert not can_correct and not capabilities.can_retract, f"{name} refuses to publish the sample item"
        refuses(channel.update, corrected, Receipt())
        refuses(channel.retract, first.item_id, Receipt(), "合同测试")
        return
    latest = published
    if can_correct:
        latest = assert_receipt(channel.update(corrected, published))
    else:
        refuses(channel.update, corrected, published)
    if capabilities.can_retract:
        assert_receipt(channel.retract(first.item_id, latest, "合同测试：撤稿"))
    else:
        refuses(channel.retract, first.item_id, latest, "合同测试：撤稿")
    channel.refresh(datetime.now(UTC))


@pytest.mark.parametrize("name", CHANNELS)
def test_preview_is_a_page_under_its_token_or_nothing(name: str, contract_settings: Settings, blobs: Blobs,
                                                      drop_files: dict[str, bytes], tmp_path: Path) -> None:
    release = sample_release(name, contract_settings, blobs, drop_files, tmp_path / "work")
    page = REGISTRY.publishers[name].preview(release, contract_settings, "contract-token-1")
    assert page is None or (page == "/preview/contract-token-1/"
                            and (contract_settings.data_dir / "preview" / "contract-token-1").is_dir())
