"""Every door guarded, the inbox door: an editor (anyone who can write into content/inbox, e.g. over SMB) tries
to stop the ingest, read files outside their drop, or get something past the door that breaks later.

Each attack must end with the drop in rejected/ (or, if even that fails, left in the inbox and reported once),
a Chinese reason, every file of the drop still there, nothing from outside read, and the other drops taken in.
"""

from __future__ import annotations

import json
import os
import struct
import threading
import zlib
from pathlib import Path

import pytest
from PIL import Image
from sqlalchemy import select

from publishers.base import Capabilities, Publisher, PublishError
from rongmei.core.files import unique_path
from rongmei.intake.bundles import read_bundle
from rongmei.intake.drops import find_drops
from rongmei.intake.ingest import STUCK, ingest_inbox
from rongmei.intake.names import unsafe_name
from rongmei.intake.safe_open import UnsafeFile
from rongmei.storage.store import Store
from rongmei.storage.tables import LedgerEntry, Version
from tests.support.drops import age_tree, write_drop
from tests.support.waiting import PATIENCE

GOOD = "title: 好稿\nauthor: 李四\nchannels: [web]"


class ExplodingChannel(Publisher):
    """A local channel plugin with a bug in its precheck: an error ingest cannot foresee in any drop."""

    name = "exploding"
    capabilities = Capabilities(can_update=False, can_retract=False, note="test channel: precheck crashes")

    @classmethod
    def precheck(cls, meta, body, files, settings):
        raise RuntimeError("precheck exploded\nwhile looking at the title")

    def publish(self, release):
        raise PublishError("test channel: never publishes", retryable=False)


EXPLODING = {"exploding": "tests.doors.test_doors_ingest:ExplodingChannel"}


def ledger_dump(store) -> str:
    with store.session() as s:
        entries = s.scalars(select(LedgerEntry).order_by(LedgerEntry.seq)).all()
        return json.dumps([[e.action, e.item_id, e.details] for e in entries], ensure_ascii=False)


def entries(store, action: str) -> list[LedgerEntry]:
    with store.session() as s:
        return list(s.scalars(select(LedgerEntry).where(LedgerEntry.action == action).order_by(LedgerEntry.seq)))


def tree(root: Path) -> dict[str, bytes | str]:
    """Every entry below root: file contents, or where a link points. REJECTED reports left out."""
    found: dict[str, bytes | str] = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if path.is_symlink():
            found[rel] = "-> " + os.readlink(path)
        elif path.is_file() and not path.name.startswith("REJECTED"):
            found[rel] = path.read_bytes()
    return found


def blobs(store) -> list[bytes]:
    return [p.read_bytes() for p in store.blob_dir.rglob("*") if p.is_file()]


def report(settings, name: str) -> str:
    return (settings.rejected / name / "REJECTED.md").read_text(encoding="utf-8")


def png_header(width: int, height: int) -> bytes:
    """A PNG that says it is width×height: only the header is real, which is all the door may look at."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


def finishes(target, timeout: float = PATIENCE):
    """Run target in a thread; its result if it finished within timeout (a hang fails the test, not the suite)."""
    result: dict[str, object] = {}
    thread = threading.Thread(target=lambda: result.setdefault("value", target()), daemon=True)
    thread.start()
    thread.join(timeout)
    assert not thread.is_alive(), f"still running after {timeout}s"
    return result["value"]


# 1. One bad drop stops the whole pass --------------------------------------------------------------------
def test_editor_drop_that_makes_the_system_fail_is_rejected_and_the_pass_goes_on(settings, store):
    settings = settings.model_copy(update={"extra_publishers": EXPLODING})
    write_drop(settings.inbox, "a-good", GOOD)
    crash = write_drop(settings.inbox, "b-crash", "title: 会出错的稿件\nauthor: 张三\nchannels: [exploding]",
                       files={"photo.jpg": b"\xff\xd8 jpeg bytes"})
    original = tree(crash)
    write_drop(settings.inbox, "c-good", GOOD.replace("好稿", "另一篇好稿"))

    outcomes = {o.drop: o for o in ingest_inbox(settings, store)}

    assert {n: o.status for n, o in outcomes.items()} == {"a-good": "ingested", "b-crash": "rejected",
                                                          "c-good": "ingested"}
    text = report(settings, "b-crash")
    assert "系统在处理这份稿件时出错" in text
    assert "RuntimeError: precheck exploded while looking at the title" in text  # the error, on one line
    assert "技术人员" in text and "重新放回" in text
    assert tree(settings.rejected / "b-crash") == original
    (rejected,) = entries(store, "rejected")
    assert rejected.item_id == "b-crash" and rejected.details["problems"][0]["code"] == "system.error"
    assert (settings.archive / "a-good" / "v1" / "index.md").is_file()
    assert (settings.archive / "c-good" / "v1" / "index.md").is_file()
    assert list(settings.inbox.iterdir()) == []


def test_editor_drop_that_cannot_even_be_set_aside_waits_in_the_inbox_reported_once(settings, store):
    # rejected/ cannot take anything (a file stands where the folder should be): every move there fails.
    settings.rejected.rmdir()
    settings.rejected.write_text("not a folder")
    bad = write_drop(settings.inbox, "bad", "author: 张三", files={"a.txt": b"keep me"})
    original = tree(bad)
    write_drop(settings.inbox, "good", GOOD)

    first = {o.drop: o for o in ingest_inbox(settings, store)}
    assert first["good"].status == "ingested" and (settings.archive / "good" / "v1").is_dir()
    assert first["bad"].status == "stuck" and not first["bad"].repeat
    assert "无法移到 rejected/" in first["bad"].problems[-1].message
    assert tree(bad) == original
    (stuck,) = entries(store, STUCK)
    assert stuck.details["drop"] == "bad" and str(settings.rejected) in stuck.details["error"]

    (again,) = ingest_inbox(settings, store)  # the next 15-second pass: same drop, same state
    assert again.status == "stuck" and again.repeat
    assert len(entries(store, STUCK)) == 1

    age_tree(bad, 30)  # the editor touched the drop: a new state, reported again
    (touched,) = ingest_inbox(settings, store)
    assert not touched.repeat and len(entries(store, STUCK)) == 2

    settings.rejected.unlink()  # repaired: the next pass sets the drop aside as usual
    settings.rejected.mkdir()
    (done,) = ingest_inbox(settings, store)
    assert done.status == "rejected" and "缺少标题" in report(settings, "bad")
    assert tree(settings.rejected / "bad") == original and list(settings.inbox.iterdir()) == []


def test_editor_drop_accepted_while_the_archive_is_unavailable_keeps_its_version(settings, store):
    settings.archive.rmdir()
    settings.archive.write_text("not a folder")
    folder = write_drop(settings.inbox, "good", GOOD)
    original = tree(folder)

    (first,) = ingest_inbox(settings, store)
    assert (first.status, first.version, first.moved_to) == ("ingested", 1, "")  # its review starts all the same
    assert tree(folder) == original
    (stuck,) = entries(store, STUCK)
    assert stuck.item_id == "good" and stuck.version == 1

    (again,) = ingest_inbox(settings, store)
    assert again.status == "unchanged" and len(entries(store, STUCK)) == 1

    settings.archive.unlink()
    settings.archive.mkdir()
    (done,) = ingest_inbox(settings, store)
    assert done.status == "unchanged" and tree(settings.archive / "good" / "v1") == original
    with store.session() as s:
        versions = s.scalars(select(Version).where(Version.item_id == "good")).all()
    assert [(v.number, v.archived_to) for v in versions] == [(1, str(settings.archive / "good" / "v1"))]


@pytest.mark.prefect
def test_editor_drop_that_makes_the_system_fail_does_not_stop_the_flow_or_the_reviews(settings, monkeypatch,
                                                                                       prefect_server):
    """The ingest flow against the session's Prefect server. `request_review` (which asks the server to run the
    review deployment) is replaced by a recorder: the session's worker reads the stack's own store, where this
    test's version ids would name other items."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from flows.ingest import ingest

    monkeypatch.setenv("RONGMEI_CONTENT_DIR", str(settings.content_dir))
    monkeypatch.setenv("RONGMEI_DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("RONGMEI_EXTRA_PUBLISHERS", json.dumps(EXPLODING))
    requested: list[int] = []
    monkeypatch.setattr("flows.review.request_review", lambda version_id, settings: requested.append(version_id))
    write_drop(settings.inbox, "a-crash", "title: 会出错的稿件\nauthor: 张三\nchannels: [exploding]")
    write_drop(settings.inbox, "b-good", "title: 秋粮丰收\nauthor: 张三\nchannels: [web]")

    with temporary_settings({PREFECT_API_URL: prefect_server}):
        state = ingest(start_reviews=True, return_state=True)
    assert state.is_completed(), state.message
    assert {r["drop"]: r["status"] for r in state.result()} == {"a-crash": "rejected", "b-good": "ingested"}
    assert "系统在处理这份稿件时出错" in report(settings, "a-crash")
    with Store.from_settings(settings).session() as s:
        good = s.scalars(select(Version).where(Version.item_id == "b-good")).one()
    assert requested == [good.id]


# 2. Sidecar or index.md symlinked to a secret --------------------------------------------------------------
@pytest.mark.parametrize("shape", ["sidecar", "index"])
def test_editor_sidecar_symlinked_to_a_secret_is_refused_unread(settings, store, tmp_path, shape):
    secret = tmp_path / "app.env"
    secret.write_text("kind: s3cr3t-7f1c-token\n", encoding="utf-8")  # read, it would be echoed as a bad kind
    if shape == "sidecar":
        (settings.inbox / "news.mp3").write_bytes(b"ID3 audio")
        os.symlink(secret, settings.inbox / "news.yaml")
        age_tree(settings.inbox / "news.mp3")
        age_tree(settings.inbox / "news.yaml")
        name, link = "news", "news.yaml"
    else:
        folder = write_drop(settings.inbox, "news", "title: x\nauthor: y")
        (folder / "index.md").unlink()
        os.symlink(secret, folder / "index.md")
        age_tree(folder)
        name, link = "news", "index.md"
    write_drop(settings.inbox, "other", GOOD)

    outcomes = {o.drop: o for o in ingest_inbox(settings, store)}

    assert outcomes["news"].status == "rejected" and outcomes["other"].status == "ingested"
    assert [p.code for p in outcomes["news"].problems] == ["path.symlink_meta"]
    text = report(settings, name)
    assert f"{link} 是一个快捷方式" in text and "没有读取" in text
    assert "s3cr3t" not in text and "s3cr3t" not in ledger_dump(store)
    assert os.readlink(settings.rejected / name / link) == str(secret)  # the link is kept, as dropped
    assert not any(b"s3cr3t" in blob for blob in blobs(store))


# 3. Names near the file system's limit ---------------------------------------------------------------------
def test_editor_drop_named_near_the_file_system_limit_is_rejected_under_a_name_that_fits(settings, store):
    limit = os.pathconf(settings.rejected, "PC_NAME_MAX")
    name = "长" * (limit // 3) + "x" * (limit % 3)  # exactly the limit, in bytes
    (settings.rejected / name).mkdir()  # an earlier rejection of the same name: this one needs "-2"
    folder = write_drop(settings.inbox, name, "author: 张三", files={"a.txt": b"keep"})
    original = tree(folder)
    too_long_id = "编" * 100  # 100 characters are allowed, but 300 bytes make no folder name
    write_drop(settings.inbox, "long-id", f"title: 长编号\nauthor: 张三\nid: {too_long_id}")
    write_drop(settings.inbox, "good", GOOD)

    outcomes = {o.drop: o for o in ingest_inbox(settings, store)}

    assert outcomes[name].status == "rejected" and outcomes["good"].status == "ingested"
    moved = Path(outcomes[name].moved_to)
    assert moved.parent == settings.rejected and moved.name.endswith("-2")
    assert len(os.fsencode(moved.name)) <= limit and moved.name.startswith("长" * (limit // 3 - 1))
    assert tree(moved) == original and (settings.rejected / name).is_dir()
    text = (moved / "REJECTED.md").read_text(encoding="utf-8")
    assert f"原稿件名：`{name}`" in text and "缺少标题" in text

    assert outcomes["long-id"].status == "rejected"
    assert [p.code for p in outcomes["long-id"].problems] == ["meta.id.too_long"]
    assert "300 字节" in report(settings, "long-id") and "改短" in report(settings, "long-id")
    assert sorted(p.name for p in settings.archive.iterdir()) == ["good"]

    # The returned/ folder of a reviewer's "return" takes the same way out.
    (settings.returned / name).mkdir()
    for n in range(2, 5):
        again = unique_path(settings.returned / name)
        assert again.name.endswith(f"-{n}") and len(os.fsencode(again.name)) <= limit
        again.mkdir()


# 4. Hard links -------------------------------------------------------------------------------------------
def test_editor_hard_link_to_a_file_outside_the_drop_is_refused(settings, store, tmp_path):
    secret = tmp_path / "backup.sql"
    secret.write_bytes(b"INSERT INTO users VALUES ('hl-secret-93')")
    folder = write_drop(settings.inbox, "linked", GOOD, "![图](photo.jpg)")
    os.link(secret, folder / "photo.jpg")
    age_tree(folder)
    write_drop(settings.inbox, "other", GOOD)

    outcomes = {o.drop: o for o in ingest_inbox(settings, store)}

    assert outcomes["linked"].status == "rejected" and outcomes["other"].status == "ingested"
    assert [p.code for p in outcomes["linked"].problems] == ["path.hardlink"]
    text = report(settings, "linked")
    assert "photo.jpg 是硬链接" in text and "请复制一份真实文件放入，而不是硬链接" in text
    assert not any(b"hl-secret-93" in blob for blob in blobs(store))  # never stored, so never served
    assert os.path.samefile(settings.rejected / "linked" / "photo.jpg", secret)  # kept as dropped


# 5. Image pixel bombs ------------------------------------------------------------------------------------
def test_editor_image_pixel_bomb_is_refused_at_ingest_with_the_limit(settings, store, tmp_path):
    write_drop(settings.inbox, "big", GOOD, "![图](big.png)", files={"big.png": png_header(12000, 12000)})
    write_drop(settings.inbox, "huge", GOOD, "![图](huge.png)", files={"huge.png": png_header(20000, 20000)})
    small = tmp_path / "small.png"
    Image.new("RGB", (40, 30), "red").save(small)
    write_drop(settings.inbox, "photo", GOOD, "![图](small.png)", files={"small.png": small.read_bytes()})

    outcomes = {o.drop: o for o in ingest_inbox(settings, store)}

    assert outcomes["photo"].status == "ingested"
    for name in ("big", "huge"):
        assert outcomes[name].status == "rejected", name
        assert [p.code for p in outcomes[name].problems] == ["image.too_large"], name
        text = report(settings, name)
        assert "超过上限 80 百万像素" in text and "请把图片缩小到 80 百万像素以内" in text, text
    assert "12000×12000（144 百万）像素" in report(settings, "big")
    assert "400 百万像素" in report(settings, "huge")


# 6. Huge Markdown ----------------------------------------------------------------------------------------
def test_editor_huge_markdown_is_refused_by_size(settings, store):
    def huge(path: Path, text: str) -> None:
        with path.open("w", encoding="utf-8") as out:
            out.write(text)
            out.truncate(50 * 1024**2)  # sparse: 50 MB on paper, no disk needed

    folder = settings.inbox / "folder"
    folder.mkdir()
    huge(folder / "index.md", f"---\n{GOOD}\n---\n正文")
    huge(settings.inbox / "single.md", f"---\n{GOOD}\n---\n正文")
    (settings.inbox / "news.mp3").write_bytes(b"ID3 audio")
    huge(settings.inbox / "news.yaml", "title: 新闻\nauthor: 播音组\n")
    for path in settings.inbox.iterdir():
        age_tree(path)
    write_drop(settings.inbox, "other", GOOD)

    outcomes = {o.drop: o for o in ingest_inbox(settings, store)}

    assert outcomes["other"].status == "ingested"
    for name, label, kept in (("folder", "index.md", "index.md"), ("single", "single.md", "single.md"),
                              ("news", "news.yaml", "news.yaml")):
        assert outcomes[name].status == "rejected", name
        assert [p.code for p in outcomes[name].problems] == ["markdown.too_large"], name
        text = report(settings, name)
        assert f"{label} 有 50 MB，超过文字稿件文件的上限 2 MB" in text and "max_markdown_bytes" in text
        assert (settings.rejected / name / kept).stat().st_size == 50 * 1024**2


# 7. Control characters in names --------------------------------------------------------------------------
def test_editor_names_with_control_characters_are_refused_and_set_aside_under_a_safe_name(settings, store):
    write_drop(settings.inbox, "晚间\n新闻", GOOD)
    write_drop(settings.inbox, "报道", GOOD, files={"照片\t1.jpg": b"jpeg", "铃\x07.txt": b"ding"})
    os.mkdir(os.fsencode(settings.inbox) + b"/gbk-\xc4\xea")  # not UTF-8: a name from an old Windows share
    (settings.inbox / "gbk-\udcc4\udcea" / "index.md").write_text(f"---\n{GOOD}\n---\n正文\n", encoding="utf-8")
    for path in settings.inbox.iterdir():
        age_tree(path)
    write_drop(settings.inbox, "other", GOOD)

    outcomes = {o.drop: o for o in ingest_inbox(settings, store)}

    assert outcomes["other"].status == "ingested"
    for name in ("晚间\n新闻", "报道", "gbk-\udcc4\udcea"):
        assert outcomes[name].status == "rejected", name
    assert not any(unsafe_name(p.name) for p in settings.rejected.iterdir())
    assert "晚间\\n新闻" in report(settings, "晚间_新闻") and "稿件文件夹名" in report(settings, "晚间_新闻")
    assert "gbk-\\xc4\\xea" in report(settings, "gbk-__")
    text = report(settings, "报道")
    assert "照片\\t1.jpg" in text and "铃\\x07.txt" in text and "控制字符" in text
    assert tree(settings.rejected / "报道") == {"index.md": f"---\n{GOOD}\n---\n正文。\n".encode(),
                                                "照片\t1.jpg": b"jpeg", "铃\x07.txt": b"ding"}
    assert "晚间\\\\n新闻" in ledger_dump(store)  # the ledger names it escaped, on one line
    assert list(settings.inbox.iterdir()) == []


# 8. Nothing is read from outside a drop --------------------------------------------------------------------
def test_editor_links_are_followed_only_inside_the_drop(settings, store, tmp_path):
    secret = tmp_path / "outside"
    secret.mkdir()
    (secret / "key.png").write_bytes(b"outside-secret-55")
    photo = tmp_path / "photo.png"
    Image.new("RGB", (8, 8), "blue").save(photo)
    inner = write_drop(settings.inbox, "inner", GOOD, "![图](alias.png)", files={"real/photo.png": photo.read_bytes()})
    os.symlink("real/photo.png", inner / "alias.png")  # inside the drop: accepted, as before
    chain = write_drop(settings.inbox, "chain", GOOD)
    (chain / "sub").mkdir()
    os.symlink(secret / "key.png", chain / "sub" / "b.png")
    os.symlink("sub/b.png", chain / "a.png")  # inside at first sight, outside at the end of the chain
    dirlink = write_drop(settings.inbox, "dirlink", GOOD)
    os.symlink(secret, dirlink / "imgs")
    fifo = write_drop(settings.inbox, "fifo", GOOD)
    os.mkfifo(fifo / "notes.txt")  # opening it to read would wait for a writer forever
    for path in (inner, chain, dirlink, fifo):
        age_tree(path)

    outcomes = {o.drop: o for o in finishes(lambda: ingest_inbox(settings, store))}

    assert outcomes["inner"].status == "ingested"
    with store.session() as s:
        files = s.scalars(select(Version).where(Version.item_id == "inner")).one().files
    assert store.read_blob(files["alias.png"]["sha256"]) == photo.read_bytes()
    assert {p.code for p in outcomes["chain"].problems} == {"path.symlink_outside"}
    assert {p.code for p in outcomes["dirlink"].problems} == {"path.symlink_outside"}
    assert [p.code for p in outcomes["fifo"].problems] == ["path.not_a_file"]
    assert not any(b"outside-secret-55" in blob for blob in blobs(store))
    assert "outside-secret-55" not in ledger_dump(store)


def test_editor_file_swapped_for_a_link_after_the_check_is_not_stored(settings, tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_bytes(b"swapped-secret-12")
    folder = write_drop(settings.inbox, "swap", GOOD, files={"a.jpg": b"checked bytes"})
    (drop,) = find_drops(settings.inbox)
    bundle = read_bundle(drop)
    assert bundle.ok, bundle.problems
    (folder / "a.jpg").unlink()
    os.symlink(secret, folder / "a.jpg")  # between the check and the blob copy
    with pytest.raises(UnsafeFile):
        bundle.open("a.jpg")
    (folder / "a.jpg").unlink()
    (folder / "a.jpg").write_bytes(b"other bytes")  # a different file under the same name
    with pytest.raises(UnsafeFile, match="改动或替换"):
        bundle.open("a.jpg")


def test_editor_yaml_bomb_in_front_matter_or_sidecar_is_refused_cheaply(settings, store):
    levels = ["a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    for prev, cur in zip("abcdefgh", "bcdefghi", strict=True):
        levels.append(f"{cur}: &{cur} [" + ", ".join([f"*{prev}"] * 9) + "]")
    bomb = "\n".join(levels)  # 9**9 strings once expanded
    write_drop(settings.inbox, "bomb", f"{bomb}\ntitle: *i\nauthor: 张三")
    (settings.inbox / "news.mp3").write_bytes(b"ID3 audio")
    (settings.inbox / "news.yaml").write_text(f"{bomb}\ntitle: *i\nauthor: 张三\n", encoding="utf-8")
    for path in settings.inbox.iterdir():
        age_tree(path)

    # Expanded, the bomb takes minutes and gigabytes; refused, milliseconds even on a busy machine.
    outcomes = {o.drop: o for o in finishes(lambda: ingest_inbox(settings, store), timeout=60)}

    for name in ("bomb", "news"):
        assert outcomes[name].status == "rejected", name
        assert [p.code for p in outcomes[name].problems] == ["meta.yaml.alias"], name
        assert "不要用 & 和 * 引用" in report(settings, name)


def test_editor_rejected_md_link_is_never_written_through(settings, store, tmp_path):
    victim = tmp_path / "victim.conf"
    victim.write_text("important = true\n")
    folder = write_drop(settings.inbox, "trap", "author: 张三")
    os.symlink(victim, folder / "REJECTED.md")  # our report would be written into whatever this names
    age_tree(folder)

    (outcome,) = ingest_inbox(settings, store)

    assert outcome.status == "rejected"
    assert victim.read_text() == "important = true\n"
    assert os.readlink(settings.rejected / "trap" / "REJECTED.md") == str(victim)
    text = (settings.rejected / "trap" / "REJECTED-2.md").read_text(encoding="utf-8")
    assert "REJECTED.md 是一个快捷方式" in text and "缺少标题" in text
