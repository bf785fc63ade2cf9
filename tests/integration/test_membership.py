"""Group membership on the real broker: /readyz's "ready" means the stage holds its partitions with
their state restored, and a replica stopped on purpose leaves its group at once, static member or not."""

from __future__ import annotations

import asyncio
import time
from contextlib import AsyncExitStack
from typing import Any

import pytest

from aibot_common.envelope import Envelope
from aibot_common.kafka import ensure_topics, make_producer, send_all
from aibot_common.outcome import Outcome
from aibot_common.runner import StageRunner
from aibot_common.settings import KafkaSettings, Settings
from aibot_common.stages import Stage, running_stages
from aibot_common.state import ChangelogTable
from aibot_common.topics import DEAD_LETTERS, Topic

pytestmark = pytest.mark.integration

PARTITIONS = 4


def _topic(name: str, compacted: bool = False) -> Topic:
    return Topic(name=name, description="test", producers=(), consumers=(), compacted=compacted)


async def _nothing(envelope: Envelope, state: Any) -> Outcome:
    return Outcome()


async def _until(condition: Any, timeout_s: float) -> float:
    """Wait for `condition()`; return how long it took."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout_s:
            raise TimeoutError(f"not within {timeout_s}s")
        await asyncio.sleep(0.05)
    return time.monotonic() - started


def _settings(bootstrap: str, instance: str | None) -> Settings:
    return Settings(kafka=KafkaSettings(bootstrap_servers=bootstrap, partitions=PARTITIONS, group_instance_id=instance))


async def test_ready_only_once_the_partitions_state_is_restored(kafka_bootstrap: str, unique: str) -> None:
    settings = _settings(kafka_bootstrap, f"ready-{unique}")
    source, changelog = _topic(f"in-{unique}"), _topic(f"changelog-{unique}", compacted=True)
    await ensure_topics(settings.kafka, [source, changelog, DEAD_LETTERS])
    producer = make_producer(settings.kafka, "test")
    await producer.start()
    table = ChangelogTable(changelog, settings.kafka, "test")
    # State a previous owner left, one key per partition of the changelog.
    await send_all(producer, [table.changelog_record(p, f"chat-{p}", {"turns": p}) for p in range(PARTITIONS)])
    seen_not_ready = False
    try:
        stage = Stage(name="ready", group_id=f"g-{unique}", topics=[source.name], handler=_nothing, table=table)
        async with running_stages(settings, producer, [stage], "test") as runners:
            (runner,) = runners

            def ready_and_check() -> bool:
                nonlocal seen_not_ready
                if not runner.ready:
                    seen_not_ready = True
                    return False
                # The moment it says ready, every partition's state is there.
                restored = [table.get(p, f"chat-{p}") for p in range(PARTITIONS)]
                assert restored == [{"turns": p} for p in range(PARTITIONS)]
                return True

            await _until(ready_and_check, 60)
            assert seen_not_ready, "ready before it had joined its group"
            assert runner.running
        assert not runner.ready  # after shutdown
    finally:
        await producer.stop()


@pytest.mark.parametrize("static", [True, False], ids=["static-member", "dynamic-member"])
async def test_a_stopped_replica_leaves_its_group_at_once(kafka_bootstrap: str, unique: str, static: bool) -> None:
    """SIGTERM's path (the stage context exiting): the survivor holds every partition well before the
    session timeout (10 s) would have expired the stopped member."""
    source = _topic(f"in-{unique}")
    first = _settings(kafka_bootstrap, f"a-{unique}" if static else None)
    second = _settings(kafka_bootstrap, f"b-{unique}" if static else None)
    await ensure_topics(first.kafka, [source, DEAD_LETTERS])
    producer = make_producer(first.kafka, "test")
    await producer.start()
    group = f"g-{unique}"
    try:
        async with AsyncExitStack() as survivor_stack:
            stage_b = Stage(name="b", group_id=group, topics=[source.name], handler=_nothing)
            (survivor,) = await survivor_stack.enter_async_context(running_stages(second, producer, [stage_b], "b"))
            stage_a = Stage(name="a", group_id=group, topics=[source.name], handler=_nothing)
            async with running_stages(first, producer, [stage_a], "a") as (leaver,):
                await _until(lambda: _holds(leaver) + _holds(survivor) == PARTITIONS and _holds(leaver) > 0, 60)
                assert leaver.ready and survivor.ready
                stopped_at = time.monotonic()
            handover_s = await _until(lambda: _holds(survivor) == PARTITIONS and survivor.ready, 30)
            print(f"handover after a stop ({'static' if static else 'dynamic'} member): {handover_s:.2f}s")
            assert time.monotonic() - stopped_at < 6.0, "the survivor waited for the session timeout"
    finally:
        await producer.stop()


def _holds(runner: StageRunner) -> int:
    return len(runner.assignment)


async def test_a_replica_restarted_under_its_id_gets_its_partitions_back(
    kafka_bootstrap: str, unique: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The crash case of static membership: a member that stops without leaving (as after kill -9) and
    comes back under the same group.instance.id within the session timeout is handed its own
    partitions at once, without waiting for a rebalance."""
    source = _topic(f"in-{unique}")
    settings = _settings(kafka_bootstrap, f"crash-{unique}")
    other = _settings(kafka_bootstrap, f"other-{unique}")
    await ensure_topics(settings.kafka, [source, DEAD_LETTERS])
    producer = make_producer(settings.kafka, "test")
    await producer.start()
    group = f"g-{unique}"

    async def stop_without_leaving(consumer: Any) -> None:
        await consumer.stop()  # aiokafka sends no LeaveGroup for a static member: its place is kept, as after a crash

    try:
        async with running_stages(other, producer, [Stage("o", group, [source.name], _nothing)], "o") as (stayer,):
            monkeypatch.setattr("aibot_common.stages.stop_leaving_group", stop_without_leaving)
            async with running_stages(settings, producer, [Stage("c", group, [source.name], _nothing)], "c") as (
                crashed,
            ):
                await _until(lambda: _holds(crashed) + _holds(stayer) == PARTITIONS and _holds(crashed) > 0, 60)
                before = crashed.assignment
            monkeypatch.undo()
            async with running_stages(settings, producer, [Stage("c", group, [source.name], _nothing)], "c") as (
                restarted,
            ):
                back_s = await _until(lambda: restarted.ready, 30)
                print(f"restarted static member holds its partitions again after {back_s:.2f}s")
                assert restarted.assignment == before
                assert back_s < 5.0, "it waited for a rebalance instead of taking its place back"
    finally:
        await producer.stop()
