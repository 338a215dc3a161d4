"""The ledger's anchors outside the database: the head (seq, hash) after every append batch, as a MACed line
in the checkpoint file and, with `s3_bucket` set, an object in the bucket. Deleting the newest entries leaves
the database behind its anchors, which verify reports. The anchors hold no key: the keeper hands its
checkpoint MAC key to every call that writes or reads one.
"""

from __future__ import annotations

import fcntl
import hmac
import json
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rongmei.storage.ledger_chain import hmac_hex

__all__ = [
    "S3_PREFIX", "AnchorSnapshot", "AnchorUnreadable", "BadAnchor", "Checkpoint", "LedgerAnchors",
    "fsync_dir"
]

log = logging.getLogger(__name__)

S3_PREFIX = "ledger-checkpoints/"


class BadAnchor(Exception):
    """A checkpoint line or object that is not what we wrote (internal: turned into a Verdict)."""


class AnchorUnreadable(Exception):
    """An anchor that could not be read at all (S3 down): the verdict is inconclusive, not 'tampered'."""


@dataclass(frozen=True)
class Checkpoint:
    """The chain head at one moment: entry `seq` had hash `hash`; `mac` proves we wrote it."""

    seq: int
    hash: str
    at: str
    mac: str

    @staticmethod
    def payload(seq: int, hash_: str, at: str) -> bytes:
        return json.dumps([seq, hash_, at], separators=(",", ":")).encode()

    @classmethod
    def make(cls, subkey: bytes, seq: int, hash_: str) -> Checkpoint:
        at = datetime.now(UTC).isoformat(timespec="microseconds")
        return cls(seq, hash_, at, hmac_hex(subkey, cls.payload(seq, hash_, at)))

    def line(self) -> bytes:
        data = {"seq": self.seq, "hash": self.hash, "at": self.at, "mac": self.mac}
        return json.dumps(data, separators=(",", ":")).encode() + b"\n"

    @classmethod
    def parse(cls, raw: bytes, subkey: bytes, where: str) -> Checkpoint:
        try:
            data = json.loads(raw)
        except ValueError:
            raise BadAnchor(f"{where} is not a checkpoint (not JSON): it was edited") from None
        if (not isinstance(data, dict) or set(data) != {"seq", "hash", "at", "mac"} or not isinstance(data["seq"], int)
                or not all(isinstance(data[k], str) for k in ("hash", "at", "mac"))):
            raise BadAnchor(f"{where} is not a checkpoint (fields seq, hash, at, mac expected): it was edited")
        checkpoint = cls(data["seq"], data["hash"], data["at"], data["mac"])
        if not hmac.compare_digest(hmac_hex(subkey, cls.payload(checkpoint.seq, checkpoint.hash, checkpoint.at)),
                                   checkpoint.mac):
            raise BadAnchor(f"{where} (for entry {checkpoint.seq}) was altered: its MAC does not match")
        return checkpoint


def _s3_key(seq: int) -> str:
    return f"{S3_PREFIX}{seq:012d}.json"  # zero-padded: the lexicographically last key is the newest seq


@dataclass(frozen=True)
class AnchorSnapshot:
    """What verify compares the database with, read before the database so that no anchor can be newer."""

    file_size: int | None  # None: the checkpoint file is missing
    s3: Checkpoint | None


class LedgerAnchors:
    """The checkpoint file of one Store and, when configured, its S3 copy."""

    def __init__(self, checkpoint_file: Path, *, s3_bucket: str = "", s3_endpoint_url: str = "") -> None:
        self.checkpoint_file = Path(checkpoint_file)
        self.s3_bucket = s3_bucket
        self.s3_endpoint_url = s3_endpoint_url
        self._s3: tuple[int, Any] | None = None  # (pid, client): a boto3 client is not shared across a fork

    def exist(self) -> str:
        """Where an anchor is already (the file, or the bucket's prefix), or "" when there is none."""
        try:
            if self.checkpoint_file.stat().st_size > 0:
                return str(self.checkpoint_file)
        except FileNotFoundError:
            pass
        if self.s3_bucket:
            try:
                listed = self._s3_client().list_objects_v2(Bucket=self.s3_bucket, Prefix=S3_PREFIX, MaxKeys=1)
            except _s3_errors() as exc:  # the file is the primary anchor; S3 is the second opinion
                log.warning("could not look for ledger checkpoints in s3://%s/%s: %s", self.s3_bucket, S3_PREFIX,
                            exc)
                return ""
            if listed.get("KeyCount"):
                return f"s3://{self.s3_bucket}/{S3_PREFIX}"
        return ""

    def append(self, subkey: bytes, seq: int, hash_: str) -> Checkpoint | None:
        """Append the head to the checkpoint file unless a newer head is there already; fsynced.

        Appenders in several processes commit in seq order (they hold the database lock) but reach this point
        after releasing it, so they may arrive out of order. Under an exclusive flock each one appends only if
        its seq is larger than the file's last line: the file stays strictly increasing (verify relies on it)
        and a skipped head is covered by the newer one, which chains to it.
        """
        self.checkpoint_file.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(self.checkpoint_file, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            size = os.fstat(fd).st_size
            last = _last_line(fd, size)
            try:
                last_seq = json.loads(last)["seq"] if last else -1
            except (ValueError, KeyError, TypeError):
                last_seq = -1  # verify reports the broken line; keep anchoring after it
                log.error("the last line of %s is not a checkpoint; run `rongmei audit verify`",
                          self.checkpoint_file)
            if isinstance(last_seq, int) and last_seq >= seq:
                return None
            checkpoint = Checkpoint.make(subkey, seq, hash_)
            os.write(fd, (b"\n" if size and not last.endswith(b"\n") else b"") + checkpoint.line())
            os.fsync(fd)
        finally:
            os.close(fd)  # releases the flock
        if size == 0:
            fsync_dir(self.checkpoint_file.parent)  # a new file: make its directory entry durable too
        return checkpoint

    def put_s3(self, checkpoint: Checkpoint) -> None:
        key = _s3_key(checkpoint.seq)
        try:
            self._s3_client().put_object(Bucket=self.s3_bucket, Key=key, Body=checkpoint.line(),
                                         ContentType="application/json")
        except _s3_errors() as exc:  # committed already; the file holds the anchor, the next batch retries S3
            log.warning("ledger checkpoint for entry %d could not be put to s3://%s/%s: %s", checkpoint.seq,
                        self.s3_bucket, key, exc)

    def _s3_client(self) -> Any:
        if self._s3 is None or self._s3[0] != os.getpid():
            import boto3
            from botocore.config import Config

            config = Config(retries={"max_attempts": 2, "mode": "standard"}, connect_timeout=5, read_timeout=10)
            self._s3 = (os.getpid(), boto3.client("s3", endpoint_url=self.s3_endpoint_url or None, config=config))
        return self._s3[1]

    def read(self, subkey: bytes) -> AnchorSnapshot:
        """Snapshot the anchors. Read before the database: every anchor then names a committed entry."""
        try:
            fd = os.open(self.checkpoint_file, os.O_RDONLY)
        except FileNotFoundError:
            size, last = None, b""
        else:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH)  # no half-appended line in the snapshot
                size = os.fstat(fd).st_size
                last = _last_line(fd, size)
            finally:
                os.close(fd)
        return AnchorSnapshot(size, self._newest_s3(last, subkey) if self.s3_bucket else None)

    def _newest_s3(self, last_line: bytes, subkey: bytes) -> Checkpoint | None:
        try:
            file_seq = int(json.loads(last_line)["seq"]) if last_line else 0
        except (ValueError, KeyError, TypeError):
            file_seq = 0
        client = self._s3_client()
        try:
            # Normally the newest object is the file's newest seq (or later): list from there, not from 1.
            newest = _last_key(client, self.s3_bucket, _s3_key(file_seq - 1) if file_seq > 0 else "")
            if newest is None and file_seq > 0:
                newest = _last_key(client, self.s3_bucket, "")
            if newest is None:
                return None
            body = client.get_object(Bucket=self.s3_bucket, Key=newest)["Body"].read()
        except _s3_errors() as exc:
            raise AnchorUnreadable(f"could not read the ledger checkpoints in s3://{self.s3_bucket}/{S3_PREFIX}: "
                                    f"{exc}. Check s3_endpoint_url and the credentials and run it again") from exc
        checkpoint = Checkpoint.parse(body, subkey, f"s3://{self.s3_bucket}/{newest}")
        if _s3_key(checkpoint.seq) != newest:
            raise BadAnchor(f"s3://{self.s3_bucket}/{newest} holds the checkpoint of entry {checkpoint.seq}: "
                             "it was renamed")
        return checkpoint

    def checkpoints(self, size: int, subkey: bytes) -> Iterator[Checkpoint]:
        """The file's checkpoints up to `size` bytes, each MAC-checked, in strictly increasing seq order."""
        previous = -1
        with open(self.checkpoint_file, "rb") as lines:
            for number, raw in enumerate(lines, 1):
                size -= len(raw)
                if size < 0:
                    return
                checkpoint = Checkpoint.parse(raw, subkey, f"line {number} of {self.checkpoint_file}")
                if checkpoint.seq <= previous:
                    raise BadAnchor(f"line {number} of {self.checkpoint_file} anchors entry {checkpoint.seq} after "
                                     f"entry {previous}: the file was edited")
                previous = checkpoint.seq
                yield checkpoint


def _s3_errors() -> tuple[type[Exception], ...]:
    from botocore.exceptions import BotoCoreError, ClientError

    return (BotoCoreError, ClientError)


def _last_key(client: Any, bucket: str, start_after: str) -> str | None:
    newest = None
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=S3_PREFIX,
                                                                 StartAfter=start_after):
        for item in page.get("Contents", ()):
            newest = item["Key"]
    return newest


def _last_line(fd: int, size: int) -> bytes:
    tail = os.pread(fd, min(size, 4096), max(0, size - 4096))
    stripped = tail.rstrip(b"\n")
    return tail[stripped.rfind(b"\n") + 1:] if stripped else b""


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
