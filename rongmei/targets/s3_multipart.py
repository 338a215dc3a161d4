"""Resumable multipart uploads of large media to S3: a killed publish resumes at the next part.

boto3's `upload_file` does multipart on its own, but keeps the upload id in memory: a worker killed half way
through a 2 GB video starts again from byte 0 and leaves the half-done upload behind (the bucket bills its
parts until a lifecycle rule aborts it). Here the upload id and every finished part's ETag are written ahead
to a small journal file in the data dir before the next part starts, so the next attempt asks S3 which parts
it really holds (`list_parts`) and sends only the rest.

The journal is named after the bucket, the key and the file's size and modification time: a changed file is
a new upload (media keys are content-addressed, so that does not happen for published media).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rongmei.core.faults import fault_point

__all__ = ["MULTIPART_THRESHOLD", "PART_SIZE", "ResumableUpload"]

log = logging.getLogger(__name__)
MULTIPART_THRESHOLD = 16 * 1024 * 1024  # smaller files go up in one PUT: nothing to resume
PART_SIZE = 8 * 1024 * 1024  # S3's minimum is 5 MiB for every part but the last


class ResumableUpload:
    """One large file going up to `bucket/key` in parts, its progress journalled under `journal_dir`."""

    def __init__(self, client: Any, bucket: str, key: str, source: Path, journal_dir: Path,
                 headers: dict[str, str], call: Callable[..., Any], part_size: int = PART_SIZE) -> None:
        self.client, self.bucket, self.key, self.source = client, bucket, key, source
        self.headers = headers
        self.call = call  # S3Target._call: maps botocore errors to PublishError where they enter our code
        self.part_size = part_size
        stat = source.stat()
        name = hashlib.sha256(f"{bucket}\0{key}\0{stat.st_size}\0{stat.st_mtime_ns}".encode()).hexdigest()[:32]
        self.journal = journal_dir / f"{name}.json"

    def run(self) -> None:
        upload_id, done = self._resume()
        if upload_id is None:
            upload_id = self.call("multipart start", self.key, self.client.create_multipart_upload, Key=self.key,
                                  **self.headers)["UploadId"]
            done = {}
            self._write_journal(upload_id, done)
        size = self.source.stat().st_size
        count = max(1, -(-size // self.part_size))
        with self.source.open("rb") as handle:
            for number in range(1, count + 1):
                if number in done:
                    continue
                handle.seek((number - 1) * self.part_size)
                answer = self.call("multipart part", self.key, self.client.upload_part, Key=self.key,
                                   UploadId=upload_id, PartNumber=number, Body=handle.read(self.part_size))
                done[number] = answer["ETag"]
                self._write_journal(upload_id, done)
                fault_point("s3.after_part")
        parts = [{"PartNumber": n, "ETag": done[n]} for n in sorted(done)]
        self.call("multipart completion", self.key, self.client.complete_multipart_upload, Key=self.key,
                  UploadId=upload_id, MultipartUpload={"Parts": parts})
        self.journal.unlink(missing_ok=True)

    def _resume(self) -> tuple[str | None, dict[int, str]]:
        """The upload an interrupted attempt left, with the parts S3 really has; (None, {}) if there is none."""
        from botocore.exceptions import ClientError

        try:
            recorded = json.loads(self.journal.read_text(encoding="utf-8"))
        except (FileNotFoundError, ValueError):
            return None, {}
        upload_id = str(recorded.get("upload_id", ""))
        try:
            pages = self.client.get_paginator("list_parts").paginate(Bucket=self.bucket, Key=self.key,
                                                                     UploadId=upload_id)
            held = {int(p["PartNumber"]): str(p["ETag"]) for page in pages for p in page.get("Parts", [])}
        except ClientError as exc:  # NoSuchUpload: aborted or completed meanwhile; start afresh
            log.info("s3: the interrupted upload of %s is gone (%s); starting it again", self.key, exc)
            self.journal.unlink(missing_ok=True)
            return None, {}
        log.info("s3: resuming the upload of %s at part %d", self.key, len(held) + 1)
        return upload_id, held

    def _write_journal(self, upload_id: str, done: dict[int, str]) -> None:
        self.journal.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.journal.with_suffix(".tmp")
        temporary.write_text(json.dumps({"bucket": self.bucket, "key": self.key, "source": str(self.source),
                                         "upload_id": upload_id, "parts": done}), encoding="utf-8")
        os.replace(temporary, self.journal)
