"""Only the Prefect server dies (SIGKILL, as the OOM killer does) while an item waits at 终审: `rongmei up` starts
it again, the waiting form is still there, and the item publishes once after the last sign-off."""

from __future__ import annotations

import pytest
import requests

from tests.support.faults import wait_until
from tests.support.invariants import check_invariants, wechat_articles
from tests.support.processes import kill_tree, wait_gone

# The first scenario on a server pays for starting it (and the desk) on top of its own work: minutes when loaded.
pytestmark = [pytest.mark.prefect, pytest.mark.faults, pytest.mark.timeout(2400)]


def healthy(api_url: str) -> bool:
    try:
        return requests.get(f"{api_url}/health", timeout=5).ok
    except requests.RequestException:
        return False


def test_prefect_server_restarted_while_waiting_at_the_final_stage(county, desk, newsroom, wechat):
    newsroom.waiting_form("f-restart", "final-0")
    up, server = county.proc.pid, county.child("prefect")
    wait_gone(kill_tree(server))
    assert not healthy(county.api_url)
    wait_until(lambda: healthy(county.api_url) and county.child("prefect") != server,
               "the Prefect server started again by rongmei up", 300, every=0.5, diagnose=county.log_tail)
    assert county.running() and county.proc.pid == up  # only the server was restarted, not rongmei up
    assert "prefect exited" in county.log_tail()
    newsroom.sign("f-restart", "final")
    newsroom.await_published("f-restart", ["web", "wechat"])
    submitted, articles = wechat_articles(wechat.state)
    title = desk.items["f-restart"].title
    assert (submitted[title], articles[title]) == (1, 1)
    check_invariants(county, wechat.state)
