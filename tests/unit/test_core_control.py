"""Stop and regenerate in core-llm: a stop reaches the answer streaming ahead of it (the runner's
interrupt hook) and cancels the model request; regenerate asks the last question again."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import httpx

from aibot_common.envelope import Conversation, Envelope, Kind, Platform, TextPart
from aibot_common.outcome import Streams
from aibot_common.runner import Consumed, StageRunner
from aibot_common.settings import Settings
from aibot_common.topics import INBOUND
from aibot_core_llm.app import make_handler
from aibot_core_llm.control import STOPPED_MARK
from aibot_core_llm.failover import FailoverModels
from aibot_core_llm.llm import OpenAICompatibleModel
from aibot_fakes.llm import FakeLLM
from tests.unit.access_helpers import open_gate

CONVERSATION = Conversation(platform=Platform.TELEGRAM, chat_id="44")


def _message(text: str, n: int, **meta: str) -> Envelope:
    return Envelope(
        id=f"tg-44-{n}", kind=Kind.MESSAGE, conversation=CONVERSATION, parts=[TextPart(text=text)], meta=meta
    )


async def _published(envelope: Envelope) -> None:
    return None


def _handler(fake: FakeLLM, http: Any) -> Streams:
    settings = Settings(models=[{"name": "fake", "type": "llm", "endpoint": fake.endpoint}])
    models = FailoverModels([OpenAICompatibleModel(settings.llm_model(), http)], settings.failover)
    handler = make_handler(open_gate(settings, {m.name: m for m in models.models}), models, settings)
    assert isinstance(handler, Streams)
    return handler


async def test_a_stop_cancels_the_model_and_the_text_so_far_is_the_answer() -> None:
    fake = FakeLLM(chunk_delay_s=0.08)  # 100 words: eight seconds of streaming
    await fake.start()
    try:
        async with httpx.AsyncClient() as http:
            handler = _handler(fake, http)
            question = " ".join(f"w{i}" for i in range(100))
            started = time.monotonic()
            task = asyncio.create_task(handler.handler(_message(question, 1), None, _published))
            await asyncio.sleep(0.8)
            stop = _message("/stop", 2)
            assert handler.interrupt is not None
            handler.interrupt(stop)  # what the runner does as the stop is fetched
            outcome = await asyncio.wait_for(task, 4)
            assert time.monotonic() - started < 5.0, "the model's request was cut short"
            (answer,) = outcome.emit
            assert answer.text().startswith("Echo: w0") and answer.text().endswith(STOPPED_MARK.strip())
            assert question.startswith(answer.text().removeprefix("Echo: ").removesuffix(STOPPED_MARK))
            assert outcome.state.turns[-1].content == answer.text(), "history keeps what the user saw"
            assert (await handler.handler(stop, outcome.state_value(), _published)).emit == ()
    finally:
        await fake.stop()


async def test_regenerate_asks_the_last_question_again_in_place_of_its_answer() -> None:
    fake = FakeLLM()
    await fake.start()
    try:
        async with httpx.AsyncClient() as http:
            handler = _handler(fake, http)
            first = await handler.handler(_message("what is up", 1), None, _published)
            again = await handler.handler(
                _message("regen", 2, callback_query_id="cb-1"), first.state_value(), _published
            )
            (answer,) = again.emit
            assert answer.text() == "Echo: what is up" and answer.meta["regenerable"] == "1"
            assert [t.content for t in again.state.turns] == ["what is up", "Echo: what is up"]
            assert fake.requests[-1]["messages"][-1]["content"] == "what is up"
    finally:
        await fake.stop()


async def test_the_runner_shows_each_fetched_record_to_the_interrupt_hook_before_its_lane() -> None:
    seen: list[str] = []

    async def handle(envelope: Envelope, state: Any, publish: Any) -> Any:
        raise AssertionError("not reached: the record is only dispatched")

    runner = StageRunner(
        stage="test",
        consumer=None,  # type: ignore[arg-type]
        producer=None,  # type: ignore[arg-type]
        topics=[INBOUND.name],
        group_id="g",
        handler=Streams(handle, interrupt=lambda e: seen.append(e.text())),
    )
    record = Consumed(
        topic=INBOUND.name,
        partition=0,
        offset=3,
        key=CONVERSATION.key,
        value=_message("/stop", 3).to_bytes(),
        headers=[],
        timestamp_ms=0,
    )
    runner._interrupt(record)
    runner._interrupt(Consumed(INBOUND.name, 0, 4, None, json.dumps({"not": "an envelope"}).encode(), [], 0))
    assert seen == ["/stop"]
