"""archiver: its own consumer group on the inbound and replies topics (so it scales like the other
stages and never holds them back), batches records into volumes, writes them to the storage
backend, and commits only after each volume is durably written. It also applies the storage tiers'
retention (deletes days older than `storage.retention_days`)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

from fastapi import FastAPI

from aibot_archiver.handler import write_batch
from aibot_common.batch import BatchRunner
from aibot_common.kafka import make_consumer
from aibot_common.runner import Consumed
from aibot_common.service import background, create_service_app, kafka_producer
from aibot_common.settings import Settings
from aibot_common.stages import ServiceStatus
from aibot_common.storage import Storage
from aibot_common.topics import GROUP_ARCHIVER, consumed_by

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


def create_app(settings: Settings) -> FastAPI:
    Storage(settings.storage)  # fail fast (exit 2) on a storage section that cannot work
    status = ServiceStatus()

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        async with kafka_producer(settings, "aibot-archiver") as (_producer, health), archiving(settings) as runner:
            status.health = health
            # The runner is not a StageRunner, but it has the `running` flag /readyz reads.
            status.runners = [runner]  # type: ignore[list-item]
            yield

    return create_service_app("archiver", lifespan, status.ready)
