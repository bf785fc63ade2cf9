"""A Feishu user chatting through the whole pipeline, every service its own process: events come from
the fake Open Platform encrypted and signed, replies go back through its send/reply API."""

from __future__ import annotations

import asyncio
import json

import pytest

from aibot_common.kafka import make_producer, publish
from aibot_common.settings import KafkaSettings
from aibot_common.topics import INBOUND
from aibot_fakes.feishu import FakeFeishu
from aibot_ingress_feishu.handler import BotIdentity, handle_event
from tests.e2e.conftest import Pipeline
from tests.kafka_helpers import envelope_id, read_topic
from tests.voice_samples import EXPECTED_WORDS, missing_tools, speech_ogg, words

pytestmark = pytest.mark.e2e

QUIET_S = 3.0  # long enough for a reply that should not come to have come


def _feishu(pipeline: Pipeline) -> FakeFeishu:
    assert pipeline.feishu is not None
    return pipeline.feishu


def _message_id(event: dict) -> str:
    return event["event"]["message"]["message_id"]


async def _inbound_ids(bootstrap: str) -> list[str]:
    """The envelope ids on the inbound topic, read from its beginning."""
    return [i for m in await read_topic(bootstrap, INBOUND.name) if (i := envelope_id(m))]


async def test_a_private_message_gets_one_reply_to_it(pipeline: Pipeline) -> None:
    feishu = _feishu(pipeline)
    event = feishu.user_sends_text("oc_p2p_1", "hello from Feishu")
    (sent,) = await feishu.wait_for_sent(1, chat_id="oc_p2p_1")
    assert sent["text"] == "Echo: hello from Feishu" and sent["msg_type"] == "text"
    assert sent["reply_to"] == _message_id(event) and sent["uuid"]
    await asyncio.sleep(1)
    assert len(feishu.sent_to("oc_p2p_1")) == 1


async def test_in_a_group_only_an_at_mention_is_answered(pipeline: Pipeline) -> None:
    feishu = _feishu(pipeline)
    chatter = feishu.user_sends_text("oc_group_1", "lunch at noon?", chat_type="group")
    asked = feishu.user_sends_text("oc_group_1", "what is 2+2?", chat_type="group", mention_bot=True)
    (sent,) = await feishu.wait_for_sent(1, chat_id="oc_group_1")
    assert sent["text"] == "Echo: what is 2+2?"  # the mention placeholder is gone
    assert sent["reply_to"] == _message_id(asked)
    await asyncio.sleep(QUIET_S)
    assert len(feishu.sent_to("oc_group_1")) == 1
    assert f"fs-{chatter['header']['event_id']}" not in await _inbound_ids(pipeline.bootstrap)


async def test_the_same_event_delivered_three_times_is_answered_once(pipeline: Pipeline) -> None:
    feishu = _feishu(pipeline)
    event = feishu.user_sends_text("oc_p2p_dup", "only once please")
    feishu.redeliver(event)  # two more deliveries at once, as when Feishu re-sends a slow answer
    feishu.redeliver(event)
    (sent,) = await feishu.wait_for_sent(1, chat_id="oc_p2p_dup")
    assert sent["text"] == "Echo: only once please"
    event_id = event["header"]["event_id"]
    await asyncio.sleep(QUIET_S)
    assert [d["status"] for d in feishu.deliveries if d["event_id"] == event_id] == [200, 200, 200]
    # A fourth copy reaching another replica (which has not seen it) is dropped by the stages after it.
    producer = make_producer(KafkaSettings(bootstrap_servers=pipeline.bootstrap), "e2e-other-replica")
    await producer.start()
    try:
        await publish(producer, handle_event(event, BotIdentity(open_id=feishu.bot_open_id)).emit, timeout_s=10)
    finally:
        await producer.stop()
    await asyncio.sleep(QUIET_S)
    assert len(feishu.sent_to("oc_p2p_dup")) == 1
    replies = [c for c in feishu.calls_to("reply") if c["path"].endswith(f"/{_message_id(event)}/reply")]
    assert len(replies) == 1  # not even a repeat that Feishu's uuid would have dropped


async def test_a_wrong_signature_or_token_is_refused_and_nothing_reaches_kafka(pipeline: Pipeline) -> None:
    feishu = _feishu(pipeline)
    forged = {
        "schema": "2.0",
        "header": {
            "event_id": "forged-1",
            "event_type": "im.message.receive_v1",
            "token": feishu.verification_token,
            "create_time": "1",
        },
        "event": {
            "sender": {"sender_id": {"open_id": "ou_x"}, "sender_type": "user"},
            "message": {
                "message_id": "om_forged",
                "chat_id": "oc_forged",
                "chat_type": "p2p",
                "message_type": "text",
                "content": json.dumps({"text": "sneaky"}),
            },
        },
    }
    body = feishu.event_body(forged)
    assert (await feishu.deliver_raw(body, headers=feishu.signed_headers(body, key="not the key"))).status_code == 401
    assert (await feishu.deliver_raw(body, signed=False)).status_code == 401
    stale = feishu.signed_headers(body, timestamp=1_600_000_000)  # a captured request, replayed years later
    assert (await feishu.deliver_raw(body, headers=stale)).status_code == 401
    wrong_token = feishu.event_body({**forged, "header": {**forged["header"], "token": "guessed"}})
    assert (await feishu.deliver_raw(wrong_token)).status_code == 401
    garbage = b'{"encrypt": "bm90IGVuY3J5cHRlZA=="}'
    assert (await feishu.deliver_raw(garbage)).status_code == 400
    await asyncio.sleep(1)
    assert "fs-forged-1" not in await _inbound_ids(pipeline.bootstrap)
    assert feishu.sent_to("oc_forged") == []


async def test_a_token_that_expires_mid_run_is_refreshed_and_the_reply_delivered(pipeline: Pipeline) -> None:
    feishu = _feishu(pipeline)
    issued = len(feishu.tokens_issued)
    feishu.expire_tokens()
    feishu.user_sends_text("oc_p2p_token", "still there?")
    (sent,) = await feishu.wait_for_sent(1, chat_id="oc_p2p_token")
    assert sent["text"] == "Echo: still there?"
    assert len(feishu.tokens_issued) > issued
    codes = [c["code"] for c in feishu.calls if c["api"] in ("reply", "send") and c["time"] >= sent["time"] - 30]
    assert 99991663 in codes


async def test_markdown_answers_come_as_cards_and_pictures_get_a_polite_no(pipeline: Pipeline) -> None:
    feishu = _feishu(pipeline)
    feishu.user_sends_text("oc_p2p_md", "run `make test` then **relax**")
    (card,) = await feishu.wait_for_sent(1, chat_id="oc_p2p_md")
    assert card["msg_type"] == "interactive" and card["text"] == "Echo: run `make test` then **relax**"
    feishu.user_sends("oc_p2p_img", "image", {"image_key": "img_v3_abc"})
    (answer,) = await feishu.wait_for_sent(1, chat_id="oc_p2p_img")
    assert answer["text"].startswith("Sorry, I can't handle")


@pytest.mark.skipif(bool(missing_tools()), reason="needs espeak-ng and ffmpeg to make test speech")
async def test_a_voice_note_is_downloaded_transcribed_and_answered(pipeline: Pipeline) -> None:
    feishu = _feishu(pipeline)
    event = feishu.user_sends_audio("oc_p2p_voice", speech_ogg(), duration_ms=3000)
    (sent,) = await feishu.wait_for_sent(1, chat_id="oc_p2p_voice", timeout=90)
    assert sent["msg_type"] == "interactive" and sent["reply_to"] == _message_id(event)
    heard, _, answer = sent["text"].partition("\n")
    assert set(EXPECTED_WORDS) <= words(heard), sent["text"]
    assert answer.startswith("Echo: ")
    assert any(
        c["path"].endswith("/resources/" + json.loads(event["event"]["message"]["content"])["file_key"])
        for c in feishu.calls_to("download")
    )
