"""Cluster-wide daily active users: a keyed, windowed aggregation over the inbound topic.

Counting users in each ingress replica undercounts after a restart and double-counts with two
replicas. Here, in two steps joined by one compacted topic (`aibot.usage.daily-users.v1`):

1. **the writer** (a sink stage on `BatchRunner`, group `aibot-usage`) turns every user message into
   one record keyed `<day>|<platform>|<user digest>`: the key *is* the window (the UTC day) and the
   user. Kafka's partitioner sends every record of one key to one partition, so each user-day lives in
   exactly one partition whichever conversation it came from; a re-delivered message rewrites the same
   key. Offsets are committed after the broker acknowledged the records.
2. **the view** (group `aibot-usage-view` on that topic) holds, for the partitions assigned to this
   replica, the set of keys of each day, rebuilt from the partition's beginning on every assignment.
   `aibot_active_users{platform}` of a replica counts today's keys of *its* partitions: the partitions
   are disjoint between replicas, so Prometheus' `sum` over replicas is the cluster's figure, after a
   restart (rebuilt from the topic) and after a rebalance (a revoked partition is dropped, its new
   owner rebuilds it) alike. The topic compacts per key and deletes after 8 days, so it stays small.

Why not faust-streaming's windowed tables: the same changelog idea, but a second Kafka client stack
(faust pins its own aiokafka fork) and worker model in the image, for one count; the project's
runners already give "commit after the broker acknowledged".

User ids are never stored: the key holds a keyed BLAKE2b digest (`usage.salt`), the same in every
replica, so the same user always gives the same key.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Sequence
from datetime import UTC, datetime

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition

from aibot_common import telemetry
from aibot_common.envelope import Envelope, Kind, Platform
from aibot_common.errors import InvalidMessage
from aibot_common.kafka import OutRecord, send_all
from aibot_common.runner import Consumed

log = logging.getLogger(__name__)


def user_day_key(envelope: Envelope, salt: bytes) -> str | None:
    """The aggregation key of a user message: its UTC day, platform and user digest; None for
    anything that is not a user's message (answers, messages without a sender)."""
    if envelope.kind is not Kind.MESSAGE or envelope.sender is None or not envelope.sender.id:
        return None
    day = envelope.event_time.astimezone(UTC).date().isoformat()
    digest = hashlib.blake2b(envelope.sender.id.encode(), key=salt, digest_size=12).hexdigest()
    return f"{day}|{envelope.conversation.platform.value}|{digest}"


def usage_records(batch: Sequence[Consumed], topic: str, salt: bytes) -> list[OutRecord]:
    """One record per distinct user-day key of the batch (the topic's partitioner places it)."""
    keys: set[str] = set()
    for consumed in batch:
        try:
            key = user_day_key(consumed.envelope, salt)
        except InvalidMessage:
            continue  # core-llm dead-letters it; it is nobody's message
        if key is not None:
            keys.add(key)
    return [OutRecord(topic=topic, key=key, value=b"1") for key in sorted(keys)]


async def write_usage(batch: Sequence[Consumed], producer: AIOKafkaProducer, topic: str, salt: bytes) -> None:
    await send_all(producer, usage_records(batch, topic, salt))


class DailyUsersView:
    """Today's distinct users per platform in the usage-topic partitions this replica owns."""

    def __init__(self, consumer: AIOKafkaConsumer, topic: str) -> None:
        self._consumer = consumer
        self._topic = topic
        # partition -> day -> platform -> user digests
        self._days: dict[int, dict[str, dict[str, set[str]]]] = {}
        self._holding = False
        self.running = False

    def count(self, platform: str, day: str | None = None) -> int:
        today = day or datetime.now(UTC).date().isoformat()
        return sum(len(days.get(today, {}).get(platform, ())) for days in self._days.values())

    @property
    def partitions(self) -> set[int]:
        return set(self._days)

    def export(self) -> None:
        """Back `aibot_active_users` with this view (read at scrape time: it rolls over at midnight)."""
        for platform in Platform:
            telemetry.ACTIVE_USERS.labels(platform=platform.value).set_function(lambda p=platform.value: self.count(p))

    def _apply(self, message: object) -> None:
        key = message.key.decode() if message.key else ""  # type: ignore[attr-defined]
        parts = key.split("|")
        if len(parts) != 3:
            return
        day, platform, user = parts
        partition = message.partition  # type: ignore[attr-defined]
        self._days.setdefault(partition, {}).setdefault(day, {}).setdefault(platform, set()).add(user)
        # Keep today and yesterday only: older days are no figure anyone reads.
        days = self._days[partition]
        if len(days) > 2:
            for old in sorted(days)[:-2]:
                days.pop(old)

    @property
    def ready(self) -> bool:
        """Running and holding its partitions (rebuilt from the topic's start before it counts)."""
        return self.running and self._holding

    async def run(self) -> None:
        self._consumer.subscribe([self._topic], listener=_ViewListener(self))
        self.running = True
        try:
            while True:
                for messages in (await self._consumer.getmany(timeout_ms=500)).values():
                    for message in messages:
                        self._apply(message)
        finally:
            self.running = False

    async def _assigned(self, assigned: set[TopicPartition]) -> None:
        self._holding = True
        new = [tp for tp in assigned if tp.partition not in self._days]
        for tp in new:
            self._days[tp.partition] = {}
        if new:
            # Rebuilt from the beginning: the topic is the state, nothing local survives a restart.
            await self._consumer.seek_to_beginning(*new)
        log.info("usage view owns partitions %s", sorted(self._days))

    def _revoked(self, revoked: set[TopicPartition]) -> None:
        self._holding = False
        for tp in revoked:
            self._days.pop(tp.partition, None)


class _ViewListener(ConsumerRebalanceListener):
    def __init__(self, view: DailyUsersView) -> None:
        self._view = view

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        self._view._revoked(set(revoked))

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        await self._view._assigned(set(assigned))


async def wait_caught_up(view: DailyUsersView, timeout_s: float = 30.0) -> None:
    """For tests and start-up logs: until the view owns partitions (a rebalance has settled)."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not view.partitions and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.1)
