"""Ingest end to end on the real store and file system: accepted, rejected, versions, crash safety."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from sqlalchemy import func, select

from rongmei.intake.ingest import ingest_inbox
from rongmei.storage import ledger
from rongmei.storage.tables import Version
from tests.support.drops import age_tree, write_drop


def all_files(root: Path) -> set[str]:
    return {p.name for p in root.rglob("*") if p.is_file() and p.name not in ("REJECTED.md",)}


def test_drop_becomes_stored_version_with_checks(settings, store):
    write_drop(settings.inbox, "harvest", "title: 秋粮丰收\nauthor: 张三\nchannels: [web]", "![田](a.png)",
               {"a.png": b"\x89PNG broken"})
    write_drop(settings.inbox, "ok", "title: 好稿\nauthor: 李四\nchannels: [web]", "正文")
    outcomes = {o.drop: o for o in ingest_inbox(settings, store)}
    assert outcomes["harvest"].status == "rejected"  # broken image is blocking
    assert outcomes["ok"].status == "ingested"
    with store.session() as s:
        version = s.scalars(select(Version).where(Version.item_id == "ok")).one()
        assert version.number == 1 and version.meta["title"] == "好稿"
        assert [c["code"] for c in version.checks] == ["summary.missing"]
        assert version.files["index.md"]["sha256"]
        assert store.blob_path(version.files["index.md"]["sha256"]).read_bytes().startswith(b"---")
        assert ledger.verify(s).ok
    assert (settings.archive / "ok" / "v1" / "index.md").is_file()
    assert not (settings.inbox / "ok").exists()
    report = (settings.rejected / "harvest" / "REJECTED.md").read_text(encoding="utf-8")
    assert "a.png" in report and "修改方法" in report
    assert (settings.rejected / "harvest" / "a.png").read_bytes() == b"\x89PNG broken"


def test_redrop_same_id_is_next_version_and_identical_redrop_is_not(settings, store):
    write_drop(settings.inbox, "item", "title: 第一版\nauthor: 张三\nchannels: [web]")
    ingest_inbox(settings, store)
    write_drop(settings.inbox, "item", "title: 第二版\nauthor: 张三\nchannels: [web]")
    (second,) = ingest_inbox(settings, store)
    assert (second.status, second.version) == ("ingested", 2)
    write_drop(settings.inbox, "item", "title: 第二版\nauthor: 张三\nchannels: [web]")
    (third,) = ingest_inbox(settings, store)
    assert third.status == "unchanged"
    with store.session() as s:
        states = dict(s.execute(select(Version.number, Version.state).where(Version.item_id == "item")).all())
    assert states == {1: "superseded", 2: "in_review"}
    # all three originals kept, none overwritten
    assert sorted(p.name for p in (settings.archive / "item").iterdir()) == ["v1", "v2", "v2-2"]


def test_rejections_keep_every_file(settings, store):
    (settings.inbox / "gbk.md").write_bytes("---\ntitle: 编码\nauthor: 李\nchannels: [web]\n---\n正文\n".encode("gbk"))
    write_drop(settings.inbox, "trav", "title: x\nauthor: y\nid: ../../x")
    write_drop(settings.inbox, "notitle", "author: y")
    write_drop(settings.inbox, "emptyvideo", "title: 视频\nauthor: y\nkind: video", files={"video.mp4": b""})
    for p in settings.inbox.iterdir():
        age_tree(p)
    outcomes = {o.drop: o for o in ingest_inbox(settings, store)}
    assert outcomes["gbk"].status == "ingested"
    for name in ("trav", "notitle", "emptyvideo"):
        assert outcomes[name].status == "rejected", name
        assert (settings.rejected / name / "REJECTED.md").is_file()
    assert (settings.rejected / "emptyvideo" / "video.mp4").exists()
    assert "稿件编号" in (settings.rejected / "trav" / "REJECTED.md").read_text(encoding="utf-8")
    assert "缺少标题" in (settings.rejected / "notitle" / "REJECTED.md").read_text(encoding="utf-8")
    assert list(settings.inbox.iterdir()) == []


def test_unsettled_drop_waits(settings, store):
    folder = write_drop(settings.inbox, "copying", "title: x\nauthor: y\nchannels: [web]", age=0)
    # A moment after the copy, by the drop's own clock: however long this machine takes to get here.
    just_after = (folder / "index.md").stat().st_mtime + settings.settle_seconds / 2
    assert ingest_inbox(settings, store, now=just_after) == []
    assert folder.exists()
    age_tree(folder)
    assert [o.status for o in ingest_inbox(settings, store)] == ["ingested"]


def test_kill_during_ingest_then_rerun_leaves_exactly_one_version(settings, store):
    """SIGKILL `rongmei ingest` at many points; after a clean re-run every drop has one version, no file lost."""
    names = [f"drop{i:02d}" for i in range(12)]
    big = os.urandom(3 * 1024 * 1024)
    env = {**os.environ, "RONGMEI_DATA_DIR": str(settings.data_dir), "RONGMEI_CONTENT_DIR": str(settings.content_dir),
           "RONGMEI_SETTLE_SECONDS": "1"}
    for i, name in enumerate(names):
        write_drop(settings.inbox, name, f"title: 稿件{i}\nauthor: 张三\nchannels: [web]",
                   files={"clip.bin": big + bytes([i]), "b.txt": b"b" * i})
    expected = {n: {"index.md", "clip.bin", "b.txt"} for n in names}
    for delay in (0.9, 1.2, 1.5, 1.8, 2.2):
        proc = subprocess.Popen([sys.executable, "-m", "rongmei.cli.commands", "ingest"], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    subprocess.run([sys.executable, "-m", "rongmei.cli.commands", "ingest"], env=env, check=True, capture_output=True)
    with store.session() as s:
        counts = dict(s.execute(select(Version.item_id, func.count()).group_by(Version.item_id)).all())
        assert ledger.verify(s).ok
    assert counts == {n: 1 for n in names}
    assert list(settings.inbox.iterdir()) == []
    for name in names:
        kept = set()
        for archived in (settings.archive / name).iterdir():
            kept |= {p.name for p in archived.iterdir()}
        assert kept == expected[name], name
