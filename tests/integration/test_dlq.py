"""`ai-bot dlq` against the real broker: list and filter dead letters, show one, replay them to their
source topic with the original key, value and trace context."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest

from aibot_common.errors import InvalidMessage, Retryable
from aibot_common.kafka import dead_letter, ensure_topics, header, make_producer, send_all
from aibot_common.settings import KafkaSettings
from aibot_common.topics import DEAD_LETTERS, Topic
from tests.kafka_helpers import read_topic

pytestmark = pytest.mark.integration

AI_BOT = str(Path(sys.executable).parent / "ai-bot")


def _traceparent(n: int) -> bytes:
    return f"00-{n:032x}-{n:016x}-01".encode()


async def _cli(bootstrap: str, *args: str) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(
        subprocess.run,
        [AI_BOT, "dlq", *args],
        env={**os.environ, "AIBOT_KAFKA__BOOTSTRAP_SERVERS": bootstrap},
        capture_output=True,
        text=True,
        timeout=60,
    )


async def test_list_show_and_replay(kafka_bootstrap: str, unique: str) -> None:
    kafka = KafkaSettings(bootstrap_servers=kafka_bootstrap, partitions=3)
    source_a, source_b = f"src-a-{unique}", f"src-b-{unique}"
    sources = [Topic(name=t, description="t", producers=(), consumers=()) for t in (source_a, source_b)]
    await ensure_topics(kafka, [*sources, DEAD_LETTERS])
    filed = [
        (source_a, b"telegram:1", b'{"not": "an envelope"}', InvalidMessage("x"), "not a valid envelope: 3 errors"),
        (source_a, b"telegram:2", b"\xff\xfe raw", Retryable("503"), "gave up after 5 attempts: model answered 503"),
        (source_b, b"telegram:3", b'{"b": 1}', InvalidMessage("y"), "poison audio"),
    ]
    producer = make_producer(kafka, "test")
    await producer.start()
    try:
        records = []
        for n, (topic, key, value, error, reason) in enumerate(filed, start=1):
            record = dead_letter(topic, n % 3, 100 + n, key, value, error, reason)
            record.headers.append(("traceparent", _traceparent(n)))  # as the runner copies the input's
            records.append(record)
        await send_all(producer, records)
    finally:
        await producer.stop()

    listed = await _cli(kafka_bootstrap, "list", "--source", source_a)
    assert listed.returncode == 0, listed.stderr
    assert "2 dead letters" in listed.stdout
    assert "telegram:1" in listed.stdout and "telegram:2" in listed.stdout and "telegram:3" not in listed.stdout
    assert f"{source_a}[1]@101" in listed.stdout

    by_reason = await _cli(kafka_bootstrap, "list", "--source", source_a, "--reason", "503")
    assert "1 dead letters" in by_reason.stdout and "telegram:2" in by_reason.stdout
    by_type = await _cli(kafka_bootstrap, "list", "--source", source_b, "--reason", "invalidmessage")
    assert "1 dead letters" in by_type.stdout
    too_old = await _cli(kafka_bootstrap, "list", "--source", source_a, "--until", "1h")
    assert "0 dead letters" in too_old.stdout
    recent = await _cli(kafka_bootstrap, "list", "--source", source_a, "--since", "10m")
    assert "2 dead letters" in recent.stdout

    letter_id = next(line.split()[0] for line in listed.stdout.splitlines() if "telegram:1" in line)
    shown = await _cli(kafka_bootstrap, "show", letter_id)
    assert shown.returncode == 0, shown.stderr
    assert "not a valid envelope: 3 errors" in shown.stdout and '"not": "an envelope"' in shown.stdout
    assert (await _cli(kafka_bootstrap, "show", "0:999999999")).returncode == 1

    refused = await _cli(kafka_bootstrap, "replay")
    assert refused.returncode == 2 and "--all" in refused.stdout
    dry = await _cli(kafka_bootstrap, "replay", "--source", source_a, "--dry-run")
    assert "nothing replayed" in dry.stdout
    assert await read_topic(kafka_bootstrap, source_a) == []

    replayed = await _cli(kafka_bootstrap, "replay", "--source", source_a)
    assert replayed.returncode == 0, replayed.stderr
    assert f"replayed 2 dead letters to {source_a}" in replayed.stdout
    back = await read_topic(kafka_bootstrap, source_a, until=lambda r: len(r) >= 2)
    got = {(r.key, r.value, header(r.headers, "traceparent")) for r in back}
    assert got == {(key, value, _traceparent(n).decode()) for n, (_, key, value, _, _) in enumerate(filed[:2], 1)}
    assert all((header(r.headers, "dlq-replay-of") or "").startswith(DEAD_LETTERS.name) for r in back)
    assert await read_topic(kafka_bootstrap, source_b) == []  # filtered out, not replayed
