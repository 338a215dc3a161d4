"""The delivery plan reads each channel's Capabilities: a correction is an update where the channel can carry
one and a new publication where it cannot; a retraction the channel cannot do is recorded, not attempted."""

from __future__ import annotations

import json
from typing import ClassVar

from sqlalchemy import select

from publishers import Registry, registry_for
from publishers.base import Capabilities, Correction, Publisher, Receipt, Release
from rongmei.delivery.deliveries import deliver
from rongmei.delivery.plan import correction_action, delivery_plan, retract_plan
from rongmei.delivery.retraction import retract_item_everywhere
from rongmei.intake.drops import find_drops
from rongmei.intake.ingest import ingest_drop
from rongmei.storage.snapshots import load_version
from rongmei.storage.tables import Delivery, LedgerEntry
from tests.support.drops import write_drop
from tests.support.review import sign_all_stages


class Recording(Publisher):
    """A channel that notes every call in data_dir/<name>.json (the plan must not call what cannot act)."""

    capabilities: ClassVar[Capabilities] = Capabilities(can_update=True, can_retract=True)

    def _note(self, call: str) -> None:
        path = self.settings.data_dir / f"{self.name}.json"
        calls = json.loads(path.read_text()) if path.exists() else []
        path.write_text(json.dumps([*calls, call]))

    def publish(self, release: Release) -> Receipt:
        self._note(f"publish v{release.version}")
        return Receipt(remote_id=f"{release.item_id}-v{release.version}")

    def update(self, release: Release, previous: Receipt) -> Receipt:
        self._note(f"update v{release.version}")
        return Receipt(remote_id=f"{release.item_id}-v{release.version}")

    def retract(self, item_id: str, previous: Receipt, reason: str) -> Receipt:
        self._note("retract")
        return Receipt(remote_id=previous.remote_id)


class InPlace(Recording):
    name = "inplace"


class NewArticle(Recording):
    name = "newarticle"
    capabilities = Capabilities(can_update=False, can_retract=True, correction=Correction.new_article)


class Fixed(Recording):
    name = "fixed"  # what is out stays as it is: a correction is a new publication beside it
    capabilities = Capabilities(can_update=False, can_retract=False, correction=Correction.none)


CHANNELS = {cls.name: f"tests.delivery.test_delivery_plan:{cls.__name__}" for cls in (InPlace, NewArticle, Fixed)}


def calls(settings, channel: str) -> list[str]:
    path = settings.data_dir / f"{channel}.json"
    return json.loads(path.read_text()) if path.exists() else []


def signed_version(settings, store, name: str, front: str) -> int:
    staging = settings.content_dir / "staging"
    write_drop(staging, name, front)
    [drop] = [d for d in find_drops(staging) if d.name == name]
    outcome = ingest_drop(drop, settings, store)
    assert outcome.status == "ingested", [p.message for p in outcome.problems]
    sign_all_stages(store, settings, outcome.version_id, prefix=name)
    return outcome.version_id


def test_correction_action_follows_the_channels_capabilities():
    registry = Registry({"inplace": InPlace, "newarticle": NewArticle, "fixed": Fixed})
    assert correction_action(registry, "inplace") == "update"
    assert correction_action(registry, "newarticle") == "update"  # its update is the new piece linking the old
    assert correction_action(registry, "fixed") == "publish"
    assert correction_action(registry, "not-installed") == "update"  # its delivery says it is unavailable


def test_a_correction_goes_to_every_channel_that_had_the_item_as_each_can_take_it(settings, store):
    settings = settings.model_copy(update={"extra_publishers": CHANNELS})
    first = signed_version(settings, store, "plan", "title: 原稿\nauthor: 张三\nchannels: [inplace, newarticle, fixed]")
    for channel in ("inplace", "newarticle", "fixed"):
        assert deliver(store, settings, load_version(store, first), channel).state == "succeeded"
    second = signed_version(settings, store, "plan-2", "id: plan\ntitle: 更正稿\nauthor: 张三\nchannels: [inplace]")
    plan = delivery_plan(store, settings, load_version(store, second))
    assert plan == [("fixed", "publish"), ("inplace", "update"), ("newarticle", "update")]
    for channel, action in plan:
        assert deliver(store, settings, load_version(store, second), channel, action).state == "succeeded"
    assert calls(settings, "fixed") == ["publish v1", "publish v2"]
    assert calls(settings, "newarticle") == ["publish v1", "update v2"]


def test_a_channel_that_cannot_retract_is_not_called_and_the_retraction_says_so(settings, store):
    settings = settings.model_copy(update={"extra_publishers": CHANNELS})
    version_id = signed_version(settings, store, "gone", "title: 撤稿\nauthor: 张三\nchannels: [inplace, fixed]")
    for channel in ("inplace", "fixed"):
        assert deliver(store, settings, load_version(store, version_id), channel).state == "succeeded"
    steps = retract_plan(store, settings, "gone", registry_for(settings))
    assert [(s.channel, s.possible) for s in steps] == [("fixed", False), ("inplace", True)]
    results = {r.channel: r for r in retract_item_everywhere(store, settings, "gone", "内容有误", "reviewer:desk")}
    assert results["inplace"].state == "succeeded" and calls(settings, "inplace")[-1] == "retract"
    assert results["fixed"].state == "failed" and "手动删除" in results["fixed"].message
    assert calls(settings, "fixed") == ["publish v1"]  # never asked to do what it cannot
    with store.session() as s:
        retract = s.scalars(select(Delivery).where(Delivery.channel == "fixed", Delivery.action == "retract")).one()
        failed = s.scalars(select(LedgerEntry).where(LedgerEntry.action == "delivery_failed")).one()
        done = s.scalars(select(LedgerEntry).where(LedgerEntry.action == "item_retracted")).one()
    assert retract.state == "failed" and failed.details["channel"] == "fixed" and failed.details["action"] == "retract"
    assert done.details["channels"] == {"fixed": "failed", "inplace": "succeeded"}
