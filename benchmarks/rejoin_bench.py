"""How long a stage's partitions stall when a replica crashes and comes back, with dynamic and with
static group membership (kafka.group_instance_id), on Apache Kafka from .kafka/libs.

One group of two members on a 4-partition topic. Member A "crashes" (its consumer stops without a
LeaveGroup, as after kill -9) and starts again at once; the figure is the time from its restart
until the group is settled again: both members ready, every partition held. Process start-up is not
in it (that is the machine's; see the chaos figures). Prints figures; asserts nothing.

    uv run python benchmarks/rejoin_bench.py [--trials 3]
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid
from collections.abc import Callable
from typing import Any

from aiokafka import AIOKafkaConsumer

import aibot_common.stages as stages
from aibot_common.envelope import Envelope
from aibot_common.kafka import ensure_topics, make_producer
from aibot_common.outcome import Outcome
from aibot_common.settings import KafkaSettings, Settings
from aibot_common.stages import Stage, running_stages
from aibot_common.testing.broker import ApacheKafka
from aibot_common.topics import DEAD_LETTERS, Topic

PARTITIONS = 4


async def _nothing(envelope: Envelope, state: Any) -> Outcome:
    return Outcome()


async def _until(condition: Callable[[], bool], timeout_s: float = 60.0) -> float:
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout_s:
            raise TimeoutError(f"not within {timeout_s}s")
        await asyncio.sleep(0.02)
    return time.monotonic() - started


async def _crash(consumer: AIOKafkaConsumer) -> None:
    """Stop without a LeaveGroup, static member or not: what the broker sees of a kill -9."""
    coordinator = consumer._coordinator

    async def no_leave() -> None:
        coordinator.reset_generation()

    coordinator._maybe_leave_group = no_leave
    await consumer.stop()


async def trial(bootstrap: str, static: bool) -> float:
    suffix = uuid.uuid4().hex[:8]
    topic = Topic(name=f"rejoin-{suffix}", description="bench", producers=(), consumers=())

    def settings(name: str) -> Settings:
        instance = f"{name}-{suffix}" if static else None
        return Settings(
            kafka=KafkaSettings(bootstrap_servers=bootstrap, partitions=PARTITIONS, group_instance_id=instance)
        )

    await ensure_topics(settings("x").kafka, [topic, DEAD_LETTERS])
    producer = make_producer(settings("x").kafka, "bench")
    await producer.start()
    group = f"g-{suffix}"
    try:
        async with running_stages(settings("b"), producer, [Stage("b", group, [topic.name], _nothing)], "b") as (b,):
            leave = stages.stop_leaving_group
            stages.stop_leaving_group = _crash
            try:
                async with running_stages(
                    settings("a"), producer, [Stage("a", group, [topic.name], _nothing)], "a"
                ) as (a,):
                    await _until(lambda: len(a.assignment) + len(b.assignment) == PARTITIONS and bool(a.assignment))
            finally:
                stages.stop_leaving_group = leave
            restarted = time.monotonic()
            async with running_stages(settings("a"), producer, [Stage("a", group, [topic.name], _nothing)], "a") as (
                again,
            ):
                await _until(
                    lambda: again.ready and b.ready and len(again.assignment) + len(b.assignment) == PARTITIONS
                )
                return time.monotonic() - restarted
    finally:
        await producer.stop()


async def main(trials: int) -> None:
    with ApacheKafka() as kafka:
        for static in (False, True):
            figures = [await trial(kafka.bootstrap, static) for _ in range(trials)]
            kind = "static (group.instance.id)" if static else "dynamic"
            print(
                f"{kind:28} member crashed and restarted: group settled after "
                + ", ".join(f"{f:.2f}s" for f in figures)
            )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=3)
    asyncio.run(main(parser.parse_args().trials))
