"""The WeChat channel end to end over real HTTP against the local stand-in (issue 4)."""

from __future__ import annotations

import hashlib
import io
import re
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest
import requests
from PIL import Image

from publishers.base import Release, SlotUnavailable
from publishers.wechat import WeChatPublisher
from publishers.wechat.channel import DRAFT_READY
from publishers.wechat.client import (
    WeChatClient,
    WeChatError,
    WeChatIpNotWhitelisted,
    WeChatLimitError,
    WeChatPublishFailed,
)
from rongmei.core.model import ItemMeta
from rongmei.core.settings import Settings
from standins.wechat import StandIn, start_standin
from tests.support.paths import ROOT
from tests.support.waiting import ANSWER_TIMEOUT, wait_until

FAST = (0.01, 0.01, 0.01, 0.01, 0.01)
BODY = """金秋时节，走进巴彦镇的田间地头，到处是一派繁忙的丰收景象。

![巴彦镇的玉米地](images/field.jpg)

据[旗统计局](https://stats.example.cn/2026)数据，今年全旗秋粮总产量达到 **12.5万吨**。

![晒场上的大豆](images/beans.webp)

- 玉米平均亩产 780 公斤；
- 大豆平均亩产 210 公斤。
"""


def image_bytes(fmt: str, size: tuple[int, int] = (64, 40), color: tuple[int, int, int] = (200, 120, 40)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, color).save(out, fmt)
    return out.getvalue()


@pytest.fixture
def standin() -> Iterator[StandIn]:
    server = start_standin(app_id="wxtest0001", secret="s3cret-value", publish_seconds=60)
    yield server
    server.stop()


@pytest.fixture
def wechat_settings(tmp_path: Path, standin: StandIn) -> Settings:
    return Settings(data_dir=tmp_path / "data", content_dir=tmp_path / "content",
                    wechat={"app_id": "wxtest0001", "app_secret": "s3cret-value", "base_url": standin.base_url})


def with_wechat(settings: Settings, **changes: Any) -> Settings:
    """The same settings with some keys of the channel's `[wechat]` section changed."""
    return settings.model_copy(update={"wechat": {**settings.channel_section("wechat"), **changes}})


def make_release(tmp_path: Path, files: dict[str, bytes], body: str = BODY, **meta: Any) -> Release:
    blobs = tmp_path / "blobs"
    blobs.mkdir(exist_ok=True)
    table: dict[str, dict[str, Any]] = {}
    for rel, data in files.items():
        sha = hashlib.sha256(data).hexdigest()
        (blobs / sha).write_bytes(data)
        table[rel] = {"sha256": sha, "bytes": len(data)}
    fields = {"id": "2026-11-harvest", "title": "我旗秋粮喜获丰收 总产量达12.5万吨", "author": "张晓梅",
              "summary": "今年全旗秋粮总产量达到12.5万吨，同比增长8.3%。", **meta}
    return Release(item_id=fields["id"], version=1, version_id=1, content_hash="0" * 64,
                   meta=ItemMeta(**fields), body=body, files=table, renditions={},
                   blob_path=lambda sha: blobs / sha)


def harvest(tmp_path: Path, **meta: Any) -> Release:
    return make_release(tmp_path, {"images/field.jpg": image_bytes("JPEG"), "images/beans.webp": image_bytes("WEBP"),
                                   "cover.jpg": image_bytes("JPEG", (900, 383), (10, 90, 160))}, **meta)


def state(standin: StandIn) -> dict[str, Any]:
    return requests.get(f"{standin.base_url}/_standin/state", timeout=ANSWER_TIMEOUT).json()


def publisher(settings: Settings, **kwargs: Any) -> WeChatPublisher:
    return WeChatPublisher(settings, poll_delays=kwargs.pop("poll_delays", FAST), **kwargs)


def test_full_publish_uploads_images_and_cover_and_records_the_article(tmp_path, standin, wechat_settings):
    release = harvest(tmp_path)
    receipt = publisher(wechat_settings).publish(release)

    seen = state(standin)
    assert receipt.state == "succeeded"
    [article] = seen["articles"]
    assert receipt.remote_id == article["article_id"] and receipt.url == article["url"]
    assert receipt.details["msg_data_id"] == article["msg_data_id"] and receipt.details["images"] == 2
    news = article["news_item"][0]
    content = news["content"]
    srcs = re.findall(r'<img[^>]*src="([^"]+)"', content)
    assert len(srcs) == 2 and all(s.startswith(f"{standin.base_url}/mmbiz/") for s in srcs)
    body_images = [i for i in seen["images"].values() if i["use"] == "body"]
    assert sorted(i["type"] for i in body_images) == ["jpg", "jpg"]  # the WebP went up as JPEG
    assert "<style" not in content and "class=" not in content and "<script" not in content
    assert "旗统计局<sup" in content and "https://stats.example.cn/2026" in content  # link became a note
    assert news["digest"] == release.meta.summary and news["author"] == "张晓梅"
    # The cover is the drop's cover.jpg, uploaded unchanged as a permanent image.
    cover = requests.get(seen["materials"][news["thumb_media_id"]]["url"], timeout=ANSWER_TIMEOUT).content
    assert cover == release.file_path("cover.jpg").read_bytes()
    page = requests.get(receipt.url, timeout=ANSWER_TIMEOUT)
    assert page.status_code == 200 and "巴彦镇" in page.text


def test_token_expiring_in_the_middle_of_a_publish_is_refreshed_once(tmp_path, standin, wechat_settings):
    standin.set_faults(token_expire_after_calls=2)  # dies after the two image uploads
    receipt = publisher(wechat_settings).publish(harvest(tmp_path))
    assert receipt.state == "succeeded"
    assert state(standin)["tokens_issued"] == 2


def test_daily_quota_on_polling_leaves_it_unconfirmed_and_the_retry_finishes_without_resubmitting(
        tmp_path, standin, wechat_settings):
    standin.set_faults(quota={"freepublish/get": 0})
    channel = publisher(wechat_settings)
    with pytest.raises(WeChatError) as caught:
        channel.publish(harvest(tmp_path))
    assert caught.value.state == "unconfirmed" and caught.value.code == 45009
    assert caught.value.details["publish_id"]

    standin.set_faults(quota={"freepublish/get": 100})
    retry = harvest(tmp_path)
    retry = Release(**{**retry.__dict__, "extra": {"previous_attempt": caught.value.details}})
    receipt = channel.publish(retry)
    assert receipt.state == "succeeded"
    assert len(state(standin)["publishes"]) == 1 and len(state(standin)["articles"]) == 1


def test_submit_timeout_is_reconciled_without_a_second_article(tmp_path, standin, wechat_settings):
    standin.set_faults(submit_delay=1.5, publish_seconds=0)  # the submit takes effect, the answer comes late
    channel = publisher(wechat_settings, submit_timeout=0.3)
    with pytest.raises(WeChatError) as caught:
        channel.publish(harvest(tmp_path))
    assert caught.value.state == "unconfirmed" and caught.value.details["submit_sent"]
    # The premise: the submit did take effect (on a busy machine the stand-in may get to it only after the
    # client gave up waiting), so a second submit by the retry would be a second article.
    wait_until(lambda: len(state(standin)["publishes"]) == 1, message="the late submit never took effect")

    standin.set_faults(submit_delay=0)
    retry = Release(**{**harvest(tmp_path).__dict__, "extra": {"previous_attempt": caught.value.details}})
    receipt = channel.publish(retry)
    seen = state(standin)
    assert receipt.state == "succeeded" and receipt.details["reconciled"]
    assert len(seen["publishes"]) == 1 and [a["article_id"] for a in seen["articles"]] == [receipt.remote_id]


def test_lost_submit_that_never_arrived_is_submitted_with_the_same_draft(tmp_path, standin, wechat_settings):
    channel = publisher(wechat_settings)
    drafted = WeChatPublisher(with_wechat(wechat_settings, draft_only=True)).publish(harvest(tmp_path))
    earlier = {**drafted.details, "submit_sent": True}  # as if the submit had been lost on the way out
    receipt = channel.publish(Release(**{**harvest(tmp_path).__dict__, "extra": {"previous_attempt": earlier}}))
    seen = state(standin)
    assert receipt.state == "succeeded" and not seen["drafts"]
    assert [p["media_id"] for p in seen["publishes"]] == [drafted.details["media_id"]]


def test_draft_only_mode_stops_at_the_draft(tmp_path, standin, wechat_settings):
    settings = with_wechat(wechat_settings, draft_only=True)
    receipt = publisher(settings).publish(harvest(tmp_path))
    seen = state(standin)
    assert receipt.state == "draft_ready" and receipt.message == DRAFT_READY
    assert [d["media_id"] for d in seen["drafts"]] == [receipt.remote_id] and not seen["publishes"]


def test_unverified_account_48001_ends_as_draft_ready(tmp_path, standin, wechat_settings):
    standin.set_faults(unverified=True)
    receipt = publisher(wechat_settings).publish(harvest(tmp_path))
    assert receipt.state == "draft_ready" and "mp.weixin.qq.com" in receipt.message
    assert receipt.details["draft_only"] == "48001" and len(state(standin)["drafts"]) == 1


def test_audit_rejection_is_a_failed_delivery_in_chinese(tmp_path, standin, wechat_settings):
    standin.set_faults(publish_outcome=4)
    with pytest.raises(WeChatPublishFailed) as caught:
        publisher(wechat_settings).publish(harvest(tmp_path))
    assert "审核不通过" in str(caught.value) and caught.value.state == "failed" and not caught.value.retryable
    assert caught.value.details["publish_status"] == 4 and not state(standin)["articles"]


def test_retraction_deletes_the_article_for_good(tmp_path, standin, wechat_settings):
    channel = publisher(wechat_settings)
    published = channel.publish(harvest(tmp_path))
    receipt = channel.retract("2026-11-harvest", published, "数据有误")
    assert receipt.state == "succeeded" and receipt.details["final"]
    assert WeChatPublisher.capabilities.retract_is_final and not WeChatPublisher.capabilities.can_update
    client = WeChatClient(WeChatPublisher.config_of(wechat_settings), wechat_settings.data_dir)
    assert client.publish_status(published.details["publish_id"])["publish_status"] == 5
    assert requests.get(published.url, timeout=ANSWER_TIMEOUT).status_code == 404
    again = channel.retract("2026-11-harvest", published, "数据有误")  # already gone: nothing left to do
    assert "找不到" in again.message


def test_ip_not_whitelisted_names_the_ip_to_add(tmp_path, standin, wechat_settings):
    standin.set_faults(ip_whitelist=True)
    with pytest.raises(WeChatIpNotWhitelisted) as caught:
        publisher(wechat_settings).publish(harvest(tmp_path))
    assert "127.0.0.1" in str(caught.value) and "白名单" in str(caught.value) and not caught.value.retryable


def test_poll_budget_is_kept_per_day_across_publishers(tmp_path, standin, wechat_settings):
    standin.set_faults(publish_gets=5)
    settings = with_wechat(wechat_settings, daily_poll_budget=3)
    with pytest.raises(WeChatError) as caught:
        publisher(settings).publish(harvest(tmp_path))
    assert caught.value.state == "unconfirmed" and "额度" in str(caught.value)
    assert publisher(settings).budget.used("wxtest0001") == 3  # persisted: a new publisher sees it
    assert state(standin)["publishes"][0]["gets"] == 3


def test_limits_are_checked_before_anything_is_sent(tmp_path, standin, wechat_settings):
    release = harvest(tmp_path, title="这是一个非常非常长的标题" * 4)
    with pytest.raises(WeChatLimitError) as caught:
        publisher(wechat_settings).publish(release)
    assert "标题" in str(caught.value) and not state(standin)["calls"]


def test_article_without_pictures_gets_a_generated_cover_and_reprints_name_the_source(
        tmp_path, standin, wechat_settings):
    release = make_release(tmp_path, {}, body="据新华社报道，草原防火期开始。", source="新华社",
                           source_url="https://www.news.cn/a.html")
    receipt = publisher(wechat_settings).publish(release)
    news = state(standin)["articles"][0]["news_item"][0]
    assert receipt.details["cover"] == "generated"
    assert news["content_source_url"] == "https://www.news.cn/a.html" and "转载自：新华社" in news["content"]
    cover = Image.open(io.BytesIO(requests.get(news["thumb_url"], timeout=ANSWER_TIMEOUT).content))
    assert cover.size == (900, 383)


def test_article_stats_per_msgid(tmp_path, standin, wechat_settings):
    receipt = publisher(wechat_settings).publish(harvest(tmp_path))
    yesterday = date.today() - timedelta(days=1)
    requests.post(f"{standin.base_url}/_standin/stats", timeout=ANSWER_TIMEOUT, json={
        "article_id": receipt.remote_id, "ref_date": yesterday.isoformat(),
        "read_user": 1234, "share_user": 56, "like_user": 7})
    client = WeChatClient(WeChatPublisher.config_of(wechat_settings), wechat_settings.data_dir)
    [stats] = client.article_stats(yesterday - timedelta(days=6), yesterday)
    assert (stats.reads, stats.shares, stats.likes) == (1234, 56, 7)
    assert stats.msg_data_id == receipt.details["msg_data_id"] and stats.url == receipt.url



def test_retracting_a_draft_only_delivery_deletes_the_draft(tmp_path, standin, wechat_settings):
    settings = with_wechat(wechat_settings, draft_only=True)
    channel = publisher(settings)
    drafted = channel.publish(harvest(tmp_path))
    receipt = channel.retract("2026-11-harvest", drafted, "撤稿")
    assert receipt.message == "已删除公众号草稿" and not state(standin)["drafts"]


@pytest.mark.parametrize("sample", ["2026-11-harvest/index.md", "heating-notice.md"])
def test_sample_items_appear_in_the_stand_in_with_their_html_and_cover(tmp_path, standin, wechat_settings, sample):
    import frontmatter

    source = ROOT / "content" / "samples" / sample
    post = frontmatter.loads(source.read_text(encoding="utf-8"))
    folder = source.parent if source.name == "index.md" else None
    files = {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()
             and p.name != "index.md"} if folder else {}
    meta = {k: v for k, v in post.metadata.items() if k in ("title", "author", "summary", "kind", "source")}
    release = make_release(tmp_path, files, body=post.content, id=source.parent.name if folder else source.stem,
                           **meta)
    receipt = publisher(wechat_settings).publish(release)

    [article] = state(standin)["articles"]
    news = article["news_item"][0]
    assert receipt.state == "succeeded" and receipt.url == article["url"] and news["title"] == meta["title"]
    assert news["digest"] == meta["summary"]
    assert re.search(r"<strong[^>]*>", news["content"])  # the samples' bold survives, styled inline
    assert receipt.details["images"] == len([f for f in files if f.startswith("images/")])
    assert receipt.details["cover"] == ("images/field.jpg" if files else "generated")
    artifacts = ROOT / "test-artifacts" / "wechat"
    artifacts.mkdir(parents=True, exist_ok=True)  # for a human look at what WeChat receives
    (artifacts / f"{release.item_id}.html").write_text(
        f"<!doctype html><meta charset=utf-8><h1>{news['title']}</h1>{news['content']}", encoding="utf-8")


def test_correction_is_a_new_article_linking_the_original(tmp_path, standin, wechat_settings):
    from publishers.base import Receipt

    original = publisher(wechat_settings).publish(harvest(tmp_path))
    corrected = publisher(wechat_settings).update(harvest(tmp_path, summary="更正后的摘要。"),
                                                  Receipt(**original.__dict__))
    articles = state(standin)["articles"]
    assert len(articles) == 2 and corrected.url != original.url
    news = next(a for a in articles if a["url"] == corrected.url)["news_item"][0]
    assert news["title"].startswith("更正：") and len(news["title"]) <= 32
    assert "更正说明" in news["content"] and original.url in news["content"]
    assert corrected.details["corrects"] == original.remote_id


class RecordingSlots:
    """Slots handed over as the publish flow does; `refuse` plays an orchestrator that cannot give one."""

    def __init__(self, refuse: bool = False) -> None:
        self.refuse = refuse
        self.held: list[str] = []

    @contextmanager
    def hold(self, name: str) -> Iterator[None]:
        if self.refuse:
            raise SlotUnavailable(f"Prefect 并发限制 {name} 不可用（timed out）")
        self.held.append(name)
        yield


def test_the_submit_is_made_holding_the_accounts_slot(tmp_path, standin, wechat_settings):
    slots = RecordingSlots()
    receipt = publisher(wechat_settings, slots=slots).publish(harvest(tmp_path))
    assert receipt.state == "succeeded" and slots.held == ["wechat-wxtest0001"]


def test_a_refused_slot_is_retryable_and_nothing_is_submitted(tmp_path, standin, wechat_settings):
    with pytest.raises(WeChatError) as caught:
        publisher(wechat_settings, slots=RecordingSlots(refuse=True)).publish(harvest(tmp_path))
    assert caught.value.retryable and caught.value.state == "failed"
    assert str(caught.value) == "Prefect 并发限制 wechat-wxtest0001 不可用（timed out），尚未提交发表，稍后重试"
    assert not state(standin)["publishes"]


def test_rongmei_up_runs_the_stand_in_only_without_an_app_id(wechat_settings):
    assert WeChatPublisher.local_services(wechat_settings) == []
    [service] = WeChatPublisher.local_services(with_wechat(wechat_settings, app_id=""))
    try:
        base_url = service.environment["RONGMEI_WECHAT__BASE_URL"]
        assert service.environment["RONGMEI_WECHAT__APP_ID"] == "wx-standin" and base_url in service.message
        assert requests.get(f"{base_url}/_standin/state", timeout=ANSWER_TIMEOUT).ok
    finally:
        service.stop()
