"""core-llm streams: partial replies coalesced from the model's stream, the final reply exact, and
the runner publishing partials before it produces the outcome (no broker: a stand-in producer)."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import httpx

from aibot_common.envelope import Conversation, Envelope, Kind, Platform, TextPart
from aibot_common.outcome import Outcome, PublishPartial, Streams
from aibot_common.runner import Consumed, StageRunner
from aibot_common.settings import CoreSettings, ModelConfig
from aibot_common.topics import INBOUND, REPLIES, route
from aibot_core_llm.handler import ConversationState, handle
from aibot_core_llm.llm import OpenAICompatibleModel
from aibot_core_llm.streaming import StreamingModel, partial_replies, stream_id
from aibot_fakes.llm import FakeLLM

SETTINGS = CoreSettings(system_prompt="be brief", llm_attempts=2)
WORDS = " ".join(f"word{n}" for n in range(40))
MESSAGE = Envelope(
    id="tg-9-1",
    kind=Kind.MESSAGE,
    conversation=Conversation(platform=Platform.TELEGRAM, chat_id="9"),
    parts=[TextPart(text=WORDS)],
    reply_to_message_id="1",
)


async def _stream(fake: FakeLLM, interval_s: float, first_after_s: float = 0.0) -> tuple[Outcome, list[Envelope]]:
    published: list[Envelope] = []

    async def publish(envelope: Envelope) -> None:
        published.append(envelope)

    config = ModelConfig(name="fake", type="llm", endpoint=fake.endpoint)
    async with httpx.AsyncClient() as http:
        model = OpenAICompatibleModel(config, http)
        async with partial_replies(MESSAGE, publish, interval_s, first_after_s) as partials:
            outcome = await handle(MESSAGE, ConversationState(), StreamingModel(model, partials), SETTINGS)
    return outcome, published


async def test_partials_are_a_few_growing_prefixes_and_the_final_reply_is_exact() -> None:
    fake = FakeLLM(chunk_delay_s=0.03)  # 41 pieces over about 1.2 s
    await fake.start()
    try:
        outcome, partials = await _stream(fake, interval_s=0.25)
    finally:
        await fake.stop()
    (final,) = outcome.emit
    assert final.kind is Kind.REPLY and final.text() == f"Echo: {WORDS}"
    assert outcome.state.turns[-1].content == final.text(), "the history keeps the exact final text"
    # Coalesced: a handful a second, not one per token; the first at once.
    assert 2 <= len(partials) <= 10, [p.text() for p in partials]
    assert partials[0].text().startswith("Echo:")
    texts = [p.text() for p in partials]
    assert all(final.text().startswith(t) for t in texts)
    assert all(len(a) < len(b) for a, b in itertools.pairwise(texts)), "each partial grows"
    for seq, partial in enumerate(partials, start=1):
        assert partial.kind is Kind.PARTIAL and route(partial) is REPLIES
        assert partial.meta["stream"] == final.id == stream_id(MESSAGE)
        assert partial.meta["seq"] == str(seq)
        assert partial.reply_to_message_id == "1" and partial.key == MESSAGE.key


async def test_an_answer_complete_before_the_first_partial_is_due_has_no_preview() -> None:
    fake = FakeLLM()  # the whole answer at once
    await fake.start()
    try:
        outcome, partials = await _stream(fake, interval_s=0.25, first_after_s=0.3)
    finally:
        await fake.stop()
    assert partials == []
    assert outcome.emit[0].text() == f"Echo: {WORDS}"


async def test_a_failed_attempt_streams_afresh_and_ends_in_one_final_reply() -> None:
    fake = FakeLLM()
    fake.fail_next(status=503)
    await fake.start()
    try:
        outcome, partials = await _stream(fake, interval_s=0.01)
    finally:
        await fake.stop()
    (final,) = outcome.emit
    assert final.text() == f"Echo: {WORDS}"
    assert all(final.text().startswith(p.text()) for p in partials)


class _Producer:
    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes | None]] = []

    async def send(self, topic: str, value: bytes | None = None, **_: object) -> asyncio.Future[None]:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.sent.append((topic, value))
        future.set_result(None)
        return future


async def test_the_runner_gives_a_streaming_handler_a_publisher_and_produces_partials_first() -> None:
    async def handler(envelope: Envelope, state: Any, publish: PublishPartial) -> Outcome:
        await publish(envelope.derive(kind=Kind.PARTIAL, suffix="partial1", parts=[TextPart(text="Ech")]))
        return Outcome(emit=[envelope.derive(kind=Kind.REPLY, suffix="reply", parts=[TextPart(text="Echo")])])

    producer = _Producer()
    runner = StageRunner(
        stage="test",
        consumer=None,  # type: ignore[arg-type]
        producer=producer,  # type: ignore[arg-type]
        topics=[INBOUND.name],
        group_id="g",
        handler=Streams(handler),
    )
    record = Consumed(
        topic=INBOUND.name, partition=0, offset=1, key=MESSAGE.key, value=MESSAGE.to_bytes(), headers=[], timestamp_ms=0
    )
    await runner._attempt(record)
    kinds = [Envelope.from_bytes(value or b"").kind for _, value in producer.sent]
    assert [topic for topic, _ in producer.sent] == [REPLIES.name, REPLIES.name]
    assert kinds == [Kind.PARTIAL, Kind.REPLY]
