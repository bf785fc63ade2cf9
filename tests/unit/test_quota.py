"""The cluster-wide usage counter: each replica writes only its own keys, every replica sums them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from aibot_common.access import Role
from aibot_common.settings import AccessSettings, KafkaSettings
from aibot_core_llm.quota import UsageCounter, day_bucket


class Relay:
    """Stands in for the topic: what one counter writes, the others read."""

    def __init__(self, *counters: UsageCounter) -> None:
        self.counters = counters

    def sync(self) -> None:
        for source in self.counters:
            for key, per_replica in list(source._counts.items()):
                mine = per_replica.get(source.replica)
                if mine is None:
                    continue
                for other in self.counters:
                    if other is not source:
                        other.apply(f"{key}|{source.replica}", {"messages": mine.messages, "tokens": mine.tokens})


async def test_two_replicas_counts_add_up_and_neither_loses_the_others() -> None:
    a, b = UsageCounter(KafkaSettings(), None, "a"), UsageCounter(KafkaSettings(), None, "b")
    relay = Relay(a, b)
    now = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)
    await a.add(["telegram:1"], 100, now)
    await b.add(["telegram:1"], 50, now)
    await a.add(["telegram:1"], 10, now)
    relay.sync()
    for counter in (a, b):
        assert counter.total("telegram:1", day_bucket(now)).tokens == 160
        assert counter.total("telegram:1", day_bucket(now)).messages == 3
    limits = AccessSettings.model_validate({"quotas": {"user": {"messages_per_minute": 3}}})
    assert b.check(limits, Role.USER, "telegram:1", "chat:telegram:1", now).limit == "rate"
    assert b.check(limits, Role.USER, "telegram:1", "chat:telegram:1", now + timedelta(minutes=1)) is None


async def test_a_new_day_starts_from_zero() -> None:
    counter = UsageCounter(KafkaSettings(), None, "a")
    now = datetime(2026, 12, 4, 23, 59, tzinfo=UTC)
    await counter.add(["telegram:1"], 500, now)
    limits = AccessSettings.model_validate({"quotas": {"user": {"tokens_per_day": 500}}})
    assert counter.check(limits, Role.USER, "telegram:1", "chat:x", now).limit == "tokens"
    assert counter.check(limits, Role.USER, "telegram:1", "chat:x", now + timedelta(minutes=2)) is None


async def test_a_chat_quota_holds_for_everyone_in_it() -> None:
    counter = UsageCounter(KafkaSettings(), None, "a")
    now = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)
    await counter.add(["chat:telegram:-100", "telegram:1"], 10, now)
    await counter.add(["chat:telegram:-100", "telegram:2"], 10, now)
    limits = AccessSettings.model_validate({"quotas": {"chat": {"messages_per_minute": 2}}})
    exceeded = counter.check(limits, Role.ADMIN, "telegram:3", "chat:telegram:-100", now)
    assert exceeded is not None and exceeded.scope == "chat" and "this chat's limit" in exceeded.text()
