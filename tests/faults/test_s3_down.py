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
        # An outage longer than the publish run's retries (seconds here, minutes on a county server): the run
        # tries the bucket, retries with backoff, and ends while the bucket is still away.
        wait_until(lambda: newsroom.deliveries("s3-down").get("web", ("", 0))[1] >= 1,
                   "s3-down: the web delivery tried the bucket", 300, every=0.5,
                   diagnose=lambda: newsroom.describe("s3-down"))
        newsroom.await_run_ended("s3-down")
        state, attempts = newsroom.deliveries("s3-down")["web"]
        assert state != "succeeded" and attempts >= 1
    finally:
        s3.start()
    # Back: nothing waits for a person to notice. The reconciler (every two minutes under `rongmei up`, here by
    # hand) finishes the delivery.
    wait_until(lambda: county.cli("reconcile").returncode == 0 and
               newsroom.deliveries("s3-down")["web"][0] == "succeeded",
               "s3-down published once the bucket is back", 600, every=10,
               diagnose=lambda: newsroom.describe("s3-down"))
    page = site_file(county, "articles/s3-down/index.html")
    assert page is not None and desk.items["s3-down"].title in page
    check_invariants(county, wechat.state)
