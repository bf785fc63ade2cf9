"""`ai-bot dlq list|show|replay`: look at the dead-letter topic and send records back once fixed.

A dead letter is the original record (key and value bytes untouched) with headers the runner adds
(`kafka.dead_letter`): the source topic, partition and offset, the error type, the reason, and the
trace context of the attempt. A dead letter is named by where it sits in the dead-letter topic,
`PARTITION:OFFSET`, as `list` prints it. `replay` produces the original key and value back to the
source topic with the original trace context, so the retry joins the trace the failure is in; the
stages dedupe by envelope id, so a replay of something that did get through in the end is harmless.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from aibot_common.kafka import connection_kwargs, header, make_consumer, make_producer, topic_partitions
from aibot_common.settings import KafkaSettings, load_settings
from aibot_common.state import read_to_end
from aibot_common.topics import DEAD_LETTERS

# Headers a replay carries over: the trace context, and what the consumers read of the record.
REPLAYED_HEADERS = ("traceparent", "tracestate", "content-type", "schema-version")
REPLAY_HEADER = "dlq-replay-of"  # on a replayed record: which dead letter it came from, for audit


@dataclass(frozen=True)
class DeadLetter:
    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...]

    @property
    def id(self) -> str:
        return f"{self.partition}:{self.offset}"

    @property
    def source_topic(self) -> str | None:
        return header(self.headers, "dlq-source-topic")

    @property
    def source(self) -> str:
        partition = header(self.headers, "dlq-source-partition")
        offset = header(self.headers, "dlq-source-offset")
        return f"{self.source_topic}[{partition}]@{offset}"

    @property
    def error_type(self) -> str:
        return header(self.headers, "dlq-error-type") or "?"

    @property
    def reason(self) -> str:
        return header(self.headers, "dlq-reason") or ""

    @property
    def time(self) -> datetime:
        return datetime.fromtimestamp(self.timestamp_ms / 1000, UTC)

    def replay_headers(self) -> list[tuple[str, bytes]]:
        """The first of each replayed header: the original record's (the runner's own span context,
        added when the dead letter was written, comes after it)."""
        kept: dict[str, bytes] = {}
        for name, value in self.headers:
            if name in REPLAYED_HEADERS and name not in kept:
                kept[name] = value
        return [*kept.items(), (REPLAY_HEADER, f"{DEAD_LETTERS.name}:{self.id}".encode())]


@dataclass(frozen=True)
class Filter:
    source: str | None = None  # exact source topic
    reason: str | None = None  # case-insensitive substring of the reason or the error type
    since: datetime | None = None
    until: datetime | None = None
    ids: frozenset[str] = frozenset()

    def matches(self, letter: DeadLetter) -> bool:
        if self.ids and letter.id not in self.ids:
            return False
        if self.source is not None and letter.source_topic != self.source:
            return False
        if self.reason is not None:
            needle = self.reason.lower()
            if needle not in letter.reason.lower() and needle not in letter.error_type.lower():
                return False
        if self.since is not None and letter.time < self.since:
            return False
        return self.until is None or letter.time <= self.until


_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhd])$")


def parse_time(value: str, now: datetime | None = None) -> datetime:
    """`30m`, `2h`, `7d` (that long ago) or an ISO 8601 time (UTC unless it says otherwise)."""
    match = _DURATION.match(value.strip())
    if match:
        unit = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}[match.group(2)]
        return (now or datetime.now(UTC)) - timedelta(**{unit: float(match.group(1))})
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a time: {value!r} (use 30m, 2h, 7d or 2026-01-31T12:00)") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


async def read_dead_letters(
    kafka: KafkaSettings, selection: Filter, topic: str = DEAD_LETTERS.name
) -> list[DeadLetter]:
    """Every dead letter that matches, oldest first per partition. With `since`, each partition is
    read from the first record at that time (ListOffsets by time), not from its beginning."""
    admin = AIOKafkaAdminClient(client_id="aibot-dlq-admin", **connection_kwargs(kafka))
    await admin.start()
    try:
        ids = (await topic_partitions(admin, [topic])).get(topic, [])
    finally:
        await admin.close()
    if not ids:
        return []
    consumer = make_consumer(kafka, None, "aibot-dlq")
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in ids]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        if selection.since is not None:
            found = await consumer.offsets_for_times({tp: int(selection.since.timestamp() * 1000) for tp in tps})
            ends = await consumer.end_offsets(tps)
            for tp in tps:
                at = found.get(tp)
                consumer.seek(tp, at.offset if at is not None else ends[tp])
        letters: list[DeadLetter] = []

        def keep(message: object) -> None:
            letter = DeadLetter(
                partition=message.partition,  # type: ignore[attr-defined]
                offset=message.offset,  # type: ignore[attr-defined]
                timestamp_ms=message.timestamp,  # type: ignore[attr-defined]
                key=message.key,  # type: ignore[attr-defined]
                value=message.value,  # type: ignore[attr-defined]
                headers=tuple(message.headers or ()),  # type: ignore[attr-defined]
            )
            if selection.matches(letter):
                letters.append(letter)

        await read_to_end(consumer, tps, keep)
        return letters
    finally:
        await consumer.stop()


async def replay(kafka: KafkaSettings, letters: Sequence[DeadLetter]) -> int:
    """Produce each dead letter's key and value back to its source topic (acks=all, waited for)."""
    producer: AIOKafkaProducer = make_producer(kafka, "aibot-dlq-replay")
    await producer.start()
    try:
        futures = []
        for letter in letters:
            if letter.source_topic is None:
                raise ValueError(f"dead letter {letter.id} names no source topic; not replayable")
            futures.append(
                await producer.send(
                    letter.source_topic, value=letter.value, key=letter.key, headers=letter.replay_headers()
                )
            )
        await asyncio.gather(*futures)
        return len(futures)
    finally:
        await producer.stop()


# ---------------------------------------------------------------- the command


def _selection(args: argparse.Namespace, ids: Sequence[str] = ()) -> Filter:
    return Filter(
        source=args.source,
        reason=args.reason,
        since=parse_time(args.since) if args.since else None,
        until=parse_time(args.until) if args.until else None,
        ids=frozenset(ids),
    )


def _print_table(letters: Sequence[DeadLetter]) -> None:
    print(f"{'id':10} {'time (UTC)':19} {'source':40} {'error':18} {'key':24} reason")
    for letter in letters:
        key = (letter.key or b"").decode(errors="replace")
        print(
            f"{letter.id:10} {letter.time:%Y-%m-%d %H:%M:%S} {letter.source:40} {letter.error_type:18} "
            f"{key:24} {letter.reason[:100]}"
        )
    print(f"{len(letters)} dead letters")


def _print_one(letter: DeadLetter) -> None:
    print(f"id:       {letter.id} ({DEAD_LETTERS.name})")
    print(f"time:     {letter.time.isoformat()}")
    print(f"source:   {letter.source}")
    print(f"error:    {letter.error_type}")
    print(f"reason:   {letter.reason}")
    print(f"key:      {(letter.key or b'').decode(errors='replace')}")
    print("headers:")
    for name, value in letter.headers:
        print(f"  {name}: {value.decode(errors='replace')}")
    print("value:")
    try:
        print(json.dumps(json.loads(letter.value or b""), indent=2, ensure_ascii=False))
    except ValueError:
        print(repr(letter.value))  # not JSON: the bytes as they are, which may be why it failed


def run(args: argparse.Namespace) -> int:
    try:
        _selection(args)
    except argparse.ArgumentTypeError as exc:
        print(f"ai-bot dlq: {exc}")
        return 2
    kafka = load_settings().kafka
    if args.action == "list":
        _print_table(asyncio.run(read_dead_letters(kafka, _selection(args))))
        return 0
    if args.action == "show":
        letters = asyncio.run(read_dead_letters(kafka, _selection(args, args.ids)))
        missing = set(args.ids) - {letter.id for letter in letters}
        for letter in letters:
            _print_one(letter)
            print()
        if missing:
            print(f"no such dead letter (or filtered out): {', '.join(sorted(missing))}")
            return 1
        return 0
    # replay
    if not (args.ids or args.source or args.reason or args.since or args.until or args.all):
        print("replay: name dead letters (ids), a filter (--source/--reason/--since/--until), or --all")
        return 2
    letters = asyncio.run(read_dead_letters(kafka, _selection(args, args.ids)))
    if args.dry_run:
        _print_table(letters)
        print("dry run: nothing replayed")
        return 0
    count = asyncio.run(replay(kafka, letters))
    topics = sorted({letter.source_topic or "?" for letter in letters})
    print(f"replayed {count} dead letters to {', '.join(topics) or 'nothing'}")
    return 0
