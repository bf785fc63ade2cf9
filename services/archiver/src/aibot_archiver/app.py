"""archiver: the archive and the cluster-wide usage count, the two stages that read every user
message in groups of their own.

The archive: its own consumer group on the inbound and replies topics (so it scales like the other
stages and never holds them back), batches records into volumes, writes them to the storage
backend, and commits only after each volume is durably written. It also applies the storage tiers'
retention (deletes days older than `storage.retention_days`)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

from aiokafka import AIOKafkaProducer
from fastapi import FastAPI

from aibot_archiver.handler import write_batch
from aibot_common.batch import BatchRunner
from aibot_common.kafka import make_consumer
from aibot_common.runner import Consumed
from aibot_common.service import background, create_service_app, kafka_producer
from aibot_common.settings import Settings
from aibot_common.stages import ServiceStatus
from aibot_common.storage import Storage
from aibot_common.topics import GROUP_ARCHIVER, GROUP_USAGE, GROUP_USAGE_VIEW, USAGE_DAILY_USERS, consumed_by
from aibot_common.usage import DailyUsersView, write_usage

log = logging.getLogger(__name__)


async def sweep_forever(storage: Storage, interval_s: float) -> None:
    """Retention for every tier in `storage.retention_days`: the archive, and the log days the log
    collector ships to the same backend. Every replica sweeps; deleting is idempotent."""
    while True:
        for tier in storage.settings.retention_days:
            try:
                removed = await storage.sweep(tier)
                if removed:
                    log.info(
                        "retention: deleted %d objects of %s older than %d days",
                        removed,
                        tier,
                        storage.settings.retention_days[tier],
                    )
            except Exception as exc:
                log.warning("retention sweep of %s failed (next try in %.0fs): %s", tier, interval_s, exc)
        await asyncio.sleep(interval_s)


@asynccontextmanager
async def archiving(
    settings: Settings, topics: Sequence[str] | None = None, group_id: str = GROUP_ARCHIVER
) -> AsyncIterator[BatchRunner]:
    """The archive stage running in the background: consume, write volumes, commit, sweep."""
    storage = Storage(settings.storage)
    log.info("archiving to %s", storage.location)

    async def flush(batch: Sequence[Consumed]) -> None:
        await write_batch(batch, storage)

    consumer = make_consumer(settings.kafka, group_id, "aibot-archiver")
    runner = BatchRunner(
        stage="archiver",
        consumer=consumer,
        topics=list(topics) if topics is not None else consumed_by(GROUP_ARCHIVER),
        group_id=group_id,
        flush=flush,
        max_records=settings.archive.volume_max_records,
        max_seconds=settings.archive.volume_max_seconds,
    )
    await consumer.start()
    try:
        async with background(runner.run(), sweep_forever(storage, settings.archive.sweep_interval_s), name="archiver"):
            yield runner
            await runner.shutdown()
    finally:
        await consumer.stop()


@asynccontextmanager
async def counting_users(
    settings: Settings,
    producer: AIOKafkaProducer,
    inbound: Sequence[str] | None = None,
    usage_topic: str = USAGE_DAILY_USERS.name,
    group_id: str = GROUP_USAGE,
    view_group_id: str = GROUP_USAGE_VIEW,
) -> AsyncIterator[tuple[BatchRunner, DailyUsersView]]:
    """The daily-active-users aggregation (usage.py): the writer stage and this replica's view."""
    salt = settings.archive.usage_salt.get_secret_value().encode()

    async def flush(batch: Sequence[Consumed]) -> None:
        await write_usage(batch, producer, usage_topic, salt)

    consumer = make_consumer(settings.kafka, group_id, "aibot-usage")
    # Small batches, written at once: the figure should move within seconds of a message.
    writer = BatchRunner(
        stage="usage",
        consumer=consumer,
        topics=list(inbound) if inbound is not None else consumed_by(GROUP_USAGE),
        group_id=group_id,
        flush=flush,
        max_records=500,
        max_seconds=1.0,
    )
    view_consumer = make_consumer(settings.kafka, view_group_id, "aibot-usage-view")
    view = DailyUsersView(view_consumer, usage_topic)
    await consumer.start()
    await view_consumer.start()
    try:
        async with background(writer.run(), view.run(), name="usage"):
            yield writer, view
            await writer.shutdown()
    finally:
        await view_consumer.stop()
        await consumer.stop()


def create_app(settings: Settings) -> FastAPI:
    Storage(settings.storage)  # fail fast (exit 2) on a storage section that cannot work
    status = ServiceStatus()

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        async with (
            kafka_producer(settings, "aibot-archiver") as (producer, health),
            archiving(settings) as runner,
            counting_users(settings, producer) as (writer, view),
        ):
            view.export()
            status.health = health
            # Not StageRunners, but each has the `running` flag /readyz reads.
            status.runners = [runner, writer, view]  # type: ignore[list-item]
            yield

    return create_service_app("archiver", lifespan, status.ready, settings.security)
