"""The stage runner against a real Kafka-protocol broker."""

from __future__ import annotations

import asyncio
import random
from collections import defaultdict
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from aibot_common.envelope import Conversation, Envelope, Kind, Platform, TextPart
from aibot_common.errors import InvalidMessage
from aibot_common.kafka import OutRecord, ensure_topics, make_consumer, make_producer, send_all
from aibot_common.outcome import Handler, Outcome
from aibot_common.runner import StageRunner
from aibot_common.settings import KafkaSettings
from aibot_common.state import TOMBSTONE, ChangelogTable
from aibot_common.topics import DEAD_LETTERS, Topic
from tests.kafka_helpers import read_topic

pytestmark = pytest.mark.integration


def _topic(name: str, compacted: bool = False) -> Topic:
    return Topic(name=name, description="test", producers=(), consumers=(), compacted=compacted)


def _envelope(chat: int, seq: int) -> Envelope:
    return Envelope(
        id=f"t-{chat}-{seq}",
        kind=Kind.MESSAGE,
        conversation=Conversation(platform=Platform.TELEGRAM, chat_id=str(chat)),
        parts=[TextPart(text=str(seq))],
    )


async def _read_all(kafka: KafkaSettings, topic: str, expected: int, timeout: float = 20) -> list:
    return await read_topic(kafka.bootstrap_servers, topic, until=lambda r: len(r) >= expected, timeout_s=timeout)


async def _start_runner(
    kafka: KafkaSettings, producer: AIOKafkaProducer, source: Topic, sink: Topic, handler: Handler, group: str
) -> tuple[StageRunner, AIOKafkaConsumer, asyncio.Task[None]]:
    """A runner of `handler` from `source`, emitting everything to `sink`, running in the background."""
    consumer = make_consumer(kafka, group, "test")
    await consumer.start()
    runner = StageRunner(
        stage="test",
        consumer=consumer,
        producer=producer,
        topics=[source.name],
        group_id=group,
        handler=handler,
        route=lambda _: sink,
    )
    return runner, consumer, asyncio.create_task(runner.run())


async def test_many_keys_concurrently_each_in_order_and_committed(kafka_bootstrap: str, unique: str) -> None:
    kafka = KafkaSettings(bootstrap_servers=kafka_bootstrap, partitions=4)
    source, sink = _topic(f"in-{unique}"), _topic(f"out-{unique}")
    await ensure_topics(kafka, [source, sink, DEAD_LETTERS])
    producer = make_producer(kafka, "test")
    await producer.start()
    chats, per_chat = 30, 5
    await send_all(producer, [OutRecord.of(source, _envelope(c, s)) for s in range(per_chat) for c in range(chats)])

    active = 0
    peak = 0

    async def handler(envelope: Envelope, state: Any) -> Outcome:
        nonlocal active, peak
        active += 1
        peak = max(peak, active)
        await asyncio.sleep(random.uniform(0.05, 0.15))  # a slow call, like an LLM's
        active -= 1
        return Outcome(emit=[envelope])

    runner, consumer, task = await _start_runner(kafka, producer, source, sink, handler, f"g-{unique}")
    out = await _read_all(kafka, sink.name, chats * per_chat)
    await runner.shutdown()
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)

    by_chat: dict[str, list[int]] = defaultdict(list)
    for message in out:
        envelope = Envelope.from_bytes(message.value)
        by_chat[envelope.key].append(int(envelope.text()))
    assert len(out) == chats * per_chat
    assert all(seqs == list(range(per_chat)) for seqs in by_chat.values())
    assert peak > 5, "conversations should be handled concurrently"
    committed = {tp: await consumer.committed(tp) for tp in consumer.assignment()}
    ends = {tp: consumer.highwater(tp) for tp in consumer.assignment()}
    assert committed == ends
    await consumer.stop()
    await producer.stop()


async def test_bad_records_go_to_dead_letters_and_the_stage_keeps_going(kafka_bootstrap: str, unique: str) -> None:
    kafka = KafkaSettings(bootstrap_servers=kafka_bootstrap, partitions=1)
    source, sink = _topic(f"in-{unique}"), _topic(f"out-{unique}")
    dead = _topic(f"dlq-{unique}")
    await ensure_topics(kafka, [source, sink, dead, DEAD_LETTERS])
    producer = make_producer(kafka, "test")
    await producer.start()
    await send_all(producer, [OutRecord(topic=source.name, key="k", value=b"{not json")])
    await send_all(producer, [OutRecord.of(source, _envelope(1, 7))])

    async def handler(envelope: Envelope, state: Any) -> Outcome:
        if envelope.text() == "poison":
            raise InvalidMessage("poison")
        return Outcome(emit=[envelope])

    runner, consumer, task = await _start_runner(kafka, producer, source, sink, handler, f"g-{unique}")
    out = await _read_all(kafka, sink.name, 1)
    assert [Envelope.from_bytes(m.value).text() for m in out] == ["7"]
    dlq = [
        m
        for m in await _read_all(kafka, DEAD_LETTERS.name, 100, timeout=3)
        if dict(m.headers).get("dlq-source-topic") == source.name.encode()
    ]
    assert len(dlq) == 1
    assert dlq[0].value == b"{not json"
    assert b"not a valid envelope" in dict(dlq[0].headers)["dlq-reason"]
    await runner.shutdown()
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    await consumer.stop()
    await producer.stop()


async def test_changelog_table_restores_what_was_written(kafka_bootstrap: str, unique: str) -> None:
    kafka = KafkaSettings(bootstrap_servers=kafka_bootstrap, partitions=3)
    changelog = _topic(f"state-{unique}", compacted=True)
    await ensure_topics(kafka, [changelog])
    producer = make_producer(kafka, "test")
    await producer.start()
    table = ChangelogTable(changelog, kafka, "test")
    records = []
    for i in range(50):
        records.append(table.changelog_record(i % 3, f"key-{i % 7}", {"n": i}))
        table.apply(i % 3, f"key-{i % 7}", {"n": i})
    records.append(table.changelog_record(1, "key-1", TOMBSTONE))  # a deletion survives the restore
    table.apply(1, "key-1", TOMBSTONE)
    await send_all(producer, records)
    await producer.stop()

    fresh = ChangelogTable(changelog, kafka, "test")
    await fresh.restore([0, 1, 2])
    for partition in range(3):
        for key in table.keys(partition):
            assert fresh.get(partition, key) == table.get(partition, key)
    assert fresh.get(0, "key-0") is not None
    assert fresh.get(1, "key-1") is None and table.get(1, "key-1") is None
