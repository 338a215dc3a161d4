"""A ledger that proves itself ("Every door guarded"): someone who can write the database but cannot read the
secrets directory cannot edit, delete, reorder or rewrite ledger entries unnoticed.

The attacker works with a bare SQLAlchemy session on the store's engine (what a DBA, a copy of the SQLite file
or an SQL-injection bug gives), never through `Store.session()`. Every tamper test runs on SQLite and on a
real PostgreSQL; a fresh `Store` stands for another process (the CLI, a flow run) opening the same data dir.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import stat
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session
from typer.testing import CliRunner

from rongmei.cli.commands import app
from rongmei.core.errors import LedgerTampered, StoreError
from rongmei.core.settings import Settings
from rongmei.storage import ledger, ledger_chain
from rongmei.storage.store import Store
from rongmei.storage.tables import Base, LedgerEntry
from tests.support.s3 import fake_aws_credentials, s3_server
from tests.support.waiting import wait_until

FIELDS = ("at", "actor", "action", "item_id", "version", "content_hash", "details", "prev_hash", "hash")


class Backend:
    """One database and one data dir; `store()` opens them the way a new process would."""

    def __init__(self, url: str, settings: Settings) -> None:
        self.url = url
        self.settings = settings
        self.opened: list[Store] = []

    def store(self) -> Store:
        store = Store(self.url, self.settings.blob_dir)  # key and checkpoints derived from data_dir/blobs
        Base.metadata.create_all(store.engine)
        self.opened.append(store)
        return store

    @property
    def key_file(self) -> Path:
        return self.settings.secrets_dir / "ledger.key"

    @property
    def checkpoint_file(self) -> Path:
        return self.settings.data_dir / "ledger" / "checkpoints.jsonl"

    def checkpoints(self) -> list[dict]:
        return [json.loads(line) for line in self.checkpoint_file.read_text().splitlines()]


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def backend(request, settings) -> Iterator[Backend]:
    if request.param == "sqlite":
        url = settings.db_url
    else:
        url = request.getfixturevalue("postgres_url")
        reset = Store(url, settings.blob_dir)
        Base.metadata.drop_all(reset.engine)  # the server is shared by the session: start from no tables
        reset.engine.dispose()
    chosen = Backend(url, settings)
    yield chosen
    for store in chosen.opened:
        store.engine.dispose()


def fill(store: Store, n: int = 6) -> None:
    """n append batches of one entry each (one transaction each, as most callers do)."""
    for i in range(n):
        with store.session() as s:
            ledger.record(s, "signed", actor=f"reviewer-{i}", item_id="a", version=1, details={"stage": i, "说明": "通过"})


def verdict(store: Store) -> ledger.Verdict:
    with store.session() as s:
        return ledger.verify(s)


def as_attacker(store: Store) -> Session:
    """Database access without the key: a bare session (no ledger key, no checkpoint hook)."""
    return Session(store.engine)


def rewrite_chain(store: Store, digest) -> None:
    """Recompute every entry's hash and link with `digest`, as someone without the key would."""
    with as_attacker(store) as s, s.begin():
        prev = ledger_chain.GENESIS
        for entry in s.scalars(select(LedgerEntry).order_by(LedgerEntry.seq)):
            entry.prev_hash = prev
            entry.hash = prev = digest(entry)


def write_unkeyed_ledger(store: Store, n: int = 5) -> str:
    """A ledger as the previous release wrote it (plain sha256 chain, no key yet); returns its head hash."""
    prev = ledger_chain.GENESIS
    with as_attacker(store) as s, s.begin():
        for seq in range(1, n + 1):
            entry = LedgerEntry(seq=seq, at=f"2026-01-0{seq}T08:00:00.000000+00:00", actor="editor:zhang",
                                action="ingested", item_id=f"item-{seq}", version=1, content_hash="ab" * 32,
                                details={"drop": f"稿件{seq}"}, prev_hash=prev)
            entry.hash = prev = ledger_chain.plain_hash(entry)
            s.add(entry)
    return prev


# The keyed, anchored chain ---------------------------------------------------------------------------------
def test_entries_are_keyed_and_every_append_batch_is_anchored(backend):
    store = backend.store()
    fill(store)
    v = verdict(store)
    assert v.ok and v.entries == 6 and v.anchored_seq == 6
    key = backend.key_file.read_bytes()
    assert len(key) == 32 and stat.S_IMODE(backend.key_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(backend.checkpoint_file.stat().st_mode) == 0o600
    with as_attacker(store) as s:
        entries = list(s.scalars(select(LedgerEntry).order_by(LedgerEntry.seq)))
    # Still 64 hex digits, but nothing anyone can recompute from the row alone.
    assert all(len(e.hash) == 64 and int(e.hash, 16) >= 0 and e.hash != ledger_chain.plain_hash(e) for e in entries)
    lines = backend.checkpoints()
    assert [line["seq"] for line in lines] == [0, 1, 2, 3, 4, 5, 6]  # the keying, then one per batch
    assert [line["hash"] for line in lines[1:]] == [e.hash for e in entries]


def test_dba_editing_an_entry_is_caught(backend):
    store = backend.store()
    fill(store)
    with as_attacker(store) as s, s.begin():
        s.execute(update(LedgerEntry).where(LedgerEntry.seq == 3).values(actor="reviewer-someone-else"))
    v = verdict(backend.store())
    assert not v.ok and v.first_bad_seq == 3 and "altered" in v.reason


def test_dba_deleting_an_entry_in_the_middle_is_caught(backend):
    store = backend.store()
    fill(store)
    with as_attacker(store) as s, s.begin():
        s.execute(delete(LedgerEntry).where(LedgerEntry.seq == 3))
    v = verdict(store)
    assert not v.ok and v.first_bad_seq == 4 and "entry 3 is missing" in v.reason


def test_dba_deleting_the_newest_entries_is_caught(backend):
    store = backend.store()
    fill(store)
    with as_attacker(store) as s, s.begin():
        s.execute(delete(LedgerEntry).where(LedgerEntry.seq >= 5))
    v = verdict(backend.store())
    assert not v.ok and v.first_bad_seq == 5 and "entries 5–6 are missing" in v.reason


def test_dba_deleting_every_entry_is_caught(backend):
    store = backend.store()
    fill(store)
    with as_attacker(store) as s, s.begin():
        s.execute(delete(LedgerEntry))
    v = verdict(backend.store())
    assert not v.ok and v.first_bad_seq == 1 and "the ledger is empty" in v.reason


def test_dba_deleting_the_newest_entries_before_new_ones_are_appended_is_caught(backend):
    store = backend.store()
    fill(store)
    with as_attacker(store) as s, s.begin():
        s.execute(delete(LedgerEntry).where(LedgerEntry.seq >= 5))
    fill(store, 3)  # the service goes on: new, validly keyed entries 5, 6, 7 take the deleted ones' places
    v = verdict(store)
    assert not v.ok and v.first_bad_seq == 5 and "rewritten" in v.reason


def test_dba_reordering_entries_is_caught(backend):
    store = backend.store()
    fill(store)
    with as_attacker(store) as s, s.begin():
        a, b = s.get(LedgerEntry, 2), s.get(LedgerEntry, 3)
        va, vb = ({f: getattr(a, f) for f in FIELDS}, {f: getattr(b, f) for f in FIELDS})
        for f in FIELDS:
            setattr(a, f, vb[f])
            setattr(b, f, va[f])
    v = verdict(store)
    assert not v.ok and v.first_bad_seq == 2 and "does not follow" in v.reason


@pytest.mark.parametrize("digest", ["plain sha256", "another key"])
def test_dba_rewriting_the_whole_chain_without_the_key_is_caught(backend, digest):
    store = backend.store()
    fill(store)
    other = os.urandom(32)
    rewrite_chain(store, ledger_chain.plain_hash if digest == "plain sha256" else
                  lambda e: hmac.new(other, ledger_chain.canonical(e), hashlib.sha256).hexdigest())
    # A plain chain looks like the previous release's: a new process must not take it for one and re-key it.
    fresh = backend.store()
    v = verdict(fresh)
    assert not v.ok and v.first_bad_seq == 1 and "without the ledger key" in v.reason
    with as_attacker(fresh) as s:
        assert ledger.count(s) == 6 and s.scalar(select(LedgerEntry).where(LedgerEntry.action == "ledger_keyed")) is None


def test_deleting_the_checkpoint_file_is_caught(backend):
    store = backend.store()
    fill(store)
    backend.checkpoint_file.unlink()
    v = verdict(backend.store())
    assert not v.ok and "is missing" in v.reason
    fill(store, 1)  # the next append starts a new file: that still shows
    v = verdict(backend.store())
    assert not v.ok and "does not begin where the ledger was keyed" in v.reason


@pytest.mark.parametrize("edit", ["hash changed", "seq changed", "lines swapped", "not JSON"])
def test_editing_the_checkpoint_file_is_caught(backend, edit):
    store = backend.store()
    fill(store)
    lines = backend.checkpoint_file.read_text().splitlines()
    if edit == "hash changed":
        lines[-1] = lines[-1].replace(json.loads(lines[-1])["hash"], "f" * 64)
    elif edit == "seq changed":  # e.g. to pretend the ledger ended earlier
        lines[-1] = lines[-1].replace('"seq":6', '"seq":4')
    elif edit == "lines swapped":
        lines[2], lines[3] = lines[3], lines[2]
    else:
        lines[-1] = lines[-1][:20]
    backend.checkpoint_file.write_text("\n".join(lines) + "\n")
    v = verdict(backend.store())
    expected = {"hash changed": "altered", "seq changed": "altered", "lines swapped": "anchors entry 2 after entry 3",
                "not JSON": "not JSON"}[edit]
    assert not v.ok and expected in v.reason and str(backend.checkpoint_file) in v.reason


def test_a_crash_between_commit_and_checkpoint_leaves_a_ledger_that_verifies(backend, monkeypatch, caplog):
    store = backend.store()
    fill(store, 3)

    def power_cut(*_args):
        raise OSError(28, "No space left on device")

    with monkeypatch.context() as m:
        m.setattr(store.ledger.anchors, "append", power_cut)
        fill(store, 2)  # committed; their checkpoints never written
    assert "entry 5 is committed but its checkpoint could not be written" in caplog.text
    v = verdict(backend.store())
    assert v.ok and v.entries == 5 and v.anchored_seq == 3
    fill(store, 1)  # the next batch anchors the whole tail
    v = verdict(backend.store())
    assert v.ok and v.entries == 6 and v.anchored_seq == 6


def test_a_checkpoint_arriving_after_a_newer_one_is_not_written(backend, monkeypatch):
    """Two processes: A commits entry 2, B commits entry 3 and anchors it, and only then A's checkpoint write
    runs (both write after their commit, outside the database lock)."""
    a, b = backend.store(), backend.store()
    fill(a, 1)
    late = []
    monkeypatch.setattr(a.ledger.anchors, "append", lambda *args: late.append(args))
    fill(a, 1)
    fill(b, 1)
    monkeypatch.undo()
    assert a.ledger.anchors.append(*late[0]) is None  # entry 2's checkpoint, now behind entry 3's
    assert [line["seq"] for line in backend.checkpoints()] == [0, 1, 3]
    v = verdict(backend.store())
    assert v.ok and v.anchored_seq == 3


def test_only_committed_entries_are_anchored(backend):
    store = backend.store()
    fill(store, 2)
    with store.session() as s:
        savepoint = s.begin_nested()
        ledger.record(s, "signed", actor="reviewer-x")
        savepoint.rollback()  # the entry is gone with its savepoint
    with pytest.raises(RuntimeError), store.session() as s:
        with s.begin_nested():
            ledger.record(s, "signed", actor="reviewer-y")  # released, but its transaction then rolls back
        raise RuntimeError("the change failed")
    assert [line["seq"] for line in backend.checkpoints()] == [0, 1, 2]
    v = verdict(store)
    assert v.ok and v.entries == 2 and v.anchored_seq == 2


def test_a_session_without_the_key_cannot_write_an_entry(backend):
    store = backend.store()
    fill(store, 1)
    with pytest.raises(StoreError, match=r"Store\.session\(\)"), as_attacker(store) as s, s.begin():
        ledger.record(s, "signed", actor="reviewer-x")
    with as_attacker(store) as s:
        assert ledger.count(s) == 1


def test_authentic_tells_a_written_entry_from_a_forged_one(backend):
    store = backend.store()
    fill(store, 2)
    with as_attacker(store) as s, s.begin():  # a sign-off's entry forged with the old, unkeyed formula
        forged = LedgerEntry(seq=3, at="2026-01-01T08:00:00+00:00", actor="reviewer:chief", action="signed",
                             item_id="a", version=1, details={"stage": "final"}, prev_hash=s.get(LedgerEntry, 2).hash)
        forged.hash = ledger_chain.plain_hash(forged)
        s.add(forged)
    with store.session() as s:
        written = s.get(LedgerEntry, 2)
        assert ledger.authentic(s, written)
        assert not ledger.authentic(s, s.get(LedgerEntry, 3))
        edited = LedgerEntry(seq=2, **{f: getattr(written, f) for f in FIELDS if f != "details"}, details={})
        assert not ledger.authentic(s, edited)
    with pytest.raises(StoreError), as_attacker(store) as s:
        ledger.authentic(s, s.get(LedgerEntry, 1))


# Migration of a ledger the previous release wrote -----------------------------------------------------------
def test_migration_of_an_old_unkeyed_ledger_keeps_verifying(backend):
    store = backend.store()
    old_head = write_unkeyed_ledger(store)
    assert not backend.key_file.exists()
    fill(store, 1)  # the first session keys the ledger; then the entry is appended
    with as_attacker(store) as s:
        entries = list(s.scalars(select(LedgerEntry).order_by(LedgerEntry.seq)))
    assert [e.action for e in entries] == ["ingested"] * 5 + ["ledger_keyed", "signed"]
    keyed = entries[5]
    assert keyed.details["previous_head"] == old_head and keyed.details["previous_entries"] == 5
    assert all(e.hash != ledger_chain.plain_hash(e) for e in entries)  # every old entry re-hashed with the key
    assert [e.item_id for e in entries[:5]] == [f"item-{n}" for n in range(1, 6)]  # content untouched
    assert [line["seq"] for line in backend.checkpoints()] == [6, 7]
    assert backend.key_file.exists() and not (backend.settings.secrets_dir / "ledger.key.pending").exists()
    again = backend.store()  # another process: keyed already, nothing to migrate
    v = verdict(again)
    assert v.ok and v.entries == 7 and v.anchored_seq == 7


def test_migration_refuses_a_tampered_old_ledger(backend, caplog):
    store = backend.store()
    write_unkeyed_ledger(store)
    with as_attacker(store) as s, s.begin():
        s.execute(update(LedgerEntry).where(LedgerEntry.seq == 3).values(item_id="item-someone-else"))
    with pytest.raises(LedgerTampered, match="entry 3 was altered") as refused, store.session() as s:
        ledger.record(s, "signed", actor="reviewer-x")
    assert "restore the database from a backup" in str(refused.value)
    v = verdict(store)
    assert not v.ok and v.first_bad_seq == 3 and "previous release does not verify" in v.reason
    with as_attacker(store) as s:
        entries = list(s.scalars(select(LedgerEntry).order_by(LedgerEntry.seq)))
    assert len(entries) == 5 and entries[3].hash == ledger_chain.plain_hash(entries[3])  # nothing re-hashed
    assert not backend.key_file.exists()


@pytest.mark.parametrize("crash", ["before the migration committed", "after it committed"])
def test_a_crash_while_the_key_is_made_is_finished_by_the_next_process(backend, crash):
    store = backend.store()
    write_unkeyed_ledger(store)
    pending = backend.settings.secrets_dir / "ledger.key.pending"
    if crash == "before the migration committed":  # the pending key was written, nothing else happened
        backend.settings.secrets_dir.mkdir(parents=True, mode=0o700)
        pending.write_bytes(os.urandom(32))
    else:  # committed and anchored, but the key never linked into place
        fill(store, 1)
        backend.key_file.rename(pending)
    key = pending.read_bytes()
    fresh = backend.store()
    fill(fresh, 1)
    assert backend.key_file.read_bytes() == key and not pending.exists()
    with as_attacker(fresh) as s:
        assert s.scalars(select(LedgerEntry.seq).where(LedgerEntry.action == "ledger_keyed")).all() == [6]
    assert verdict(backend.store()).ok


def test_dba_rewriting_the_chain_while_a_crashed_keying_is_pending_is_refused(backend):
    store = backend.store()
    write_unkeyed_ledger(store)
    fill(store, 1)
    backend.key_file.rename(backend.settings.secrets_dir / "ledger.key.pending")  # crash before the link
    with as_attacker(store) as s, s.begin():  # back to a plain chain, without the ledger_keyed entry
        s.execute(delete(LedgerEntry).where(LedgerEntry.seq >= 6))
    rewrite_chain(store, ledger_chain.plain_hash)
    fresh = backend.store()
    with pytest.raises(LedgerTampered, match="keyed before"), fresh.session() as s:
        ledger.record(s, "signed", actor="reviewer-x")
    assert not verdict(fresh).ok and not backend.key_file.exists()
    with as_attacker(fresh) as s:
        assert ledger.count(s) == 5 and s.get(LedgerEntry, 5).hash == ledger_chain.plain_hash(s.get(LedgerEntry, 5))


def test_deleting_the_key_does_not_make_the_ledger_unkeyed(backend):
    store = backend.store()
    fill(store)
    rewrite_chain(store, ledger_chain.plain_hash)  # ... and then hope the service re-keys it as an old ledger
    backend.key_file.unlink()
    fresh = backend.store()
    with pytest.raises(LedgerTampered, match=r"restore \S+/ledger\.key from the backup"), fresh.session() as s:
        ledger.record(s, "signed", actor="reviewer-x")
    v = verdict(fresh)
    assert not v.ok and "ledger key" in v.reason and "is missing" in v.reason
    assert not backend.key_file.exists()


# Several processes ------------------------------------------------------------------------------------------
WRITER = textwrap.dedent("""
    import os, sys, time
    from pathlib import Path
    from rongmei.storage import ledger
    from rongmei.storage.store import Store

    url, blob_dir, go, name, count = sys.argv[1:]
    store = Store(url, Path(blob_dir))
    Path(go + "." + name).touch()  # imported and ready
    while not os.path.exists(go):  # start together: the first sessions race to create the key
        time.sleep(0.005)
    for i in range(int(count)):
        with store.session() as s:
            ledger.record(s, "checked", actor=name, item_id="x", details={"i": i})
""")


def run_writers(backend: Backend, tmp_path: Path, processes: int, each: int) -> None:
    go = tmp_path / "go"
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, backend.url, str(backend.settings.blob_dir), str(go),
                               f"w{n}", str(each)], stderr=subprocess.PIPE, text=True) for n in range(processes)]
    # All of them imported and waiting (on a busy machine that takes a while), so that they really race.
    wait_until(lambda: all((tmp_path / f"go.w{n}").exists() or procs[n].poll() is not None for n in range(processes)),
               message="the writer processes did not start")
    go.touch()
    for proc in procs:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err


def test_concurrent_appends_from_several_processes_verify(backend, tmp_path):
    backend.store()
    run_writers(backend, tmp_path, processes=4, each=20)
    v = verdict(backend.store())
    assert v.ok and v.entries == 80 and v.anchored_seq == 80
    seqs = [line["seq"] for line in backend.checkpoints()]
    assert seqs[0] == 0 and seqs == sorted(set(seqs)) and seqs[-1] == 80


def test_processes_starting_on_an_old_ledger_key_it_once(backend, tmp_path):
    store = backend.store()
    write_unkeyed_ledger(store)
    run_writers(backend, tmp_path, processes=4, each=2)
    with as_attacker(store) as s:
        keyed = s.scalars(select(LedgerEntry.seq).where(LedgerEntry.action == "ledger_keyed")).all()
    assert keyed == [6]
    v = verdict(backend.store())
    assert v.ok and v.entries == 14 and v.anchored_seq == 14


# The command line ------------------------------------------------------------------------------------------
@pytest.fixture
def cli_env(settings, monkeypatch):
    monkeypatch.setenv("RONGMEI_DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("RONGMEI_CONTENT_DIR", str(settings.content_dir))
    return settings


def test_cli_says_how_far_the_chain_is_anchored(cli_env, store):
    fill(store)
    result = CliRunner().invoke(app, ["audit", "verify"])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("ledger OK: 6 entries, chain intact, anchored at #6 (checkpoint 20")


def test_cli_names_the_first_missing_entry_after_a_tail_deletion(cli_env, store):
    fill(store)
    with as_attacker(store) as s, s.begin():
        s.execute(delete(LedgerEntry).where(LedgerEntry.seq >= 4))
    result = CliRunner().invoke(app, ["audit", "verify"])
    assert result.exit_code == 1
    assert "LEDGER TAMPERED: entries 4–6 are missing" in result.output and "(first bad entry: #4)" in result.output


def test_cli_fails_when_the_checkpoint_file_is_gone(cli_env, store):
    fill(store)
    (cli_env.data_dir / "ledger" / "checkpoints.jsonl").unlink()
    result = CliRunner().invoke(app, ["audit", "verify"])
    assert result.exit_code == 1 and "LEDGER TAMPERED: the checkpoint file" in result.output


# The S3 anchor -------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    with s3_server() as url:
        yield url


@pytest.fixture
def s3_settings(settings, s3_endpoint, monkeypatch, request) -> Settings:
    fake_aws_credentials(monkeypatch)
    bucket = f"ledger-{abs(hash(request.node.name)) % 10**8}"
    boto3.client("s3", endpoint_url=s3_endpoint).create_bucket(Bucket=bucket)
    return settings.model_copy(update={"s3_bucket": bucket, "s3_endpoint_url": s3_endpoint})


def test_every_append_batch_is_anchored_in_s3_too(s3_settings, monkeypatch):
    store = Store.from_settings(s3_settings)
    fill(store, 3)
    client = boto3.client("s3", endpoint_url=s3_settings.s3_endpoint_url)
    listed = client.list_objects_v2(Bucket=s3_settings.s3_bucket, Prefix="ledger-checkpoints/")
    assert [o["Key"] for o in listed["Contents"]] == [f"ledger-checkpoints/{n:012d}.json" for n in (0, 1, 2, 3)]
    body = json.loads(client.get_object(Bucket=s3_settings.s3_bucket, Key="ledger-checkpoints/000000000003.json")
                      ["Body"].read())
    assert body == json.loads(store.ledger.anchors.checkpoint_file.read_text().splitlines()[-1])
    v = verdict(store)
    assert v.ok and v.s3_seq == 3
    monkeypatch.setenv("RONGMEI_DATA_DIR", str(s3_settings.data_dir))
    monkeypatch.setenv("RONGMEI_CONTENT_DIR", str(s3_settings.content_dir))
    monkeypatch.setenv("RONGMEI_S3_BUCKET", s3_settings.s3_bucket)
    monkeypatch.setenv("RONGMEI_S3_ENDPOINT_URL", s3_settings.s3_endpoint_url)
    result = CliRunner().invoke(app, ["audit", "verify"])
    assert result.exit_code == 0 and "anchored at #3" in result.output and "S3 checkpoint at #3" in result.output


def test_rolling_back_database_and_checkpoint_file_together_is_caught_by_s3(s3_settings):
    store = Store.from_settings(s3_settings)
    fill(store)
    # Someone who can also write the data dir (but still not read the key) cuts both back to entry 4.
    with as_attacker(store) as s, s.begin():
        s.execute(delete(LedgerEntry).where(LedgerEntry.seq >= 5))
    lines = store.ledger.anchors.checkpoint_file.read_text().splitlines()
    store.ledger.anchors.checkpoint_file.write_text("\n".join(lines[:5]) + "\n")  # lines for entries 0–4
    v = verdict(Store.from_settings(s3_settings))
    assert not v.ok and v.first_bad_seq == 5 and "the S3 checkpoint" in v.reason and "5–6 are missing" in v.reason


def test_an_unreachable_s3_never_fails_the_transaction(settings, monkeypatch, caplog):
    fake_aws_credentials(monkeypatch)
    import socket

    with socket.socket() as probe:  # a port nobody listens on: connections are refused at once
        probe.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{probe.getsockname()[1]}"
    store = Store.from_settings(settings.model_copy(update={"s3_bucket": "gone", "s3_endpoint_url": dead}))
    with caplog.at_level(logging.WARNING, logger="rongmei.storage.ledger"):
        fill(store, 2)
    with store.session() as s:
        assert ledger.count(s) == 2
    assert "ledger checkpoint for entry 2 could not be put to s3://gone/" in caplog.text
    assert [line["seq"] for line in json_lines(store.ledger.anchors.checkpoint_file)] == [0, 1, 2]
    v = verdict(store)
    assert not v.ok and v.inconclusive and "could not read the ledger checkpoints in s3://gone/" in v.reason


def json_lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]
