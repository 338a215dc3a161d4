"""The workflow's states as one table (rongmei.core.states) and the one function every state change goes
through (rongmei.storage.transitions): a change the table does not allow is refused and writes nothing."""

from __future__ import annotations

import dataclasses

import pytest
from sqlalchemy import func, select

from rongmei.core.errors import PublishError, StoreError, TransitionRefused
from rongmei.core.labels import DELIVERY_ZH, STATE_ZH
from rongmei.core.states import (
    DELIVERY_TRANSITIONS,
    DONE_STATES,
    ITEM_TRANSITIONS,
    VERSION_TRANSITIONS,
    DeliveryState,
    ItemState,
)
from rongmei.intake.ingest import ingest_inbox
from rongmei.storage import ledger
from rongmei.storage.snapshots import VersionSnapshot, load_version
from rongmei.storage.store import store_for
from rongmei.storage.tables import Delivery, Item, LedgerEntry, Version
from rongmei.storage.transitions import LedgerNote, allowed, transition
from tests.support.drops import write_drop


def ingested(settings, store, item_id: str = "a") -> int:
    write_drop(settings.inbox, item_id, "title: 稿\nauthor: 张三\nchannels: [web]")
    (outcome,) = ingest_inbox(settings, store)
    assert outcome.status == "ingested"
    return outcome.version_id


def ledger_size(store) -> int:
    with store.session() as s:
        return s.scalar(select(func.count()).select_from(LedgerEntry))


def test_every_state_has_its_row_in_the_tables_and_a_chinese_name():
    assert set(ITEM_TRANSITIONS) == set(VERSION_TRANSITIONS) == set(ItemState)
    assert set(DELIVERY_TRANSITIONS) == set(DeliveryState)
    assert all(state in STATE_ZH for state in ItemState) and all(state in DELIVERY_ZH for state in DeliveryState)
    assert STATE_ZH.get("in_review") == "审核中"  # looked up by the strings the store holds, as before


def test_the_stored_values_stay_what_existing_databases_hold():
    assert [s.value for s in ItemState] == ["in_review", "returned", "rejected", "approved", "published",
                                            "retracted", "superseded"]
    assert {s.value for s in DeliveryState} == {"pending", "in_progress", "succeeded", "failed", "retrying",
                                                "unconfirmed", "draft_ready", "skipped", "refused"}


def test_the_rules_of_the_workflow_read_from_the_tables():
    assert all(not DELIVERY_TRANSITIONS[s] for s in DONE_STATES)  # done is never attempted again
    assert not VERSION_TRANSITIONS[ItemState.retracted]  # a retracted version never comes back
    assert ItemState.published not in VERSION_TRANSITIONS[ItemState.in_review]  # only an approved one goes out
    assert all(ItemState.in_review in ITEM_TRANSITIONS[s] for s in ItemState)  # a new version: back to review
    assert all(ItemState.retracted in ITEM_TRANSITIONS[s] for s in ItemState)  # retraction from anywhere


def test_an_illegal_transition_is_refused_names_from_and_to_and_writes_nothing(settings, store):
    version_id = ingested(settings, store)
    before = ledger_size(store)
    with store.session() as s:  # even a caller that catches the refusal and commits writes nothing
        version = s.get(Version, version_id)
        item = s.get(Item, "a")
        with pytest.raises(TransitionRefused, match="'in_review' to 'published'") as refused:
            # The item's change alone would be allowed: every change is checked first, so it is not made either.
            transition(s, [(item, ItemState.retracted), (version, ItemState.published)],
                       LedgerNote("published", actor="test", item_id="a", version=1))
        assert item.state == ItemState.in_review and version.state == ItemState.in_review
    assert isinstance(refused.value, StoreError)
    with store.session() as s:
        assert s.get(Version, version_id).state == ItemState.in_review
        assert s.get(Item, "a").state == ItemState.in_review
    assert ledger_size(store) == before


def test_an_allowed_transition_changes_state_and_writes_its_entry_in_the_same_transaction(settings, store):
    version_id = ingested(settings, store)
    with store.session() as s:
        version = s.get(Version, version_id)
        transition(s, [(version, ItemState.retracted)],
                   LedgerNote("retract_requested", actor="reviewer:test", item_id="a", version=1,
                              details={"reason": "测试"}))
    with store.session() as s:
        assert s.get(Version, version_id).state == "retracted"
        entry = s.scalars(select(LedgerEntry).where(LedgerEntry.action == "retract_requested")).one()
        assert entry.actor == "reviewer:test" and entry.details == {"reason": "测试"}
        assert ledger.verify(s).ok
    with pytest.raises(TransitionRefused), store.session() as s:  # and it stays out
        transition(s, [(s.get(Version, version_id), ItemState.approved)])


def test_a_done_delivery_is_never_claimed_again_and_an_unknown_state_is_refused():
    assert not allowed(Delivery(state=DeliveryState.succeeded), DeliveryState.in_progress)
    assert allowed(Delivery(state=DeliveryState.unconfirmed), DeliveryState.succeeded)  # settled with the channel
    assert not allowed(Delivery(state=DeliveryState.in_progress), "exploded")
    assert allowed(Delivery(), DeliveryState.in_progress)  # a new row starts as pending


def test_publish_error_declares_its_fields_and_keeps_its_constructor():
    plain = PublishError("网络错误")
    assert (plain.retryable, plain.state, plain.details) == (False, None, {})
    lost = PublishError("超时", retryable=True, state="unconfirmed", details={"media_id": "m1"})
    assert (lost.retryable, lost.state, lost.details, str(lost)) == (True, "unconfirmed", {"media_id": "m1"}, "超时")


def test_a_snapshot_is_frozen_detached_and_one_store_serves_a_process(settings, store):
    version_id = ingested(settings, store)
    snapshot = load_version(store, version_id)
    assert isinstance(snapshot, VersionSnapshot) and snapshot.state is ItemState.in_review
    assert snapshot.meta.title == "稿" and snapshot.number == 1 and snapshot.signed_hash == snapshot.content_hash
    with pytest.raises(dataclasses.FrozenInstanceError):
        snapshot.state = ItemState.approved  # type: ignore[misc]
    with store.session() as s:
        s.get(Version, version_id).renditions = {"thumbnail": {"sha256": "0" * 64}}
    assert snapshot.renditions == {}  # what the run read stays what it read
    with pytest.raises(StoreError, match="no version with id"):
        load_version(store, 10**9)
    assert store_for(settings) is store_for(settings)
    assert store_for(settings) is not store_for(settings.model_copy(update={"data_dir": settings.data_dir / "x"}))
