"""Hardening through the running pipeline, every service its own process as under `ai-bot up`:
bodies cut at the limit by the service itself, personal data kept from the model and the stored
history but shown to the user, and /forget leaving a tombstone in the conversation changelog."""

from __future__ import annotations

import json

import httpx
import pytest

from aibot_common.topics import CORE_CONVERSATIONS
from tests.e2e.conftest import WEBHOOK_SECRET, Pipeline
from tests.kafka_helpers import read_topic

pytestmark = pytest.mark.e2e


async def test_a_chunked_upload_is_cut_by_the_ingress_itself(pipeline: Pipeline) -> None:
    url = pipeline.telegram.webhook["url"]
    sent = 0

    async def endless() -> object:
        nonlocal sent
        for _ in range(1000):  # up to 64 MB, far past the 1 MiB limit
            sent += 1
            yield b"x" * 65536

    headers = {"X-Telegram-Bot-Api-Secret-Token": WEBHOOK_SECRET, "Content-Type": "application/json"}
    async with httpx.AsyncClient(timeout=30) as client:
        try:
            response = await client.post(url, content=endless(), headers=headers)
            assert response.status_code == 413
        except (httpx.WriteError, httpx.ReadError, httpx.RemoteProtocolError):
            pass  # the server answered 413 and hung up while the client was still writing
        assert sent < 1000
        pipeline.telegram.user_sends_text(1501, "still there?")
        (reply,) = await pipeline.telegram.wait_for_sent(1, chat_id=1501, timeout=60)
    assert reply["text"] == "Echo: still there?"


async def test_personal_data_reaches_neither_the_model_nor_the_history(pipeline: Pipeline) -> None:
    phone, card = "138-1234-5678", "4111 1111 1111 1111"
    pipeline.telegram.user_sends_text(1502, f"call {phone}, card {card}")
    (reply,) = await pipeline.telegram.wait_for_sent(1, chat_id=1502, timeout=60)
    assert reply["text"] == f"Echo: call {phone}, card {card}"  # the user reads their own data
    prompts = json.dumps(pipeline.llm.requests)
    assert "call [PHONE_" in prompts and phone not in prompts and card not in prompts
    records = await read_topic(pipeline.bootstrap, CORE_CONVERSATIONS.name)
    history = [r.value for r in records if r.key == b"telegram:1502" and r.value]
    assert history and not any(phone.encode() in v or card.encode() in v for v in history)


async def test_forget_writes_a_tombstone_to_the_changelog(pipeline: Pipeline) -> None:
    pipeline.telegram.user_sends_text(1503, "remember me")
    await pipeline.telegram.wait_for_sent(1, chat_id=1503, timeout=60)
    pipeline.telegram.user_sends_text(1503, "/forget")
    sent = await pipeline.telegram.wait_for_sent(2, chat_id=1503, timeout=60)
    assert "erased" in sent[-1]["text"]
    records = await read_topic(
        pipeline.bootstrap,
        CORE_CONVERSATIONS.name,
        until=lambda rs: any(r.key == b"telegram:1503" and r.value is None for r in rs),
    )
    mine = [r for r in records if r.key == b"telegram:1503"]
    assert mine[-1].value is None  # the last word on this conversation is a tombstone
