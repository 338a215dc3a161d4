"""The data dir on a small file system (a tmpfs mounted for the test) that fills during ingest, then space is
freed: no drop is lost or rejected for it, the run says what is wrong and what to do, and the drops that could not
be taken in are taken in by the next pass. The server has the machine to itself (the county's is retired)."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator

import pytest

from tests.faults.conftest import keep_or_remove, retire_running
from tests.support.faults import FaultSystem, wait_until
from tests.support.invariants import check_invariants
from tests.support.newsroom import Newsroom

# The first scenario on a server pays for starting it (and the desk) on top of its own work: minutes when loaded.
pytestmark = [pytest.mark.prefect, pytest.mark.faults, pytest.mark.timeout(2400)]

MiB = 1024 * 1024
DROPS = 8


def mount(folder: str, size: int, *, remount: bool = False) -> None:
    options = f"{'remount,' if remount else ''}size={size},mode=0755"
    subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", folder], check=True, capture_output=True)


def free_bytes(folder: str) -> int:
    stat = os.statvfs(folder)
    return stat.f_bavail * stat.f_frsize


def used(folder: str) -> int:
    stat = os.statvfs(folder)
    return (stat.f_blocks - stat.f_bfree) * stat.f_frsize


@pytest.fixture(scope="module")
def small_disk(wechat) -> Iterator[FaultSystem]:
    retire_running()
    system = FaultSystem("disk", wechat.base_url, extra={"reconcile_grace_seconds": 20.0,
                                                         "reconcile_dead_run_seconds": 60.0})
    data = str(system.settings.data_dir)
    os.makedirs(data)
    mount(data, 1024 * MiB)
    try:
        system.start()
        yield system
    finally:
        system.teardown()
        if not os.environ.get("RONGMEI_FAULTS_KEEP"):  # kept: look at it, then `umount` it yourself
            subprocess.run(["umount", "--lazy", data], check=False, capture_output=True)
            keep_or_remove(system)


def test_the_data_disk_fills_during_ingest_then_space_is_freed(small_disk, wechat):
    system = small_disk
    data = str(system.settings.data_dir)
    mount(data, used(data) + 3 * MiB, remount=True)  # room for two or three of the drops below, not for all
    for n in range(DROPS):
        system.drop(f"disk-{n}", f"id: disk-{n}\ntitle: 磁盘将满 {n}\nauthor: 故障演练\nchannels: [web]", "正文。",
                    {"photo.bin": os.urandom(MiB)})
    wait_until(lambda: free_bytes(data) < MiB, "the data disk filled by the ingest", 600, every=0.2,
               diagnose=system.log_tail)
    inbox = system.settings.inbox
    waiting = [p.name for p in inbox.glob("disk-*")]
    assert len(waiting) >= DROPS - 3, "more drops went in than there was room for"
    # The terminal of `rongmei up` is the one place a full data disk can still be reported.
    wait_until(lambda: "磁盘快满了" in system.log_tail(size=20000), "rongmei up warning of the full disk", 60)
    assert data in system.log_tail(size=20000)
    assert not any(system.settings.rejected.glob("disk-*")), "a drop was rejected because the disk was full"

    mount(data, 1024 * MiB, remount=True)  # space freed
    wait_until(lambda: "磁盘空间已恢复" in system.log_tail(size=20000), "rongmei up noticing the space is back", 60)
    wait_until(lambda: not any(inbox.glob("disk-*")) or (system.cli("reconcile") and False),
               "every drop taken in once space is back", 600, every=10, diagnose=system.log_tail)
    newsroom = Newsroom(system)
    for n in range(DROPS):
        assert [p.name for p in (system.settings.archive / f"disk-{n}").iterdir()] == ["v1"]
        assert newsroom.item_state(f"disk-{n}") == "in_review"
    check_invariants(system, wechat.state)
