"""Real channel plugins used by the tests, loaded through `extra_publishers` like any local plugin.

`flaky` fails with a retryable error on its first two attempts per item and then succeeds; `broken` always
fails for good. Both keep their state in files, because every attempt may run in a new worker process. Neither
takes any kind by default (`default_kinds` empty): only items that name them go there.
"""

from __future__ import annotations

import json

from publishers.base import Capabilities, Publisher, PublishError, Receipt, Release

__all__ = ["BrokenPublisher", "FlakyPublisher"]


class FlakyPublisher(Publisher):
    name = "flaky"
    label = "测试渠道（时好时坏）"
    color = "#bcbd22"
    capabilities = Capabilities(can_update=True, can_retract=True, note="test channel: fails twice, then works")

    def _log(self) -> dict:
        path = self.settings.data_dir / "flaky.json"
        return json.loads(path.read_text()) if path.exists() else {}

    def publish(self, release: Release) -> Receipt:
        log = self._log()
        key = f"{release.item_id}-v{release.version}"
        log[key] = log.get(key, 0) + 1
        (self.settings.data_dir / "flaky.json").write_text(json.dumps(log))
        if log[key] <= 2:
            raise PublishError(f"模拟的临时故障（第 {log[key]} 次）", retryable=True)
        return Receipt(remote_id=key, url=f"flaky://{key}")

    def update(self, release: Release, previous: Receipt) -> Receipt:
        return Receipt(remote_id=f"{release.item_id}-v{release.version}", message=f"corrects {previous.remote_id}")

    def retract(self, item_id: str, previous: Receipt, reason: str) -> Receipt:
        return Receipt(remote_id=previous.remote_id, message=f"retracted: {reason}")


class BrokenPublisher(Publisher):
    name = "broken"
    label = "测试渠道（总是失败）"
    color = "#d62728"
    capabilities = Capabilities(can_update=False, can_retract=False, note="test channel: always fails")

    def publish(self, release: Release) -> Receipt:
        raise PublishError("模拟的永久故障：账号被封禁", retryable=False)
