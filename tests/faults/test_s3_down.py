"""The S3 target (the county's bucket) unreachable while a version is published, then back: the site gets the
page once, and nothing waits for a person to notice."""

from __future__ import annotations

import pytest

from tests.support.faults import wait_until
from tests.support.invariants import check_invariants, site_file

# The first scenario on a server pays for starting it (and the desk) on top of its own work: minutes when loaded.
pytestmark = [pytest.mark.prefect, pytest.mark.faults, pytest.mark.timeout(2400)]


def test_s3_down_during_a_publish_then_back_publishes_once(county, desk, newsroom, wechat, s3):
    s3.stop()
    try:
        newsroom.sign("s3-down", "final")
        # The web delivery tried and could not reach the bucket (each try recorded); the run gave up or waits.
        wait_until(lambda: newsroom.deliveries("s3-down").get("web", ("", 0))[1] >= 1
                   and newsroom.deliveries("s3-down")["web"][0] != "in_progress",
                   "s3-down: the web delivery tried the bucket", 300, every=0.5,
                   diagnose=lambda: newsroom.describe("s3-down"))
        assert newsroom.deliveries("s3-down")["web"][0] != "succeeded"
    finally:
        s3.start()
    newsroom.await_run_ended("s3-down")
    # Back: the reconciler (every two minutes under `rongmei up`, here one pass by hand) finishes the delivery.
    wait_until(lambda: county.cli("reconcile").returncode == 0 and
               newsroom.deliveries("s3-down")["web"][0] == "succeeded",
               "s3-down published once the bucket is back", 240, every=5, diagnose=lambda: newsroom.describe("s3-down"))
    page = site_file(county, "articles/s3-down/index.html")
    assert page is not None and desk.items["s3-down"].title in page
    check_invariants(county, wechat.state)
