"""The ledger's hash chain catches edits, deletions and reordering."""

from __future__ import annotations

import pytest
from sqlalchemy import delete, select, update
from typer.testing import CliRunner

from rongmei.cli.commands import app
from rongmei.storage import ledger
from rongmei.storage.tables import LedgerEntry


def fill(store, n=5):
    with store.session() as s:
        for i in range(n):
            ledger.record(s, "signed", actor=f"reviewer-{i}", item_id="a", version=1, details={"stage": i, "说明": "通过"})


def verdict(store):
    with store.session() as s:
        return ledger.verify(s)


def test_intact_chain_verifies(store):
    fill(store)
    v = verdict(store)
    assert v.ok and v.entries == 5


def test_edited_entry_is_named(store):
    fill(store)
    with store.session() as s:
        s.execute(update(LedgerEntry).where(LedgerEntry.seq == 3).values(actor="someone-else"))
    v = verdict(store)
    assert not v.ok and v.first_bad_seq == 3 and "altered" in v.reason


def test_deleted_entry_is_named(store):
    fill(store)
    with store.session() as s:
        s.execute(delete(LedgerEntry).where(LedgerEntry.seq == 2))
    v = verdict(store)
    assert not v.ok and v.first_bad_seq == 3 and "missing" in v.reason


def test_swapped_entries_are_caught(store):
    fill(store)
    with store.session() as s:
        a, b = (s.get(LedgerEntry, 2), s.get(LedgerEntry, 3))
        fields = ("at", "actor", "action", "item_id", "version", "content_hash", "details", "prev_hash", "hash")
        va, vb = ({f: getattr(a, f) for f in fields}, {f: getattr(b, f) for f in fields})
        for f in fields:
            setattr(a, f, vb[f])
            setattr(b, f, va[f])
    v = verdict(store)
    assert not v.ok and v.first_bad_seq == 2


@pytest.mark.parametrize("tamper", ["edit", "none"])
def test_cli_exit_code(store, settings, monkeypatch, tamper):
    monkeypatch.setenv("RONGMEI_DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("RONGMEI_CONTENT_DIR", str(settings.content_dir))
    fill(store)
    if tamper == "edit":
        with store.session() as s:
            entry = s.scalars(select(LedgerEntry).where(LedgerEntry.seq == 4)).one()
            entry.details = {"stage": 99}
    result = CliRunner().invoke(app, ["audit", "verify"])
    if tamper == "edit":
        assert result.exit_code == 1 and "#4" in result.output
    else:
        assert result.exit_code == 0 and "5 entries" in result.output
