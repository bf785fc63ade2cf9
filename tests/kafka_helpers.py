"""Reading a topic in tests: the one helper every layer uses to see what reached Kafka."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from aiokafka import ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from pydantic import ValidationError

from aibot_common.envelope import Envelope
from aibot_common.kafka import connection_kwargs, make_consumer, topic_partitions
from aibot_common.settings import KafkaSettings
from aibot_common.state import read_to_end


async def read_topic(
    bootstrap: str,
    topic: str,
    *,
    until: Callable[[list[ConsumerRecord]], bool] | None = None,
    timeout_s: float = 20.0,
) -> list[ConsumerRecord]:
    """Every record of `topic` from its beginning to its end (exact: the end offsets, not a quiet
    spell). With `until`, keep reading new records until it holds or `timeout_s` passes."""
    kafka = KafkaSettings(bootstrap_servers=bootstrap)
    admin = AIOKafkaAdminClient(client_id="test-reader-admin", **connection_kwargs(kafka))
    await admin.start()
    try:
        ids = (await topic_partitions(admin, [topic])).get(topic, [])
    finally:
        await admin.close()
    consumer = make_consumer(kafka, None, "test-reader")
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in ids]
        consumer.assign(partitions)
        if partitions:
            await consumer.seek_to_beginning(*partitions)
        records: list[ConsumerRecord] = []
        await read_to_end(consumer, partitions, records.append)
        deadline = asyncio.get_running_loop().time() + timeout_s
        while until is not None and not until(records) and asyncio.get_running_loop().time() < deadline:
            for messages in (await consumer.getmany(timeout_ms=200)).values():
                records.extend(messages)
        return records
    finally:
        await consumer.stop()


def envelope_id(record: Any) -> str | None:
    """The id of the envelope a record holds, or None: some tests put non-envelopes on topics on purpose."""
    try:
        return Envelope.from_bytes(record.value).id
    except (ValidationError, TypeError):
        return None
