"""Consumer lag per topic, partition and group, read from the broker alone.

lag = end of the partition (its high watermark) - the offset the group committed there. Both figures
come from the broker, not from the consumers' own metrics, so a group whose consumers all died still
shows its lag, and it keeps growing while records arrive.

How each figure is read, and why:
- committed offsets: a consumer *of that group* asks the group coordinator (`committed(tp)`). It never
  subscribes, so it never joins the group and never shows up as one of its members. (The admin
  client's list_consumer_group_offsets would do in one call, but some Kafka-protocol brokers answer
  it in a form aiokafka cannot decode.)
- ends: the high watermark carried by fetch responses, which a group-less probe consumer gets by
  fetching the last record of each partition. ListOffsets(latest) alone is not trusted: some brokers
  answer it with the last batch's base offset + 1 after multi-record batches.
- consumers in a group: describe_consumer_groups, one group per request.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from aibot_common import telemetry
from aibot_common.kafka import connection_kwargs, make_consumer, topic_partitions
from aibot_common.settings import KafkaSettings
from aibot_common.topics import CONSUMPTION

log = logging.getLogger(__name__)

HIGHWATER_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class PartitionLag:
    topic: str
    partition: int
    group: str
    start: int  # the first offset still in the log
    end: int  # the high watermark: the offset the next record will get
    committed: int | None  # None: the group never committed on this partition

    @property
    def lag(self) -> int:
        # Without a commit (or below the log start, after retention deleted records) the group's
        # consumers start from the earliest record still there: everything from `start` waits.
        position = self.start if self.committed is None else max(self.committed, self.start)
        return max(self.end - position, 0)


@dataclass(frozen=True)
class GroupLag:
    topic: str
    group: str
    members: int | None  # consumers in the group now; None when the broker could not say
    partitions: tuple[PartitionLag, ...]

    @property
    def lag(self) -> int:
        return sum(p.lag for p in self.partitions)

    @property
    def end(self) -> int:
        return sum(p.end for p in self.partitions)

    @property
    def committed(self) -> int:
        return sum(p.committed or 0 for p in self.partitions)


@dataclass(frozen=True)
class LagSnapshot:
    groups: tuple[GroupLag, ...]
    taken_at: float = field(default_factory=time.time)

    @property
    def total(self) -> int:
        return sum(g.lag for g in self.groups)

    def group(self, topic: str, group: str) -> GroupLag:
        return next(g for g in self.groups if g.topic == topic and g.group == group)


class LagReader:
    """Reads a LagSnapshot for (topic, group) pairs; keep one open to refresh repeatedly."""

    def __init__(
        self, kafka: KafkaSettings, consumption: Sequence[tuple[str, str]] = CONSUMPTION, client_id: str = "aibot-lag"
    ) -> None:
        self._kafka = kafka
        self._consumption = list(consumption)
        self._client_id = client_id
        self._probe: AIOKafkaConsumer | None = None
        self._committed_readers: dict[str, AIOKafkaConsumer] = {}
        self._admin: AIOKafkaAdminClient | None = None

    async def start(self) -> None:
        # A short fetch wait: an empty partition's fetch answers (with its watermark) after this long.
        self._probe = make_consumer(self._kafka, None, f"{self._client_id}-probe", fetch_max_wait_ms=100)
        await self._probe.start()
        for group in dict.fromkeys(g for _, g in self._consumption):
            reader = make_consumer(self._kafka, group, f"{self._client_id}-committed")
            await reader.start()  # no subscribe, no assign: it only asks the coordinator for offsets
            self._committed_readers[group] = reader
        self._admin = AIOKafkaAdminClient(client_id=f"{self._client_id}-admin", **connection_kwargs(self._kafka))
        await self._admin.start()

    async def stop(self) -> None:
        for client in (self._probe, *self._committed_readers.values()):
            if client is not None:
                await client.stop()
        if self._admin is not None:
            await self._admin.close()
        self._probe, self._committed_readers, self._admin = None, {}, None

    async def __aenter__(self) -> LagReader:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def read(self) -> LagSnapshot:
        assert self._probe is not None, "start() the reader first"
        partitions = await self._partitions()
        starts, ends = await self._bounds([tp for tps in partitions.values() for tp in tps])
        groups = []
        for topic, group in self._consumption:
            tps = partitions.get(topic, [])
            reader = self._committed_readers[group]
            committed = await asyncio.gather(*(reader.committed(tp) for tp in tps))
            groups.append(
                GroupLag(
                    topic=topic,
                    group=group,
                    members=await self._members(group),
                    partitions=tuple(
                        PartitionLag(tp.topic, tp.partition, group, starts[tp], ends[tp], offset)
                        for tp, offset in zip(tps, committed, strict=True)
                    ),
                )
            )
        return LagSnapshot(groups=tuple(groups))

    async def _partitions(self) -> dict[str, list[TopicPartition]]:
        assert self._admin is not None
        wanted = list(dict.fromkeys(t for t, _ in self._consumption))
        existing = await topic_partitions(self._admin, wanted)
        found: dict[str, list[TopicPartition]] = {}
        for topic in wanted:
            if topic not in existing:
                log.warning("topic %s does not exist (yet): no lag to report for it", topic)
                continue
            found[topic] = [TopicPartition(topic, p) for p in existing[topic]]
        return found

    async def _bounds(self, tps: list[TopicPartition]) -> tuple[dict[TopicPartition, int], dict[TopicPartition, int]]:
        """Log start and end of each partition, the end from fresh fetch responses' high watermarks."""
        probe = self._probe
        assert probe is not None
        if not tps:
            return {}, {}
        if set(probe.assignment()) != set(tps):
            probe.assign(tps)
        starts = await probe.beginning_offsets(tps)
        listed = await probe.end_offsets(tps)
        asked_at_ms = time.time() * 1000
        probe.resume(*tps)
        for tp in tps:
            # The last record (or the start of an empty log): one small fetch that returns at once.
            probe.seek(tp, max(listed[tp] - 1, starts[tp]))
        stale = list(tps)
        deadline = time.monotonic() + HIGHWATER_TIMEOUT_S
        while stale and time.monotonic() < deadline:
            await probe.getmany(*stale, timeout_ms=200)
            stale = [tp for tp in stale if (probe.last_poll_timestamp(tp) or 0) < asked_at_ms]
        # Paused between reads, so the probe never downloads the stream in the background.
        probe.pause(*tps)
        if stale:
            log.warning("no fresh high watermark for %d partitions; using ListOffsets for them", len(stale))
        ends = {tp: max(listed[tp], probe.highwater(tp) or 0) for tp in tps}
        return starts, ends

    async def _members(self, group: str) -> int | None:
        assert self._admin is not None
        try:
            # One group per request: some brokers garble a multi-group answer that has an unknown group.
            (response,) = await self._admin.describe_consumer_groups([group])
            error_code, name, _state, _protocol_type, _protocol, members, *_ = response.groups[0]
        except Exception as exc:  # a broker that cannot describe groups leaves the count unknown
            log.warning("describe_consumer_groups(%s) failed: %s", group, exc)
            return None
        if error_code != 0 or name != group:
            return None
        return len(members)


def publish(snapshot: LagSnapshot) -> None:
    """Set the lag gauges (telemetry.CONSUMER_LAG and the per-group ones) from a snapshot."""
    for group in snapshot.groups:
        for p in group.partitions:
            telemetry.CONSUMER_LAG.labels(topic=p.topic, partition=str(p.partition), group=p.group).set(p.lag)
        telemetry.CONSUMER_GROUP_LAG.labels(topic=group.topic, group=group.group).set(group.lag)
        if group.members is not None:
            telemetry.CONSUMER_GROUP_MEMBERS.labels(group=group.group).set(group.members)
            telemetry.CONSUMER_GROUP_NO_CONSUMER.labels(group=group.group).set(1 if group.members == 0 else 0)
    telemetry.LAG_LAST_REFRESH.set(snapshot.taken_at)
