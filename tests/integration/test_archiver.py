"""The archive stage against a real broker and real storage (a local folder, moto's S3 server):
every record archived, masked, date-partitioned; a kill -9 mid-volume loses nothing, and after
dedupe by envelope id nothing is doubled."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from aibot_common.archive import decode_volume, dedupe
from aibot_common.envelope import Conversation, Envelope, Kind, Platform, Sender, TextPart
from aibot_common.kafka import OutRecord, ensure_topics, make_producer, send_all
from aibot_common.settings import KafkaSettings, StorageSettings
from aibot_common.storage import Storage
from aibot_common.topics import Topic
from tests.storage_helpers import moto_s3, s3_settings

pytestmark = pytest.mark.integration

# The archiver's own code (`aibot_archiver.app.archiving`), on test topics and a test group, as a
# separate process so the test can kill -9 it.
_ARCHIVER = """
import asyncio, json, sys
from aibot_archiver.app import archiving
from aibot_common.service import prepare

async def main():
    settings = prepare("archiver")
    async with archiving(settings, topics=json.loads(sys.argv[1]), group_id=sys.argv[2]):
        await asyncio.Event().wait()

asyncio.run(main())
"""


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    with moto_s3() as endpoint:
        yield endpoint


@pytest.fixture(params=["local", "s3"])
def storage_settings(request: pytest.FixtureRequest, tmp_path: Path, unique: str) -> StorageSettings:
    if request.param == "local":
        return StorageSettings(backend="local", path=str(tmp_path / "archive-store"))
    return s3_settings(request.getfixturevalue("s3_endpoint"), f"archive-{unique}")


def _storage_env(settings: StorageSettings) -> dict[str, str]:
    env = {"AIBOT_STORAGE__BACKEND": settings.backend, "AIBOT_STORAGE__PATH": settings.path}
    if settings.backend == "s3":
        env |= {
            "AIBOT_STORAGE__BUCKET": settings.bucket or "",
            "AIBOT_STORAGE__ENDPOINT": settings.endpoint or "",
            "AIBOT_STORAGE__REGION": settings.region or "",
            # From the environment, as a Kubernetes Secret would give them.
            "AWS_ACCESS_KEY_ID": "testing-key",
            "AWS_SECRET_ACCESS_KEY": "testing-secret",
        }
    return env


def _start(bootstrap: str, storage: StorageSettings, topics: list[str], group: str, max_seconds: float, log: Path):
    env = {
        **os.environ,
        **_storage_env(storage),
        "AIBOT_KAFKA__BOOTSTRAP_SERVERS": bootstrap,
        "AIBOT_ARCHIVE__VOLUME_MAX_RECORDS": "50",
        "AIBOT_ARCHIVE__VOLUME_MAX_SECONDS": str(max_seconds),
        "AIBOT_OBSERVABILITY__LOG_FORMAT": "text",
    }
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-c", _ARCHIVER, json.dumps(topics), group], env=env, stdout=out, stderr=out
        )


def _envelope(n: int, kind: Kind) -> Envelope:
    platform = Platform.TELEGRAM if n % 3 else Platform.FEISHU
    return Envelope(
        id=f"arch-{kind.value}-{n}",
        kind=kind,
        conversation=Conversation(platform=platform, chat_id=str(1000 + n % 7)),
        sender=Sender(id=str(n % 11), display_name="Ann"),
        # Personal data in the text: the archive must hold it masked, as the logs do.
        parts=[TextPart(text=f"message {n}: write to ann.lee@example.com or call +44 20 7946 0958")],
        created_at=datetime(2026, 5, 1 + n % 2, 12, 0, tzinfo=UTC),
    )


async def _produce(bootstrap: str, records: list[OutRecord]) -> None:
    producer = make_producer(KafkaSettings(bootstrap_servers=bootstrap), "test-archive")
    await producer.start()
    try:
        await send_all(producer, records)
    finally:
        await producer.stop()


async def _archived(storage: Storage) -> list[dict]:
    lines: list[dict] = []
    for obj in await storage.list("archive/"):
        lines.extend(decode_volume(await storage.get(obj.key)))
    return lines


async def _wait_for(storage: Storage, condition, timeout_s: float = 90.0) -> list[dict]:
    deadline = time.monotonic() + timeout_s
    while True:
        lines = await _archived(storage)
        if condition(lines) or time.monotonic() > deadline:
            return lines
        await asyncio.sleep(0.5)


async def test_kill_9_mid_volume_loses_nothing_and_dedupe_doubles_nothing(
    kafka_bootstrap: str, storage_settings: StorageSettings, unique: str, tmp_path: Path
) -> None:
    inbound = Topic(name=f"archive-in-{unique}", description="t", producers=(), consumers=())
    replies = Topic(name=f"archive-replies-{unique}", description="t", producers=(), consumers=())
    kafka = KafkaSettings(bootstrap_servers=kafka_bootstrap, partitions=3)
    await ensure_topics(kafka, [inbound, replies])
    group = f"archiver-{unique}"
    storage = Storage(storage_settings)
    log = tmp_path / "archiver.log"

    first = [_envelope(n, Kind.MESSAGE) for n in range(90)] + [_envelope(n, Kind.REPLY) for n in range(40)]
    await _produce(kafka_bootstrap, [OutRecord.of(inbound if e.kind is Kind.MESSAGE else replies, e) for e in first])

    # Volumes close at 50 records, or after 600 s: the first volumes are written, the rest of the
    # records wait in an open volume, uncommitted, when the process is killed.
    archiver = _start(kafka_bootstrap, storage_settings, [inbound.name, replies.name], group, 600, log)
    try:
        lines = await _wait_for(storage, lambda got: len(got) >= 50)
        assert len({r["id"] for r in lines}) >= 50, log.read_text()
        assert len({r["id"] for r in lines}) < len(first), "nothing was left in an open volume to kill"
        await asyncio.sleep(1.0)
    finally:
        archiver.send_signal(signal.SIGKILL)
        archiver.wait(10)

    second = [_envelope(n, Kind.MESSAGE) for n in range(90, 120)]
    await _produce(kafka_bootstrap, [OutRecord.of(inbound, e) for e in second])
    truth = {e.id for e in first + second}

    archiver = _start(kafka_bootstrap, storage_settings, [inbound.name, replies.name], group, 1, log)
    try:
        lines = await _wait_for(storage, lambda got: {r["id"] for r in got} >= truth)
    finally:
        archiver.send_signal(signal.SIGTERM)
        archiver.wait(30)

    ids = {r["id"] for r in lines}
    assert truth - ids == set(), f"lost {sorted(truth - ids)[:5]}: {log.read_text()[-2000:]}"

    # The worst re-delivery: every volume written, no offset committed (as if each crash came between
    # the write and the commit). A group with no committed offset reads from the start, so the
    # archiver writes it all again, in volumes cut differently: copies on disk, each envelope once
    # after dedupe.
    archiver = _start(kafka_bootstrap, storage_settings, [inbound.name, replies.name], f"{group}-again", 1, log)
    try:
        lines = await _wait_for(storage, lambda got: len(got) >= 2 * len(truth) - 50)
    finally:
        archiver.send_signal(signal.SIGTERM)
        archiver.wait(30)
    assert len(lines) > len(truth), "the rewind wrote no copies: the dedupe below would prove nothing"
    ids = {r["id"] for r in lines}
    assert ids - truth == set()
    unique_lines = dedupe(lines)
    assert len(unique_lines) == len(truth)
    assert sorted(r["id"] for r in unique_lines) == sorted(truth)

    # Masked as the logs are, and partitioned by the envelope's day and platform.
    sample = next(r for r in unique_lines if r["id"] == "arch-message-4")
    assert sample["text"] == "message 4: write to [email] or call [phone]"
    assert sample["conversation"] == "telegram:1004"
    assert sample["source"]["topic"] == inbound.name
    keys = [o.key for o in await storage.list("archive/")]
    assert all(k.startswith(("archive/date=2026-05-01/", "archive/date=2026-05-02/")) for k in keys), keys
    assert all("/platform=telegram/part-" in k or "/platform=feishu/part-" in k for k in keys), keys
    assert all(k.endswith(".jsonl.gz") for k in keys)
    for key in keys:
        day, platform = key.split("/")[1][5:], key.split("/")[2][9:]
        assert all(
            r["created_at"][:10] == day and r["platform"] == platform for r in decode_volume(await storage.get(key))
        )

    # `ai-bot archive ls|get` finds the day's conversations, each record once.
    env = {**os.environ, **_storage_env(storage_settings)}
    listing = subprocess.run(
        [str(Path(sys.executable).parent / "ai-bot"), "archive", "ls"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert listing.returncode == 0, listing.stderr
    assert "2026-05-01" in listing.stdout and "2026-05-02" in listing.stdout
    got = subprocess.run(
        [
            str(Path(sys.executable).parent / "ai-bot"),
            "archive",
            "get",
            "--date",
            "2026-05-01",
            "--platform",
            "telegram",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert got.returncode == 0, got.stderr
    printed = [json.loads(line) for line in got.stdout.splitlines()]
    expected = {
        e.id
        for e in first + second
        if e.created_at.date().isoformat() == "2026-05-01" and e.conversation.platform is Platform.TELEGRAM
    }
    # Every record of the day was created at 12:00: dedupe orders them by id.
    assert [r["id"] for r in printed] == sorted(expected)
    assert f"{len(expected)} records" in got.stderr
