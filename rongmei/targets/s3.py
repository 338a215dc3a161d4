"""S3-compatible distribution target (AWS S3, Aliyun OSS, Tencent COS, MinIO), issue 6 item 7.

Every object gets the Content-Type and Cache-Control the distribution server would send, so a CDN or the
bucket's own website endpoint answers terminals the same way. A PUT replaces an object atomically: readers
get the old or the new bytes, never a mix, which is what the DirectoryTarget's write-then-rename gives.

Ordering: a manifest must never point at media that is not there yet. `write_many` uploads everything
else first and the keys named in `last` (or, by default, the manifests, playlists and feeds) at the end.
Media keys are content-addressed (`media/<sha256>.<ext>`), so an existing one is never uploaded again.

Withdrawal (a retracted item's media) deletes the object. A bucket cannot answer 410 Gone for it as the
distribution server does; what bounds how long a CDN or browser keeps serving a copy is the objects' short
media Cache-Control (rongmei.targets.base.CACHE_MEDIA).

Credentials come from boto3's usual chain (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, ~/.aws, instance
roles); they are never part of rongmei's settings or logs.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Iterable
from pathlib import Path
from typing import Any

from rongmei.core.errors import ConfigError, PublishError
from rongmei.targets.base import Target, cache_control_for, clean_key, clean_prefix, content_type_for
from rongmei.targets.s3_multipart import MULTIPART_THRESHOLD, ResumableUpload

log = logging.getLogger(__name__)

# Written last by default: what terminals and readers poll, and which refers to other keys.
POINTER_SUFFIXES = ("manifest.json", "playlist.json", "playlist.m3u8", "podcast.xml", "feed.xml",
                    "sitemap.xml")
# 5xx, throttling and transport trouble may pass; anything else (no bucket, access denied) will not.
RETRYABLE_CODES = {"SlowDown", "Throttling", "ThrottlingException", "RequestTimeout", "InternalError",
                   "ServiceUnavailable", "RequestTimeTooSkewed"}

__all__ = ["POINTER_SUFFIXES", "RETRYABLE_CODES", "S3Target", "upload_order"]


def upload_order(keys: Iterable[str], last: Collection[str] = ()) -> list[str]:
    """Keys in a safe upload order: media first, then pages and other files, then the pointers."""
    keys = list(keys)
    pointers = set(last) if last else {k for k in keys if k.endswith(POINTER_SUFFIXES)}

    def rank(key: str) -> int:
        if key in pointers:
            return 2
        return 0 if key.startswith("media/") else 1

    ordered = sorted(keys, key=rank)  # stable: the caller's order holds within each rank
    if last:
        tail = [k for k in last if k in pointers and k in keys]
        ordered = [k for k in ordered if k not in pointers] + tail
    return ordered


def _status(exc: Any) -> int:
    return int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)


class S3Target(Target):
    """Published files as objects in one bucket, optionally under a key prefix."""

    def __init__(self, bucket: str, endpoint_url: str | None = None, prefix: str = "", client: Any = None,
                 *, region_name: str | None = None, addressing_style: str = "auto", acl: str = "",
                 journal_dir: Path | None = None) -> None:
        if not bucket:
            raise ConfigError("S3 target needs a bucket name: set s3_bucket in rongmei.toml")
        self.bucket = bucket
        # Where large uploads journal their multipart progress (rongmei.targets.s3_multipart); without one,
        # boto3's own multipart, which a killed process cannot resume.
        self.journal_dir = journal_dir
        self.prefix = prefix.strip("/")
        # Public sites usually get a public-read bucket policy instead; buckets with ACLs disabled
        # (AWS's default since 2023) reject any ACL, so none is sent unless asked for.
        self.acl = acl
        if client is None:
            import boto3
            from botocore.config import Config

            client = boto3.client(
                "s3",
                endpoint_url=endpoint_url or None,
                region_name=region_name,
                config=Config(
                    s3={"addressing_style": addressing_style},
                    retries={"max_attempts": 3, "mode": "standard"},
                    # OSS, COS and older MinIO reject the CRC checksums newer botocore sends by default.
                    request_checksum_calculation="when_required",
                    response_checksum_validation="when_required",
                ),
            )
        self.client = client

    def object_key(self, key: str) -> str:
        key = clean_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def _headers(self, key: str) -> dict[str, str]:
        headers = {"ContentType": content_type_for(key), "CacheControl": cache_control_for(key)}
        if self.acl:
            headers["ACL"] = self.acl
        return headers

    def _error(self, what: str, key: str, exc: Exception) -> PublishError:
        """Map a botocore error where it enters our code; says whether retrying can help."""
        from botocore.exceptions import ClientError

        if not isinstance(exc, ClientError):
            return PublishError(f"S3 {what} of {key!r} in bucket {self.bucket!r} failed: {exc}", retryable=True)
        error = exc.response.get("Error", {})
        code = str(error.get("Code", ""))
        return PublishError(
            f"S3 {what} of {key!r} in bucket {self.bucket!r} failed: {code} {error.get('Message', '')}"
            " (check the bucket name, endpoint and credentials)",
            retryable=_status(exc) >= 500 or code in RETRYABLE_CODES,
        )

    def _call(self, what: str, key: str, func: Any, **kwargs: Any) -> Any:
        from boto3.exceptions import S3UploadFailedError
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return func(Bucket=self.bucket, **kwargs)
        except (BotoCoreError, ClientError, S3UploadFailedError) as exc:
            raise self._error(what, key, exc) from exc

    def write_bytes(self, key: str, data: bytes) -> None:
        self._call("upload", key, self.client.put_object, Key=self.object_key(key), Body=data,
                   **self._headers(key))

    def write_file(self, key: str, source: Path) -> None:
        if key.startswith("media/") and self.exists(key):
            return  # content-addressed: the same key always holds the same bytes
        # Multipart for large videos: the object appears only once complete.
        if self.journal_dir is not None and source.stat().st_size >= MULTIPART_THRESHOLD:
            ResumableUpload(self.client, self.bucket, self.object_key(key), source, self.journal_dir,
                            self._headers(key), lambda what, _key, func, **kw: self._call(what, key, func, **kw)).run()
            return
        self._call("upload", key, lambda Bucket, **kw: self.client.upload_file(str(source), Bucket, **kw),
                   Key=self.object_key(key), ExtraArgs=self._headers(key))

    def read_bytes(self, key: str) -> bytes | None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            answer = self.client.get_object(Bucket=self.bucket, Key=self.object_key(key))
            return answer["Body"].read()
        except ClientError as exc:
            if _status(exc) == 404 and exc.response.get("Error", {}).get("Code") != "NoSuchBucket":
                return None
            raise self._error("download", key, exc) from exc
        except BotoCoreError as exc:
            raise self._error("download", key, exc) from exc

    def exists(self, key: str) -> bool:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self.client.head_object(Bucket=self.bucket, Key=self.object_key(key))
        except ClientError as exc:
            # HEAD has no body, so a missing bucket also looks like a 404; write_bytes will say which.
            if _status(exc) == 404:
                return False
            raise self._error("lookup", key, exc) from exc
        except BotoCoreError as exc:
            raise self._error("lookup", key, exc) from exc
        return True

    def delete(self, key: str) -> None:
        # S3 answers 204 for a missing key as well, which is the Target contract.
        self._call("delete", key, self.client.delete_object, Key=self.object_key(key))

    def withdraw(self, key: str) -> None:
        self._call("withdraw", key, self.client.delete_object, Key=self.object_key(key))

    def keys(self, prefix: str = "") -> list[str]:
        wanted = clean_prefix(prefix)
        full = f"{self.prefix}/{wanted}" if self.prefix else wanted
        strip = len(self.prefix) + 1 if self.prefix else 0
        found: list[str] = []
        pages = self._call("listing", prefix or "/", lambda Bucket, **kw: list(
            self.client.get_paginator("list_objects_v2").paginate(Bucket=Bucket, **kw)), Prefix=full)
        for page in pages:
            found.extend(obj["Key"][strip:] for obj in page.get("Contents", []))
        return sorted(found)

    def write_many(self, items: Iterable[tuple[str, bytes | Path]], last: Collection[str] = ()) -> list[str]:
        """Write several keys so that pointers land after what they point to; returns the order used.

        `items` are (key, bytes or local file). `last` names the keys to write at the end, in that order;
        empty means the manifests, playlists and feeds (POINTER_SUFFIXES).
        """
        by_key = dict(items)
        order = upload_order(by_key, last)
        for key in order:
            value = by_key[key]
            if isinstance(value, Path):
                self.write_file(key, value)
            else:
                self.write_bytes(key, value)
        return order
