"""Fixtures every channel test uses: a blob directory and a clock the test moves by hand."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.channels.support import Blobs, Clock, at


@pytest.fixture
def blobs(tmp_path: Path) -> Blobs:
    return Blobs(tmp_path / "blobs")


@pytest.fixture
def clock() -> Clock:
    return Clock(at("2025-06-02T09:00:00"))
