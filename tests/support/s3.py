"""A real S3-protocol peer for boto3 (moto's server on 127.0.0.1), and credentials that are never real."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest


@contextlib.contextmanager
def s3_server() -> Iterator[str]:
    """moto's S3 server on 127.0.0.1, a real S3-protocol peer for boto3; yields its endpoint URL."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        yield f"http://{host}:{port}"
    finally:
        server.stop()


def fake_aws_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    """moto accepts any keys; real ones must never be needed (or picked up) by the tests."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.delenv("AWS_PROFILE", raising=False)


class RestartableS3:
    """moto's S3 server on a fixed port that can go down and come back with its buckets (moto keeps them in
    this process): the S3 target being unreachable for a while, as a network cut or an outage makes it."""

    def __init__(self) -> None:
        from tests.support.environment import free_port

        self.port = free_port()
        self.server: object | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        from moto.server import ThreadedMotoServer

        self.server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        self.server.start()  # type: ignore[attr-defined]

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()  # type: ignore[attr-defined]
            self.server = None
