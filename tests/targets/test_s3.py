"""The S3 target end to end against moto's standalone S3 server on 127.0.0.1, through boto3."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
import requests

from rongmei.core.errors import PublishError
from rongmei.core.settings import Settings
from rongmei.targets.base import CACHE_MEDIA, CACHE_SHORT
from rongmei.targets.s3 import S3Target, upload_order
from rongmei.targets.selection import target_from_settings
from tests.support.s3 import fake_aws_credentials, s3_server

BUCKET = "rongmei-site"


@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
    with s3_server() as url:
        yield url


@pytest.fixture(autouse=True)
def fake_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_aws_credentials(monkeypatch)


@pytest.fixture
def bucket(endpoint: str, request: pytest.FixtureRequest) -> str:
    name = f"{BUCKET}-{abs(hash(request.node.name)) % 10**8}"
    boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket=name)
    return name


def head(endpoint: str, bucket: str, key: str) -> dict:
    return boto3.client("s3", endpoint_url=endpoint).head_object(Bucket=bucket, Key=key)


def test_objects_carry_content_type_and_cache_headers(endpoint, bucket, tmp_path: Path):
    target = S3Target(bucket, endpoint_url=endpoint, prefix="county/", acl="public-read")
    audio = tmp_path / "news.mp3"
    audio.write_bytes(b"ID3" + bytes(5000))
    media_key = f"media/{hashlib.sha256(audio.read_bytes()).hexdigest()}.mp3"
    target.write_file(media_key, audio)
    target.write_text("screens/hall/manifest.json", '{"manifest_version": 1}')
    target.write_text("articles/a1/index.html", "<!doctype html><title>文章</title>")

    media = head(endpoint, bucket, f"county/{media_key}")
    assert media["ContentType"] == "audio/mpeg" and media["CacheControl"] == CACHE_MEDIA
    manifest = head(endpoint, bucket, "county/screens/hall/manifest.json")
    assert manifest["ContentType"] == "application/json; charset=utf-8" and manifest["CacheControl"] == CACHE_SHORT
    page = head(endpoint, bucket, "county/articles/a1/index.html")
    assert page["ContentType"] == "text/html; charset=utf-8"
    # What a terminal fetching the object over plain HTTP sees (path-style URL on the S3 endpoint).
    plain = requests.get(f"{endpoint}/{bucket}/county/screens/hall/manifest.json")
    assert plain.status_code == 200 and plain.headers["Content-Type"].startswith("application/json")
    assert target.read_bytes("articles/a1/index.html").decode() == "<!doctype html><title>文章</title>"
    assert target.exists(media_key) and not target.exists("media/missing.mp3")
    assert target.read_bytes("nothing/here.json") is None


def test_media_is_uploaded_once(endpoint, bucket, tmp_path: Path):
    target = S3Target(bucket, endpoint_url=endpoint)
    source = tmp_path / "a.jpg"
    source.write_bytes(b"\xff\xd8first")
    key = f"media/{'0' * 64}.jpg"
    target.write_file(key, source)
    first = head(endpoint, bucket, key)["LastModified"]
    source.write_bytes(b"\xff\xd8changed")  # cannot happen for real (content-addressed); proves no re-upload
    target.write_file(key, source)
    assert target.read_bytes(key) == b"\xff\xd8first"
    assert head(endpoint, bucket, key)["LastModified"] == first
    assert head(endpoint, bucket, key)["ContentType"] == "image/jpeg"


def test_retraction_deletes_and_replaces(endpoint, bucket):
    target = S3Target(bucket, endpoint_url=endpoint)
    target.write_text("articles/gone/index.html", "old")
    target.write_text("loudspeakers/150102/playlist.json", '{"items": [1]}')
    target.delete("articles/gone/index.html")
    target.delete("articles/never/index.html")  # missing key: not an error
    assert target.read_bytes("articles/gone/index.html") is None
    assert requests.get(f"{endpoint}/{bucket}/articles/gone/index.html").status_code == 404
    target.write_text("loudspeakers/150102/playlist.json", '{"items": []}')
    assert target.read_bytes("loudspeakers/150102/playlist.json") == b'{"items": []}'


def test_write_many_puts_pointers_last(endpoint, bucket, tmp_path: Path):
    target = S3Target(bucket, endpoint_url=endpoint)
    video = tmp_path / "v.mp4"
    video.write_bytes(bytes(100))
    items = [
        ("screens/hall/manifest.json", b"{}"),
        ("screens/hall/player.html", b"<html>"),
        (f"media/{'1' * 64}.mp4", video),
        ("feed.xml", b"<rss/>"),
    ]
    order = target.write_many(items)
    assert order[0].startswith("media/") and set(order[-2:]) == {"screens/hall/manifest.json", "feed.xml"}
    assert head(endpoint, bucket, f"media/{'1' * 64}.mp4")["ContentType"] == "video/mp4"
    assert upload_order(["b.json", "media/x.mp3", "a.html"], last=["b.json"]) == ["media/x.mp3", "a.html", "b.json"]


def test_errors_are_mapped_and_say_whether_to_retry(endpoint):
    target = S3Target("no-such-bucket-anywhere", endpoint_url=endpoint)
    with pytest.raises(PublishError, match="no-such-bucket-anywhere") as caught:
        target.write_bytes("index.html", b"x")
    assert caught.value.retryable is False
    with pytest.raises(PublishError, match="outside the public root"):
        target.write_bytes("../escape", b"x")
    unreachable = S3Target("b", endpoint_url="http://127.0.0.1:9")
    unreachable.client.meta.config.retries = {"max_attempts": 0}
    with pytest.raises(PublishError) as down:
        unreachable.write_bytes("index.html", b"x")
    assert down.value.retryable is True


def test_settings_select_the_s3_target(endpoint, bucket, tmp_path: Path):
    settings = Settings(data_dir=tmp_path, s3_bucket=bucket, s3_endpoint_url=endpoint)
    target = target_from_settings(settings)
    assert isinstance(target, S3Target)
    target.write_text("index.html", "hello")
    assert head(endpoint, bucket, "index.html")["ContentType"] == "text/html; charset=utf-8"


def test_channels_publish_and_retract_through_the_s3_target(endpoint, bucket, tmp_path: Path):
    """The web and loudspeaker channels, configured with s3_bucket, write to the bucket (media before the
    playlist), and a retraction replaces the page and empties the playlist."""
    import json

    from publishers.base import Receipt
    from publishers.loudspeakers import LoudspeakerPublisher
    from publishers.web import WebPublisher
    from tests.channels.support import Blobs, audio_rendition, channel_settings, make_release

    settings = channel_settings(Settings(data_dir=tmp_path / "data", s3_bucket=bucket, s3_endpoint_url=endpoint))
    blobs = Blobs(tmp_path / "blobs")
    audio = audio_rendition(blobs)
    release = make_release(blobs, "s3-news", {"loudspeaker_audio": audio}, zones=["150121101"], kind="audio")
    s3 = boto3.client("s3", endpoint_url=endpoint)

    web = WebPublisher(settings).publish(release)
    speakers = LoudspeakerPublisher(settings).publish(release)
    page = s3.get_object(Bucket=bucket, Key="articles/s3-news/index.html")
    assert page["ContentType"] == "text/html; charset=utf-8" and "标题 s3-news" in page["Body"].read().decode()
    playlist = json.loads(s3.get_object(Bucket=bucket, Key="loudspeakers/150121101201/playlist.json")["Body"].read())
    entries = [e for e in playlist["items"] if e["id"] == "s3-news"]  # one per broadcast slot
    media_key = f"media/{audio['sha256']}.mp3"
    media = s3.head_object(Bucket=bucket, Key=media_key)
    assert entries and all(e["media"]["sha256"] == audio["sha256"] for e in entries)
    assert media["CacheControl"] == CACHE_MEDIA
    assert media["ContentType"] == "audio/mpeg"

    LoudspeakerPublisher(settings).retract("s3-news", Receipt(**speakers.__dict__), "撤稿测试")
    WebPublisher(settings).retract("s3-news", Receipt(**web.__dict__), "撤稿测试")
    playlist = json.loads(s3.get_object(Bucket=bucket, Key="loudspeakers/150121101201/playlist.json")["Body"].read())
    assert all(e["id"] != "s3-news" for e in playlist["items"])
    page = s3.get_object(Bucket=bucket, Key="articles/s3-news/index.html")["Body"].read().decode()
    assert "撤稿测试" in page


def test_a_large_upload_killed_half_way_resumes_at_the_next_part(endpoint, bucket, tmp_path: Path, monkeypatch):
    """The multipart upload id and finished parts are written ahead: the next attempt sends only the rest,
    and S3 ends with one complete object and no upload left open."""
    faults = tmp_path / "faults"
    faults.mkdir()
    monkeypatch.setenv("RONGMEI_FAULTS_DIR", str(faults))
    journal = tmp_path / "s3-uploads"
    video = tmp_path / "long.mp4"
    video.write_bytes(bytes(range(256)) * (20 * 1024 * 1024 // 256 + 7))  # 3 parts of 8 MiB, the last short
    key = f"media/{hashlib.sha256(video.read_bytes()).hexdigest()}.mp4"
    client = boto3.client("s3", endpoint_url=endpoint)
    sent: list[int] = []
    real_upload_part = client.upload_part

    def counting_upload_part(**kwargs):
        sent.append(kwargs["PartNumber"])
        return real_upload_part(**kwargs)

    monkeypatch.setattr(client, "upload_part", counting_upload_part)
    target = S3Target(bucket, client=client, journal_dir=journal)

    (faults / "s3.after_part").write_text("raise")  # the first part is up, then the process "dies"
    with pytest.raises(OSError, match=r"s3\.after_part"):
        target.write_file(key, video)
    assert sent == [1] and len(list(journal.glob("*.json"))) == 1
    assert not target.exists(key)  # nothing half-uploaded is visible

    target.write_file(key, video)  # the next attempt
    assert sent == [1, 2, 3]  # part 1 was not sent again
    assert target.read_bytes(key) == video.read_bytes()
    assert head(endpoint, bucket, key)["ContentType"] == "video/mp4"
    assert client.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
    assert list(journal.glob("*.json")) == []


def test_a_journal_whose_upload_was_aborted_starts_afresh(endpoint, bucket, tmp_path: Path, monkeypatch):
    faults = tmp_path / "faults"
    faults.mkdir()
    monkeypatch.setenv("RONGMEI_FAULTS_DIR", str(faults))
    video = tmp_path / "v.mp4"
    video.write_bytes(b"\x00" * (17 * 1024 * 1024))
    client = boto3.client("s3", endpoint_url=endpoint)
    target = S3Target(bucket, client=client, journal_dir=tmp_path / "s3-uploads")
    (faults / "s3.after_part").write_text("raise")
    with pytest.raises(OSError):
        target.write_file("media/v.mp4", video)
    for upload in client.list_multipart_uploads(Bucket=bucket)["Uploads"]:  # a lifecycle rule, or a technician
        client.abort_multipart_upload(Bucket=bucket, Key=upload["Key"], UploadId=upload["UploadId"])
    target.write_file("media/v.mp4", video)
    assert target.read_bytes("media/v.mp4") == video.read_bytes()
