"""The store on both backends: SQLite (embedded default) and a real PostgreSQL."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from rongmei.intake.ingest import ingest_inbox
from rongmei.storage import ledger
from rongmei.storage.store import Store
from rongmei.storage.tables import Base, Delivery, Version
from tests.support.drops import write_drop


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def backend_store(request, settings):
    if request.param == "sqlite":
        yield Store.from_settings(settings)
        return
    url = request.getfixturevalue("postgres_url")
    store = Store(url, settings.blob_dir)
    Base.metadata.drop_all(store.engine)
    store.create_schema()
    yield store
    store.engine.dispose()


def test_ingest_versions_and_ledger(backend_store, settings):
    write_drop(settings.inbox, "a", "title: 第一版\nauthor: 张三\nchannels: [web]")
    ingest_inbox(settings, backend_store)
    write_drop(settings.inbox, "a", "title: 第二版\nauthor: 张三\nchannels: [web]")
    ingest_inbox(settings, backend_store)
    with backend_store.session() as s:
        latest = backend_store.latest_version(s, "a")
        assert latest.number == 2 and latest.meta["title"] == "第二版"
        assert ledger.verify(s).entries == 4 and ledger.verify(s).ok


def test_one_delivery_per_version_channel_action(backend_store, settings):
    write_drop(settings.inbox, "a", "title: 稿\nauthor: 张三\nchannels: [web]")
    ingest_inbox(settings, backend_store)
    with backend_store.session() as s:
        v = s.scalars(select(Version)).one()
        s.add(Delivery(item_id="a", version_id=v.id, channel="web", action="publish"))
    with pytest.raises(IntegrityError), backend_store.session() as s:
        s.add(Delivery(item_id="a", version_id=v.id, channel="web", action="publish"))


def test_concurrent_ledger_appends_keep_one_chain(backend_store):
    errors = []

    def writer(n):
        try:
            for i in range(15):
                with backend_store.session() as s:
                    ledger.record(s, "checked", actor=f"w{n}", item_id="x", details={"i": i})
        except Exception as exc:  # collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    with backend_store.session() as s:
        verdict = ledger.verify(s)
    assert verdict.ok and verdict.entries == 60
