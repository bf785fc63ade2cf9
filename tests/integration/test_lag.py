"""Consumer lag read from the broker: a known backlog waits for a consumer group that is not running.

The group committed offsets once and stopped (as a stage whose every replica died would), so nothing
but the broker's own figures can tell what is waiting. One partition gets a multi-record batch, the
case where some brokers' ListOffsets answer a stale end and only the high watermark is right.
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pexpect
import pytest
from aiokafka import AIOKafkaProducer, TopicPartition
from prometheus_client.parser import text_string_to_metric_families

from aibot_common.kafka import connection_kwargs, ensure_topics, make_consumer
from aibot_common.lag import LagReader
from aibot_common.settings import KafkaSettings
from aibot_common.testing.broker import free_port
from aibot_common.topics import Topic

pytestmark = pytest.mark.integration

AI_BOT = str(Path(sys.executable).parent / "ai-bot")
# Per partition: records produced, the offset the group committed (None: never), so the lag.
PLAN = {0: (5, 2), 1: (3, 3), 2: (4, None)}
EXPECTED = {0: 3, 1: 0, 2: 4}


@dataclass
class Backlog:
    kafka: KafkaSettings
    topic: str
    group: str

    @property
    def pair(self) -> str:
        return f"{self.topic}:{self.group}"

    def env(self) -> dict[str, str]:
        return {**os.environ, "AIBOT_KAFKA__BOOTSTRAP_SERVERS": self.kafka.bootstrap_servers}


@pytest.fixture(scope="module")
async def backlog(kafka_bootstrap: str) -> AsyncIterator[Backlog]:
    suffix = os.urandom(4).hex()
    kafka = KafkaSettings(bootstrap_servers=kafka_bootstrap, partitions=3)
    topic, group = f"lag-{suffix}", f"lag-group-{suffix}"
    await ensure_topics(kafka, [Topic(name=topic, description="lag test", producers=(), consumers=())])
    producer = AIOKafkaProducer(linger_ms=200, **connection_kwargs(kafka))
    await producer.start()
    try:
        for partition in (0, 1):
            for i in range(PLAN[partition][0]):
                await producer.send_and_wait(topic, f"r{i}".encode(), partition=partition)  # one batch each
        # Partition 2: one batch of four records.
        futures = [await producer.send(topic, f"b{i}".encode(), partition=2) for i in range(PLAN[2][0])]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()
    # A consumer of the group commits and stops: assign(), not subscribe(), so no group join is needed.
    consumer = make_consumer(kafka, group, "lag-test-committer")
    await consumer.start()
    try:
        consumer.assign([TopicPartition(topic, p) for p in PLAN])
        await consumer.commit({TopicPartition(topic, p): c for p, (_, c) in PLAN.items() if c is not None})
    finally:
        await consumer.stop()
    yield Backlog(kafka, topic, group)


async def test_lag_per_partition_and_total_match_what_waits(backlog: Backlog) -> None:
    async with LagReader(backlog.kafka, [(backlog.topic, backlog.group)]) as reader:
        snapshot = await reader.read()
    group = snapshot.group(backlog.topic, backlog.group)
    assert {p.partition: p.lag for p in group.partitions} == EXPECTED
    assert {p.partition: p.end for p in group.partitions} == {p: n for p, (n, _) in PLAN.items()}
    assert {p.partition: p.committed for p in group.partitions} == {p: c for p, (_, c) in PLAN.items()}
    assert group.lag == snapshot.total == 7
    assert group.members == 0  # nobody consumes: the stage is down


async def test_cli_prints_the_table_with_partitions(backlog: Backlog) -> None:
    result = await asyncio.to_thread(
        subprocess.run,
        [AI_BOT, "lag", "--pair", backlog.pair, "--partitions"],
        env=backlog.env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "7 records waiting" in result.stdout
    rows = [line.split() for line in result.stdout.splitlines()]
    total = next(r for r in rows if backlog.group in r)
    # TOPIC GROUP CONSUMERS "all" 3 END COMMITTED LAG, between the table's border characters.
    figures = [c for c in total if c not in ("│", "┃")]
    assert figures[2:] == ["0", "all", "3", "12", "5", "7"], result.stdout
    # Partition rows: PARTITION END COMMITTED LAG only (the topic and group cells are blank).
    partitions = {
        int(r[0]): r[1:]
        for r in ([c for c in row if c not in ("│", "┃")] for row in rows)
        if len(r) == 4 and r[0].isdigit()
    }
    assert partitions == {0: ["5", "2", "3"], 1: ["3", "3", "0"], 2: ["4", "-", "4"]}, result.stdout


def test_cli_refuses_a_malformed_pair(capsys: pytest.CaptureFixture[str]) -> None:
    from aibot_cli.lag import run
    from aibot_cli.main import build_parser

    assert run(build_parser().parse_args(["lag", "--pair", "no-colon"])) == 2
    assert "TOPIC:GROUP" in capsys.readouterr().err


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


async def test_exporter_serves_the_figures_as_metrics(backlog: Backlog) -> None:
    port = free_port()
    process = subprocess.Popen(
        [AI_BOT, "lag", "--serve", str(port), "--pair", backlog.pair, "--interval", "1"],
        env=backlog.env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        samples: dict = {}
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                try:
                    if (await client.get("/readyz")).status_code == 200:
                        samples = _samples((await client.get("/metrics")).text)
                        break
                except httpx.TransportError:
                    pass
                assert process.poll() is None, "the exporter exited"
                await asyncio.sleep(0.3)
        assert samples, "the exporter never became ready"
        labels = (("group", backlog.group), ("topic", backlog.topic))
        for partition, lag in EXPECTED.items():
            key = ("aibot_consumer_lag", (*labels[:1], ("partition", str(partition)), labels[1]))
            assert samples[key] == lag
        assert samples[("aibot_consumer_group_lag", labels)] == 7
        assert samples[("aibot_consumer_group_members", (("group", backlog.group),))] == 0
        assert samples[("aibot_consumer_group_no_consumer", (("group", backlog.group),))] == 1
        assert samples[("aibot_lag_last_refresh_timestamp_seconds", ())] > time.time() - 60
    finally:
        process.terminate()
        output = process.communicate(timeout=20)[0].decode(errors="replace")
    assert "Traceback" not in output, output


async def test_watch_shows_the_lag_growing_while_the_group_is_down(backlog: Backlog) -> None:
    """Last in this module: it adds records to the backlog."""
    child = pexpect.spawn(
        AI_BOT,
        ["lag", "--watch", "--interval", "0.5", "--pair", backlog.pair],
        env=backlog.env(),
        dimensions=(30, 160),
        encoding="utf-8",
        timeout=30,
    )
    try:
        await asyncio.to_thread(child.expect, r"7 records waiting")
        producer = AIOKafkaProducer(**connection_kwargs(backlog.kafka))
        await producer.start()
        try:
            # Both in one batch, so no refresh can fall between them and split the +2.
            await asyncio.gather(*[await producer.send(backlog.topic, b"more", partition=0) for _ in range(2)])
        finally:
            await producer.stop()
        await asyncio.to_thread(child.expect, r"9 records waiting")
        # The change column shows the growth since the last refresh.
        await asyncio.to_thread(child.expect, re.escape("+2"))
    finally:
        child.sendintr()
        child.expect(pexpect.EOF, timeout=15)
        child.close()
    assert child.exitstatus == 0, child.before
    async with LagReader(backlog.kafka, [(backlog.topic, backlog.group)]) as reader:
        group = (await reader.read()).group(backlog.topic, backlog.group)
    assert {p.partition: p.lag for p in group.partitions} == {**EXPECTED, 0: 5}
