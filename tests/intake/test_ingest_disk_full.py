"""A full disk under the data dir is no fault of the drop: it stays in the inbox, the error says so, and the
next pass after space is freed takes it in. On a real full file system (a small tmpfs; mounting needs root)."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from rongmei.core.settings import Settings
from rongmei.intake.drops import find_drops
from rongmei.intake.ingest import ingest_drop, ingest_inbox
from rongmei.intake.outages import StoreFull, disk_full
from rongmei.storage.store import Store
from tests.support.drops import write_drop

MiB = 1024 * 1024


@pytest.fixture
def small_data_dir(tmp_path: Path) -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs for the data dir needs root")
    folder = tmp_path / "data"
    folder.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={4 * MiB}", "tmpfs", str(folder)], check=True)
    try:
        yield folder
    finally:
        subprocess.run(["umount", "--lazy", str(folder)], check=False)


def test_a_drop_that_does_not_fit_waits_in_the_inbox_and_goes_in_once_there_is_room(settings, small_data_dir):
    settings = Settings(**{**settings.model_dump(), "data_dir": small_data_dir})
    store = Store.from_settings(settings)
    write_drop(settings.inbox, "big", "title: 大文件\nauthor: 张三\nchannels: [web]", "正文",
               {"photo.bin": os.urandom(6 * MiB)})  # more than the whole file system
    (drop,) = find_drops(settings.inbox)
    with pytest.raises(StoreFull) as full:
        ingest_drop(drop, settings, store)
    assert "磁盘已满" in str(full.value) and str(small_data_dir) in str(full.value) and "没有丢失" in str(full.value)
    assert disk_full(full.value)
    assert (settings.inbox / "big" / "photo.bin").stat().st_size == 6 * MiB  # untouched, not rejected
    assert not any(settings.rejected.iterdir())
    assert ingest_inbox(settings, store) == []  # a pass over it reports nothing taken in, and raises nothing

    subprocess.run(["mount", "-o", f"remount,size={64 * MiB}", str(small_data_dir)], check=True)
    (outcome,) = ingest_inbox(settings, store)
    assert (outcome.status, outcome.version) == ("ingested", 1)
    assert (settings.archive / "big" / "v1" / "photo.bin").stat().st_size == 6 * MiB
