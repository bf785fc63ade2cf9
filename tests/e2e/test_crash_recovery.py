"""A core-llm replica killed mid-work (SIGKILL, like an OOM kill) loses nothing and duplicates nothing:
the other replica takes its partitions over, and the restarted one rejoins.

Marked `disrupts_pipeline`: it kills a service of the shared session pipeline, so it runs after every
other test (tests/conftest.py orders it), whatever its file name.
"""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest

from tests.e2e.conftest import Pipeline

pytestmark = [pytest.mark.e2e, pytest.mark.disrupts_pipeline]


async def test_killing_core_llm_mid_work_loses_and_duplicates_nothing(pipeline: Pipeline) -> None:
    core = pipeline.service("core-llm")
    chats = range(3000, 3010)
    pipeline.llm.latency_s = 1.0
    try:
        for i in range(3):
            for chat in chats:
                pipeline.telegram.user_sends_text(chat, f"before crash {chat}/{i}")
        await asyncio.sleep(1.5)  # some answered, some in the model's hands, some still queued
        await asyncio.to_thread(core.kill)
        for chat in chats:
            pipeline.telegram.user_sends_text(chat, f"while down {chat}")
        await asyncio.sleep(1)
        pipeline.supervisor.restart_crashed()
        await asyncio.to_thread(pipeline.supervisor.wait_ready, 90, [core])
        for chat in chats:
            await pipeline.telegram.wait_for_sent(4, chat_id=chat, timeout=120)
    finally:
        pipeline.llm.latency_s = 0.0
    await asyncio.sleep(2)  # a duplicate would arrive by now
    for chat in chats:
        texts = [m["text"] for m in pipeline.telegram.sent_to(chat)]
        expected = [f"Echo: before crash {chat}/{i}" for i in range(3)] + [f"Echo: while down {chat}"]
        assert texts == expected, texts
    counts = Counter(m["text"] for m in pipeline.telegram.sent if m["chat_id"] in chats)
    assert max(counts.values()) == 1
