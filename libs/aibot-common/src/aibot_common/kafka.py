"""Kafka plumbing shared by every service: clients, topic creation, serde and headers."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError

from aibot_common import pii, telemetry
from aibot_common.envelope import Envelope
from aibot_common.settings import KafkaSettings
from aibot_common.topics import ALL_TOPICS, DEAD_LETTERS, SINGLE_PARTITION, Topic, route

log = logging.getLogger(__name__)

Headers = list[tuple[str, bytes]]
CONTENT_TYPE = ("content-type", b"application/json")


@dataclass
class OutRecord:
    """One record to produce. `partition` pins changelog records to their input's partition."""

    topic: str
    key: str
    value: bytes | None
    headers: Headers = field(default_factory=list)
    partition: int | None = None

    @classmethod
    def of(cls, topic: Topic | str, envelope: Envelope, headers: Headers | None = None) -> OutRecord:
        name = topic.name if isinstance(topic, Topic) else topic
        base = [CONTENT_TYPE, ("schema-version", str(envelope.schema_version).encode())]
        return cls(topic=name, key=envelope.key, value=envelope.to_bytes(), headers=base + (headers or []))


def connection_kwargs(settings: KafkaSettings) -> dict[str, Any]:
    kwargs: dict[str, Any] = {
        "bootstrap_servers": settings.bootstrap_servers,
        "security_protocol": settings.security_protocol,
    }
    if settings.security_protocol in ("SSL", "SASL_SSL"):
        context = ssl.create_default_context(cafile=settings.ssl_cafile)
        kwargs["ssl_context"] = context
    if settings.sasl_mechanism:
        kwargs["sasl_mechanism"] = settings.sasl_mechanism
        kwargs["sasl_plain_username"] = settings.sasl_username
        kwargs["sasl_plain_password"] = settings.sasl_password.get_secret_value() if settings.sasl_password else None
    return kwargs


def make_producer(settings: KafkaSettings, client_id: str) -> AIOKafkaProducer:
    # acks=all: a write is acknowledged only once every in-sync replica has it, which is what lets
    # the ingress answer the platform 200 without risking loss. Idempotence is left off because
    # it needs InitProducerId, which some Kafka-protocol brokers lack; consumers dedupe by id.
    return AIOKafkaProducer(
        client_id=client_id,
        acks="all",
        linger_ms=2,
        request_timeout_ms=30000,
        max_request_size=4 * 1024 * 1024,
        **connection_kwargs(settings),
    )


def make_consumer(settings: KafkaSettings, group_id: str | None, client_id: str, **extra: Any) -> AIOKafkaConsumer:
    """A consumer with our defaults; `extra` overrides any of them (e.g. a probe's short fetch wait)."""
    options: dict[str, Any] = {
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
        "isolation_level": "read_uncommitted",
        "max_poll_records": 500,
        "fetch_max_wait_ms": settings.fetch_max_wait_ms,
        "session_timeout_ms": 10000,
        # A member learns that a rebalance started from its next heartbeat: once a second, not every 3 s,
        # so a rebalance after a crash or a scale-up waits less for the survivors to rejoin.
        "heartbeat_interval_ms": 1000,
        "rebalance_timeout_ms": 60000,
    }
    return AIOKafkaConsumer(
        group_id=group_id, client_id=client_id, **{**options, **extra}, **connection_kwargs(settings)
    )


async def stop_leaving_group(consumer: AIOKafkaConsumer) -> None:
    """Stop a group member and leave its group at once, static member or not.

    aiokafka, like the Java client, does not send LeaveGroup for a static member (group.instance.id)
    when it stops, so that a restart under the same id finds its partitions waiting. That is right
    after a crash, but a replica stopped on purpose (SIGTERM: a rolling update, a scale-down) may not
    come back under that id, and its partitions would stall for the whole session timeout. Clearing
    the id just before stop() makes aiokafka send the LeaveGroup; the broker then hands the
    partitions over in the next rebalance."""
    coordinator = getattr(consumer, "_coordinator", None)
    if coordinator is not None and getattr(coordinator, "_group_instance_id", None) is not None:
        coordinator._group_instance_id = None
    await consumer.stop()


async def ensure_topics(settings: KafkaSettings, topics: Iterable[Topic] = ALL_TOPICS, attempts: int = 30) -> None:
    """Create the pipeline topics that are missing. Retries while the broker starts up."""
    wanted = list(topics)
    last_error: Exception | None = None
    for attempt in range(attempts):
        admin = AIOKafkaAdminClient(client_id="aibot-admin", **connection_kwargs(settings))
        try:
            await admin.start()
            existing = set(await admin.list_topics())
            missing = [t for t in wanted if t.name not in existing]
            if missing:
                new = [
                    NewTopic(
                        name=t.name,
                        num_partitions=1 if t.name in SINGLE_PARTITION else settings.partitions,
                        replication_factor=settings.replication_factor,
                        topic_configs=t.creation_config(),
                    )
                    for t in missing
                ]
                with contextlib.suppress(TopicAlreadyExistsError):  # another replica won the race
                    await admin.create_topics(new)
                log.info("created topics", extra={"topics": [t.name for t in missing]})
            return
        except (KafkaError, OSError) as exc:
            last_error = exc
            await asyncio.sleep(min(0.2 * (attempt + 1), 2.0))
        finally:
            await admin.close()
    raise RuntimeError(f"could not create topics on {settings.bootstrap_servers}: {last_error}")


async def topic_partitions(admin: AIOKafkaAdminClient, topics: Iterable[str]) -> dict[str, list[int]]:
    """The partition ids of each of `topics` that exists (asked of the broker, not a client's cache:
    Apache Kafka tells a client with no subscription about no topic at all). All topics are asked
    for, never the names themselves, so a missing one is not created by the broker's auto-creation."""
    wanted = set(topics)
    return {
        t["topic"]: sorted(p["partition"] for p in t["partitions"])
        for t in await admin.describe_topics()
        if t["topic"] in wanted and t["error_code"] == 0
    }


async def send_all(producer: AIOKafkaProducer, records: Sequence[OutRecord]) -> None:
    """Produce records and wait until the broker acknowledged every one of them."""
    futures = []
    for record in records:
        headers = record.headers + telemetry.inject_trace_headers()
        futures.append(
            await producer.send(
                record.topic, value=record.value, key=record.key.encode(), headers=headers, partition=record.partition
            )
        )
        telemetry.MESSAGES_PRODUCED.labels(topic=record.topic).inc()
    if futures:
        await asyncio.gather(*futures)


async def publish(producer: AIOKafkaProducer, envelopes: Sequence[Envelope], timeout_s: float) -> None:
    """For the HTTP ingresses: route and produce what a handler emitted, and return only once the
    broker acknowledged all of it (the platform is answered 2xx after this, never before). Raises
    KafkaError or TimeoutError when it cannot: the platform is answered 5xx and sends it again."""
    records = [OutRecord.of(route(envelope), envelope) for envelope in envelopes]
    await asyncio.wait_for(send_all(producer, records), timeout_s)


def dead_letter(
    source_topic: str,
    partition: int,
    offset: int,
    key: bytes | None,
    value: bytes | None,
    error: BaseException,
    reason: str,
) -> OutRecord:
    """A record for the dead-letter topic: the original record with personal data and secrets
    masked (pii.py, as in logs) in its value and in the reason, because dead letters are kept for
    weeks (retention.dead_letter_retention_ms) and read by operators. A replay sends the masked text."""
    if value is not None:
        with contextlib.suppress(UnicodeDecodeError):  # bytes that are not text stay as they came
            value = pii.mask_for_logs(value.decode()).encode()
    reason = pii.mask_for_logs(reason)
    return OutRecord(
        topic=DEAD_LETTERS.name,
        key=(key or b"").decode(errors="replace"),
        value=value,
        headers=[
            ("dlq-source-topic", source_topic.encode()),
            ("dlq-source-partition", str(partition).encode()),
            ("dlq-source-offset", str(offset).encode()),
            ("dlq-error-type", type(error).__name__.encode()),
            ("dlq-reason", reason[:1000].encode()),
        ],
    )


def header(headers: Sequence[tuple[str, bytes]] | None, name: str) -> str | None:
    for key, value in headers or ():
        if key == name:
            return value.decode(errors="replace")
    return None
