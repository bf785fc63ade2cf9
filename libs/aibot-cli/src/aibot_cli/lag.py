"""`ai-bot lag`: how many records wait for each consumer group, from the broker's own figures.

Three ways to look: once (a table), `--watch` (the table refreshed in place, with the change since the
last refresh), and `--serve PORT` (the same figures as Prometheus metrics: the lag exporter the chart
runs as its own Deployment, so lag stays visible when every replica of a stage is down).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime

import uvicorn
from aiokafka.errors import KafkaError
from fastapi import FastAPI
from rich.console import Console
from rich.live import Live
from rich.table import Table
from rich.text import Text

from aibot_common import telemetry
from aibot_common.lag import GroupLag, LagReader, LagSnapshot, publish
from aibot_common.service import background, create_service_app
from aibot_common.settings import KafkaSettings, Settings, load_settings
from aibot_common.topics import CONSUMPTION

log = logging.getLogger(__name__)


def parse_pair(value: str) -> tuple[str, str]:
    """TOPIC:GROUP (Kafka topic names cannot contain a colon)."""
    topic, sep, group = value.partition(":")
    if not sep or not topic or not group:
        raise ValueError(f"--pair: expected TOPIC:GROUP, got {value!r}")
    return topic, group


def selected_pairs(args: argparse.Namespace) -> list[tuple[str, str]]:
    pairs = [parse_pair(p) for p in args.pair] or list(CONSUMPTION)
    if args.group:
        pairs = [(t, g) for t, g in pairs if g in args.group]
    return pairs


# ---------------------------------------------------------------- the table


def _change(group: GroupLag, previous: LagSnapshot | None) -> Text:
    if previous is None:
        return Text("")
    before = next((g for g in previous.groups if g.topic == group.topic and g.group == group.group), None)
    if before is None:
        return Text("")
    delta = group.lag - before.lag
    # Growing lag is the thing to notice: red when it grows, green when the stage catches up.
    return Text(f"{delta:+d}", style="red" if delta > 0 else "green" if delta < 0 else "")


def lag_table(snapshot: LagSnapshot, partitions: bool = False, previous: LagSnapshot | None = None) -> Table:
    taken = datetime.fromtimestamp(snapshot.taken_at).strftime("%H:%M:%S")
    table = Table(title=f"consumer lag at {taken}: {snapshot.total} records waiting", title_justify="left")
    table.add_column("TOPIC", no_wrap=True)
    table.add_column("GROUP", no_wrap=True)
    table.add_column("CONSUMERS", justify="right")
    table.add_column("PARTITION", justify="right")
    table.add_column("END", justify="right")
    table.add_column("COMMITTED", justify="right")
    table.add_column("LAG", justify="right")
    if previous is not None:
        table.add_column("CHANGE", justify="right")
    for group in snapshot.groups:
        members = "?" if group.members is None else str(group.members)
        consumers = Text(members, style="bold red" if group.members == 0 and group.lag else "")
        row = [
            group.topic,
            group.group,
            consumers,
            f"all {len(group.partitions)}",
            str(group.end),
            str(group.committed),
            Text(str(group.lag), style="bold"),
        ]
        table.add_row(*row, *([_change(group, previous)] if previous is not None else []))
        if partitions:
            for p in group.partitions:
                committed = "-" if p.committed is None else str(p.committed)
                extra = [""] if previous is not None else []
                table.add_row("", "", "", str(p.partition), str(p.end), committed, str(p.lag), *extra)
    return table


def _console() -> Console:
    # Piped output (scripts, tests) gets a fixed wide layout instead of 80 columns of wrapping.
    return Console() if sys.stdout.isatty() else Console(width=160, no_color=True)


# ---------------------------------------------------------------- once and --watch


async def show_once(kafka: KafkaSettings, pairs: list[tuple[str, str]], partitions: bool) -> LagSnapshot:
    async with LagReader(kafka, pairs, client_id="aibot-lag-cli") as reader:
        snapshot = await reader.read()
    _console().print(lag_table(snapshot, partitions))
    return snapshot


async def watch(kafka: KafkaSettings, pairs: list[tuple[str, str]], partitions: bool, interval: float) -> None:
    console = _console()
    previous: LagSnapshot | None = None
    async with LagReader(kafka, pairs, client_id="aibot-lag-cli") as reader:
        with Live(console=console, auto_refresh=False) as live:
            while True:
                snapshot = await reader.read()
                live.update(lag_table(snapshot, partitions, previous), refresh=True)
                previous = snapshot
                await asyncio.sleep(interval)


# ---------------------------------------------------------------- --serve: the exporter


class ExporterStatus:
    def __init__(self, interval: float) -> None:
        self.interval = interval
        self.last_ok = 0.0

    def ready(self) -> bool:
        # Ready while the figures are fresh: a scrape of stale lag would hide a growing backlog.
        return time.monotonic() - self.last_ok < max(3 * self.interval, 30.0)


async def refresh_forever(kafka: KafkaSettings, pairs: list[tuple[str, str]], status: ExporterStatus) -> None:
    reader = LagReader(kafka, pairs, client_id="aibot-lag-exporter")
    started = False
    try:
        while True:
            try:
                if not started:
                    await reader.start()
                    started = True
                publish(await reader.read())
                status.last_ok = time.monotonic()
                telemetry.KAFKA_UP.set(1)
            except (KafkaError, OSError, TimeoutError) as exc:
                # Keep serving the last figures; aibot_lag_last_refresh_timestamp_seconds shows their age.
                log.warning("reading lag from the broker failed, retrying: %s", exc)
                telemetry.KAFKA_UP.set(0)
                if started:
                    await reader.stop()
                    reader, started = LagReader(kafka, pairs, client_id="aibot-lag-exporter"), False
            await asyncio.sleep(status.interval)
    finally:
        if started:
            await reader.stop()


def exporter_app(settings: Settings, pairs: list[tuple[str, str]], interval: float) -> FastAPI:
    status = ExporterStatus(interval)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        async with background(refresh_forever(settings.kafka, pairs, status), name="lag-exporter"):
            yield

    return create_service_app("lag-exporter", lifespan, status.ready)


def serve(pairs: list[tuple[str, str]], port: int, interval: float) -> None:
    from aibot_common.service import prepare

    settings = prepare("lag-exporter")  # JSON logs and secret masking, as every service
    app = exporter_app(settings, pairs, interval)
    log.info("lag exporter on port %d, refreshing every %.0fs", port, interval)
    config = uvicorn.Config(app, host=settings.http.host, port=port, log_config=None, access_log=False)
    uvicorn.Server(config).run()


def run(args: argparse.Namespace) -> int:
    try:
        pairs = selected_pairs(args)
    except ValueError as exc:
        print(f"ai-bot lag: {exc}", file=sys.stderr)
        return 2
    if not pairs:
        print("ai-bot lag: no (topic, group) pair left to show", file=sys.stderr)
        return 2
    if args.serve is not None:
        serve(pairs, args.serve, args.interval)
        return 0
    settings = load_settings()
    if args.watch:
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(watch(settings.kafka, pairs, args.partitions, args.interval))
        return 0
    asyncio.run(show_once(settings.kafka, pairs, args.partitions))
    return 0
