"""Delivering Feishu messages against the fake Open Platform: reply, fall back, degrade, classify."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import pytest
from pydantic import SecretStr

from aibot_common.envelope import ChatType, Conversation, Envelope, Kind, Platform, TextPart
from aibot_common.errors import InvalidMessage, Retryable
from aibot_common.platforms.feishu import FeishuClient
from aibot_common.settings import FeishuConfig, RendererSettings
from aibot_fakes.feishu import FakeFeishu
from aibot_renderer.feishu_format import format_for_feishu
from aibot_renderer.feishu_sender import FeishuSender, idempotency_key


@pytest.fixture
async def fake() -> AsyncIterator[FakeFeishu]:
    server = FakeFeishu()
    await server.start()  # no event URL: the users' messages exist, nothing is delivered
    yield server
    await server.stop()


@pytest.fixture
async def sender(fake: FakeFeishu) -> AsyncIterator[FeishuSender]:
    config = FeishuConfig(enabled=True, app_id=fake.app_id, app_secret=SecretStr(fake.app_secret), domain=fake.url)
    async with FeishuClient(config) as client:
        yield FeishuSender(client)


def _outbound(fake: FakeFeishu, text: str, chat_id: str = "oc_s") -> Envelope:
    asked = fake.user_sends_text(chat_id, "question")["event"]["message"]["message_id"]
    reply = Envelope(
        id=f"reply-{asked}",
        kind=Kind.REPLY,
        reply_to_message_id=asked,
        conversation=Conversation(platform=Platform.FEISHU, chat_id=chat_id, chat_type=ChatType.PRIVATE),
        parts=[TextPart(text=text, format="markdown")],
    )
    (message,) = format_for_feishu(reply, RendererSettings())
    return message


async def test_answers_by_replying_with_an_idempotency_key(fake: FakeFeishu, sender: FeishuSender) -> None:
    message = _outbound(fake, "Plain answer.")
    await sender.send(message)
    await sender.send(message)  # the runner retried after a lost answer: Feishu drops the repeat
    (sent,) = fake.sent_to("oc_s")
    assert sent["reply_to"] == message.reply_to_message_id and sent["text"] == "Plain answer."
    assert sent["uuid"] == idempotency_key(message.id) and len(sent["uuid"]) <= 50
    assert [c.get("deduplicated", False) for c in fake.calls_to("reply")] == [False, True]


async def test_cards_go_as_interactive_messages(fake: FakeFeishu, sender: FeishuSender) -> None:
    await sender.send(_outbound(fake, "Run `make test`."))
    (sent,) = fake.sent_to("oc_s")
    assert sent["msg_type"] == "interactive" and sent["text"] == "Run `make test`."


async def test_a_recalled_question_is_answered_in_the_chat(fake: FakeFeishu, sender: FeishuSender) -> None:
    message = _outbound(fake, "Still answering.")
    fake.recall(message.reply_to_message_id)
    await sender.send(message)
    (sent,) = fake.sent_to("oc_s")
    assert sent["reply_to"] is None and sent["text"] == "Still answering."
    assert [c["code"] for c in fake.calls][-2:] == [230011, 0]


async def test_a_card_feishu_cannot_render_is_sent_as_plain_text(fake: FakeFeishu, sender: FeishuSender) -> None:
    fake.fail_next("reply", code=230099, msg="Failed to create card content")
    await sender.send(_outbound(fake, "A **bold** claim."))
    (sent,) = fake.sent_to("oc_s")
    assert sent["msg_type"] == "text" and sent["text"] == "A **bold** claim."


async def test_rate_limits_and_outages_are_retryable(fake: FakeFeishu, sender: FeishuSender) -> None:
    fake.fail_next("reply", code=99991400, http_status=429, retry_after=2)
    with pytest.raises(Retryable) as limited:
        await sender.send(_outbound(fake, "x"))
    assert limited.value.retry_after == 2.0
    fake.fail_next("reply", code=2200, http_status=503)
    with pytest.raises(Retryable):
        await sender.send(_outbound(fake, "y"))


async def test_permanent_refusals_dead_letter_with_feishus_code(fake: FakeFeishu, sender: FeishuSender) -> None:
    fake.fail_next("reply", code=230003, msg="Bot has no permission")
    with pytest.raises(InvalidMessage, match="230003"):
        await sender.send(_outbound(fake, "nope"))
    unrendered = _outbound(fake, "z").model_copy(update={"parts": [TextPart(text="raw")]})
    with pytest.raises(InvalidMessage, match="rendered"):
        await sender.send(unrendered)


def test_long_ids_are_hashed_to_feishus_50_characters() -> None:
    assert idempotency_key("short-id") == "short-id"
    long_key = idempotency_key("x" * 80)
    assert len(long_key) == 32 and long_key == idempotency_key("x" * 80) != idempotency_key("y" * 80)
    assert json.dumps(long_key)  # plain ASCII
