"""The chaos suite's pipeline: Apache Kafka started here (so a broker can be killed), the services as
processes under the same supervisor `ai-bot up` uses, the fake Telegram, Feishu and model, and a steady
load of 50 Telegram chats (plus, on the single-broker pipeline, Feishu chats and Telegram voice notes
for ingress-feishu and the asr-worker) whose every message is accounted for: answered once, lost, or
duplicated.

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
from aibot_fakes.feishu import FakeFeishu
from aibot_fakes.llm import FakeLLM
from aibot_fakes.telegram import FakeTelegram
from tests.e2e.conftest import READY_TIMEOUT_S, admin_port_env, feishu_env, pipeline_env
from tests.voice_samples import missing_tools, speech_ogg

Chat = int | str  # a Telegram chat id, or a Feishu one (oc_...)
Key = tuple[Chat, str]  # (chat, expected answer) for text; (chat, "voice/<message id>") for a voice note

CHATS = range(7000, 7050)  # 50 conversations
FEISHU_CHATS = [f"oc_chaos_{i:02}" for i in range(8)]  # ingress-feishu's share of the load
VOICE_CHATS = range(7100, 7102)  # Telegram voice notes: the asr-worker's share (CPU Whisper is slow)
SEND_INTERVAL_S = 2.0  # each chat sends a message every 2 s: 25 messages a second in all
VOICE_EVERY = 3  # a voice chat sends one note every third round (every 6 s)
APOLOGY = "Sorry, I could not get an answer from the language model"


@dataclass
class Load:
    """Each chat sends `chat/n` every SEND_INTERVAL_S; the fake model echoes, so every message has
    exactly one expected reply, `Echo: chat/n` (or the apology while the model is failing)."""

    telegram: FakeTelegram
    feishu: FakeFeishu | None = None  # with it, FEISHU_CHATS send text too
    voice: bool = False  # VOICE_CHATS send voice notes (the asr-worker runs)
    sent_at: dict[Key, float] = field(default_factory=dict)
    _seq: Counter[Chat] = field(default_factory=Counter)
    _task: asyncio.Task[None] | None = None

    @property
    def chats(self) -> list[Chat]:
        return [*CHATS, *(FEISHU_CHATS if self.feishu else []), *(VOICE_CHATS if self.voice else [])]

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        rounds = 0
        while True:
            rounds += 1
            senders: list[Chat] = [*CHATS, *(FEISHU_CHATS if self.feishu else [])]
            if self.voice and rounds % VOICE_EVERY == 0:
                senders += list(VOICE_CHATS)
            for chat in senders:
                self._seq[chat] += 1
                text = f"{chat}/{self._seq[chat]}"
                if isinstance(chat, str):
                    assert self.feishu is not None
                    self.sent_at[(chat, f"Echo: {text}")] = time.time()
                    self.feishu.user_sends_text(chat, text)
                elif chat in VOICE_CHATS:
                    # Every note says the same sentence: its answer is told apart by what it replies to.
                    update = self.telegram.user_sends_voice(chat, speech_ogg(), duration=3)
                    self.sent_at[(chat, f"voice/{update['message']['message_id']}")] = time.time()
                else:
                    self.sent_at[(chat, f"Echo: {text}")] = time.time()
                    self.telegram.user_sends_text(chat, text)
                await asyncio.sleep(SEND_INTERVAL_S / len(senders))

    def _answers(self) -> list[tuple[Key, float, str]]:
        """Every answer the fakes saw, as (key, time, text)."""
        answers: list[tuple[Key, float, str]] = []
        for message in self.telegram.sent:
            chat, text = message["chat_id"], message["text"] or ""
            if chat in VOICE_CHATS:
                if message["method"] == "editMessageText":
                    continue  # the same answer (it replies to the same note), shown as it grows
                answers.append(((chat, f"voice/{message['reply_to_message_id']}"), message["time"], text))
            else:
                answers.append(((chat, text), message["time"], text))
        for message in self.feishu.sent if self.feishu else []:
            # A card's text is what it shows now (a streamed card is filled in after it was created).
            card = message["card_id"]
            text = self.feishu.cardkit.get(card).text() if card else message["text"] or ""
            answers.append(((message["chat_id"], text), message["time"], text))
        return answers

    def replies(self) -> dict[Key, list[float]]:
        got: dict[Key, list[float]] = {}
        for key, at, _ in self._answers():
            got.setdefault(key, []).append(at)
        return got

    def apologies(self, since: float) -> Counter[Chat]:
        return Counter(key[0] for key, at, text in self._answers() if at >= since and APOLOGY in text)

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

    def worst_wait_s(self, since: float) -> float:
        """The longest a message sent since `since` waited for its first answer, echo or apology.
        A chat is answered in order (its key picks one partition), so the n-th answer it got is to
        its n-th message. Unanswered messages are settle()'s to count, not this figure's."""
        answers: dict[Chat, list[float]] = {}
        for key, at, _ in self._answers():
            if at >= since:
                answers.setdefault(key[0], []).append(at)
        worst = 0.0
        for chat in self.chats:
            sent = sorted(at for key, at in self.sent_at.items() if key[0] == chat and at >= since)
            for asked, answered in zip(sent, sorted(answers.get(chat, [])), strict=False):
                worst = max(worst, answered - asked)
        return worst

    def recovery_s(self, restarted_at: float) -> float | None:
        """Seconds from `restarted_at` until every chat had an answer to a message it sent after it:
        the slowest partition's recovery. None if some chat never got one."""
        got = self.replies()
        worst = 0.0
        for chat in self.chats:
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
    feishu: FakeFeishu | None = None

    def services(self, name: str) -> list[ServiceProcess]:
        return [p for p in self.supervisor.processes if p.name == name]

    async def wait_ready(self, processes: list[ServiceProcess] | None = None) -> None:
        await asyncio.to_thread(self.supervisor.wait_ready, READY_TIMEOUT_S, processes)


async def start_pipeline(brokers: int, platforms: bool = False) -> AsyncIterator[ChaosPipeline]:
    """With `platforms`, ingress-feishu and the asr-worker run too, and the load has Feishu chats and
    voice notes in it (the single-broker pipeline, where every service is killed in turn)."""
    if not apache_kafka_available():
        pytest.skip("the chaos suite kills brokers: it needs Apache Kafka's jars (scripts/fetch-kafka.sh) and java")
    # Not pytest's tmp_path: pytest keeps only the last few of those per user, and another session's
    # start may delete them, the broker's data dir included, while this one runs.
    tmp = Path(tempfile.mkdtemp(prefix=f"aibot-chaos-{brokers}-"))
    kafka = ApacheKafka(size=brokers, data_dir=tmp / "kafka").start()
    telegram, llm = FakeTelegram(), FakeLLM()
    await telegram.start()
    await llm.start()
    feishu: FakeFeishu | None = None
    if platforms:
        if missing_tools():
            pytest.skip(f"the voice load needs {' and '.join(missing_tools())} to make speech")
        feishu = FakeFeishu()
        # Feishu re-sends a refused event after 15 s, 5 min, 1 h, 6 h; the fake's default gives up
        # after 7.5 s, less than a killed ingress-feishu takes to start again on a loaded two-core
        # box. Re-sending for about a minute keeps the real contract (accepted once, on a re-send).
        feishu.redelivery_delays = (0.5, 1.0, 2.0, 4.0, *(5.0,) * 10)
        await feishu.start()
    ingress_port = free_port()
    env = pipeline_env(kafka.bootstrap, telegram, llm, f"http://127.0.0.1:{ingress_port}/telegram/webhook")
    if feishu is not None:
        env.update(feishu_env(feishu))
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
    feishu_ingress = None
    if feishu is not None:
        supervisor.add("asr-worker", free_port())
        feishu_ingress = supervisor.add("ingress-feishu", free_port())
    supervisor.start()
    try:
        await asyncio.to_thread(supervisor.wait_ready, READY_TIMEOUT_S)
        for chat in CHATS:  # warm up: every chat answered once, so every group holds its partitions
            telegram.user_sends_text(chat, "warm-up")
        if feishu is not None and feishu_ingress is not None:
            await feishu.subscribe(f"{feishu_ingress.url}/feishu/events")
            for fchat in FEISHU_CHATS:
                feishu.user_sends_text(fchat, "warm-up")
            for vchat in VOICE_CHATS:
                telegram.user_sends_voice(vchat, speech_ogg(), duration=3)
        for chat in CHATS:
            await telegram.wait_for_sent(1, chat_id=chat, timeout=READY_TIMEOUT_S)
        if feishu is not None:
            for fchat in FEISHU_CHATS:
                await feishu.wait_for_sent(1, chat_id=fchat, timeout=READY_TIMEOUT_S)
            for vchat in VOICE_CHATS:
                await telegram.wait_for_sent(1, chat_id=vchat, timeout=READY_TIMEOUT_S)
        load = Load(telegram, feishu=feishu, voice=feishu is not None)
        yield ChaosPipeline(kafka, telegram, llm, supervisor, load, feishu)
    finally:
        await asyncio.to_thread(supervisor.stop)
        await llm.stop()
        if feishu is not None:
            await feishu.stop()
        await telegram.stop()
        kafka.stop()
        print(f"chaos logs (remove when done): {tmp / 'logs'}")


Fault = Callable[[ChaosPipeline], None]
