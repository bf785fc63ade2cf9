"""The runner's contract with a handler, and its retry policy, with a stand-in producer (no broker)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from aiokafka.errors import KafkaTimeoutError

from aibot_common.envelope import Conversation, Envelope, Kind, Platform, TextPart
from aibot_common.errors import InvalidMessage, Retryable, Unavailable
from aibot_common.outcome import Outcome
from aibot_common.runner import Consumed, StageRunner
from aibot_common.settings import KafkaSettings
from aibot_common.state import TOMBSTONE, ChangelogTable
from aibot_common.topics import CORE_CONVERSATIONS, DEAD_LETTERS, INBOUND, REPLIES

MESSAGE = Envelope(
    id="tg-1-7",
    kind=Kind.MESSAGE,
    conversation=Conversation(platform=Platform.TELEGRAM, chat_id="1"),
    parts=[TextPart(text="hi")],
)


class _Producer:
    def __init__(self, failures: int = 0) -> None:
        self.sent: list[tuple[str, bytes | None]] = []
        self._failures = failures

    async def send(self, topic: str, value: bytes | None = None, **_: object) -> asyncio.Future[None]:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self._failures:
            self._failures -= 1
            future.set_exception(KafkaTimeoutError())
            return future
        self.sent.append((topic, value))
        future.set_result(None)
        return future

    def topics(self) -> list[str]:
        return [topic for topic, _ in self.sent]


def _runner(handler, producer: _Producer, attempts: int = 3, table: ChangelogTable | None = None) -> StageRunner:
    return StageRunner(
        stage="test",
        consumer=None,  # type: ignore[arg-type]
        producer=producer,  # type: ignore[arg-type]
        topics=[INBOUND.name],
        group_id="g",
        handler=handler,
        table=table,
        attempts=attempts,
        backoff_base_s=0.001,
        backoff_max_s=0.001,
    )


def _record(value: bytes = MESSAGE.to_bytes()) -> Consumed:
    return Consumed(topic=INBOUND.name, partition=0, offset=7, key=MESSAGE.key, value=value, headers=[], timestamp_ms=0)


def _reply(envelope: Envelope) -> Envelope:
    return envelope.derive(kind=Kind.REPLY, suffix="reply", parts=[TextPart(text="hello", format="markdown")])


async def test_what_a_handler_emits_is_routed_by_kind() -> None:
    async def handler(envelope: Envelope, state: Any) -> Outcome:
        return Outcome(emit=[_reply(envelope)])

    producer = _Producer()
    await _runner(handler, producer)._attempt(_record())
    assert producer.topics() == [REPLIES.name]


async def test_state_is_produced_with_the_outputs_and_taken_only_once_acknowledged() -> None:
    table = ChangelogTable(CORE_CONVERSATIONS, KafkaSettings(), "test")
    seen: list[Any] = []

    async def handler(envelope: Envelope, state: Any) -> Outcome:
        seen.append(state)
        return Outcome(emit=[_reply(envelope)], state={"turns": len(seen)})

    producer = _Producer(failures=1)  # the first send is not acknowledged: the same records go again
    await _runner(handler, producer, table=table)._attempt(_record())
    assert seen == [None], "the handler runs once: its work (a model call, a platform send) is not redone"
    # Reply and state together, state last; the state taken only once acknowledged.
    assert producer.topics()[-2:] == [REPLIES.name, CORE_CONVERSATIONS.name]
    assert json.loads(producer.sent[-1][1] or b"") == {"turns": 1}
    assert table.get(0, MESSAGE.key) == {"turns": 1}

    async def forget(envelope: Envelope, state: Any) -> Outcome:
        return Outcome(state=TOMBSTONE)

    await _runner(forget, producer, table=table)._attempt(_record())
    assert producer.sent[-1] == (CORE_CONVERSATIONS.name, None)  # a tombstone on the compacted changelog
    assert table.get(0, MESSAGE.key) is None


async def test_a_dead_letter_asked_for_is_filed_after_the_user_was_answered() -> None:
    async def handler(envelope: Envelope, state: Any) -> Outcome:
        return Outcome(emit=[_reply(envelope)], dead_letter="unusable audio: not an ogg")

    producer = _Producer()
    await _runner(handler, producer)._attempt(_record())
    assert producer.topics() == [REPLIES.name, DEAD_LETTERS.name]
    assert producer.sent[1][1] == MESSAGE.to_bytes()  # the original bytes, to replay


async def test_throttling_waits_do_not_use_up_the_attempts() -> None:
    calls = 0

    async def handler(envelope: Envelope, state: Any) -> Outcome:
        nonlocal calls
        calls += 1
        if calls <= 5:  # more 429s than there are attempts
            raise Retryable("429", retry_after=0.001)
        return Outcome(emit=[_reply(envelope)])

    producer = _Producer()
    await _runner(handler, producer)._attempt(_record())
    assert producer.topics() == [REPLIES.name]


async def test_failures_without_retry_after_end_in_dead_letters_after_the_attempts() -> None:
    calls = 0

    async def handler(envelope: Envelope, state: Any) -> Outcome:
        nonlocal calls
        calls += 1
        raise Retryable("503")

    producer = _Producer()
    await _runner(handler, producer, attempts=3)._attempt(_record())
    assert calls == 3
    assert producer.sent == [(DEAD_LETTERS.name, MESSAGE.to_bytes())]


async def test_invalid_messages_and_records_that_are_no_envelope_are_dead_lettered_at_once() -> None:
    calls = 0

    async def handler(envelope: Envelope, state: Any) -> Outcome:
        nonlocal calls
        calls += 1
        raise InvalidMessage("poison")

    producer = _Producer()
    await _runner(handler, producer)._attempt(_record())
    await _runner(handler, producer)._attempt(_record(b"{not json"))
    assert calls == 1
    assert producer.sent == [(DEAD_LETTERS.name, MESSAGE.to_bytes()), (DEAD_LETTERS.name, b"{not json")]


async def test_an_outage_is_waited_out_without_using_up_the_attempts(monkeypatch: Any) -> None:
    # Sleeps return at once: the point is how many tries the runner makes, not the wall clock.
    async def no_wait(_: float) -> None:
        return None

    monkeypatch.setattr("aibot_common.runner.asyncio.sleep", no_wait)
    calls = 0

    async def handler(envelope: Envelope, state: Any) -> Outcome:
        nonlocal calls
        calls += 1
        if calls <= 20:  # far more failures than the 3 attempts: a platform down for a while
            raise Unavailable("platform answering 503")
        return Outcome(emit=[_reply(envelope)])

    producer = _Producer()
    await _runner(handler, producer, attempts=3)._attempt(_record())
    assert calls == 21 and producer.topics() == [REPLIES.name]


async def test_an_outage_past_outage_max_s_is_dead_lettered() -> None:
    async def handler(envelope: Envelope, state: Any) -> Outcome:
        raise Unavailable("platform answering 503")

    producer = _Producer()
    runner = _runner(handler, producer, attempts=2)
    runner._outage_max_s = 0.0  # no outage is waited out: the plain attempts apply
    await runner._attempt(_record())
    assert producer.topics() == [DEAD_LETTERS.name]
