"""The access state and quota counters on a real broker: what one replica writes, another sees within
seconds, a restarted replica reads it back, and the CLI's writes land in the same topic."""

from __future__ import annotations

import asyncio
import getpass
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from aibot_common import access
from aibot_common.access import AccessStore, Role, read_state, write_changes
from aibot_common.kafka import ensure_topics, make_producer
from aibot_common.settings import AccessSettings, KafkaSettings
from aibot_common.topics import ACCESS, ACCESS_USAGE
from aibot_core_llm.quota import UsageCounter

pytestmark = pytest.mark.integration

AI_BOT = str(Path(sys.executable).parent / "ai-bot")


async def _eventually(condition, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "not seen in time"
        await asyncio.sleep(0.05)


async def test_a_grant_through_one_replica_is_seen_by_another_and_after_a_restart(
    kafka_bootstrap: str, unique: str
) -> None:
    kafka = KafkaSettings(bootstrap_servers=kafka_bootstrap)
    await ensure_topics(kafka, [ACCESS, ACCESS_USAGE])
    producer = make_producer(kafka, "test-access")
    await producer.start()
    settings = AccessSettings.model_validate({"policy": {"telegram": {"private": "allowlist"}}})
    one, two = (AccessStore(settings, kafka, producer, f"test-{n}") for n in (1, 2))
    subject = f"telegram:{unique}"
    try:
        await one.follower.start()
        await two.follower.start()
        await one.write(access.grant("telegram:admin", subject, Role.DEVELOPER))
        assert one.state.bound_role(subject, subject) is Role.DEVELOPER  # the writer at once
        await _eventually(lambda: two.state.bound_role(subject, subject) is Role.DEVELOPER)
        await two.write(access.revoke("telegram:admin", subject))
        await _eventually(lambda: one.state.bound_role(subject, subject) is None)
        # The CLI writes without a running service; a fresh reader (a restart) sees all of it.
        await write_changes(kafka, [access.grant("cli:test", subject, Role.ADMIN)])
        restarted = await read_state(kafka, settings)
        assert restarted.bound_role(subject, subject) is Role.ADMIN
        audit = [(e["actor"], e["action"]) for e in restarted.audit if e["target"] == subject]
        assert audit == [("telegram:admin", "grant"), ("telegram:admin", "revoke"), ("cli:test", "grant")]
    finally:
        await one.follower.stop()
        await two.follower.stop()
        await producer.stop()


async def test_usage_counted_by_two_replicas_adds_up_on_both(kafka_bootstrap: str, unique: str) -> None:
    kafka = KafkaSettings(bootstrap_servers=kafka_bootstrap)
    await ensure_topics(kafka, [ACCESS, ACCESS_USAGE])
    producer = make_producer(kafka, "test-usage")
    await producer.start()
    one, two = UsageCounter(kafka, producer, "test-1"), UsageCounter(kafka, producer, "test-2")
    subject = f"telegram:{unique}"
    try:
        await one.follower.start()
        await two.follower.start()
        await one.add([subject], 100)
        await two.add([subject], 40)
        await one.add([subject], 1)
        for counter in (one, two):
            await _eventually(lambda c=counter: c.today(subject).tokens == 141)
            assert counter.today(subject).messages == 3
    finally:
        await one.follower.stop()
        await two.follower.stop()
        await producer.stop()


def _cli(bootstrap: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "AIBOT_KAFKA__BOOTSTRAP_SERVERS": bootstrap}
    return subprocess.run([AI_BOT, "admin", *args], env=env, capture_output=True, text=True, timeout=120)


async def test_the_operator_commands_grant_approve_and_revoke(kafka_bootstrap: str, unique: str) -> None:
    kafka = KafkaSettings(bootstrap_servers=kafka_bootstrap)
    subject, stranger = f"telegram:{unique}", f"telegram:{unique}9"
    granted = await asyncio.to_thread(_cli, kafka_bootstrap, "grant", subject, "developer")
    assert granted.returncode == 0, granted.stderr
    await write_changes(kafka, [access.notice(stranger, stranger, "tg-x", f"C{unique[:7]}".upper(), 3600)])
    listed = await asyncio.to_thread(_cli, kafka_bootstrap, "pairings")
    assert f"C{unique[:7]}".upper() in listed.stdout and stranger in listed.stdout
    approved = await asyncio.to_thread(_cli, kafka_bootstrap, "approve", f"c{unique[:7]}")
    assert approved.returncode == 0 and f"approved: {stranger}" in approved.stdout
    missing = await asyncio.to_thread(_cli, kafka_bootstrap, "approve", "NOSUCHCODE")
    assert missing.returncode == 1 and "no pending pairing request" in missing.stdout
    wrong = await asyncio.to_thread(_cli, kafka_bootstrap, "grant", "slack:1", "admin")
    assert wrong.returncode == 2
    state = await read_state(kafka, AccessSettings())
    assert state.bound_role(subject, subject) is Role.DEVELOPER and state.bound_role(stranger, stranger) is Role.USER
    operator = {e["actor"] for e in state.audit if e["target"] in (subject, stranger) and e["action"] != "pairing"}
    assert operator == {f"cli:{getpass.getuser()}"}
    revoked = await asyncio.to_thread(_cli, kafka_bootstrap, "revoke", subject)
    assert revoked.returncode == 0
    assert (await read_state(kafka, AccessSettings())).bound_role(subject, subject) is None


async def test_a_token_is_created_listed_and_revoked(kafka_bootstrap: str, unique: str) -> None:
    kafka = KafkaSettings(bootstrap_servers=kafka_bootstrap)
    name = f"ops-{unique}"
    created = await asyncio.to_thread(_cli, kafka_bootstrap, "token", "create", "--role", "developer", "--name", name)
    token = created.stdout.strip().splitlines()[-1]
    assert (await read_state(kafka, AccessSettings())).token_role(token) is Role.DEVELOPER
    assert token not in (await asyncio.to_thread(_cli, kafka_bootstrap, "token", "list")).stdout
    assert name in (await asyncio.to_thread(_cli, kafka_bootstrap, "token", "list")).stdout
    revoked = await asyncio.to_thread(_cli, kafka_bootstrap, "token", "revoke", "--name", name)
    assert revoked.returncode == 0, revoked.stdout + revoked.stderr
    assert (await read_state(kafka, AccessSettings())).token_role(token) is None
    assert name not in (await asyncio.to_thread(_cli, kafka_bootstrap, "token", "list")).stdout
