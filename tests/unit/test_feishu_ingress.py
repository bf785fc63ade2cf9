"""ingress-feishu's publishing rules: acknowledged before remembered, repeats dropped, bot identity found."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from pydantic import SecretStr

from aibot_common.settings import ConfigError, FeishuConfig
from aibot_fakes.feishu import FakeFeishu
from aibot_ingress_feishu import app as ingress_app
from aibot_ingress_feishu.app import Ingress, RecentEvents, credentials, find_bot_identity
from aibot_ingress_feishu.handler import BotIdentity


class StubProducer:
    """Takes records like AIOKafkaProducer.send; the broker acknowledges them, or never does."""

    def __init__(self, acknowledge: bool = True) -> None:
        self.acknowledge = acknowledge
        self.records: list[tuple[str, bytes]] = []

    async def send(self, topic: str, *, value: bytes, **_: Any) -> asyncio.Future[None]:
        self.records.append((topic, value))
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self.acknowledge:
            future.set_result(None)
        return future


def _event(event_id: str, chat_type: str = "p2p") -> dict[str, Any]:
    return {
        "schema": "2.0",
        "header": {"event_id": event_id, "event_type": "im.message.receive_v1", "create_time": "1700000000000"},
        "event": {
            "sender": {"sender_id": {"open_id": "ou_a"}, "sender_type": "user"},
            "message": {
                "message_id": f"om_{event_id}",
                "chat_id": "oc_1",
                "chat_type": chat_type,
                "message_type": "text",
                "content": json.dumps({"text": "hi"}),
            },
        },
    }


def _ingress(producer: StubProducer) -> Ingress:
    return Ingress(FeishuConfig(enabled=True), producer, BotIdentity(open_id="ou_bot"))  # type: ignore[arg-type]


async def test_an_event_is_published_once_per_replica() -> None:
    producer = StubProducer()
    ingress = _ingress(producer)
    assert await ingress.publish(_event("e1")) == "accepted"
    assert await ingress.publish(_event("e1")) == "duplicate"
    assert await ingress.publish(_event("e2")) == "accepted"
    assert len(producer.records) == 2
    assert await ingress.publish(_event("e3", chat_type="group")) == "ignored"  # no @mention
    assert await ingress.publish(_event("e3", chat_type="group")) == "duplicate"
    assert len(producer.records) == 2


async def test_an_unacknowledged_event_is_not_remembered_so_the_resend_is_published(monkeypatch) -> None:
    monkeypatch.setattr(ingress_app, "ACK_TIMEOUT_S", 0.1)
    producer = StubProducer(acknowledge=False)
    ingress = _ingress(producer)
    with pytest.raises(TimeoutError):
        await ingress.publish(_event("slow"))
    producer.acknowledge = True
    assert await ingress.publish(_event("slow")) == "accepted"
    assert len(producer.records) == 2


def test_recent_events_expire_and_stay_bounded(monkeypatch) -> None:
    now = [1000.0]
    monkeypatch.setattr(ingress_app.time, "monotonic", lambda: now[0])
    recent = RecentEvents(ttl_s=60, max_entries=3)
    for event in ("a", "b", "c", "d"):
        recent.add(event)
    assert "a" not in recent and {"b", "c", "d"} <= {e for e in "abcd" if e in recent}
    now[0] += 61
    assert "d" not in recent


def test_the_verification_token_is_required() -> None:
    with pytest.raises(ConfigError, match="verification_token"):
        credentials(FeishuConfig(enabled=True))
    creds = credentials(FeishuConfig(verification_token=SecretStr("v"), encrypt_key=SecretStr("")))
    assert creds.encrypt_key is None and creds.timestamp_window_s == 300


@pytest.fixture
async def fake() -> AsyncIterator[FakeFeishu]:
    server = FakeFeishu()
    await server.start()
    yield server
    await server.stop()


async def test_without_a_configured_open_id_the_bot_asks_feishu_until_it_answers(fake: FakeFeishu, monkeypatch) -> None:
    monkeypatch.setattr(ingress_app, "IDENTITY_RETRY_S", (0.05, 0.1))
    fake.fail_next("bot_info", code=1500, http_status=500, times=2)
    config = FeishuConfig(enabled=True, app_id=fake.app_id, app_secret=SecretStr(fake.app_secret), domain=fake.url)
    ingress = Ingress(config, StubProducer(), BotIdentity(open_id=None))  # type: ignore[arg-type]
    await asyncio.wait_for(find_bot_identity(config, ingress), 10)
    assert ingress.identity == BotIdentity(open_id=fake.bot_open_id, name=fake.bot_name)
    assert [c["code"] for c in fake.calls_to("bot_info")] == [1500, 1500, 0]
