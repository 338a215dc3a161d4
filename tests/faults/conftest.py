"""One county server (`rongmei up`) shared by the scenarios of tests/faults/, the WeChat stand-in it publishes
to, and the stand-in's fault switches reset after every scenario."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator

import pytest

from standins.wechat import StandIn, start_standin
from standins.wechat.state import DEFAULT_FAULTS
from tests.support.faults import WECHAT_APP_ID, WECHAT_SECRET, FaultSystem
from tests.support.newsroom import Newsroom


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
def county(wechat: StandIn) -> Iterator[FaultSystem]:
    """`rongmei up` with the directory target; the scenarios take turns breaking it."""
    system = FaultSystem("county", wechat.base_url)
    try:
        system.start()
        yield system
    finally:
        system.teardown()
        if not os.environ.get("RONGMEI_FAULTS_KEEP"):  # set it to look at the data dir and logs afterwards
            shutil.rmtree(system.root, ignore_errors=True)


@pytest.fixture(scope="package")
def newsroom(county: FaultSystem) -> Newsroom:
    return Newsroom(county)
