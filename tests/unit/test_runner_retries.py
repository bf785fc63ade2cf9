"""The runner's retry policy, with a stand-in producer (no broker needed)."""

from __future__ import annotations

import asyncio

from aibot_common.kafka import OutRecord
from aibot_common.runner import Consumed, InvalidMessage, Retryable, StageRunner


class _Producer:
    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes | None]] = []

    async def send(self, topic: str, value: bytes | None = None, **_: object) -> asyncio.Future[None]:
        self.sent.append((topic, value))
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        future.set_result(None)
        return future


def _runner(process, producer: _Producer, attempts: int = 3) -> StageRunner:
    return StageRunner(
        stage="test",
        consumer=None,
        producer=producer,
        topics=["in"],
        group_id="g",  # type: ignore[arg-type]
        process=process,
        attempts=attempts,
        backoff_base_s=0.001,
        backoff_max_s=0.001,
    )


def _record() -> Consumed:
    return Consumed(topic="in", partition=0, offset=7, key="k", value=b"payload", headers=[], timestamp_ms=0)


async def test_throttling_waits_do_not_use_up_the_attempts() -> None:
    calls = 0

    async def process(record: Consumed) -> list[OutRecord]:
        nonlocal calls
        calls += 1
        if calls <= 5:  # more 429s than there are attempts
            raise Retryable("429", retry_after=0.001)
        return [OutRecord(topic="out", key="k", value=b"done")]

    producer = _Producer()
    await _runner(process, producer)._attempt(_record())
    assert producer.sent == [("out", b"done")]


async def test_failures_without_retry_after_end_in_dead_letters_after_the_attempts() -> None:
    calls = 0

    async def process(record: Consumed) -> list[OutRecord]:
        nonlocal calls
        calls += 1
        raise Retryable("503")

    producer = _Producer()
    await _runner(process, producer, attempts=3)._attempt(_record())
    assert calls == 3
    assert producer.sent == [("aibot.deadletter.v1", b"payload")]


async def test_invalid_messages_are_dead_lettered_at_once() -> None:
    calls = 0

    async def process(record: Consumed) -> list[OutRecord]:
        nonlocal calls
        calls += 1
        raise InvalidMessage("poison")

    producer = _Producer()
    await _runner(process, producer)._attempt(_record())
    assert calls == 1 and producer.sent == [("aibot.deadletter.v1", b"payload")]
