"""Where the checkout's files are, for tests that read samples or write artifacts."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "content" / "samples"
ARTIFACTS = ROOT / "test-artifacts"  # screenshots and rendered outputs kept for a human to look at
FIXTURES = ROOT / "tests" / "fixtures"
