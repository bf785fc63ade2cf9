"""core-llm failing over between models: the next on 5xx/429/timeouts, a breaker per endpoint, and
an apology in time when every model is down (fake OpenAI-compatible servers, real HTTP)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import httpx
import pytest
from prometheus_client import REGISTRY

from aibot_common.envelope import Conversation, Envelope, Kind, Platform, TextPart
from aibot_common.settings import CoreSettings, FailoverSettings, ModelConfig
from aibot_core_llm.failover import FailoverModels
from aibot_core_llm.handler import ConversationState, handle
from aibot_core_llm.llm import OpenAICompatibleModel
from aibot_fakes.llm import FakeLLM

CORE = CoreSettings(system_prompt="be brief", llm_attempts=2)


def _message(n: int = 1) -> Envelope:
    return Envelope(
        id=f"tg-5-{n}",
        kind=Kind.MESSAGE,
        conversation=Conversation(platform=Platform.TELEGRAM, chat_id="5"),
        parts=[TextPart(text="are you there")],
    )


@pytest.fixture
async def fakes() -> AsyncIterator[tuple[FakeLLM, FakeLLM]]:
    primary, backup = FakeLLM(model="primary"), FakeLLM(model="backup")
    await primary.start()
    await backup.start()
    yield primary, backup
    await primary.stop()
    await backup.stop()


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as client:
        yield client


def _pool(fakes: tuple[FakeLLM, FakeLLM], http: httpx.AsyncClient, **failover: float) -> FailoverModels:
    models = [
        OpenAICompatibleModel(ModelConfig(name=fake.model, type="llm", endpoint=fake.endpoint, timeout_s=30), http)
        for fake in fakes
    ]
    return FailoverModels(models, FailoverSettings(**failover))


def _failovers(model: str, reason: str) -> float:
    return REGISTRY.get_sample_value("aibot_llm_failovers_total", {"model": model, "reason": reason}) or 0.0


async def test_a_5xx_or_429_moves_the_request_to_the_next_model(fakes, http) -> None:  # type: ignore[no-untyped-def]
    primary, backup = fakes
    pool = _pool(fakes, http)
    before = _failovers("primary", "503")
    primary.fail_next(status=503)
    outcome = await handle(_message(), ConversationState(), pool.for_request(), CORE)
    assert outcome.emit[0].text() == "Echo: are you there"
    assert len(primary.requests) == 1 and len(backup.requests) == 1
    assert _failovers("primary", "503") == before + 1
    primary.fail_next(status=429)
    await handle(_message(2), ConversationState(), pool.for_request(), CORE)
    assert len(backup.requests) == 2


async def test_a_model_silent_past_the_first_token_timeout_is_skipped(fakes, http) -> None:  # type: ignore[no-untyped-def]
    primary, backup = fakes
    primary.latency_s = 8.0  # hung: no first byte for eight seconds
    pool = _pool(fakes, http, first_token_timeout_s=0.3)
    started = time.monotonic()
    outcome = await handle(_message(), ConversationState(), pool.for_request(), CORE)
    assert outcome.emit[0].text() == "Echo: are you there"
    # Well before the hung model would have answered (a loaded test machine is slow, not 8 s slow).
    assert time.monotonic() - started < 6.0 and len(backup.requests) == 1


async def test_a_breaker_opens_after_failures_in_a_row_and_lets_one_trial_through_later(fakes, http) -> None:  # type: ignore[no-untyped-def]
    primary, backup = fakes
    pool = _pool(fakes, http, breaker_failures=2, breaker_open_s=0.5)
    primary.fail_next(status=500, times=2)
    for n in range(4):
        await handle(_message(n), ConversationState(), pool.for_request(), CORE)
    assert len(primary.requests) == 2, "open after two failures: the primary is no longer asked"
    assert len(backup.requests) == 4
    time.sleep(0.6)
    await handle(_message(9), ConversationState(), pool.for_request(), CORE)
    assert len(primary.requests) == 3, "half-open: one trial, which succeeds and closes it"
    await handle(_message(10), ConversationState(), pool.for_request(), CORE)
    assert len(primary.requests) == 4


async def test_when_every_model_is_down_the_user_hears_an_apology_in_time(fakes, http) -> None:  # type: ignore[no-untyped-def]
    primary, backup = fakes
    primary.latency_s = backup.latency_s = 8.0
    pool = _pool(fakes, http, first_token_timeout_s=0.4, answer_deadline_s=1.0)
    started = time.monotonic()
    outcome = await handle(_message(), ConversationState(), pool.for_request(), CORE)
    assert time.monotonic() - started < 6.0, "the deadline, not the hung models, decided"
    assert outcome.emit[0].text().startswith("Sorry, I could not get an answer")
    assert outcome.state.turns == [], "a failed answer is not history"


async def test_a_half_open_trial_that_is_cancelled_does_not_keep_the_breaker_shut() -> None:
    """A stop press (or a shutdown) cancels the one request let through a half-open breaker; the
    next request must be allowed to try, or the model stays refused for good (seen in make chaos)."""
    import asyncio

    from aibot_core_llm.failover import Breaker

    breaker = Breaker(failures_to_open=1, open_s=0.0)
    breaker.failed(time.monotonic())
    assert breaker.allows(time.monotonic())  # the half-open trial
    assert not breaker.allows(time.monotonic())  # one at a time

    class Hanging:
        name = "hanging"

        async def complete(self, messages, on_text=None):  # type: ignore[no-untyped-def]
            await asyncio.sleep(60)

    pool = FailoverModels([Hanging()], FailoverSettings())  # type: ignore[list-item]
    pool.breakers["hanging"] = breaker = Breaker(failures_to_open=1, open_s=0.0)
    breaker.failed(time.monotonic())
    call = asyncio.ensure_future(pool.for_request().complete([{"role": "user", "content": "hi"}]))
    await asyncio.sleep(0.05)
    assert breaker.trial
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    assert not breaker.trial and breaker.allows(time.monotonic())  # the next request may try again
