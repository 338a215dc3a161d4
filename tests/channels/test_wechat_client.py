"""The WeChat API client against the stand-in over real HTTP: tokens, typed errors, request checks (issue 4)."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest
import requests
from pydantic import SecretStr

from publishers.wechat.client import (
    WeChatClient,
    WeChatLimitError,
    WeChatMediaError,
    WeChatQuotaExceeded,
    WeChatTokenError,
    WeChatUnauthorized,
)
from publishers.wechat.config import WeChatSettings
from standins.wechat import StandIn, start_standin
from tests.support.paths import ROOT
from tests.support.waiting import ANSWER_TIMEOUT

SECRET = "s3cret-value-never-logged"
JPEG = b"\xff\xd8\xff\xe0" + b"\x00" * 200


@pytest.fixture
def standin() -> Iterator[StandIn]:
    started = time.perf_counter()
    server = start_standin(app_id="wxclient01", secret=SECRET)
    # Cheap enough to start for every test (no waiting for readiness): seconds even on a busy machine.
    assert time.perf_counter() - started < 10.0
    yield server
    server.stop()


@pytest.fixture
def config(standin: StandIn) -> WeChatSettings:
    return WeChatSettings(app_id="wxclient01", app_secret=SECRET, base_url=standin.base_url)


def cover(client: WeChatClient) -> str:
    return client.add_image_material(JPEG, "cover.jpg", "image/jpeg")[0]


def test_token_is_shared_through_the_cache_and_the_secret_stays_out_of_it(tmp_path, standin, config, caplog):
    caplog.set_level(logging.DEBUG)
    first, second = WeChatClient(config, tmp_path), WeChatClient(config, tmp_path)
    assert first.access_token() == second.access_token()
    assert standin.state.tokens_issued == 1
    cache = tmp_path / "wechat-token.json"
    assert cache.stat().st_mode & 0o777 == 0o600 and SECRET not in cache.read_text()
    assert SECRET not in caplog.text


def test_a_refused_token_is_refreshed_once_and_the_call_retried(tmp_path, standin, config):
    client = WeChatClient(config, tmp_path)
    client.access_token()
    standin.set_faults(token_expire_now=True)
    assert client.upload_image(JPEG, "a.jpg", "image/jpeg").startswith(standin.base_url)
    assert standin.state.tokens_issued == 2
    # A token someone else replaced (40001) is dropped from the cache as well.
    (tmp_path / "wechat-token.json").write_text(json.dumps({"wxclient01": {"token": "stale", "expires_at": 9e9}}))
    assert client.upload_image(JPEG, "a.jpg", "image/jpeg")


def test_wrong_secret_is_a_token_error_without_the_secret(tmp_path, config):
    client = WeChatClient(config.model_copy(update={"app_secret": SecretStr("wrong-secret")}), tmp_path)
    with pytest.raises(WeChatTokenError) as caught:
        client.access_token()
    assert caught.value.code == 40125 and "wrong-secret" not in str(caught.value) and "app_secret" in str(caught.value)


def test_multipart_without_the_media_field_is_41005(tmp_path, config):
    client = WeChatClient(config, tmp_path)
    with pytest.raises(WeChatMediaError) as caught:
        client.call("/cgi-bin/media/uploadimg", files={"file": ("a.jpg", JPEG, "image/jpeg")})
    assert caught.value.code == 41005


def test_image_type_and_size_are_checked(tmp_path, config):
    client = WeChatClient(config, tmp_path)
    with pytest.raises(WeChatMediaError) as webp:
        client.upload_image(b"RIFF\x00\x00\x00\x00WEBPVP8 ", "a.webp", "image/webp")
    with pytest.raises(WeChatMediaError) as big:
        client.upload_image(JPEG + b"\x00" * (1024 * 1024), "a.jpg", "image/jpeg")
    assert (webp.value.code, big.value.code) == (40005, 40009)


def test_drafts_are_sent_as_utf8_and_escaped_json_is_refused(tmp_path, standin, config):
    client = WeChatClient(config, tmp_path)
    thumb = cover(client)
    article = {"title": "草原防火“十不准”", "author": "旗应急局", "content": "<p>严禁野外用火。</p>",
               "thumb_media_id": thumb}
    media_id = client.add_draft(article)
    assert client.get_draft(media_id)["news_item"][0]["title"] == "草原防火“十不准”"
    escaped = requests.post(f"{standin.base_url}/cgi-bin/draft/add", timeout=ANSWER_TIMEOUT,
                            params={"access_token": client.access_token()},
                            data=json.dumps({"articles": [article]}).encode())  # ensure_ascii=True: \uXXXX
    assert escaped.json()["errcode"] == 40033


def test_article_checks_at_the_api(tmp_path, standin, config):
    client = WeChatClient(config, tmp_path)
    thumb = cover(client)
    base = {"title": "标题", "author": "作者", "content": "<p>正文</p>", "thumb_media_id": thumb}
    with pytest.raises(WeChatLimitError) as title:
        client.add_draft({**base, "title": "长" * 33})
    with pytest.raises(WeChatLimitError) as digest:
        client.add_draft({**base, "digest": "摘" * 129})
    with pytest.raises(WeChatMediaError) as thumb_error:
        client.add_draft({**base, "thumb_media_id": "temporary-media-id"})
    assert (title.value.code, digest.value.code, thumb_error.value.code) == (45003, 45004, 40007)
    assert "32" in str(title.value)


def test_external_images_and_scripts_are_stripped_from_stored_content(tmp_path, standin, config):
    client = WeChatClient(config, tmp_path)
    own = client.upload_image(JPEG, "a.jpg", "image/jpeg")
    content = f'<p>甲<img src="https://evil.example/x.png">乙<img src="{own}"></p><script>alert(1)</script>'
    media_id = client.add_draft({"title": "t", "author": "a", "content": content, "thumb_media_id": cover(client)})
    stored = client.get_draft(media_id)["news_item"][0]["content"]
    assert stored == f'<p>甲乙<img src="{own}"></p>'


def test_unverified_accounts_get_48001_on_freepublish_and_quotas_45009(tmp_path, standin, config):
    client = WeChatClient(config, tmp_path)
    standin.set_faults(unverified=True)
    with pytest.raises(WeChatUnauthorized) as unauthorized:
        client.published()
    standin.set_faults(unverified=False, quota={"freepublish/batchget": 1})
    assert client.published()["total_count"] == 0
    with pytest.raises(WeChatQuotaExceeded) as quota:
        client.published()
    assert unauthorized.value.code == 48001 and quota.value.code == 45009 and not quota.value.retryable


def test_legacy_token_endpoint_and_inspection(standin):
    answer = requests.get(f"{standin.base_url}/cgi-bin/token", timeout=ANSWER_TIMEOUT,
                          params={"grant_type": "client_credential", "appid": "wxclient01", "secret": SECRET}).json()
    assert answer["expires_in"] == 7200 and answer["access_token"]
    state = requests.get(f"{standin.base_url}/_standin/state", timeout=ANSWER_TIMEOUT).json()
    assert state["tokens_issued"] == 1 and state["faults"]["title_limit"] == 32


def test_runs_as_a_module(tmp_path):
    proc = subprocess.Popen([sys.executable, "-m", "standins.wechat", "--port", "0"], stdout=subprocess.PIPE,
                            text=True, cwd=ROOT)
    try:
        line = proc.stdout.readline()
        base_url = line.split(" on ")[1].split()[0]
        assert requests.get(f"{base_url}/_standin/state", timeout=ANSWER_TIMEOUT).json()["drafts"] == []
    finally:
        proc.terminate()
        proc.wait(timeout=ANSWER_TIMEOUT)


def test_the_app_secret_lives_in_the_secrets_dir_not_in_a_prefect_block(tmp_path, standin):
    from publishers.wechat.config import write_wechat_secret
    from rongmei.core.errors import ConfigError
    from rongmei.core.settings import Settings

    settings = Settings(data_dir=tmp_path / "data", content_dir=tmp_path / "content")
    path = write_wechat_secret(settings, SECRET)  # what `rongmei wechat set-secret` does
    assert path.stat().st_mode & 0o077 == 0  # readable by the service user only
    config = WeChatSettings(app_id="wxclient01", base_url=standin.base_url)
    assert WeChatClient(config, settings.data_dir).access_token()  # the stand-in took the secret from the file
    assert standin.state.tokens_issued == 1
    # A Secret block can be read back by anyone with the Prefect UI login: the old setting is refused, with the fix.
    old = WeChatSettings(app_id="wxclient01", app_secret_block="wechat-app-secret", base_url=standin.base_url)
    with pytest.raises(ConfigError, match=r"no longer supported.*rongmei wechat set-secret"):
        WeChatClient(old, settings.data_dir)


def test_the_wechat_section_comes_from_rongmei_toml_and_rongmei_wechat_variables(tmp_path, monkeypatch):
    from publishers.wechat import WeChatPublisher
    from rongmei.core.errors import ConfigError
    from rongmei.core.settings import Settings

    for name in ("APP_ID", "APP_SECRET", "BASE_URL", "DRAFT_ONLY", "DAILY_POLL_BUDGET"):
        monkeypatch.delenv(f"RONGMEI_WECHAT__{name}", raising=False)
    toml = tmp_path / "rongmei.toml"
    toml.write_text('[wechat]\napp_id = "wxfromtoml"\ndraft_only = true\ndaily_poll_budget = 7\n', encoding="utf-8")
    monkeypatch.setenv("RONGMEI_CONFIG", str(toml))
    assert "wechat" not in Settings.model_fields  # the core declares nothing of WeChat's
    config = WeChatPublisher.config_of(Settings())
    assert (config.app_id, config.draft_only, config.daily_poll_budget) == ("wxfromtoml", True, 7)
    assert config.base_url == "https://api.weixin.qq.com" and not config.app_secret.get_secret_value()

    monkeypatch.setenv("RONGMEI_WECHAT__APP_ID", "wxfromenv")
    monkeypatch.setenv("RONGMEI_WECHAT__APP_SECRET", SECRET)
    monkeypatch.setenv("RONGMEI_WECHAT__BASE_URL", "http://127.0.0.1:9/")
    config = WeChatPublisher.config_of(Settings())
    assert (config.app_id, config.app_secret.get_secret_value(), config.base_url) == (
        "wxfromenv", SECRET, "http://127.0.0.1:9/")
    assert config.draft_only and config.daily_poll_budget == 7  # the variables override keys, not the table
    assert SECRET not in repr(config)

    monkeypatch.setenv("RONGMEI_WECHAT__DAILY_POLL_BUDGET", "many")
    with pytest.raises(ConfigError, match=r"\[wechat\].*daily_poll_budget"):
        WeChatPublisher.config_of(Settings())


def test_rongmei_wechat_set_secret_stores_the_secret_hidden_and_private(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from publishers.wechat.config import WECHAT_SECRET_FILE
    from rongmei.cli.commands import app

    monkeypatch.setenv("RONGMEI_DATA_DIR", str(tmp_path / "data"))
    runner = CliRunner()
    assert "wechat" in runner.invoke(app, ["--help"]).output  # mounted from the channel, listed with ours
    assert "set-secret" in runner.invoke(app, ["wechat", "--help"]).output
    result = runner.invoke(app, ["wechat", "set-secret"], input=f"{SECRET}\n")
    assert result.exit_code == 0, result.output
    path = tmp_path / "data" / "secrets" / WECHAT_SECRET_FILE
    assert result.output == (f"AppSecret: \nAppSecret saved to {path} (readable by this user only). "
                             "It is never printed.\n")
    assert path.read_text(encoding="utf-8") == f"{SECRET}\n" and path.stat().st_mode & 0o077 == 0
