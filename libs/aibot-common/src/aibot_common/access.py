"""Access control: roles, bindings, policy and pairing, kept in one compacted Kafka topic.

Why a topic and not a table per partition (like `state.py`): every replica must answer "may this
user talk, with which role?" for every conversation, so every replica reads the whole topic (one
partition, no consumer group) into an `AccessState`, from the beginning at start-up and then as
records arrive. A change made through any replica (a chat command, the admin API, the CLI) is
produced there, acknowledged, applied at once by the writer and within a fetch wait by the rest,
and survives restarts because the topic is compacted: the last record of each key is kept.

Keys (the value is JSON; a tombstone deletes):

| key | value |
| --- | --- |
| `binding/<subject>/<chat or *>` | `{"role": "admin"|"developer"|"user"|null}` (null: revoked, even a seeded one) |
| `policy/<platform>/<private|group>` | `{"mode": "open"|"allowlist"|"pairing"}` |
| `pairing/<code>` | a pending pairing request (subject, conversation, expiry) |
| `notice/<conversation>/<subject>` | this refused subject has been told once (not again) |
| `chat/<conversation>` | `{"model": ..., "system_prompt": ...}` set by a developer |
| `default/model` | `{"model": ...}`: the default model for every chat |
| `token/<sha256 of the token>` | an admin API token's role (the token itself is never stored) |
| `audit/<time>/<id>` | who changed what, when: one record per change, never overwritten |

The config file's `access:` block is the seed: its policy and bindings hold until a record of the
same key overrides them, so a fresh cluster works without writing anything, and an operator's later
change (grant, revoke, policy) wins over the file and survives restarts.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import secrets
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Literal

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError

from aibot_common.envelope import ChatType, Envelope
from aibot_common.kafka import OutRecord, make_consumer, send_all
from aibot_common.settings import AccessSettings, KafkaSettings
from aibot_common.state import read_to_end
from aibot_common.topics import ACCESS, ACCESS_USAGE, Topic

log = logging.getLogger(__name__)

Mode = Literal["open", "allowlist", "pairing"]
MODES: tuple[str, ...] = ("open", "allowlist", "pairing")
AUDIT_KEPT = 1000  # audit entries held in memory for /v1/audit; the topic keeps them all
CODE_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"  # no 0/O, 1/I: codes are read out and typed


class Role(StrEnum):
    USER = "user"
    DEVELOPER = "developer"
    ADMIN = "admin"

    @property
    def rank(self) -> int:
        return _RANK[self]

    def implies(self, other: Role) -> bool:
        """admin > developer > user: a role includes every role below it."""
        return self.rank >= other.rank


_RANK = {Role.USER: 1, Role.DEVELOPER: 2, Role.ADMIN: 3}


def user_subject(envelope: Envelope) -> str | None:
    """The sender's identity: `telegram:<user id>`, `feishu:<open_id>`."""
    if envelope.sender is None or not envelope.sender.id:
        return None
    return f"{envelope.conversation.platform.value}:{envelope.sender.id}"


def chat_subject(conversation_key: str) -> str:
    """A whole chat as a subject of bindings: `chat:telegram:-100123`."""
    return f"chat:{conversation_key}"


def valid_subject(subject: str) -> bool:
    parts = subject.split(":")
    if parts[0] == "chat":
        return len(parts) >= 3 and parts[1] in ("telegram", "feishu") and all(parts[2:])
    return len(parts) == 2 and parts[0] in ("telegram", "feishu") and bool(parts[1])


def hash_token(token: str) -> str:
    # Tokens are 32 random bytes: a plain SHA-256 cannot be brute-forced, and it lets the API look
    # a presented token up by its hash without ever storing the token.
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    return "aibot_" + secrets.token_urlsafe(32)


def new_pairing_code() -> str:
    return "".join(secrets.choice(CODE_ALPHABET) for _ in range(8))


def _now() -> float:
    return time.time()


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds")


@dataclass(frozen=True)
class Decision:
    """What the access policy says about one message."""

    allowed: bool
    role: Role | None = None  # the sender's effective role here (None when refused)
    bound: bool = False  # the role comes from a binding (not only from an open policy)
    reason: str = ""  # why refused: "allowlist", "pairing", "group"


@dataclass
class AccessState:
    """The access topic as a table, over the config file's seed. Pure: no Kafka here."""

    seed: AccessSettings = field(default_factory=AccessSettings)
    records: dict[str, dict[str, Any]] = field(default_factory=dict)
    audit: list[dict[str, Any]] = field(default_factory=list)

    # ------------------------------------------------------------ updates

    # The bindings in force, worked out again only after a binding record changed: decide() runs
    # for every message, the records change rarely.
    _bindings: dict[tuple[str, str | None], Role] | None = field(default=None, repr=False)

    def apply(self, key: str, value: dict[str, Any] | None) -> None:
        if key.startswith("binding/"):
            self._bindings = None
        if key.startswith("audit/"):
            if value is not None:
                self.audit.append(value)
                del self.audit[:-AUDIT_KEPT]
            return
        if value is None:
            self.records.pop(key, None)
        else:
            self.records[key] = value

    def reseed(self, seed: AccessSettings) -> None:
        """The config file read again (`/reload`): its block under the records from now on."""
        self.seed = seed
        self._bindings = None

    # ------------------------------------------------------------ queries

    def mode(self, platform: str, chat_type: ChatType) -> Mode:
        stored = self.records.get(f"policy/{platform}/{chat_type.value}")
        if stored is not None:
            return stored["mode"]
        seeded = self.seed.policy.get(platform)  # type: ignore[call-overload]
        return getattr(seeded, chat_type.value) if seeded is not None else "open"

    def bindings(self) -> dict[tuple[str, str | None], Role]:
        """Every binding in force: (subject, chat or None) -> role; revocations applied."""
        if self._bindings is None:
            self._bindings = self._work_out_bindings()
        return dict(self._bindings)

    def _work_out_bindings(self) -> dict[tuple[str, str | None], Role]:
        found: dict[tuple[str, str | None], Role] = {(b.subject, b.chat): Role(b.role) for b in self.seed.bindings}
        for key, value in self.records.items():
            if key.startswith("binding/"):
                subject, scope = key[len("binding/") :].rsplit("/", 1)
                chat = None if scope == "*" else scope
                if value.get("role"):
                    found[(subject, chat)] = Role(value["role"])
                else:
                    found.pop((subject, chat), None)
        return found

    def bound_role(self, subject: str | None, conversation: str) -> Role | None:
        """The highest role bound to the subject everywhere or in this conversation."""
        if subject is None:
            return None
        bindings = self.bindings()
        roles = [bindings.get((subject, None)), bindings.get((subject, conversation))]
        present = [r for r in roles if r is not None]
        return max(present, key=lambda r: r.rank) if present else None

    def chat_role(self, conversation: str) -> Role | None:
        return self.bindings().get((chat_subject(conversation), None))

    def decide(self, envelope: Envelope) -> Decision:
        """May this message reach the model, and with which role? A group is served when its policy
        is open or the chat itself is bound; inside it, `group_members` says whether any member
        speaks with the chat's role or only users bound themselves."""
        platform = envelope.conversation.platform.value
        conversation = envelope.key
        subject = user_subject(envelope)
        mine = self.bound_role(subject, conversation)
        mode = self.mode(platform, envelope.conversation.chat_type)
        if envelope.conversation.chat_type is ChatType.PRIVATE:
            if mine is not None:
                return Decision(True, mine, bound=True)
            if mode == "open":
                return Decision(True, Role.USER)
            return Decision(False, reason=mode)
        chat = self.chat_role(conversation)
        served = mode == "open" or chat is not None
        if not served:
            # A user bound everywhere (an admin) may still talk in a group the bot does not serve.
            return Decision(True, mine, bound=True) if mine is not None else Decision(False, reason="group")
        if mine is not None:
            return Decision(True, max(mine, chat or Role.USER, key=lambda r: r.rank), bound=True)
        if self.seed.group_members == "bound":
            return Decision(False, reason="group")
        return Decision(True, chat or Role.USER, bound=False)

    def noticed(self, conversation: str, subject: str) -> dict[str, Any] | None:
        return self.records.get(f"notice/{conversation}/{subject}")

    def pairings(self, now: float | None = None) -> dict[str, dict[str, Any]]:
        """Pending pairing requests by code, expired ones left out."""
        at = _now() if now is None else now
        return {
            key[len("pairing/") :]: value
            for key, value in self.records.items()
            if key.startswith("pairing/") and value.get("expires_at", 0) > at
        }

    def chat_settings(self, conversation: str) -> dict[str, Any]:
        return self.records.get(f"chat/{conversation}", {})

    def default_model(self) -> str | None:
        return self.records.get("default/model", {}).get("model")

    def token_role(self, token: str) -> Role | None:
        stored = self.records.get(f"token/{hash_token(token)}")
        if stored is None or stored.get("revoked"):
            return None
        return Role(stored["role"])


# ---------------------------------------------------------------- changes (what is written)


def binding_key(subject: str, chat: str | None) -> str:
    return f"binding/{subject}/{chat or '*'}"


@dataclass(frozen=True)
class Change:
    """One audited change: the records it writes and what the audit trail says about it."""

    actor: str  # who: "telegram:123", "token:ops", "cli:alice", "pairing"
    action: str  # what: "grant", "revoke", "approve", "policy", "model", "system", "token", "notice"
    target: str  # on what: a subject, a code, a conversation
    records: tuple[tuple[str, dict[str, Any] | None], ...]
    detail: dict[str, Any] = field(default_factory=dict)
    audited: bool = True  # notices and pairing requests are bookkeeping, not operator changes

    def all_records(self, at: float) -> list[tuple[str, dict[str, Any] | None]]:
        out = list(self.records)
        if self.audited:
            entry = {
                "at": _iso(at),
                "actor": self.actor,
                "action": self.action,
                "target": self.target,
                "detail": self.detail,
            }
            out.append((f"audit/{_iso(at)}/{uuid.uuid4().hex[:12]}", entry))
        return out


def grant(actor: str, subject: str, role: Role, chat: str | None = None) -> Change:
    value = {"role": role.value, "by": actor, "at": _iso(_now())}
    return Change(
        actor,
        "grant",
        subject,
        ((binding_key(subject, chat), value),),
        {"role": role.value, "chat": chat},
    )


def revoke(actor: str, subject: str, chat: str | None = None) -> Change:
    # Not a tombstone: a null role also overrides a binding seeded from the config file.
    value = {"role": None, "by": actor, "at": _iso(_now())}
    return Change(actor, "revoke", subject, ((binding_key(subject, chat), value),), {"chat": chat})


def approve(actor: str, code: str, request: dict[str, Any]) -> Change:
    subject = request["subject"]
    value = {"role": Role.USER.value, "by": actor, "at": _iso(_now())}
    return Change(
        actor,
        "approve",
        subject,
        (
            (binding_key(subject, None), value),
            (f"pairing/{code}", None),
            (f"notice/{request['conversation']}/{subject}", None),
        ),
        {"code": code},
    )


def reject(actor: str, code: str) -> Change:
    return Change(actor, "reject", code, ((f"pairing/{code}", None),))


def set_policy(actor: str, platform: str, chat_type: str, mode: str) -> Change:
    key = f"policy/{platform}/{chat_type}"
    return Change(actor, "policy", f"{platform}/{chat_type}", ((key, {"mode": mode}),), {"mode": mode})


def set_chat(actor: str, conversation: str, current: dict[str, Any], **changes: str | None) -> Change:
    value = {**current, **changes}
    value = {k: v for k, v in value.items() if v is not None}
    action = "model" if "model" in changes else "system"
    return Change(actor, action, conversation, ((f"chat/{conversation}", value or None),), dict(changes))


def set_default_model(actor: str, model: str) -> Change:
    return Change(actor, "model", "default", (("default/model", {"model": model}),), {"model": model})


def reload_changes(actor: str, old: AccessSettings, new: AccessSettings) -> list[Change]:
    """What changed in the config file's access block since it was read, as audited changes on the
    topic, so every replica (each seeded from its own copy of the file) applies the edit at once:
    bindings added or given another role are granted, bindings removed are revoked, policies set."""
    before = {(b.subject, b.chat): Role(b.role) for b in old.bindings}
    after = {(b.subject, b.chat): Role(b.role) for b in new.bindings}
    changes = [grant(actor, s, role, chat) for (s, chat), role in after.items() if before.get((s, chat)) != role]
    changes += [revoke(actor, s, chat) for (s, chat) in before.keys() - after.keys()]
    for platform in ("telegram", "feishu"):
        for chat_type in ("private", "group"):
            was, now = (getattr(c.policy.get(platform), chat_type, "open") for c in (old, new))  # type: ignore[call-overload]
            if was != now:
                changes.append(set_policy(actor, platform, chat_type, now))
    return changes


def create_token(actor: str, token: str, role: Role, name: str) -> Change:
    value = {"role": role.value, "name": name, "created_at": _iso(_now()), "by": actor}
    return Change(actor, "token", name, ((f"token/{hash_token(token)}", value),), {"role": role.value})


def revoke_token(actor: str, token_hash: str, name: str) -> Change:
    """Revoke an API token by its stored hash (the token itself is not known after creation)."""
    value = {"revoked": True, "name": name, "by": actor, "at": _iso(_now())}
    return Change(actor, "token-revoke", name, ((f"token/{token_hash}", value),))


def notice(conversation: str, subject: str, envelope_id: str, code: str | None, ttl_s: int) -> Change:
    """Remember that a refused subject was told (and, in pairing mode, its pending request)."""
    now = _now()
    records: list[tuple[str, dict[str, Any] | None]] = [
        (f"notice/{conversation}/{subject}", {"at": _iso(now), "envelope_id": envelope_id, "code": code})
    ]
    if code is not None:
        request = {"subject": subject, "conversation": conversation, "created_at": now, "expires_at": now + ttl_s}
        records.append((f"pairing/{code}", request))
    return Change("ai-bot", "pairing" if code else "refused", subject, tuple(records), audited=code is not None)


# ---------------------------------------------------------------- Kafka


def topic_record(topic: Topic, key: str, value: dict[str, Any] | None) -> OutRecord:
    encoded = None if value is None else json.dumps(value, separators=(",", ":")).encode()
    return OutRecord(topic=topic.name, key=key, value=encoded, partition=0)


class TopicFollower:
    """Reads a one-partition topic whole, then follows it: the base of both access views."""

    def __init__(
        self,
        topic: Topic,
        kafka: KafkaSettings,
        client_id: str,
        on_record: Callable[[str, dict[str, Any] | None], None],
    ) -> None:
        self.topic = topic
        self.on_record = on_record
        self._kafka = kafka
        self._client_id = client_id
        self._task: asyncio.Task[None] | None = None
        self._consumer: AIOKafkaConsumer | None = None
        self.ready = asyncio.Event()

    async def start(self) -> None:
        consumer = make_consumer(self._kafka, group_id=None, client_id=self._client_id)
        await consumer.start()
        self._consumer = consumer
        tp = TopicPartition(self.topic.name, 0)
        consumer.assign([tp])
        await consumer.seek_to_beginning(tp)
        count = await read_to_end(consumer, [tp], self._apply)
        log.info("read %d records of %s", count, self.topic.name)
        self.ready.set()
        self._task = asyncio.create_task(self._follow())

    @property
    def healthy(self) -> bool:
        """Read to the end once, and still following (readiness: a stale view must not serve)."""
        return self.ready.is_set() and self._task is not None and not self._task.done()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._consumer is not None:
            await self._consumer.stop()

    def _apply(self, message: Any) -> None:
        if not message.key:
            return
        try:
            value = json.loads(message.value) if message.value is not None else None
        except ValueError:
            log.warning("ignoring an unreadable record %r on %s", message.key, self.topic.name)
            return
        self.on_record(message.key.decode(), value)

    async def _follow(self) -> None:
        assert self._consumer is not None
        while True:
            try:
                batches = await self._consumer.getmany(timeout_ms=1000)
            except KafkaError as exc:
                # The broker is away: keep the state we have and try again (aiokafka reconnects).
                log.warning("following %s failed, retrying: %s", self.topic.name, exc)
                await asyncio.sleep(1.0)
                continue
            for messages in batches.values():
                for message in messages:
                    self._apply(message)


class AccessStore:
    """The access state of this replica, kept up to date from the topic, and the one way to change it."""

    def __init__(
        self, settings: AccessSettings, kafka: KafkaSettings, producer: AIOKafkaProducer, client_id: str
    ) -> None:
        self.state = AccessState(seed=settings)
        self.settings = settings
        self.follower = TopicFollower(ACCESS, kafka, f"{client_id}-access", self.state.apply)
        self._producer = producer

    async def write(self, change: Change) -> None:
        """Produce the change and its audit entry, wait for the broker, then apply it here at once
        (the other replicas apply it from the topic; applying the same record twice is harmless)."""
        records = change.all_records(_now())
        await send_all(self._producer, [topic_record(ACCESS, k, v) for k, v in records])
        for key, value in records:
            self.state.apply(key, value)


async def write_changes(kafka: KafkaSettings, changes: Iterable[Change], client_id: str = "aibot-cli") -> None:
    """For the CLI: write changes straight to the topic (no running service needed)."""
    from aibot_common.kafka import ensure_topics, make_producer

    if kafka.create_topics:
        await ensure_topics(kafka, [ACCESS, ACCESS_USAGE])
    producer = make_producer(kafka, client_id)
    await producer.start()
    try:
        at = _now()
        records = [topic_record(ACCESS, k, v) for change in changes for k, v in change.all_records(at)]
        await send_all(producer, records)
    finally:
        await producer.stop()


async def read_state(kafka: KafkaSettings, settings: AccessSettings) -> AccessState:
    """For the CLI: the access state as the topic holds it now."""
    consumer = make_consumer(kafka, group_id=None, client_id="aibot-cli-access")
    await consumer.start()
    state = AccessState(seed=settings)
    try:
        tp = TopicPartition(ACCESS.name, 0)
        consumer.assign([tp])
        await consumer.seek_to_beginning(tp)

        def apply(message: Any) -> None:
            if message.key:
                state.apply(message.key.decode(), json.loads(message.value) if message.value is not None else None)

        await read_to_end(consumer, [tp], apply)
    finally:
        await consumer.stop()
    return state
