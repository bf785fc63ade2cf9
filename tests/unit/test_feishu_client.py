"""The shared Feishu API client against the fake Open Platform: tokens, error classes, downloads."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import pytest
from fastapi import FastAPI
from pydantic import SecretStr

from aibot_common.errors import InvalidMessage, Retryable
from aibot_common.platforms.feishu import FeishuClient, FeishuRejected, FeishuRetryable
from aibot_common.settings import ConfigError, FeishuConfig
from aibot_fakes.feishu import FakeFeishu
from aibot_fakes.server import BackgroundServer

TEXT = json.dumps({"text": "hi"})


@pytest.fixture
async def fake() -> AsyncIterator[FakeFeishu]:
    server = FakeFeishu()
    await server.start()
    yield server
    await server.stop()


def config_for(fake: FakeFeishu, **changes: object) -> FeishuConfig:
    values = {"enabled": True, "app_id": fake.app_id, "app_secret": SecretStr(fake.app_secret), "domain": fake.url}
    return FeishuConfig(**{**values, **changes})


@pytest.fixture
async def client(fake: FakeFeishu) -> AsyncIterator[FeishuClient]:
    async with FeishuClient(config_for(fake)) as feishu:
        yield feishu


async def test_one_token_serves_many_calls_even_at_once(fake: FakeFeishu, client: FeishuClient) -> None:
    await asyncio.gather(*(client.send_message("chat_id", f"oc_{i}", "text", TEXT) for i in range(5)))
    await client.send_message("chat_id", "oc_last", "text", TEXT)
    assert len(fake.calls_to("token")) == 1
    assert len(fake.sent) == 6


async def test_a_token_feishu_refuses_is_refreshed_and_the_call_retried_once(
    fake: FakeFeishu, client: FeishuClient
) -> None:
    await client.send_message("chat_id", "oc_a", "text", TEXT)
    fake.expire_tokens()
    message_id = await client.send_message("chat_id", "oc_a", "text", TEXT)
    assert message_id.startswith("om_")
    assert len(fake.tokens_issued) == 2
    assert [c["code"] for c in fake.calls_to("send")] == [0, 99991663, 0]
    fake.fail_next("send", code=99991663, times=2)  # refused even after a refresh: try later, not forever
    with pytest.raises(FeishuRetryable, match="token still refused"):
        await client.send_message("chat_id", "oc_a", "text", TEXT)


async def test_a_short_lived_token_is_refreshed_before_it_expires(fake: FakeFeishu) -> None:
    fake.token_ttl_s = 2
    async with FeishuClient(config_for(fake)) as client:
        await client.bot_info()
        await asyncio.sleep(1.2)  # past half its life: fetched again rather than used to the last second
        await client.bot_info()
    assert len(fake.tokens_issued) == 2
    assert all(c["code"] == 0 for c in fake.calls_to("bot_info"))


async def test_rate_limits_are_retryable_after_the_gateways_reset(fake: FakeFeishu, client: FeishuClient) -> None:
    fake.fail_next("reply", code=99991400, msg="request trigger frequency limit", http_status=429, retry_after=3)
    with pytest.raises(FeishuRetryable) as limited:
        await client.reply_message("om_x", "text", TEXT)
    assert isinstance(limited.value, Retryable) and limited.value.retry_after == 3.0
    fake.fail_next("send", code=11020, msg="throttled")
    with pytest.raises(Retryable):
        await client.send_message("chat_id", "oc_a", "text", TEXT)


async def test_server_errors_retry_and_refusals_carry_feishus_code(fake: FakeFeishu, client: FeishuClient) -> None:
    fake.fail_next("send", code=1500, msg="internal error", http_status=500)
    with pytest.raises(FeishuRetryable):
        await client.send_message("chat_id", "oc_a", "text", TEXT)
    with pytest.raises(FeishuRejected, match="code 230001") as refused:
        await client.send_message("chat_id", "oc_a", "text", "{not json")
    assert isinstance(refused.value, InvalidMessage) and refused.value.code == 230001
    with pytest.raises(FeishuRejected) as gone:
        await client.reply_message("om_unknown", "text", TEXT)
    assert gone.value.reply_target_gone


async def test_wrong_app_secret_says_which_setting_to_fix(fake: FakeFeishu) -> None:
    async with FeishuClient(config_for(fake, app_secret=SecretStr("wrong"))) as client:
        with pytest.raises(FeishuRejected, match="app_secret") as refused:
            await client.bot_info()
    assert refused.value.code == 10014 and "wrong" not in str(refused.value)


def test_missing_credentials_are_a_configuration_error() -> None:
    with pytest.raises(ConfigError, match="app_id"):
        FeishuClient(FeishuConfig(enabled=True))


async def test_timeouts_are_retryable() -> None:
    slow = FastAPI()

    @slow.post("/open-apis/auth/v3/tenant_access_token/internal")
    async def token() -> dict:
        await asyncio.sleep(2)
        return {}

    server = BackgroundServer(slow)
    await server.start()
    try:
        config = FeishuConfig(enabled=True, app_id="cli_x", app_secret=SecretStr("s"), domain=server.url)
        async with FeishuClient(config, timeout_s=0.3) as client:
            with pytest.raises(FeishuRetryable, match="Timeout"):
                await client.bot_info()
    finally:
        await server.stop()


async def test_bot_info_gives_the_open_id(fake: FakeFeishu, client: FeishuClient) -> None:
    info = await client.bot_info()
    assert info.open_id == fake.bot_open_id and info.name == fake.bot_name


async def test_voice_notes_download_within_a_bound(fake: FakeFeishu, client: FeishuClient) -> None:
    audio = b"OggS" + bytes(range(256)) * 40
    fake.add_resource("om_voice", "file_v3_k", audio, content_type="audio/ogg", file_name="voice.opus")
    resource = await client.download_message_resource("om_voice", "file_v3_k")
    assert resource.content == audio and resource.content_type == "audio/ogg" and resource.file_name == "voice.opus"
    with pytest.raises(FeishuRejected, match="over the 1000"):
        await client.download_message_resource("om_voice", "file_v3_k", max_bytes=1000)
    with pytest.raises(FeishuRejected) as missing:
        await client.download_message_resource("om_voice", "file_v3_other")
    assert missing.value.code == 234043
    fake.expire_tokens()
    assert (await client.download_message_resource("om_voice", "file_v3_k")).content == audio
    fake.fail_next("download", code=99991400, http_status=429, retry_after=1)
    with pytest.raises(FeishuRetryable):
        await client.download_message_resource("om_voice", "file_v3_k")


async def test_api_calls_share_kept_alive_connections(
    fake: FakeFeishu, client: FeishuClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The SDK's async transport builds an httpx client (SSL context, new TCP and TLS connection)
    per call; ours sends every JSON call on one pooled client."""
    import httpx

    await client.send_message("chat_id", "oc_1", "text", json.dumps({"text": "warm"}))  # token fetched
    built = []
    original = httpx.AsyncClient.__init__

    def counting(self: httpx.AsyncClient, *args: object, **kwargs: object) -> None:
        built.append(self)
        original(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(httpx.AsyncClient, "__init__", counting)
    for n in range(5):
        await client.send_message("chat_id", "oc_1", "text", json.dumps({"text": f"hello {n}"}))
    assert built == []
    assert [m["content"] for m in fake.sent[-5:]] == [{"text": f"hello {n}"} for n in range(5)]
