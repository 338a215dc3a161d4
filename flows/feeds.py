"""Pull upstream feeds (issue 7): one task per source, so one broken source never stops the others.

Each new entry becomes a reprint drop in content/inbox; the ingest deployment takes it from there into
the normal 初审 → 复审 → 终审 review. The run's markdown artifact shows every source's health.
"""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from rongmei.core.settings import FeedSourceConfig, Settings, load_settings
from rongmei.intake.feeds.fetch import READ_TIMEOUT
from rongmei.intake.feeds.health import feed_health, health_markdown
from rongmei.intake.feeds.pull import PullResult, configured_sources, pull_source
from rongmei.storage.store import Store, store_for


@task(name="pull feed", cache_policy=NO_CACHE, task_run_name="pull {source.name}")
def pull_one(source: FeedSourceConfig, settings: Settings, store: Store, timeout: float) -> PullResult:
    """Fetch one source conditionally and write a drop per new entry; upstream trouble goes to its health."""
    result = pull_source(source, settings.inbox, store, timeout=timeout)
    logger = get_run_logger()
    if result.status == "error":
        logger.warning("订阅源 %s 抓取失败：%s", source.name, result.message)
    else:
        logger.info("订阅源 %s：%s，新增 %d 条", source.name, result.status, len(result.new_items))
    return result


@flow(name="pull-feeds", log_prints=False)
def pull_feeds(timeout: float = READ_TIMEOUT) -> dict[str, Any]:
    """Pull every enabled source from the configuration; returns counts and per-source results."""
    settings = load_settings()
    store = store_for(settings)
    sources = configured_sources(settings)
    futures = [pull_one.submit(source, settings, store, timeout) for source in sources]
    results: list[dict[str, Any]] = []
    for source, future in zip(sources, futures, strict=True):
        future.wait()
        state = future.state
        if state.is_completed():
            results.append(future.result().as_dict())
        else:
            # A bug in our own code for one source's entries: reported, and the other sources still count.
            message = f"内部错误：{state.message or state.name}"
            results.append(PullResult(source.name, source.url, "error", message=message).as_dict())
    summary = {
        "sources": len(sources),
        "new": sum(r["new"] for r in results),
        "failed": [r["name"] for r in results if r["status"] == "error"],
        "results": results,
    }
    if sources:
        create_markdown_artifact(
            key="feed-health",
            markdown=f"新增转载稿 {summary['new']} 篇（已放入收稿箱，等待审核）。\n\n" + health_markdown(feed_health(store)),
            description="订阅源健康状况",
        )
    return summary


if __name__ == "__main__":
    pull_feeds()
