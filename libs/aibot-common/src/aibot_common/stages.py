"""Wiring stages into a service: one consumer and runner per stage, one producer for all."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass

from aiokafka import AIOKafkaProducer

from aibot_common.kafka import make_consumer, stop_leaving_group
from aibot_common.outcome import Handler, Streams
from aibot_common.runner import StageRunner
from aibot_common.service import KafkaHealth, background
from aibot_common.settings import Settings
from aibot_common.state import ChangelogTable


@dataclass
class Stage:
    """One consumer group's work: the topics it reads (`topics.consumed_by(group)`) and its handler."""

    name: str
    group_id: str
    topics: Sequence[str]
    handler: Handler | Streams
    max_in_flight: int = 512
    attempts: int = 5
    # How long a record waits out its far end's outage (Unavailable) before it may be dead-lettered.
    outage_max_s: float = 600.0
    # State co-partitioned with the input: restored before a partition's first record is handled.
    table: ChangelogTable | None = None
    # This replica's share of the stage's partitions after each rebalance (see StageRunner).
    on_assignment: Callable[[float], None] | None = None


@asynccontextmanager
async def running_stages(
    settings: Settings, producer: AIOKafkaProducer, stages: Sequence[Stage], service: str
) -> AsyncIterator[list[StageRunner]]:
    runners = []
    consumers = []
    for stage in stages:
        static = {"group_instance_id": settings.kafka.group_instance_id} if settings.kafka.group_instance_id else {}
        consumer = make_consumer(settings.kafka, stage.group_id, f"aibot-{stage.name}", **static)
        runners.append(
            StageRunner(
                stage=stage.name,
                consumer=consumer,
                producer=producer,
                topics=stage.topics,
                group_id=stage.group_id,
                handler=stage.handler,
                table=stage.table,
                max_in_flight=stage.max_in_flight,
                attempts=stage.attempts,
                outage_max_s=stage.outage_max_s,
                on_assignment=stage.on_assignment,
            )
        )
        consumers.append(consumer)
    for consumer in consumers:
        await consumer.start()
    try:
        async with background(*(r.run() for r in runners), name=service):
            yield runners
            for runner in runners:
                await runner.shutdown()
    finally:
        # Offsets are committed by now (shutdown above): leave at once, so the survivors take over.
        for consumer in consumers:
            await stop_leaving_group(consumer)


@dataclass
class ServiceStatus:
    """What /readyz looks at: the Kafka connection, and every stage holding its partitions (assigned,
    state restored), so "ready" means a record arriving now is handled now."""

    health: KafkaHealth | None = None
    runners: Sequence[StageRunner] = ()
    extra_ready: bool = True

    def ready(self) -> bool:
        return self.health is not None and self.health.ok and self.extra_ready and all(r.ready for r in self.runners)
