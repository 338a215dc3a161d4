"""The county server (`rongmei up`, publishing to S3) that the scenarios of tests/faults/ take turns breaking,
the remote services it talks to (the WeChat stand-in, moto's S3), and every scenario's item prepared at once.

Starting `rongmei up` costs most of a minute on a loaded machine, and each item needs an ingest pass and a
review run before its scenario begins; so one server serves every scenario that does not need a data dir of
its own, all items are dropped together (one ingest pass) and signed in rounds up to where their scenario
starts (`desk`). Modules run in the order of MODULES: the power cut during the 200-drop ingest comes last on
the county server (the backlog of 200 review runs it leaves would slow anything after it), then the full disk
on a server of its own.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass

import boto3
import pytest

from standins.wechat import StandIn, start_standin
from standins.wechat.state import DEFAULT_FAULTS
from tests.support.faults import WECHAT_APP_ID, WECHAT_SECRET, FaultSystem
from tests.support.media import make_video
from tests.support.newsroom import Newsroom
from tests.support.processes import Process, children_named, freeze
from tests.support.s3 import RestartableS3

MODULES = ["test_fault_point", "test_flow_run_kills", "test_wechat_faults", "test_s3_down", "test_prefect_restart",
           "test_power_cuts", "test_full_disk"]
BUCKET = "county-site"
# How the recovery machinery is tuned for the suite: leases, grace and heartbeat timeouts short enough that a
# scenario waits seconds, not the minutes a county server can afford, and still far above a busy machine's jitter.
RECOVERY = {"delivery_lease_seconds": 30.0, "reconcile_grace_seconds": 20.0, "reconcile_dead_run_seconds": 60.0,
            "reconcile_unconfirmed_interval_minutes": 0.05, "reconcile_unconfirmed_max_interval_minutes": 0.1}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    def rank(item: pytest.Item) -> int:
        name = item.module.__name__.rpartition(".")[2] if item.module else ""
        return MODULES.index(name) if name in MODULES else len(MODULES)

    ours = [i for i in items if "tests/faults/" in str(i.path)]
    if ours:
        start = items.index(ours[0])
        rest = [i for i in items if i not in ours]
        items[:] = rest[:start] + sorted(ours, key=rank) + rest[start:]


def keep_or_remove(system: FaultSystem) -> None:
    system.teardown()
    if not os.environ.get("RONGMEI_FAULTS_KEEP"):  # set it to look at the data dir and logs afterwards
        shutil.rmtree(system.root, ignore_errors=True)


@pytest.fixture(scope="package")
def wechat() -> Iterator[StandIn]:
    """The remote Official Account: it lives outside the county's server, so it survives every power cut."""
    standin = start_standin(host="127.0.0.1", port=0, app_id=WECHAT_APP_ID, secret=WECHAT_SECRET)
    try:
        yield standin
    finally:
        standin.stop()


@pytest.fixture(autouse=True)
def calm_wechat(request: pytest.FixtureRequest) -> Iterator[None]:
    """Every scenario leaves the stand-in's fault switches as it found them (its content stays)."""
    yield
    if "wechat" in request.fixturenames:
        standin: StandIn = request.getfixturevalue("wechat")
        with standin.state.lock:
            standin.state.faults = json.loads(json.dumps(DEFAULT_FAULTS))


@pytest.fixture(scope="package")
def s3() -> Iterator[RestartableS3]:
    peer = RestartableS3()
    peer.start()
    boto3.client("s3", endpoint_url=peer.endpoint, aws_access_key_id="test", aws_secret_access_key="test",
                 region_name="us-east-1").create_bucket(Bucket=BUCKET)
    try:
        yield peer
    finally:
        peer.stop()


RUNNING: list[FaultSystem] = []  # so that the full-disk server can have the machine to itself


@pytest.fixture(scope="package")
def county(wechat: StandIn, s3: RestartableS3) -> Iterator[FaultSystem]:
    system = FaultSystem("county", wechat.base_url, s3=(s3.endpoint, BUCKET), extra=RECOVERY)
    RUNNING.append(system)
    try:
        system.start()
        yield system
    finally:
        keep_or_remove(system)


def retire_running() -> None:
    """Power-cut every server still running (the county's, once its scenarios are done)."""
    while RUNNING:
        RUNNING.pop().teardown()


@pytest.fixture(scope="package")
def newsroom(county: FaultSystem) -> Newsroom:
    return Newsroom(county)


@dataclass(frozen=True)
class Prepared:
    title: str
    channels: tuple[str, ...]
    signed: tuple[str, ...]  # the stages signed before the scenario starts
    module: str  # the scenario module that needs it: only the items of collected modules are prepared
    video: bool = False


BOTH, SIGNED = ("web", "wechat"), ("first", "second")
# Every county scenario's item: dropped together, signed in rounds (`desk`).
ITEMS: dict[str, Prepared] = {
    "r-video": Prepared("渲染中断的视频", ("web",), (), "test_flow_run_kills", video=True),
    "k-signoff": Prepared("签字提交时中断", ("web",), (), "test_flow_run_kills"),
    "p-claim": Prepared("领取发送后中断", BOTH, SIGNED, "test_flow_run_kills"),
    "p-record": Prepared("渠道答复后中断", BOTH, SIGNED, "test_flow_run_kills"),
    "w-poll": Prepared("查询发表结果时中断", ("wechat",), SIGNED, "test_flow_run_kills"),
    "w-submit": Prepared("提交发表后中断", ("wechat",), SIGNED, "test_flow_run_kills"),
    "t-token": Prepared("令牌过期", ("wechat",), SIGNED, "test_wechat_faults"),
    "t-quota": Prepared("查询额度用尽", ("wechat",), SIGNED, "test_wechat_faults"),
    "t-timeout": Prepared("提交发表超时", ("wechat",), SIGNED, "test_wechat_faults"),
    "t-audit": Prepared("发表审核未通过", ("wechat",), SIGNED, "test_wechat_faults"),
    "s3-down": Prepared("存储桶中断", ("web",), SIGNED, "test_s3_down"),
    "f-restart": Prepared("终审时重启服务器", BOTH, SIGNED, "test_prefect_restart"),
    "s-wait": Prepared("复审等待时断电", BOTH, ("first",), "test_power_cuts"),
    "c-publish": Prepared("发布途中断电", BOTH, SIGNED, "test_power_cuts"),
}


@dataclass
class Desk:
    items: dict[str, Prepared]
    transcoding_run: Process | None  # the review run held in the video's transcode
    encoders: list[Process]  # its ffmpeg processes, frozen (SIGSTOP) so that they cannot finish meanwhile


@pytest.fixture(scope="package")
def desk(county: FaultSystem, newsroom: Newsroom, tmp_path_factory: pytest.TempPathFactory,
         request: pytest.FixtureRequest) -> Desk:
    """The items of the collected scenarios in, each waiting at the form its scenario starts from. The video's
    transcode is held there, with its encoder frozen, for the renditions scenario (so its fault point is armed
    before anything is dropped, and the hold is watched closely: the encoder would finish on its own soon)."""
    modules = {item.module.__name__.rpartition(".")[2] for item in request.session.items if item.module}
    items = {item_id: item for item_id, item in ITEMS.items() if item.module in modules}
    video = any(item.video for item in items.values())
    if video:
        county.arm("renditions.transcode", "hold")
    clip = make_video(tmp_path_factory.mktemp("media") / "video.mp4", seconds=20.0)
    for item_id, item in items.items():
        files = {"video.mp4": clip.read_bytes()} if item.video else None
        newsroom.drop(item_id, item.title, list(item.channels), files=files, kind="video" if item.video else "article")
    run, encoders = None, []
    if video:
        run = county.await_reached("renditions.transcode", timeout=900, every=0.02)
        encoders = children_named(run.pid, "ffmpeg")
        freeze(encoders)
    for stage in ("first", "second"):
        for item_id, item in items.items():
            if stage in item.signed:
                newsroom.sign(item_id, stage)
    return Desk(items, run, encoders)
