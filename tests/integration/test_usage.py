"""Cluster-wide daily active users (usage.py) against a real broker: the counts equal the truth with
two replicas (no double counting of a user seen in two conversations or of a re-delivered message),
after one replica stops (the other takes its partitions), and after it comes back."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest

from aibot_archiver.app import counting_users
from aibot_common.envelope import Conversation, Envelope, Kind, Platform, Sender, TextPart
from aibot_common.kafka import OutRecord, ensure_topics, make_producer, send_all
from aibot_common.settings import KafkaSettings, Settings
from aibot_common.topics import Topic
from aibot_common.usage import DailyUsersView

pytestmark = pytest.mark.integration

DAY = "2026-05-01"


def _message(n: int, user: str, chat: int, platform: Platform = Platform.TELEGRAM) -> Envelope:
    return Envelope(
        id=f"usage-{n}",
        kind=Kind.MESSAGE,
        conversation=Conversation(platform=platform, chat_id=str(chat)),
        sender=Sender(id=user),
        parts=[TextPart(text="hi")],
        event_time=datetime(2026, 5, 1, 10, n % 60, tzinfo=UTC),
    )


@contextlib.asynccontextmanager
async def _replica(settings: Settings, inbound: str, usage: str, unique: str) -> AsyncIterator[DailyUsersView]:
    producer = make_producer(settings.kafka, "test-usage")
    await producer.start()
    try:
        async with counting_users(
            settings,
            producer,
            inbound=[inbound],
            usage_topic=usage,
            group_id=f"usage-{unique}",
            view_group_id=f"usage-view-{unique}",
        ) as (_writer, view):
            yield view
    finally:
        await producer.stop()


async def _until(condition, timeout_s: float = 60.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = asyncio.get_running_loop().time() + timeout_s
    while asyncio.get_running_loop().time() < deadline:
        if condition():
            return True
        await asyncio.sleep(0.2)
    return False


async def test_counts_equal_the_truth_with_two_replicas_and_across_a_restart(kafka_bootstrap: str, unique: str) -> None:
    kafka = KafkaSettings(bootstrap_servers=kafka_bootstrap, partitions=4)
    inbound = Topic(name=f"usage-in-{unique}", description="t", producers=(), consumers=())
    usage = Topic(name=f"usage-users-{unique}", description="t", producers=(), consumers=(), compacted=True)
    await ensure_topics(kafka, [inbound, usage])
    settings = Settings(kafka=kafka)

    # 12 Telegram users, each in their private chat and 4 of them in a group chat too (another
    # partition); 3 Feishu users; one answer (not a user); every message delivered twice.
    messages = [_message(n, f"tg-user-{n}", 100 + n) for n in range(12)]
    messages += [_message(20 + n, f"tg-user-{n}", -555) for n in range(4)]
    messages += [_message(40 + n, f"fs-user-{n}", 900 + n, Platform.FEISHU) for n in range(3)]
    answer = messages[0].derive(kind=Kind.REPLY, suffix="reply")
    records = [OutRecord.of(inbound, e) for e in [*messages, *messages, answer]]
    truth = {"telegram": 12, "feishu": 3}

    producer = make_producer(kafka, "test-usage-input")
    await producer.start()
    try:
        await send_all(producer, records)
    finally:
        await producer.stop()

    def total(*views: DailyUsersView) -> dict[str, int]:
        return {p: sum(v.count(p, DAY) for v in views) for p in truth}

    async with _replica(settings, inbound.name, usage.name, unique) as first:
        async with _replica(settings, inbound.name, usage.name, unique) as second:
            both_own = await _until(
                lambda: first.partitions and second.partitions and total(first, second) == truth, 90
            )
            assert both_own, (first.partitions, second.partitions, total(first, second))
            # Disjoint partitions: each user-day is counted by exactly one replica.
            assert first.partitions.isdisjoint(second.partitions)
            assert first.partitions | second.partitions == {0, 1, 2, 3}
        # The second replica stopped: the first takes every partition and rebuilds them.
        assert await _until(lambda: first.partitions == {0, 1, 2, 3} and total(first) == truth, 90), (
            first.partitions,
            total(first),
        )
        # A new user arrives while one replica runs.
        producer = make_producer(kafka, "test-usage-input")
        await producer.start()
        try:
            await send_all(producer, [OutRecord.of(inbound, _message(59, "tg-user-new", 4242))])
        finally:
            await producer.stop()
        truth["telegram"] += 1
        assert await _until(lambda: total(first) == truth, 60), total(first)

    # Every replica restarted: nothing local survives, the figures come back from the topic.
    async with _replica(settings, inbound.name, usage.name, unique) as again:
        assert await _until(lambda: total(again) == truth, 90), total(again)
