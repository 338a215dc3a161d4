"""Reading drops: shapes, front matter, encodings, path tricks, settling."""

from __future__ import annotations

import os
import time
from pathlib import Path

from publishers import load_publishers
from rongmei.core.model import Kind
from rongmei.intake.bundles import read_bundle
from rongmei.intake.drops import find_drops, is_settled
from tests.support.drops import age_tree, write_drop


def test_folder_drop_reads_meta_body_and_files(settings):
    write_drop(settings.inbox, "harvest", "title: 秋粮丰收\nauthor: 张三\ntags: [农业]", "正文", {"img/a.jpg": b"x"})
    (drop,) = find_drops(settings.inbox)
    bundle = read_bundle(drop)
    assert bundle.ok, bundle.problems
    assert bundle.meta.id == "harvest" and bundle.meta.title == "秋粮丰收" and bundle.meta.tags == ["农业"]
    assert set(bundle.files) == {"index.md", "img/a.jpg"}
    assert bundle.body.strip() == "正文"


def test_single_markdown_and_lone_media_with_sidecar(settings):
    (settings.inbox / "notice.md").write_text("---\ntitle: 停水通知\nauthor: 王五\nkind: notice\n---\n明天停水\n")
    (settings.inbox / "news.mp3").write_bytes(b"ID3fake")
    (settings.inbox / "news.yaml").write_text("title: 早间新闻\nauthor: 播音组\n", encoding="utf-8")
    drops = {d.name: d for d in find_drops(settings.inbox)}
    assert set(drops) == {"notice", "news"}
    assert read_bundle(drops["notice"]).meta.kind is Kind.notice
    audio = read_bundle(drops["news"])
    assert audio.meta.kind is Kind.audio and set(audio.files) == {"news.mp3", "news.yaml"}


def test_gbk_markdown_is_converted_with_a_note(settings):
    text = "---\ntitle: 编码测试\nauthor: 李四\n---\n这是一篇用 GBK 编码保存的稿件。\n"
    (settings.inbox / "gbk.md").write_bytes(text.encode("gbk"))
    bundle = read_bundle(find_drops(settings.inbox)[0])
    assert bundle.ok and bundle.meta.title == "编码测试"
    assert "GBK" in bundle.body or "GBK 编码" in bundle.body
    assert [n.code for n in bundle.notes] == ["encoding.converted"]


def test_undecodable_bytes_are_rejected_with_reason(settings):
    (settings.inbox / "bin.md").write_bytes(b"---\ntitle: \xff\xfe\x00\x01\x80\x81\x82\n---\n\x00\x00")
    bundle = read_bundle(find_drops(settings.inbox)[0])
    assert not bundle.ok
    assert bundle.problems[0].code == "encoding.unknown" and "UTF-8" in bundle.problems[0].fix


def test_path_traversal_id_is_rejected(settings):
    write_drop(settings.inbox, "trick", "title: x\nauthor: y\nid: ../../etc/x")
    bundle = read_bundle(find_drops(settings.inbox)[0])
    assert not bundle.ok and any(p.code == "meta.id" for p in bundle.problems)


def test_symlink_outside_the_drop_is_rejected(settings, tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("password")
    folder = write_drop(settings.inbox, "linky", "title: x\nauthor: y")
    os.symlink(secret, folder / "leak.txt")
    bundle = read_bundle(find_drops(settings.inbox)[0])
    assert any(p.code == "path.symlink_outside" for p in bundle.problems)


def test_missing_title_lists_every_problem_in_chinese(settings):
    write_drop(settings.inbox, "bad", "kind: podcast\npriority: 1")
    bundle = read_bundle(find_drops(settings.inbox)[0])
    codes = {p.code for p in bundle.problems}
    assert {"meta.title.missing", "meta.author.missing", "meta.kind.invalid"} <= codes
    assert all(p.fix for p in bundle.problems)


def test_a_wrong_channels_value_lists_the_installed_channels(settings):
    write_drop(settings.inbox, "bad", "title: x\nauthor: y\nchannels: [{web: 1}]")
    (problem,) = read_bundle(find_drops(settings.inbox)[0]).problems
    installed = list(load_publishers().publishers)
    assert problem.code == "meta.channels.invalid" and installed
    assert problem.fix == "可选的值：" + "、".join(installed) + "。"


def test_drop_still_being_written_is_not_settled(settings):
    folder = write_drop(settings.inbox, "video", "title: x\nauthor: y\nkind: video", files={"video.mp4": b"\0" * 10})
    (drop,) = find_drops(settings.inbox)
    now = time.time()
    assert is_settled(drop, now, 5)
    (folder / "video.mp4").write_bytes(b"\0" * 20)  # still growing
    grown = (folder / "video.mp4").stat().st_mtime  # times from the file, not from how fast this test runs
    assert not is_settled(drop, grown + 4, 5)
    assert is_settled(drop, grown + 6, 5)
    (folder / "big.mov.part").write_bytes(b"")
    age_tree(folder)
    assert not is_settled(drop, time.time() + 60, 5), "a .part file means the copy is not finished"


def test_video_kind_without_a_video_file_is_rejected(settings):
    write_drop(settings.inbox, "v", "title: x\nauthor: y\nkind: video")
    assert any(p.code == "kind.video.no_file" for p in read_bundle(find_drops(settings.inbox)[0]).problems)


def test_hidden_entries_are_not_drops(settings):
    (settings.inbox / ".feed-tmp-1").mkdir()
    Path(settings.inbox / ".DS_Store").write_bytes(b"")
    assert find_drops(settings.inbox) == []
