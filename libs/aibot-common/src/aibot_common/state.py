"""Kafka-backed keyed state: a table per input partition, with a compacted changelog topic.

The same idea as a faust Table: the changelog is co-partitioned with the input, every update is
written to the changelog partition of the input partition it came from, and the replica that is
assigned input partition N first replays changelog partition N. The update is produced together
with the stage's outputs and acknowledged before the input offset is committed, so state and
offsets never disagree in the direction that loses data.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from aibot_common.kafka import OutRecord, make_consumer
from aibot_common.settings import KafkaSettings
from aibot_common.topics import Topic

log = logging.getLogger(__name__)


class _Tombstone:
    def __repr__(self) -> str:
        return "TOMBSTONE"


# The state value that deletes a key: a tombstone on the compacted changelog, so it is gone for good.
TOMBSTONE: Any = _Tombstone()


class ChangelogTable:
    def __init__(self, changelog: Topic, kafka: KafkaSettings, client_id: str) -> None:
        self.changelog = changelog
        self._kafka = kafka
        self._client_id = client_id
        self._partitions: dict[int, dict[str, Any]] = {}

    def get(self, partition: int, key: str) -> Any | None:
        return self._partitions.get(partition, {}).get(key)

    def changelog_record(self, partition: int, key: str, value: Any) -> OutRecord:
        """The changelog record for an update (`TOMBSTONE` deletes), to produce before `apply`."""
        encoded = None if value is TOMBSTONE else json.dumps(value, separators=(",", ":")).encode()
        return OutRecord(topic=self.changelog.name, key=key, value=encoded, partition=partition)

    def apply(self, partition: int, key: str, value: Any) -> None:
        """Take an update into the table, once its changelog record is acknowledged."""
        if value is TOMBSTONE:
            self._partitions.get(partition, {}).pop(key, None)
        else:
            self._partitions.setdefault(partition, {})[key] = value

    def keys(self, partition: int) -> Iterable[str]:
        return self._partitions.get(partition, {}).keys()

    def drop(self, partitions: Iterable[int]) -> None:
        for partition in partitions:
            self._partitions.pop(partition, None)

    async def restore(self, partitions: Iterable[int]) -> None:
        """Replay the changelog partitions from the beginning to their end."""
        wanted = sorted(set(partitions))
        if not wanted:
            return
        started = time.perf_counter()
        consumer = make_consumer(self._kafka, group_id=None, client_id=f"{self._client_id}-restore")
        await consumer.start()
        try:
            tps = [TopicPartition(self.changelog.name, p) for p in wanted]
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            tables = {p: {} for p in wanted}
            count = await read_to_end(consumer, tps, lambda msg: _apply(tables, msg))
            self._partitions.update(tables)
        finally:
            await consumer.stop()
        log.info(
            "restored %d changelog records of %s for partitions %s in %.2fs",
            count,
            self.changelog.name,
            wanted,
            time.perf_counter() - started,
        )


def _apply(tables: dict[int, dict[str, Any]], message: Any) -> None:
    key = message.key.decode() if message.key else None
    if key is None:
        return
    table = tables[message.partition]
    if message.value is None:
        table.pop(key, None)  # a tombstone
    else:
        table[key] = json.loads(message.value)


async def read_to_end(consumer: AIOKafkaConsumer, tps: list[TopicPartition], apply: Any) -> int:
    """Read assigned partitions until each position reaches its end offset.

    The end is taken from ListOffsets first and then from the high watermark carried by each fetch
    response, whichever is larger. On Apache Kafka both agree; the embedded broker `ai-bot up` runs
    (Tansu) answers ListOffsets with a stale end after multi-record batches, and restoring only to
    that end would silently drop state, so the watermark stays in.
    """
    ends = await consumer.end_offsets(tps)
    count = 0

    async def target(tp: TopicPartition) -> int:
        high = consumer.highwater(tp)
        return max(ends[tp], high or 0)

    pending = [tp for tp in tps if await consumer.position(tp) < await target(tp)]
    while pending:
        batches = await consumer.getmany(*pending, timeout_ms=500)
        for messages in batches.values():
            for message in messages:
                apply(message)
                count += 1
        pending = [tp for tp in pending if await consumer.position(tp) < await target(tp)]
    return count
