"""The runner of a *sink* stage: consume records into a batch, hand the batch to a plain function that
writes it somewhere durable, and only then commit the batch's offsets (arroyo's Reduce → commit).

Why not `StageRunner`: that runner finishes records one by one and emits envelopes; a sink wants
thousands of records in one object (one S3 PUT per volume, not per message) and has nothing to
emit. The contract is the same: the function never touches Kafka, and an offset advances only after
the work for every record below it is durable. A crash at any point re-delivers the batch (it is
written again; readers dedupe by envelope id), never loses it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError, KafkaError

from aibot_common import telemetry
from aibot_common.runner import Consumed

log = logging.getLogger(__name__)

Flush = Callable[[Sequence[Consumed]], Awaitable[None]]


class BatchRunner:
    def __init__(
        self,
        *,
        stage: str,
        consumer: AIOKafkaConsumer,
        topics: Sequence[str],
        group_id: str,
        flush: Flush,
        max_records: int = 5000,
        max_seconds: float = 60.0,
        backoff_base_s: float = 0.5,
        backoff_max_s: float = 30.0,
    ) -> None:
        self.stage = stage
        self.group_id = group_id
        self._consumer = consumer
        self._topics = list(topics)
        self._flush = flush
        self._max_records = max_records
        self._max_seconds = max_seconds
        self._backoff_base_s = backoff_base_s
        self._backoff_max_s = backoff_max_s
        self._batch: list[Consumed] = []
        self._next: dict[TopicPartition, int] = {}
        self._oldest = 0.0
        self._stopping = False
        self._lock = asyncio.Lock()
        self._holding = False  # a member of the group with its partitions, between rebalances
        self.running = False
        self.batches_written = 0

    @property
    def ready(self) -> bool:
        """What /readyz asks of every stage: running, holding its partitions, not shutting down."""
        return self.running and self._holding and not self._stopping

    async def run(self) -> None:
        self._consumer.subscribe(self._topics, listener=_Listener(self))
        self.running = True
        try:
            while not self._stopping:
                room = self._max_records - len(self._batch)
                wait_ms = 500
                if self._batch:
                    left = self._max_seconds - (time.monotonic() - self._oldest)
                    wait_ms = max(1, min(wait_ms, int(left * 1000)))
                fetched = await self._consumer.getmany(timeout_ms=wait_ms, max_records=max(room, 1))
                for tp, messages in fetched.items():
                    for message in messages:
                        self._add(tp, message)
                if self._batch and (
                    len(self._batch) >= self._max_records or time.monotonic() - self._oldest >= self._max_seconds
                ):
                    await self.flush_and_commit()
        finally:
            self.running = False

    async def shutdown(self) -> None:
        """Stop fetching and write what is held, so a rolling restart leaves nothing to redo."""
        self._stopping = True
        await self.flush_and_commit()

    @property
    def held(self) -> int:
        return len(self._batch)

    def _add(self, tp: TopicPartition, message: object) -> None:
        if not self._batch:
            self._oldest = time.monotonic()
        self._batch.append(
            Consumed(
                topic=message.topic,  # type: ignore[attr-defined]
                partition=message.partition,  # type: ignore[attr-defined]
                offset=message.offset,  # type: ignore[attr-defined]
                key=message.key.decode(errors="replace") if message.key else None,  # type: ignore[attr-defined]
                value=message.value,  # type: ignore[attr-defined]
                headers=list(message.headers or ()),  # type: ignore[attr-defined]
                timestamp_ms=message.timestamp,  # type: ignore[attr-defined]
            )
        )
        self._next[tp] = message.offset + 1  # type: ignore[attr-defined]
        telemetry.MESSAGES_CONSUMED.labels(topic=tp.topic, group=self.group_id).inc()

    async def flush_and_commit(self) -> None:
        """Write the batch (retrying until it is written: a storage outage shows as lag, and nothing
        is committed meanwhile), then commit every partition past its last record in the batch."""
        async with self._lock:
            if not self._batch:
                return
            batch, offsets = self._batch, dict(self._next)
            attempt = 0
            started = time.perf_counter()
            while True:
                try:
                    await self._flush(batch)
                    break
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    attempt += 1
                    telemetry.STAGE_ERRORS.labels(stage=self.stage, error=type(exc).__name__).inc()
                    delay = min(self._backoff_max_s, self._backoff_base_s * 2 ** min(attempt, 8))
                    log.warning("writing a batch of %d records failed, retrying in %.1fs: %s", len(batch), delay, exc)
                    await asyncio.sleep(delay)
            telemetry.STAGE_SECONDS.labels(stage=self.stage).observe(time.perf_counter() - started)
            self._batch, self._next = [], {}
            self.batches_written += 1
            try:
                await self._consumer.commit(offsets)
            except (CommitFailedError, IllegalStateError, KafkaError) as exc:
                # A rebalance took the partitions: their new owner re-reads and re-writes the batch.
                log.warning("commit after writing a batch failed (its records will be written again): %s", exc)


class _Listener(ConsumerRebalanceListener):
    def __init__(self, runner: BatchRunner) -> None:
        self._runner = runner

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        self._runner._holding = False
        # Write and commit what we hold before the partitions move, so the next owner starts after it.
        await self._runner.flush_and_commit()

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        self._runner._holding = True
        log.info("stage %s assigned %d partitions", self._runner.stage, len(assigned))
