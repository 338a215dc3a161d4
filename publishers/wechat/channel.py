"""The WeChat Official Account channel (公众号, issue 4): draft → publish once → poll, corrections, retraction.

Delivery: every inline image goes up with media/uploadimg, the cover with material/add_material, then
draft/add, freepublish/submit exactly once per delivery, and freepublish/get polled slowly. The HTML comes
from `publishers.wechat.formatting`, the pictures from `.images`, the limits from `.checks`, the API client
is `.client`; the local stand-in of the service is `standins.wechat`.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import requests

from publishers.base import (
    Capabilities,
    Condition,
    Correction,
    LocalService,
    Publisher,
    Receipt,
    Release,
    RenditionNeed,
    Slots,
    SlotUnavailable,
)
from publishers.reach import ChannelReach, ReachWindow
from publishers.wechat.checks import TITLE_LIMIT, wechat_checks
from publishers.wechat.client import (
    DailyBudget,
    WeChatClient,
    WeChatError,
    WeChatLimitError,
    WeChatMediaError,
    WeChatPublishFailed,
    WeChatQuotaExceeded,
    WeChatUnauthorized,
    file_lock,
)
from publishers.wechat.config import WeChatSettings
from publishers.wechat.formatting import make_digest, wechat_html
from publishers.wechat.images import BodyImages, choose_cover, prepare_image
from publishers.wechat.reach import wechat_reach
from rongmei.core.faults import fault_point
from rongmei.core.model import CheckResult, ItemMeta
from rongmei.core.settings import Settings

if TYPE_CHECKING:
    import typer

__all__ = ["DEFAULT_POLL_DELAYS", "DRAFT_READY", "NETWORK_ERRORS", "PUBLISH_FAILURES", "WeChatPublisher"]
log = logging.getLogger(__name__)

PUBLISH_FAILURES = {
    2: "原创声明失败",
    3: "常规失败",
    4: "平台审核不通过",
    5: "文章已被删除",
    6: "文章已被封禁",
}
DRAFT_READY = "草稿已就绪，请在公众号后台 mp.weixin.qq.com 发表"
DEFAULT_POLL_DELAYS = (3.0, 5.0, 10.0, 20.0, 30.0, 60.0, 60.0, 120.0, 120.0, 300.0)  # ~12 min in 10 calls
NETWORK_ERRORS = (requests.Timeout, requests.ConnectionError)


class WeChatPublisher(Publisher):
    """Publishes an article to a WeChat Official Account: draft/add → freepublish/submit (once) → poll.

    The submit is irreversible. If its answer is lost, the delivery is left "unconfirmed" with the draft's
    media_id; the next attempt (given those details as `release.extra["previous_attempt"]`) looks for the
    article with freepublish/batchget and submits again only if the draft is still in the draft box.
    """

    name = "wechat"
    label = "微信公众号"
    color = "#2ca02c"
    default_kinds = ("article", "video")
    order = 20
    capabilities = Capabilities(
        can_update=False, can_retract=True, retract_is_final=True, correction=Correction.new_article,
        renditions=("cover_900x383", "cover_1x1", RenditionNeed("video_web", Condition.has_video)),
        note="微信不能修改已发表的文章：更正会另发一篇链接原文的新文章；删除不可恢复。",
    )
    config_model = WeChatSettings

    def __init__(self, settings: Settings, *, slots: Slots | None = None, client: WeChatClient | None = None,
                 poll_delays: Sequence[float] = DEFAULT_POLL_DELAYS, submit_timeout: float = 30.0,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        super().__init__(settings, slots=slots)
        self._client = client
        self.poll_delays = tuple(poll_delays)
        self.submit_timeout = submit_timeout
        self.sleep = sleep
        self.budget = DailyBudget(settings.data_dir, "poll", self.config.daily_poll_budget)

    @property
    def client(self) -> WeChatClient:
        if self._client is None:
            self._client = WeChatClient(self.config, self.settings.data_dir)
        return self._client

    # Hooks for the CLI and `rongmei up` ---------------------------------------------------------------
    @classmethod
    def commands(cls) -> typer.Typer:
        from publishers.wechat.commands import wechat_app

        return wechat_app

    @classmethod
    def local_services(cls, settings: Settings) -> list[LocalService]:
        """Without an AppID, the WeChat stand-in on this machine, and the worker's flow runs pointed at it."""
        if cls.config_of(settings).app_id:
            return []
        from standins.wechat import start_standin

        standin = start_standin(host="127.0.0.1", port=0, app_id="wx-standin", secret="standin-secret")
        return [LocalService(
            name="wechat stand-in", stop=standin.stop,
            environment={"RONGMEI_WECHAT__BASE_URL": standin.base_url, "RONGMEI_WECHAT__APP_ID": "wx-standin",
                         "RONGMEI_WECHAT__APP_SECRET": "standin-secret"},
            message=f"WeChat stand-in (no real credentials configured) on {standin.base_url}",
        )]

    # Publish -------------------------------------------------------------------------------------
    def publish(self, release: Release) -> Receipt:
        """Each step's result is written ahead (`self.progress`) before the next starts; an interrupted earlier
        attempt (`previous_attempt`) resumes at the step after its last record and never submits twice."""
        earlier = dict(release.extra.get("previous_attempt") or {})
        if earlier.get("app_id") not in (None, self.client.app_id):
            earlier = {}  # made on another account: nothing of it exists on this one
        if earlier.get("publish_id"):
            return self._await_publish(earlier)  # submitted before: only the outcome is missing
        if earlier.get("media_id") and earlier.get("submit_sent"):
            found = self._reconcile(earlier)
            if found is not None:
                return found
            return self._submit(earlier)  # the draft is still there: the earlier submit never took effect
        if earlier.get("media_id"):  # the draft was made, nothing was submitted
            return self._draft_ready(earlier, "draft_only") if self.config.draft_only else self._submit(earlier)
        blocking = [c for c in wechat_checks(release.meta, release.body, release.files) if c.blocking]
        if blocking:
            raise WeChatLimitError("；".join(f"{c.message}（{c.fix}）" for c in blocking))
        details = self._create_draft(release, earlier)
        if self.config.draft_only:
            return self._draft_ready(details, "draft_only")
        return self._submit(details)

    def _create_draft(self, release: Release, earlier: Mapping[str, Any]) -> dict[str, Any]:
        client, meta, progress = self.client, release.meta, self.progress
        progress.record(app_id=client.app_id)
        images = BodyImages(client, release, known=earlier.get("image_urls"),
                            on_upload=lambda uploaded: progress.record(image_urls=uploaded))
        source_line = str(release.extra.get("correction_line", ""))
        if meta.is_reprint:
            source_line += f"转载自：{meta.source or urlsplit(meta.source_url).hostname or meta.source_url}"
        content = wechat_html(release.body, image_url=images, source_line=source_line)
        cover, cover_name = choose_cover(release, self.settings.center_name)
        thumb_media_id = str(earlier.get("thumb_media_id") or "")
        if not thumb_media_id:  # a permanent material: uploading it again would leave a second one
            data, ext, mime = prepare_image(cover)
            thumb_media_id, _ = client.add_image_material(data, f"cover.{ext}", mime)
            progress.record(thumb_media_id=thumb_media_id)
        article = {
            "article_type": "news", "title": meta.title, "author": meta.author,
            "digest": make_digest(meta.summary, release.body), "content": content,
            "content_source_url": meta.source_url, "thumb_media_id": thumb_media_id,
            "need_open_comment": 0, "only_fans_can_comment": 0,
        }
        media_id = client.add_draft(article)
        details = {"app_id": client.app_id, "media_id": media_id, "thumb_media_id": thumb_media_id,
                   "title": meta.title, "images": len(images.uploaded), "cover": cover_name}
        progress.record(**details)
        fault_point("wechat.after_draft")
        log.info("wechat: draft %s for %s v%s (%d images, cover %s)", media_id, meta.id, release.version,
                 len(images.uploaded), cover_name)
        return details

    def _draft_ready(self, details: dict[str, Any], why: str) -> Receipt:
        return Receipt(state="draft_ready", remote_id=details["media_id"], message=DRAFT_READY,
                       details={**details, "draft_only": why})

    def _submit(self, details: dict[str, Any]) -> Receipt:
        try:
            with self._submit_slot():
                # Written ahead: from here on an interrupted attempt cannot know whether WeChat took the
                # submit, so the next one looks in the published list before it submits again.
                self.progress.record(submit_sent=True)
                fault_point("wechat.before_submit")
                ids = self.client.submit(details["media_id"], timeout=self.submit_timeout)
                fault_point("wechat.after_submit")
                self.progress.record(**ids)
        except WeChatUnauthorized:
            log.warning("wechat: 48001 on freepublish/submit, account %s can only make drafts", details["app_id"])
            return self._draft_ready(details, "48001")
        except NETWORK_ERRORS as exc:
            raise WeChatError(
                f"已请求微信发表，但没有收到答复（{type(exc).__name__}）：不能确定是否已发表。"
                "下次重试会先在已发表列表中核对，不会重复发表。",
                state="unconfirmed", details={**details, "submit_sent": True},
            ) from exc
        return self._await_publish({**details, **ids, "submit_sent": True})

    @contextmanager
    def _submit_slot(self) -> Iterator[None]:
        """One submit at a time per account.

        A file lock covers the processes sharing this data_dir; the slot `wechat-<appid>` from `self.slots`
        covers workers elsewhere (the publish flow hands over one its orchestrator keeps). If the slot cannot
        be had, nothing has been submitted yet, so the error is retryable.
        """
        app_id = self.client.app_id
        with file_lock(self.settings.data_dir / f"wechat-submit-{app_id}.lock"), ExitStack() as held:
            try:
                held.enter_context(self.slots.hold(f"wechat-{app_id}"))
            except SlotUnavailable as exc:
                raise WeChatError(f"{exc}，尚未提交发表，稍后重试", retryable=True) from exc
            yield

    def _await_publish(self, details: dict[str, Any]) -> Receipt:
        """Poll freepublish/get slowly (100 calls a day for the whole account) until the outcome shows."""
        app_id = self.client.app_id
        for delay in self.poll_delays:
            self.sleep(delay)
            if not self.budget.take(app_id):
                raise WeChatQuotaExceeded(
                    f"今天查询发表结果的额度（{self.budget.limit} 次）已用完：文章已提交，明天会继续查询结果",
                    state="unconfirmed", details=details)
            try:
                status = self.client.publish_status(details["publish_id"])
            except (WeChatError, *NETWORK_ERRORS) as exc:
                raise WeChatError(f"文章已提交，查询发表结果失败：{exc}。稍后会继续查询，不会重复发表",
                                  state="unconfirmed", details=details,
                                  code=getattr(exc, "code", 0)) from exc
            fault_point("wechat.poll")
            code = int(status.get("publish_status", 1))
            if code == 1:
                continue
            if code == 0:
                items = (status.get("article_detail") or {}).get("item") or [{}]
                article_id = str(status.get("article_id", ""))
                url = str(items[0].get("article_url", ""))
                log.info("wechat: published %s as %s", details.get("title"), article_id)
                return Receipt(state="succeeded", remote_id=article_id, url=url, message="已在公众号发表",
                               details={**details, "article_id": article_id, "article_url": url})
            reason = PUBLISH_FAILURES.get(code, f"未知状态 {code}")
            raise WeChatPublishFailed(f"公众号发表失败：{reason}（状态 {code}），请在公众号后台查看原因后修改重发",
                                      details={**details, "publish_status": code,
                                               "fail_idx": status.get("fail_idx", [])})
        raise WeChatError("文章已提交，微信仍在处理（审核中）；稍后会继续查询结果，不会重复发表",
                          state="unconfirmed", details=details)

    def _reconcile(self, earlier: dict[str, Any]) -> Receipt | None:
        """After a lost submit answer: the article, if WeChat published it; None if the draft was never taken."""
        client = self.client
        for offset in range(0, 60, 20):  # the newest 60 articles are far more than a lost answer's window
            page = client.published(offset=offset, count=20)
            for entry in page.get("item", []):
                for news in (entry.get("content") or {}).get("news_item", []):
                    if news.get("title") == earlier.get("title") and \
                            news.get("thumb_media_id") == earlier.get("thumb_media_id"):
                        article_id = str(entry.get("article_id", ""))
                        log.info("wechat: reconciled lost submit of %s as %s", earlier.get("title"), article_id)
                        return Receipt(state="succeeded", remote_id=article_id, url=str(news.get("url", "")),
                                       message="已在公众号发表（已核对）",
                                       details={**earlier, "article_id": article_id,
                                                "article_url": str(news.get("url", "")), "reconciled": True})
            if offset + 20 >= int(page.get("total_count", 0)):
                break
        try:
            client.get_draft(earlier["media_id"])
        except WeChatMediaError as exc:  # the draft left the draft box: the submit was taken, still running
            raise WeChatError("文章已提交，微信仍在处理中；稍后会继续核对，不会重复发表",
                              state="unconfirmed", details=earlier) from exc
        return None

    def reconcile(self, item_id: str, attempt: Receipt) -> Receipt | None:
        """What became of an unconfirmed delivery, never submitting anything: the published article, the
        draft still in the draft box (draft_ready: it can be deleted), None, or an error while WeChat works."""
        details = dict(attempt.details or {})
        media_id = str(details.get("media_id", ""))
        if details.get("publish_id"):
            if not self.budget.take(self.client.app_id):  # the same 100 a day as the publish poll
                raise WeChatQuotaExceeded(f"今天查询发表结果的额度（{self.budget.limit} 次）已用完，明天继续核对",
                                          state="unconfirmed", details=details)
            status = self.client.publish_status(details["publish_id"])
            code = int(status.get("publish_status", 1))
            if code == 0:
                items = (status.get("article_detail") or {}).get("item") or [{}]
                article_id, url = str(status.get("article_id", "")), str(items[0].get("article_url", ""))
                return Receipt(state="succeeded", remote_id=article_id, url=url, message="已在公众号发表（已核对）",
                               details={**details, "article_id": article_id, "article_url": url})
            if code == 1:
                raise WeChatError("文章已提交，微信仍在处理中，暂时无法删除；请稍后再撤稿一次",
                                  state="unconfirmed", retryable=True, details=details)
            found = None  # 2/3/4/5/6: not (or no longer) published
        elif media_id and details.get("submit_sent"):
            found = self._reconcile(details)
        else:
            found = None
        if found is not None:
            return found
        if media_id:  # nothing published, but the draft may still be there for someone to publish by hand
            return Receipt(state="draft_ready", remote_id=media_id, message="草稿仍在草稿箱", details=details)
        return None

    # Pre-checks, corrections, retraction -----------------------------------------------------------
    @classmethod
    def precheck(cls, meta: ItemMeta, body: str, files: Mapping[str, Path], settings: Settings) -> list[CheckResult]:
        return wechat_checks(meta, body, files)

    def update(self, release: Release, previous: Receipt) -> Receipt:
        """WeChat cannot edit a published article: a correction (更正) is a new article that links the old one."""
        link = f"原文：{previous.url}" if previous.url else ""
        title = f"更正：{release.meta.title}"[:TITLE_LIMIT]
        corrected = dataclasses.replace(
            release,
            meta=release.meta.model_copy(update={"title": title}),
            extra={**release.extra, "correction_line": f"更正说明：本文更正此前发布的《{release.meta.title}》。{link} "},
        )
        receipt = self.publish(corrected)
        receipt.details = {**receipt.details, "corrects": previous.remote_id, "corrects_url": previous.url}
        return receipt

    def retract(self, item_id: str, previous: Receipt, reason: str) -> Receipt:
        """freepublish/delete of the whole article: final, WeChat cannot bring it back."""
        if previous.state == "draft_ready":
            return self._delete_draft(item_id, previous, reason)
        article_id = previous.remote_id or str(previous.details.get("article_id", ""))
        if not article_id:
            raise WeChatError(f"{item_id} 在公众号上没有已发表文章的记录，无法删除；请在公众号后台核对")
        try:
            self.client.delete_article(article_id, index=0)
        except WeChatError as exc:
            if exc.code != 53600:
                raise
            message = "公众号上已找不到这篇文章（可能已在后台删除）"
        else:
            message = "已从公众号删除（不可恢复）"
        log.info("wechat: deleted article %s of %s (%s)", article_id, item_id, reason)
        return Receipt(state="succeeded", remote_id=article_id, url=previous.url, message=message,
                       details={"article_id": article_id, "reason": reason, "final": True})


    def _delete_draft(self, item_id: str, previous: Receipt, reason: str) -> Receipt:
        """A draft-only delivery: take the draft out of the draft box before anyone publishes it by hand."""
        media_id = previous.remote_id or str(previous.details.get("media_id", ""))
        try:
            self.client.delete_draft(media_id)
        except WeChatMediaError:  # 40007: already gone, or published by hand from the backend
            message = "草稿已不在草稿箱：如已在后台手动发表，请在 mp.weixin.qq.com 删除该文章"
        else:
            message = "已删除公众号草稿"
        log.info("wechat: deleted draft %s of %s (%s)", media_id, item_id, reason)
        return Receipt(state="succeeded", remote_id=media_id, message=message,
                       details={"media_id": media_id, "reason": reason, "final": True})

    # Reach (传播监测) ---------------------------------------------------------------------------------------
    reach_columns = (("wechat_reads", "微信阅读"), ("wechat_shares", "微信分享", "分享"),
                     ("wechat_likes", "微信点赞", "点赞"))

    @classmethod
    def reach(cls, window: ReachWindow) -> ChannelReach:
        """Reads (the reach), shares and likes from WeChat's statistics (publishers.wechat.reach)."""
        return wechat_reach(window)
