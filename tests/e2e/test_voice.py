"""A Telegram voice note through the whole pipeline: ingress -> asr-worker (tiny.en, CPU) -> core-llm
(the fake model echoes its input) -> renderer, every service its own process."""

from __future__ import annotations

import asyncio

import pytest

from aibot_asr_worker.handler import UNREADABLE_TEXT
from aibot_common.kafka import header
from aibot_common.topics import ASR_REQUESTS, DEAD_LETTERS
from tests.e2e.conftest import Pipeline
from tests.kafka_helpers import envelope_id as id_of
from tests.kafka_helpers import read_topic
from tests.voice_samples import EXPECTED_WORDS, missing_tools, skip_reason, speech_ogg, words

pytestmark = [pytest.mark.e2e, pytest.mark.skipif(bool(missing_tools()), reason=skip_reason())]

# The first voice note waits for the asr-worker's consumer group to get its partitions.
FIRST_VOICE_TIMEOUT_S = 90


async def _dead_letters(bootstrap: str, wanted: set[str], timeout: float = 20) -> dict[str, dict[str, str]]:
    """The dead-letter headers of the requests with these ids, read from the topic's beginning."""

    def found(records: list) -> dict[str, dict[str, str]]:
        return {id_of(m): {k: header(m.headers, k) or "" for k, _ in m.headers} for m in records if id_of(m) in wanted}

    records = await read_topic(
        bootstrap, DEAD_LETTERS.name, until=lambda r: wanted <= found(r).keys(), timeout_s=timeout
    )
    return found(records)


def request_id(pipeline: Pipeline, update: dict) -> str:
    return f"tg-{pipeline.telegram.bot_id}-{update['update_id']}"  # as ingress-telegram names it


async def test_a_voice_note_is_answered_with_what_was_heard_quoted_above_the_answer(pipeline: Pipeline) -> None:
    chat = 5001
    update = pipeline.telegram.user_sends_voice(chat, speech_ogg(), duration=3)
    (sent,) = await pipeline.telegram.wait_for_sent(1, chat_id=chat, timeout=FIRST_VOICE_TIMEOUT_S)
    heard, _, answer = sent["text"].partition("\n\n")
    assert heard.startswith("🎤 ") and set(EXPECTED_WORDS) <= words(heard), sent["text"]
    assert answer == f"Echo: {heard.removeprefix('🎤 ')}"  # the model was given the transcript
    assert {"type": "blockquote", "offset": 0, "length": len(heard) + 1} in sent["entities"]  # 🎤 is 2 UTF-16
    assert sent["reply_to_message_id"] == update["message"]["message_id"]


async def test_empty_and_corrupt_notes_get_a_clear_reply_and_a_dead_letter_and_the_worker_goes_on(
    pipeline: Pipeline,
) -> None:
    chat = 5002
    empty = pipeline.telegram.user_sends_voice(chat, b"", duration=1)
    corrupt = pipeline.telegram.user_sends_voice(chat, b"OggS" + bytes(range(200)) * 10, duration=2)
    pipeline.telegram.user_sends_voice(chat, speech_ogg(), duration=3)
    sent = await pipeline.telegram.wait_for_sent(3, chat_id=chat, timeout=FIRST_VOICE_TIMEOUT_S)
    assert [m["text"] for m in sent[:2]] == [UNREADABLE_TEXT, UNREADABLE_TEXT]
    assert sent[0]["text"].startswith("Sorry, I could not understand the audio")
    assert set(EXPECTED_WORDS) <= words(sent[2]["text"]), sent[2]["text"]  # the next note is heard

    ids = {request_id(pipeline, empty): "the file is empty", request_id(pipeline, corrupt): "cannot decode"}
    dead = await _dead_letters(pipeline.bootstrap, set(ids))
    assert dead.keys() == ids.keys()
    for envelope_id, reason in ids.items():
        assert dead[envelope_id]["dlq-source-topic"] == ASR_REQUESTS.name
        assert dead[envelope_id]["dlq-error-type"] == "InvalidMessage"
        assert reason in dead[envelope_id]["dlq-reason"]


async def test_an_over_long_note_gets_the_limit_reply_and_no_dead_letter(pipeline: Pipeline) -> None:
    chat = 5003
    calls_before = sum(1 for c in pipeline.telegram.calls if c["method"] == "getFile")
    update = pipeline.telegram.user_sends_voice(chat, speech_ogg(), duration=301)  # the default limit is 300 s
    (sent,) = await pipeline.telegram.wait_for_sent(1, chat_id=chat, timeout=FIRST_VOICE_TIMEOUT_S)
    assert sent["text"].startswith("Sorry, your voice message is too long: I can transcribe up to 5 minutes")
    assert sent["reply_to_message_id"] == update["message"]["message_id"]
    # Refused on its declared duration: never downloaded, and nothing wrong with the record itself.
    assert sum(1 for c in pipeline.telegram.calls if c["method"] == "getFile") == calls_before
    await asyncio.sleep(0.5)
    assert await _dead_letters(pipeline.bootstrap, {request_id(pipeline, update)}, timeout=2) == {}


async def test_a_feishu_voice_note_served_as_an_error_page_gets_a_clear_reply_and_a_dead_letter(
    pipeline: Pipeline,
) -> None:
    feishu = pipeline.feishu
    assert feishu is not None
    # The bytes even start like Ogg; the content type says the server sent something else.
    event = feishu.user_sends_audio(
        "oc_voice_junk", b"OggS" + b"<html>gone</html>" * 20, duration_ms=2000, content_type="text/html"
    )
    (sent,) = await feishu.wait_for_sent(1, chat_id="oc_voice_junk", timeout=FIRST_VOICE_TIMEOUT_S)
    assert sent["text"] == UNREADABLE_TEXT
    envelope_id = f"fs-{event['header']['event_id']}"  # as ingress-feishu names it
    dead = await _dead_letters(pipeline.bootstrap, {envelope_id})
    assert "text/html, not audio" in dead[envelope_id]["dlq-reason"]
