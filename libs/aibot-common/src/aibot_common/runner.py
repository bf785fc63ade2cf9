"""The one consume -> process -> produce -> commit loop every stage runs on.

Why not a faust agent: an LLM call takes seconds, so a stage must work on many conversations at once,
yet keep one conversation's messages in order and never commit an offset whose message is not done.
faust's agent concurrency gives up ordering, and faust acks a record whose agent raised. Here:

- records are dispatched to one *lane* per key (conversation): a lane handles its records one after
  another, lanes run concurrently, up to `max_in_flight` records per replica (then the partitions
  are paused, which is the back-pressure);
- a stage is a plain handler, `(envelope, state) -> Outcome` (see `outcome.py`); the runner routes
  what it emits (`topics.route`), produces it with the state's changelog record, waits for the
  broker's acks, files the dead letter it asks for, and only then marks the record done;
- the committed offset of a partition is the lowest offset not yet done, so a crash re-delivers
  exactly the unfinished work (at-least-once; consumers dedupe by envelope id);
- failures are of two kinds (as in arroyo): `Retryable` backs off and tries again, anything else
  (`InvalidMessage`, or a bug) goes to the dead-letter topic with the reason. Past
  `DEAD_LETTERS_PER_MINUTE` the stage stops loudly instead of pouring all traffic into dead letters;
- a stage's state table (co-partitioned with its input) is restored when a partition is assigned,
  before its first record is handled, and dropped when the partition is revoked.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError, KafkaError
from pydantic import ValidationError

from aibot_common import telemetry
from aibot_common.envelope import Envelope
from aibot_common.errors import (
    DEAD_LETTERS_PER_MINUTE,
    DeadLetterLimitExceeded,
    InvalidMessage,
    Retryable,
    Unavailable,
)
from aibot_common.kafka import OutRecord, dead_letter, send_all
from aibot_common.outcome import Handler, Streams
from aibot_common.state import ChangelogTable
from aibot_common.topics import Topic, route

log = logging.getLogger(__name__)

# During an outage a record is retried at least this often, so that its partition resumes within
# seconds of the far end's return (not after the usual backoff's 30 s cap).
OUTAGE_RETRY_MAX_S = 5.0
MAX_THROTTLED_WAITS = 100  # a bound all the same: a server that only ever says "later" is a failure


@dataclass
class Consumed:
    topic: str
    partition: int
    offset: int
    key: str | None
    value: bytes | None
    headers: Sequence[tuple[str, bytes]]
    timestamp_ms: int
    _envelope: Envelope | None = field(default=None, repr=False)

    @property
    def envelope(self) -> Envelope:
        """The decoded envelope; a record that is not one is an InvalidMessage (dead letter)."""
        if self._envelope is None:
            if self.value is None:
                raise InvalidMessage("empty record value")
            try:
                self._envelope = Envelope.from_bytes(self.value)
            except ValidationError as exc:
                raise InvalidMessage(f"not a valid envelope: {exc.error_count()} errors: {exc.errors()[:3]}") from exc
        return self._envelope


Route = Callable[[Envelope], Topic]


class OffsetTracker:
    """Which offsets of each partition are still being worked on, and so what may be committed."""

    def __init__(self) -> None:
        self._pending: dict[TopicPartition, set[int]] = {}
        self._next: dict[TopicPartition, int] = {}

    def started(self, tp: TopicPartition, offset: int) -> None:
        self._pending.setdefault(tp, set()).add(offset)
        self._next[tp] = max(self._next.get(tp, 0), offset + 1)

    def finished(self, tp: TopicPartition, offset: int) -> None:
        pending = self._pending.get(tp)
        if pending is not None:
            pending.discard(offset)

    def committable(self, tp: TopicPartition) -> int | None:
        """The offset to commit: every record below it is done."""
        if tp not in self._next:
            return None
        pending = self._pending.get(tp)
        return min(pending) if pending else self._next[tp]

    def pending_count(self, tps: set[TopicPartition]) -> int:
        return sum(len(self._pending.get(tp, ())) for tp in tps)

    def forget(self, tps: set[TopicPartition]) -> None:
        for tp in tps:
            self._pending.pop(tp, None)
            self._next.pop(tp, None)


class StageRunner:
    def __init__(
        self,
        *,
        stage: str,
        consumer: AIOKafkaConsumer,
        producer: AIOKafkaProducer,
        topics: Sequence[str],
        group_id: str,
        handler: Handler | Streams,
        table: ChangelogTable | None = None,
        route: Route = route,
        max_in_flight: int = 512,
        attempts: int = 5,
        backoff_base_s: float = 0.5,
        backoff_max_s: float = 30.0,
        outage_max_s: float = 600.0,
        dlq_limit_per_minute: int = DEAD_LETTERS_PER_MINUTE,
        drain_timeout_s: float = 30.0,
        on_assignment: Callable[[float], None] | None = None,
    ) -> None:
        self.stage = stage
        self.group_id = group_id
        self._consumer = consumer
        self._producer = producer
        self._topics = list(topics)
        self._handler = handler
        self._table = table
        self._route = route
        self._max_in_flight = max_in_flight
        self._attempts = attempts
        self._backoff_base_s = backoff_base_s
        self._backoff_max_s = backoff_max_s
        self._outage_max_s = outage_max_s
        self._dlq_limit = dlq_limit_per_minute
        self._drain_timeout_s = drain_timeout_s
        # Told this replica's share (0..1) of its topics' partitions after every rebalance, so a
        # budget that is cluster-wide (a platform's overall rate limit) can be split by ownership.
        self._on_assignment = on_assignment

        self._tracker = OffsetTracker()
        self._committed: dict[TopicPartition, int] = {}
        self._lanes: dict[str, deque[Consumed]] = {}
        self._lane_tasks: set[asyncio.Task[None]] = set()
        self._in_flight = 0
        self._room = asyncio.Event()
        self._room.set()
        self._dead_letter_times: deque[float] = deque()
        self._fatal: BaseException | None = None
        self._assigned: set[TopicPartition] = set()
        self._stopping = False
        # True between an assignment (with its state restored) and the next revocation: the stage
        # then handles what arrives. False while joining, restoring, rebalancing or draining.
        self._holding = False
        self.running = False

    # ------------------------------------------------------------ lifecycle

    async def run(self) -> None:
        """Consume until cancelled or until the stage fails loudly (dead-letter limit)."""
        self._consumer.subscribe(self._topics, listener=_Listener(self))
        self.running = True
        commit_task = asyncio.create_task(self._commit_loop())
        paused = False
        try:
            while self._fatal is None and not self._stopping:
                if self._in_flight >= self._max_in_flight and not paused:
                    self._consumer.pause(*self._consumer.assignment())
                    paused = True
                elif self._in_flight < self._max_in_flight and paused:
                    self._consumer.resume(*self._consumer.assignment())
                    paused = False
                batches = await self._consumer.getmany(timeout_ms=200, max_records=self._max_in_flight)
                for tp, messages in batches.items():
                    for message in messages:
                        self._dispatch(tp, message)
                if paused:
                    self._room.clear()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._room.wait(), 0.5)
            if self._fatal is not None:
                raise self._fatal
        finally:
            self.running = False
            commit_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await commit_task

    async def shutdown(self) -> None:
        """Stop fetching, finish what is in flight (bounded), and commit it."""
        self._stopping = True
        await self._wait_for(lambda: self._in_flight == 0, self._drain_timeout_s)
        await self._commit()
        for task in list(self._lane_tasks):
            task.cancel()
        await asyncio.gather(*self._lane_tasks, return_exceptions=True)

    @property
    def ready(self) -> bool:
        """Running, a member of its group with its partitions (perhaps none: more replicas than
        partitions) and their state restored, and not shutting down."""
        return self.running and self._holding and not self._stopping

    @property
    def assignment(self) -> frozenset[TopicPartition]:
        """The partitions this replica holds now."""
        return frozenset(self._assigned)

    @property
    def in_flight(self) -> int:
        return self._in_flight

    # ------------------------------------------------------------ dispatch

    def _dispatch(self, tp: TopicPartition, message: object) -> None:
        record = Consumed(
            topic=message.topic,  # type: ignore[attr-defined]
            partition=message.partition,  # type: ignore[attr-defined]
            offset=message.offset,  # type: ignore[attr-defined]
            key=message.key.decode(errors="replace") if message.key else None,  # type: ignore[attr-defined]
            value=message.value,  # type: ignore[attr-defined]
            headers=list(message.headers or ()),  # type: ignore[attr-defined]
            timestamp_ms=message.timestamp,  # type: ignore[attr-defined]
        )
        telemetry.MESSAGES_CONSUMED.labels(topic=record.topic, group=self.group_id).inc()
        self._interrupt(record)
        self._tracker.started(tp, record.offset)
        self._in_flight += 1
        telemetry.IN_FLIGHT.labels(stage=self.stage).set(self._in_flight)
        # Records without a key have no order to keep: each gets a lane of its own.
        lane_key = record.key if record.key is not None else f"{tp.partition}/{record.offset}"
        lane = self._lanes.get(lane_key)
        if lane is not None:
            lane.append(record)
            return
        lane = deque([record])
        self._lanes[lane_key] = lane
        task = asyncio.create_task(self._run_lane(lane_key, lane))
        self._lane_tasks.add(task)
        task.add_done_callback(self._lane_tasks.discard)

    def _interrupt(self, record: Consumed) -> None:
        if not isinstance(self._handler, Streams) or self._handler.interrupt is None:
            return
        try:
            self._handler.interrupt(record.envelope)
        except InvalidMessage:
            return  # handled (dead-lettered) in its lane like any other
        except Exception:
            log.exception("interrupt hook of stage %s failed", self.stage)

    async def _run_lane(self, lane_key: str, lane: deque[Consumed]) -> None:
        try:
            while lane:
                record = lane[0]
                try:
                    await self._handle(record)
                finally:
                    lane.popleft()
                    self._tracker.finished(TopicPartition(record.topic, record.partition), record.offset)
                    self._in_flight -= 1
                    telemetry.IN_FLIGHT.labels(stage=self.stage).set(self._in_flight)
                    self._room.set()
        finally:
            self._lanes.pop(lane_key, None)

    async def _handle(self, record: Consumed) -> None:
        started = time.perf_counter()
        # One span around every attempt, so retries and a dead letter's log lines carry the trace id.
        with telemetry.consume_span(
            f"{record.topic} process",
            record.headers,
            {
                "messaging.destination.name": record.topic,
                "messaging.kafka.partition": record.partition,
                "messaging.kafka.offset": record.offset,
                "aibot.stage": self.stage,
            },
        ):
            telemetry.conversation_var.set(record.key)
            await self._attempt(record)
        telemetry.STAGE_SECONDS.labels(stage=self.stage).observe(time.perf_counter() - started)

    async def _attempt(self, record: Consumed) -> None:
        attempt = 0
        throttled = 0
        outage_since: float | None = None  # the first Unavailable of this record's current outage
        outage_waits = 0
        while True:
            attempt += 1
            try:
                await self._process(record)
                return
            except asyncio.CancelledError:
                raise
            except Retryable as exc:
                telemetry.STAGE_ERRORS.labels(stage=self.stage, error=type(exc).__name__).inc()
                if exc.retry_after is not None and throttled < MAX_THROTTLED_WAITS:
                    # "Slow down, come back in N s" (a 429) is back-pressure, not failure: it does not use
                    # up the attempts, or a burst over a platform's flood limit would lose replies.
                    throttled += 1
                    attempt -= 1
                    log.warning("throttled on %s record, waiting %.1fs: %s", record.topic, exc.retry_after, exc)
                    await asyncio.sleep(exc.retry_after)
                    continue
                if isinstance(exc, Unavailable):
                    now = time.monotonic()
                    outage_since = now if outage_since is None else outage_since
                    if now - outage_since < self._outage_max_s:
                        # The far end is down, not this record: wait it out without using up the
                        # attempts; the partition resumes in order once it answers again.
                        attempt -= 1
                        outage_waits += 1
                        delay = min(OUTAGE_RETRY_MAX_S, self._backoff_base_s * 2 ** min(outage_waits - 1, 6))
                        log.warning(
                            "%s unavailable, retrying %s record in %.1fs: %s", self.stage, record.topic, delay, exc
                        )
                        await asyncio.sleep(delay)
                        continue
                if attempt >= self._attempts:
                    await self._dead_letter(record, exc, f"gave up after {attempt} attempts: {exc}")
                    return
                delay = exc.retry_after or min(self._backoff_max_s, self._backoff_base_s * 2 ** (attempt - 1))
                log.warning("retrying %s record in %.1fs: %s", record.topic, delay, exc)
                await asyncio.sleep(delay)
            except KafkaError as exc:
                # The broker did not take our outputs: never drop the input, keep trying.
                telemetry.STAGE_ERRORS.labels(stage=self.stage, error=type(exc).__name__).inc()
                log.warning("producing outputs failed, retrying: %s", exc)
                await asyncio.sleep(min(self._backoff_max_s, self._backoff_base_s * 2 ** min(attempt, 6)))
            except InvalidMessage as exc:
                telemetry.STAGE_ERRORS.labels(stage=self.stage, error=type(exc).__name__).inc()
                await self._dead_letter(record, exc, str(exc))
                return
            except Exception as exc:
                telemetry.STAGE_ERRORS.labels(stage=self.stage, error=type(exc).__name__).inc()
                log.exception("unexpected error in stage %s", self.stage)
                await self._dead_letter(record, exc, f"unexpected {type(exc).__name__}: {exc}")
                return

    async def _process(self, record: Consumed) -> None:
        """One attempt: the handler's outcome, produced and acknowledged, then its state and dead letter."""
        envelope = record.envelope
        table = self._table
        stored = table.get(record.partition, envelope.key) if table is not None else None
        if isinstance(self._handler, Streams):
            outcome = await self._handler.handler(envelope, stored, self._publish_partial)
        else:
            outcome = await self._handler(envelope, stored)
        records = [OutRecord.of(self._route(e), e) for e in outcome.emit]
        state = outcome.state_value()
        if state is not None:
            if table is None:
                raise RuntimeError(f"stage {self.stage} keeps no state, yet its handler returned some")
            records.append(table.changelog_record(record.partition, envelope.key, state))
        await self._send_until_acknowledged(records)
        if state is not None and table is not None:
            # Only once the changelog has it: a failed send retries from the state as it was.
            table.apply(record.partition, envelope.key, state)
        if outcome.dead_letter is not None:
            # The user has heard (`emit`); the record is kept for an operator, with the reason.
            # Should the process die in between, the re-delivery emits the same ids: downstream dedupes.
            error = InvalidMessage(outcome.dead_letter)
            telemetry.STAGE_ERRORS.labels(stage=self.stage, error=type(error).__name__).inc()
            await self._dead_letter(record, error, outcome.dead_letter)

    async def _send_until_acknowledged(self, records: list[OutRecord]) -> None:
        """Produce the handler's outputs until the broker acknowledges them all. The same records are
        sent again, the handler is not run again: its work may have been a platform send (which
        would reach the user twice: seen when a broker was killed under load) or a model call."""
        failures = 0
        while True:
            try:
                await send_all(self._producer, records)
                return
            except KafkaError as exc:
                failures += 1
                telemetry.STAGE_ERRORS.labels(stage=self.stage, error=type(exc).__name__).inc()
                log.warning("the broker did not acknowledge the outputs, sending them again: %s", exc)
                await asyncio.sleep(min(self._backoff_max_s, self._backoff_base_s * 2 ** min(failures, 6)))

    async def _publish_partial(self, envelope: Envelope) -> None:
        """What a `Streams` handler publishes mid-work: routed and produced now, not with the outcome.
        Losing one costs only a preview update (the next one, or the final outcome, carries the whole
        text), so a broker hiccup is logged and the handler carries on."""
        try:
            await send_all(self._producer, [OutRecord.of(self._route(envelope), envelope)])
        except KafkaError as exc:
            telemetry.STAGE_ERRORS.labels(stage=self.stage, error=type(exc).__name__).inc()
            log.warning("partial %s not published: %s", envelope.id, exc)

    async def _dead_letter(self, record: Consumed, error: BaseException, reason: str) -> None:
        log.error(
            "dead-lettering %s[%d]@%d: %s",
            record.topic,
            record.partition,
            record.offset,
            reason,
            extra={"error_type": type(error).__name__},
        )
        telemetry.DEAD_LETTERS.labels(stage=self.stage, error=type(error).__name__).inc()
        dlq = dead_letter(
            record.topic,
            record.partition,
            record.offset,
            record.key.encode() if record.key else None,
            record.value,
            error,
            reason,
        )
        dlq.headers.extend((k, v) for k, v in record.headers if k in ("traceparent", "tracestate"))
        while True:
            try:
                await send_all(self._producer, [dlq])
                break
            except KafkaError as exc:
                log.warning("dead-letter write failed, retrying: %s", exc)
                await asyncio.sleep(1.0)
        now = time.monotonic()
        self._dead_letter_times.append(now)
        while self._dead_letter_times and self._dead_letter_times[0] < now - 60:
            self._dead_letter_times.popleft()
        if len(self._dead_letter_times) > self._dlq_limit and self._fatal is None:
            self._fatal = DeadLetterLimitExceeded(
                f"stage {self.stage}: more than {self._dlq_limit} dead letters in a minute; stopping so a bad "
                "deploy does not discard the whole stream (fix, then restart: uncommitted records come back)"
            )

    # ------------------------------------------------------------ commits and rebalances

    async def _commit_loop(self) -> None:
        while True:
            await asyncio.sleep(0.2)
            await self._commit()

    async def _commit(self, only: set[TopicPartition] | None = None) -> None:
        offsets = {}
        for tp in only if only is not None else self._assigned:
            offset = self._tracker.committable(tp)
            if offset is not None and self._committed.get(tp) != offset:
                offsets[tp] = offset
        if not offsets:
            return
        try:
            await self._consumer.commit(offsets)
            self._committed.update(offsets)
        except (CommitFailedError, IllegalStateError, KafkaError) as exc:
            # A rebalance is under way; the partitions' new owner re-processes from the last commit.
            log.warning("commit failed (will retry or hand over): %s", exc)

    async def _partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        self._holding = False
        mine = revoked & self._assigned
        # Finish (bounded) what we hold for these partitions, so the next owner does not redo it.
        await self._wait_for(lambda: self._tracker.pending_count(mine) == 0, self._drain_timeout_s)
        await self._commit(mine)
        self._assigned -= mine
        self._report_share()
        self._tracker.forget(mine)
        for tp in mine:
            self._committed.pop(tp, None)
        if self._table is not None and mine:
            self._table.drop(tp.partition for tp in mine)

    async def _partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        new = assigned - self._assigned
        if self._table is not None and new:
            await self._table.restore(tp.partition for tp in new)
        self._assigned |= assigned
        self._holding = True
        self._report_share()
        log.info("stage %s assigned %d partitions", self.stage, len(self._assigned))

    def _report_share(self) -> None:
        if self._on_assignment is None:
            return
        total = sum(len(self._consumer.partitions_for_topic(t) or ()) for t in self._topics)
        self._on_assignment(len(self._assigned) / total if total else 0.0)

    @staticmethod
    async def _wait_for(condition: Callable[[], bool], timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while not condition() and time.monotonic() < deadline:
            await asyncio.sleep(0.02)


class _Listener(ConsumerRebalanceListener):
    def __init__(self, runner: StageRunner) -> None:
        self._runner = runner

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self._runner._partitions_revoked(set(revoked))

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        await self._runner._partitions_assigned(set(assigned))
