"""A Telegram user chatting through the whole pipeline, every service its own process."""

from __future__ import annotations

import asyncio
import json
from collections import Counter

import pytest

from aibot_common.topics import DEAD_LETTERS, INBOUND
from tests.e2e.conftest import WEBHOOK_SECRET, Pipeline
from tests.kafka_helpers import read_topic

pytestmark = pytest.mark.e2e


async def _inbound_count(bootstrap: str) -> int:
    return len(await read_topic(bootstrap, INBOUND.name))


async def test_twenty_messages_in_one_chat_get_twenty_replies_in_order(pipeline: Pipeline) -> None:
    chat = 1001
    for i in range(20):
        pipeline.telegram.user_sends_text(chat, f"message {i}")
    sent = await pipeline.telegram.wait_for_sent(20, chat_id=chat, timeout=60)
    assert [m["text"] for m in sent] == [f"Echo: message {i}" for i in range(20)]
    await asyncio.sleep(1)
    assert len(pipeline.telegram.sent_to(chat)) == 20


async def test_fifty_chats_at_once_each_get_their_replies_in_order(pipeline: Pipeline) -> None:
    chats = range(2000, 2050)
    for i in range(4):
        for chat in chats:
            pipeline.telegram.user_sends_text(chat, f"chat {chat} says {i}")
    for chat in chats:
        await pipeline.telegram.wait_for_sent(4, chat_id=chat, timeout=90)
    await asyncio.sleep(1)  # anything duplicated would have arrived by now
    for chat in chats:
        texts = [m["text"] for m in pipeline.telegram.sent_to(chat)]
        assert texts == [f"Echo: chat {chat} says {i}" for i in range(4)], texts
    everything = Counter(m["text"] for m in pipeline.telegram.sent if 2000 <= m["chat_id"] < 2050)
    assert sum(everything.values()) == 200 and max(everything.values()) == 1


async def test_replies_answer_the_users_message(pipeline: Pipeline) -> None:
    update = pipeline.telegram.user_sends_text(1101, "thread me")
    (sent,) = await pipeline.telegram.wait_for_sent(1, chat_id=1101)
    assert sent["reply_to_message_id"] == update["message"]["message_id"]


async def test_wrong_secret_token_is_refused_and_nothing_reaches_kafka(pipeline: Pipeline) -> None:
    before = await _inbound_count(pipeline.bootstrap)
    body = b'{"update_id": 1, "message": {"message_id": 1, "date": 1700000000, "chat": {"id": 1201, "type": "private"}, "text": "sneaky"}}'  # noqa: E501
    response = await pipeline.telegram.deliver_raw(body, secret_token="wrong-secret")
    assert response.status_code == 401
    response = await pipeline.telegram.deliver_raw(body, secret_token=None)
    assert response.status_code == 401
    await asyncio.sleep(1)
    assert await _inbound_count(pipeline.bootstrap) == before
    assert pipeline.telegram.sent_to(1201) == []


async def test_malformed_json_gets_400_and_the_service_keeps_serving(pipeline: Pipeline) -> None:
    response = await pipeline.telegram.deliver_raw(b'{"update_id": 5, "message": ', secret_token=WEBHOOK_SECRET)
    assert response.status_code == 400
    response = await pipeline.telegram.deliver_raw(b'["not", "an", "update"]', secret_token=WEBHOOK_SECRET)
    assert response.status_code == 400
    pipeline.telegram.user_sends_text(1301, "still there?")
    (sent,) = await pipeline.telegram.wait_for_sent(1, chat_id=1301)
    assert sent["text"] == "Echo: still there?"


async def test_commands(pipeline: Pipeline) -> None:
    chat = 1401
    pipeline.telegram.user_sends_text(chat, "/start")
    pipeline.telegram.user_sends_text(chat, "/help")
    pipeline.telegram.user_sends_text(chat, "/reset")
    sent = await pipeline.telegram.wait_for_sent(3, chat_id=chat)
    assert "Ask me anything" in sent[0]["text"]
    assert "/reset" in sent[1]["text"]
    assert "forgotten our conversation" in sent[2]["text"]


async def test_history_is_sent_to_the_model_and_reset_clears_it(pipeline: Pipeline) -> None:
    chat = 1501
    pipeline.telegram.user_sends_text(chat, "my name is Ada")
    await pipeline.telegram.wait_for_sent(1, chat_id=chat)
    pipeline.telegram.user_sends_text(chat, "what is my name?")
    await pipeline.telegram.wait_for_sent(2, chat_id=chat)
    last = next(r for r in reversed(pipeline.llm.requests) if r["messages"][-1]["content"] == "what is my name?")
    contents = [m["content"] for m in last["messages"]]
    assert "my name is Ada" in contents and "Echo: my name is Ada" in contents
    pipeline.telegram.user_sends_text(chat, "/reset")
    pipeline.telegram.user_sends_text(chat, "fresh start")
    await pipeline.telegram.wait_for_sent(4, chat_id=chat)
    last = next(r for r in reversed(pipeline.llm.requests) if r["messages"][-1]["content"] == "fresh start")
    assert [m["role"] for m in last["messages"]] == ["system", "user"]


async def test_a_failing_model_gets_the_user_a_clear_reply(pipeline: Pipeline) -> None:
    pipeline.llm.fail_next(status=500, times=2)
    pipeline.telegram.user_sends_text(1601, "are you there?")
    (sent,) = await pipeline.telegram.wait_for_sent(1, chat_id=1601)
    assert sent["text"].startswith("Sorry, I could not get an answer from the language model")


async def test_long_answers_are_split_under_telegrams_limit(pipeline: Pipeline) -> None:
    long_text = " ".join(f"Sentence {i} is here." for i in range(700))  # ~14k characters
    pipeline.telegram.user_sends_text(1701, long_text)
    await pipeline.telegram.wait_for_sent(4, chat_id=1701)
    await asyncio.sleep(0.5)
    parts = [m["text"] for m in pipeline.telegram.sent_to(1701)]
    assert all(len(p) <= 4096 for p in parts)
    assert " ".join(parts) == f"Echo: {long_text}"


async def test_rate_limited_sends_are_retried_after_retry_after(pipeline: Pipeline) -> None:
    pipeline.telegram.fail_next(
        "sendMessage", error_code=429, description="Too Many Requests: retry after 1", retry_after=1
    )
    pipeline.telegram.user_sends_text(1801, "patience")
    (sent,) = await pipeline.telegram.wait_for_sent(1, chat_id=1801, timeout=30)
    assert sent["text"] == "Echo: patience"


async def _dead_letters_for(bootstrap: str, key: str) -> list:
    return [m for m in await read_topic(bootstrap, DEAD_LETTERS.name) if m.key == key.encode()]


async def test_webhook_was_registered_with_the_configured_options(pipeline: Pipeline) -> None:
    webhook = pipeline.telegram.webhook
    assert webhook["url"] == f"{pipeline.service('ingress-telegram').url}/telegram/webhook"
    assert webhook["secret_token"] == WEBHOOK_SECRET
    assert int(webhook["max_connections"]) == 100
    assert set(
        json.loads(webhook["allowed_updates"])
        if isinstance(webhook["allowed_updates"], str)
        else webhook["allowed_updates"]
    ) == {"message", "edited_message", "callback_query"}


async def test_server_errors_are_retried_with_backoff(pipeline: Pipeline) -> None:
    pipeline.telegram.fail_next("sendMessage", error_code=502, description="Bad Gateway", times=2)
    pipeline.telegram.user_sends_text(1901, "through the storm")
    (sent,) = await pipeline.telegram.wait_for_sent(1, chat_id=1901, timeout=30)
    assert sent["text"] == "Echo: through the storm"


async def test_rejected_formatting_falls_back_to_plain_text(pipeline: Pipeline) -> None:
    pipeline.telegram.fail_next(
        "sendMessage", error_code=400, description="Bad Request: can't parse entities: unsupported start tag"
    )
    pipeline.telegram.user_sends_text(1951, "**bold** claim")
    (sent,) = await pipeline.telegram.wait_for_sent(1, chat_id=1951, timeout=30)
    assert sent["text"] == "Echo: bold claim" and not sent["entities"]


async def test_permanent_send_errors_go_to_dead_letters_with_the_reason(pipeline: Pipeline) -> None:
    pipeline.telegram.fail_next("sendMessage", error_code=403, description="Forbidden: bot was blocked by the user")
    pipeline.telegram.user_sends_text(1971, "anyone?")
    for _ in range(40):
        dead = await _dead_letters_for(pipeline.bootstrap, "telegram:1971")
        if dead:
            break
        await asyncio.sleep(0.5)
    (record,) = dead
    headers = dict(record.headers)
    assert headers["dlq-source-topic"] == b"aibot.outbound.telegram.v1"
    assert b"bot was blocked by the user" in headers["dlq-reason"]
    assert pipeline.telegram.sent_to(1971) == []
    pipeline.telegram.user_sends_text(1972, "next user")  # the sender keeps going
    await pipeline.telegram.wait_for_sent(1, chat_id=1972)


async def test_an_edited_message_is_answered_again(pipeline: Pipeline) -> None:
    original = pipeline.telegram.user_sends_text(1981, "what is 2+2")
    await pipeline.telegram.wait_for_sent(1, chat_id=1981)
    pipeline.telegram.user_edits_text(1981, original["message"]["message_id"], "what is 3+3")
    sent = await pipeline.telegram.wait_for_sent(2, chat_id=1981)
    assert sent[1]["text"] == "Echo: what is 3+3"


async def test_a_button_press_is_acknowledged_and_answered(pipeline: Pipeline) -> None:
    update = pipeline.telegram.user_presses_button(1991, 12345, "tell me more")
    (sent,) = await pipeline.telegram.wait_for_sent(1, chat_id=1991)
    assert sent["text"] == "Echo: tell me more"
    query_id = update["callback_query"]["id"]
    for _ in range(50):  # the spinner on the user's button stops once the query is answered
        if any(str(a.get("callback_query_id")) == query_id for a in pipeline.telegram.callback_answers):
            break
        await asyncio.sleep(0.1)
    assert any(str(a.get("callback_query_id")) == query_id for a in pipeline.telegram.callback_answers)
