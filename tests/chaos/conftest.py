"""The chaos suite's pipeline: Apache Kafka started here (so a broker can be killed), the services as
processes under the same supervisor `ai-bot up` uses, the fake Telegram and model, and a steady load
of 50 chats whose every message is accounted for: answered once, lost, or duplicated.

Run with `make chaos` (`uv run pytest tests/chaos -m chaos -s`); excluded from the default run.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from aibot_cli.supervisor import ServiceProcess, Supervisor
from aibot_common.testing.broker import ApacheKafka, apache_kafka_available, free_port
from aibot_fakes.llm import FakeLLM
from aibot_fakes.telegram import FakeTelegram
from tests.e2e.conftest import READY_TIMEOUT_S, admin_port_env, pipeline_env

CHATS = range(7000, 7050)  # 50 conversations
SEND_INTERVAL_S = 2.0  # each chat sends a message every 2 s: 25 messages a second in all
APOLOGY = "Sorry, I could not get an answer from the language model"


@dataclass
class Load:
    """Each chat sends `chat/n` every SEND_INTERVAL_S; the fake model echoes, so every message has
    exactly one expected reply, `Echo: chat/n` (or the apology while the model is failing)."""

    telegram: FakeTelegram
    sent_at: dict[tuple[int, str], float] = field(default_factory=dict)
    _seq: Counter[int] = field(default_factory=Counter)
    _task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        while True:
            for chat in CHATS:
                self._seq[chat] += 1
                text = f"{chat}/{self._seq[chat]}"
                self.sent_at[(chat, f"Echo: {text}")] = time.time()
                self.telegram.user_sends_text(chat, text)
                await asyncio.sleep(SEND_INTERVAL_S / len(CHATS))

    def replies(self) -> dict[tuple[int, str], list[float]]:
        got: dict[tuple[int, str], list[float]] = {}
        for message in self.telegram.sent:
            got.setdefault((message["chat_id"], message["text"]), []).append(message["time"])
        return got

    def apologies(self, since: float) -> Counter[int]:
        return Counter(m["chat_id"] for m in self.telegram.sent if m["time"] >= since and APOLOGY in m["text"])

    async def settle(self, since: float, timeout_s: float = 120.0) -> Report:
        """Stop sending, wait until every message sent since `since` is answered (or the timeout)."""
        await self.stop()
        wanted = [k for k, at in self.sent_at.items() if at >= since]
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            got = self.replies()
            missing = [k for k in wanted if k not in got]
            if len(missing) <= sum(self.apologies(since).values()):
                break
            await asyncio.sleep(0.5)
        await asyncio.sleep(2)  # a duplicate would have arrived by now
        got = self.replies()
        apologised = self.apologies(since)
        missing = [k for k in wanted if k not in got]
        # A message answered by the apology instead of its echo is not lost: count them per chat.
        unexplained = Counter(chat for chat, _ in missing)
        for chat, n in apologised.items():
            unexplained[chat] -= n
        lost = sum(n for n in unexplained.values() if n > 0)
        doubled = {k: got[k] for k in wanted if len(got.get(k, [])) > 1}
        return Report(
            sent=len(wanted),
            lost=lost,
            duplicated=sum(len(times) - 1 for times in doubled.values()),
            apologised=sum(apologised.values()),
            first_sent_of_duplicates=sorted(times[0] for times in doubled.values()),
        )

    def recovery_s(self, restarted_at: float) -> float | None:
        """Seconds from `restarted_at` until every chat had an answer to a message it sent after it:
        the slowest partition's recovery. None if some chat never got one."""
        got = self.replies()
        worst = 0.0
        for chat in CHATS:
            after = sorted((at, k) for k, at in self.sent_at.items() if k[0] == chat and at >= restarted_at)
            answered = [got[k][0] for _, k in after if k in got]
            if not answered:
                return None
            worst = max(worst, min(answered) - restarted_at)
        return worst

    async def wait_recovered(self, restarted_at: float, timeout_s: float = 60.0) -> float | None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            figure = self.recovery_s(restarted_at)
            if figure is not None:
                return figure
            await asyncio.sleep(0.25)
        return None


@dataclass
class Report:
    sent: int
    lost: int
    duplicated: int
    apologised: int = 0
    recovery_s: float | None = None
    ready_s: float | None = None  # restart until the restarted process's /readyz said ready
    first_sent_of_duplicates: list[float] = field(default_factory=list)  # when each was first delivered

    def line(self, fault: str) -> str:
        recovered = "never" if self.recovery_s is None else f"{self.recovery_s:.1f}s"
        ready = "" if self.ready_s is None else f" (process ready after {self.ready_s:.1f}s)"
        recovered += f" load={os.getloadavg()[0]:.1f}"
        return (
            f"CHAOS {fault:38} sent={self.sent:5} lost={self.lost} duplicated={self.duplicated} "
            f"apologised={self.apologised} time-to-recover={recovered}{ready}"
        )


@dataclass
class ChaosPipeline:
    kafka: ApacheKafka
    telegram: FakeTelegram
    llm: FakeLLM
    supervisor: Supervisor
    load: Load

    def services(self, name: str) -> list[ServiceProcess]:
        return [p for p in self.supervisor.processes if p.name == name]

    async def wait_ready(self, processes: list[ServiceProcess] | None = None) -> None:
        await asyncio.to_thread(self.supervisor.wait_ready, READY_TIMEOUT_S, processes)


async def start_pipeline(brokers: int) -> AsyncIterator[ChaosPipeline]:
    if not apache_kafka_available():
        pytest.skip("the chaos suite kills brokers: it needs Apache Kafka's jars (scripts/fetch-kafka.sh) and java")
    # Not pytest's tmp_path: pytest keeps only the last few of those per user, and another session's
    # start may delete them, the broker's data dir included, while this one runs.
    tmp = Path(tempfile.mkdtemp(prefix=f"aibot-chaos-{brokers}-"))
    kafka = ApacheKafka(size=brokers, data_dir=tmp / "kafka").start()
    telegram, llm = FakeTelegram(), FakeLLM()
    await telegram.start()
    await llm.start()
    ingress_port = free_port()
    env = pipeline_env(kafka.bootstrap, telegram, llm, f"http://127.0.0.1:{ingress_port}/telegram/webhook")
    env["AIBOT_KAFKA__REPLICATION_FACTOR"] = str(min(3, brokers))
    # All the load comes from the fake's one address, and after an outage it re-sends in bursts: the
    # ingress's per-IP limit would answer 429s and measure itself, not the recovery (as in the bench).
    env["AIBOT_SECURITY__RATE_LIMIT__ENABLED"] = "false"
    if os.environ.get("AIBOT_CHAOS_STATIC_MEMBERSHIP") == "0":  # the "before" figures: dynamic members
        env["AIBOT_KAFKA__GROUP_INSTANCE_ID"] = ""
    supervisor = Supervisor(log_dir=tmp / "logs", env=env)
    supervisor.add("ingress-telegram", ingress_port)
    supervisor.add("core-llm", free_port(), env=admin_port_env())
    supervisor.add("core-llm", free_port(), env=admin_port_env())
    supervisor.add("renderer", free_port())
    supervisor.start()
    try:
        await asyncio.to_thread(supervisor.wait_ready, READY_TIMEOUT_S)
        for chat in CHATS:  # warm up: every chat answered once, so every group holds its partitions
            telegram.user_sends_text(chat, "warm-up")
        for chat in CHATS:
            await telegram.wait_for_sent(1, chat_id=chat, timeout=READY_TIMEOUT_S)
        yield ChaosPipeline(kafka, telegram, llm, supervisor, Load(telegram))
    finally:
        await asyncio.to_thread(supervisor.stop)
        await llm.stop()
        await telegram.stop()
        kafka.stop()
        print(f"chaos logs (remove when done): {tmp / 'logs'}")


Fault = Callable[[ChaosPipeline], None]
