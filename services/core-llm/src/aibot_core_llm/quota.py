"""Quotas counted cluster-wide: messages per minute and tokens per UTC day, per user and per chat.

Why not in the conversation state: a user talks in many chats (a private chat and several groups)
whose partitions belong to different replicas, so no one replica's table sees all of their usage.
Instead every replica keeps a grow-only counter (a G-counter): in the topic `aibot.access.usage.v1`
it writes only its own keys, `<identity>|<bucket>|<replica id>` -> its running totals, and it reads
everyone's keys; a total is the sum over replicas. No two replicas ever write the same key, so no
increment is lost to a race, and every replica sees the others' counts within a fetch wait. A
restarted replica starts a new id: its earlier counts stay in the topic and keep counting.

Buckets are `d<YYYY-MM-DD>` (tokens and messages of a UTC day) and `m<YYYY-MM-DDTHH:MM>` (messages
of a minute, for the rate). The topic deletes records after two days.

A message is counted once its answer is produced; a crash between counting and the commit counts
a re-delivered message twice — the counter errs on the side of the model budget.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from aiokafka import AIOKafkaProducer

from aibot_common import telemetry
from aibot_common.access import Role, TopicFollower, topic_record
from aibot_common.kafka import send_all
from aibot_common.settings import AccessSettings, KafkaSettings, QuotaLimits
from aibot_common.topics import ACCESS_USAGE


def day_bucket(now: datetime) -> str:
    return "d" + now.strftime("%Y-%m-%d")


def minute_bucket(now: datetime) -> str:
    return "m" + now.strftime("%Y-%m-%dT%H:%M")


@dataclass(frozen=True)
class Usage:
    messages: int = 0
    tokens: int = 0


@dataclass(frozen=True)
class Exceeded:
    scope: str  # "user" or "chat"
    limit: str  # "rate" or "tokens"
    allowed: int  # the limit that was reached

    def text(self) -> str:
        whose = "your" if self.scope == "user" else "this chat's"
        if self.limit == "rate":
            return (
                f"You are sending messages faster than {whose} limit of {self.allowed} a minute. "
                "Please wait a minute and try again."
            )
        return (
            f"{whose.capitalize()} daily budget of {self.allowed} tokens is used up. "
            "It renews at 00:00 UTC; an administrator can raise it."
        )


class UsageCounter:
    def __init__(self, kafka: KafkaSettings, producer: AIOKafkaProducer | None, client_id: str) -> None:
        self.replica = uuid.uuid4().hex[:12]
        self._producer = producer
        # "<identity>|<bucket>" -> replica -> usage: every replica's contribution, summed on read.
        self._counts: dict[str, dict[str, Usage]] = defaultdict(dict)
        self.follower = TopicFollower(ACCESS_USAGE, kafka, f"{client_id}-usage", self.apply)

    def apply(self, key: str, value: dict[str, Any] | None) -> None:
        identity_bucket, _, replica = key.rpartition("|")
        if not identity_bucket:
            return
        if value is None:
            self._counts[identity_bucket].pop(replica, None)
        else:
            self._counts[identity_bucket][replica] = Usage(int(value.get("messages", 0)), int(value.get("tokens", 0)))

    def total(self, identity: str, bucket: str) -> Usage:
        parts = self._counts.get(f"{identity}|{bucket}", {}).values()
        return Usage(sum(u.messages for u in parts), sum(u.tokens for u in parts))

    def today(self, identity: str, now: datetime | None = None) -> Usage:
        return self.total(identity, day_bucket(now or datetime.now(UTC)))

    def identities(self, now: datetime | None = None) -> dict[str, Usage]:
        """Everyone's usage today: identity -> usage (for /stats and the admin API)."""
        bucket = day_bucket(now or datetime.now(UTC))
        found = {key.rsplit("|", 1)[0] for key in self._counts if key.endswith(f"|{bucket}")}
        return {identity: self.total(identity, bucket) for identity in sorted(found)}

    async def add(self, identities: list[str], tokens: int, now: datetime | None = None) -> None:
        """Count one message and its tokens for each identity (the user, the chat)."""
        at = now or datetime.now(UTC)
        records = []
        for identity in identities:
            for bucket in (day_bucket(at), minute_bucket(at)):
                mine = self._counts[f"{identity}|{bucket}"].get(self.replica, Usage())
                updated = Usage(mine.messages + 1, mine.tokens + tokens)
                key = f"{identity}|{bucket}|{self.replica}"
                records.append((key, updated))
        if self._producer is not None:
            await send_all(
                self._producer,
                [topic_record(ACCESS_USAGE, key, {"messages": u.messages, "tokens": u.tokens}) for key, u in records],
            )
        for key, usage in records:
            self.apply(key, {"messages": usage.messages, "tokens": usage.tokens})

    def check(
        self, settings: AccessSettings, role: Role, user: str | None, chat: str, now: datetime | None = None
    ) -> Exceeded | None:
        """The first quota this message would exceed, or None."""
        at = now or datetime.now(UTC)
        checks: list[tuple[str, str | None, QuotaLimits | None]] = [
            ("user", user, settings.quotas.get(role.value)),  # type: ignore[call-overload]
            ("chat", chat, settings.quotas.get("chat")),
        ]
        for scope, identity, limits in checks:
            if identity is None or limits is None:
                continue
            rate = limits.messages_per_minute
            if rate is not None and self.total(identity, minute_bucket(at)).messages >= rate:
                return _exceeded(scope, "rate", rate)
            budget = limits.tokens_per_day
            if budget is not None and self.total(identity, day_bucket(at)).tokens >= budget:
                return _exceeded(scope, "tokens", budget)
        return None


def _exceeded(scope: str, limit: str, allowed: int) -> Exceeded:
    telemetry.QUOTA_EXCEEDED.labels(scope=scope, limit=limit).inc()
    return Exceeded(scope, limit, allowed)
