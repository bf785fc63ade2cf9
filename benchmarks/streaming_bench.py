"""Streaming benchmark: from the model's first token to the first text the user sees, and how many
platform calls an answer costs, with many chats streaming at once.

Runs the real services as processes (ingress-telegram, core-llm, renderer) against the embedded
broker (or AIBOT_TEST_KAFKA_BOOTSTRAP), the fake Telegram with Telegram's flood limits enforced
(1 message/s per chat with a burst of 3, 20/min per group, 30/s per bot: a 429 past them) and a
fake model that streams one word every `--word-delay` seconds. *First visible* is, per answer, the
time from the fake model sending its first token to the fake Telegram receiving the first draft
(private chats) or message (groups) that shows it. Prints figures; asserts nothing.

    uv run python benchmarks/streaming_bench.py [--chats 50] [--words 150] [--word-delay 0.02]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import time
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

from text_pipeline import text_pipeline

from aibot_common.testing.broker import test_broker
from aibot_fakes.llm import FakeLLM
from aibot_fakes.telegram import FakeTelegram
from aibot_fakes.telegram_flood import FloodLimits


class TimedLLM(FakeLLM):
    """The fake model, noting when it sent each answer's first token (the answer is "Echo: <text>")."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.first_token: dict[str, float] = {}

    async def _stream(  # type: ignore[override]
        self, head: dict[str, Any], answer: str, finish_reason: str, usage: dict[str, int] | None
    ) -> AsyncIterator[str]:
        async for event in super()._stream(head, answer, finish_reason, usage):
            if answer not in self.first_token and '"content": "' in event and '"content": ""' not in event:
                self.first_token[answer] = time.time()
            yield event


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]


async def run_round(
    telegram: FakeTelegram, llm: TimedLLM, chats: list[int], words: int, tag: str, group: bool
) -> tuple[list[float], Counter[str], int]:
    """Every chat asks at once; returns first-visible latencies, calls by method, and missing answers."""
    calls_before = len(telegram.calls)
    questions = {chat: f"{tag} {chat} " + " ".join(f"w{i}" for i in range(words)) for chat in chats}
    for chat, text in questions.items():
        prefix = "@aibot_test_bot " if group else ""
        telegram.user_sends_text(chat, prefix + text, chat_type="group" if group else "private")
    expected = {chat: f"Echo: {text}" for chat, text in questions.items()}
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        done = [c for c in chats if "\n".join(telegram.shown_in(c)).split() == expected[c].split()]
        if len(done) == len(chats):
            break
        await asyncio.sleep(0.1)
    missing = sum(1 for c in chats if "\n".join(telegram.shown_in(c)).split() != expected[c].split())
    latencies = []
    for chat in chats:
        first_token = llm.first_token.get(expected[chat])
        if group:
            shown = [m["time"] for m in telegram.sent_to(chat)]
        else:
            shown = [d["time"] for d in telegram.drafts if d["chat_id"] == chat]
        if first_token is not None and shown:
            latencies.append(min(shown) - first_token)
    calls = Counter(
        c["method"]
        for c in telegram.calls[calls_before:]
        if c["method"] in ("sendMessage", "editMessageText", "sendMessageDraft", "deleteMessage")
    )
    return latencies, calls, missing


async def main(args: argparse.Namespace) -> None:
    with test_broker() as bootstrap:
        telegram = FakeTelegram(flood_limits=FloodLimits())
        llm = TimedLLM(chunk_delay_s=args.word_delay)
        await telegram.start()
        await llm.start()
        model = {"name": "fake", "type": "llm", "endpoint": llm.endpoint, "max_tokens": 4096}
        supervisor = text_pipeline(bootstrap, telegram.url, telegram.token, model)
        supervisor.start()
        try:
            await asyncio.to_thread(supervisor.wait_ready, 400)
            telegram.user_sends_text(1, "warm-up")
            await telegram.wait_for_sent(1, chat_id=1, timeout=120)
            private = await run_round(telegram, llm, [40_000 + n for n in range(args.chats)], args.words, "p", False)
            await asyncio.sleep(2)
            groups = await run_round(telegram, llm, [-50_000 - n for n in range(args.chats)], args.words, "g", True)
        finally:
            await asyncio.to_thread(supervisor.stop)
            await llm.stop()
            await telegram.stop()

    stream_s = args.words * args.word_delay
    print(f"# streaming benchmark ({platform.node()}, {os.cpu_count()} cores, {time.strftime('%Y-%m-%d')})")
    print(
        f"{args.chats} chats streaming at once, {args.words + 3} words each, "
        f"a word every {args.word_delay * 1000:.0f} ms (~{stream_s:.1f} s an answer), "
        f"Telegram flood limits enforced by the fake, broker: {bootstrap_kind()}"
    )
    for name, (latencies, calls, missing) in (("private (drafts)", private), ("groups (edits)", groups)):
        answers = args.chats - missing
        per_answer = ", ".join(f"{method} {count / args.chats:.1f}" for method, count in sorted(calls.items()))
        print(
            f"{name}: first token -> first visible text over {len(latencies)} answers: "
            f"p50 {statistics.median(latencies) * 1000:.0f} ms, p95 {percentile(latencies, 95) * 1000:.0f} ms, "
            f"max {max(latencies) * 1000:.0f} ms; complete {answers}/{args.chats}; "
            f"platform calls per answer: {sum(calls.values()) / args.chats:.1f} ({per_answer})"
        )
    print(f"429s from the fake Telegram: {telegram.flood.refused if telegram.flood else 0}")


def bootstrap_kind() -> str:
    return "AIBOT_TEST_KAFKA_BOOTSTRAP" if os.environ.get("AIBOT_TEST_KAFKA_BOOTSTRAP") else "embedded (Tansu)"


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chats", type=int, default=50)
    parser.add_argument("--words", type=int, default=150)
    parser.add_argument("--word-delay", type=float, default=0.02, help="seconds between the model's words")
    asyncio.run(main(parser.parse_args()))
