"""Several llm models, tried in turn: the next one when one times out, answers 5xx or 429, or cannot
be reached, with a circuit breaker per endpoint and a deadline per request.

- The order is the `models` list's (the configured `core.model` first). A model whose breaker is
  open (`breaker_failures` failures in a row) is skipped for `breaker_open_s`; then one request may
  try it again (half-open), and a success closes it.
- A model that has sent nothing after `first_token_timeout_s` counts as timed out, whatever its own
  read timeout, so a hung endpoint costs seconds, not minutes. Once tokens flow the answer is let
  finish: a long answer is not a slow model.
- Every request has `answer_deadline_s` in all, across models and the handler's retries; after it
  (or when every breaker is open) the error is final (not retryable), so the user hears an
  apology within about 30 s instead of waiting on the next attempt.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

from aibot_common import telemetry
from aibot_common.settings import FailoverSettings
from aibot_core_llm.llm import Completion, LLMError, OnText, StreamingChatModel, failure_reason

log = logging.getLogger(__name__)


@dataclass
class Breaker:
    failures_to_open: int
    open_s: float
    failures: int = 0
    opened_at: float | None = None
    trial: bool = False  # a half-open trial is under way

    def allows(self, now: float) -> bool:
        if self.opened_at is None:
            return True
        if now - self.opened_at < self.open_s or self.trial:
            return False
        self.trial = True  # half-open: this one request tries it
        return True

    def succeeded(self) -> None:
        self.failures, self.opened_at, self.trial = 0, None, False

    def released(self) -> None:
        """The call ended without a verdict (cancelled by a stop, or an unexpected error): a
        half-open trial must not stay under way, or the breaker would refuse every call for good."""
        self.trial = False

    def failed(self, now: float) -> None:
        self.failures += 1
        self.trial = False
        if self.failures >= self.failures_to_open or self.opened_at is not None:
            self.opened_at = now


class FailoverModels:
    """The models and their breakers, shared by every request of a replica."""

    def __init__(self, models: Sequence[StreamingChatModel], settings: FailoverSettings) -> None:
        if not models:
            raise ValueError("at least one llm model is needed")
        self.models = list(models)
        self.settings = settings
        self.breakers = {m.name: Breaker(settings.breaker_failures, settings.breaker_open_s) for m in self.models}

    def for_request(self, first: str | None = None) -> RequestModel:
        """One request's model: `first` (a chat's own choice) leads, the rest follow in list order."""
        order = sorted(self.models, key=lambda m: m.name != first) if first else self.models
        return RequestModel(self, time.monotonic() + self.settings.answer_deadline_s, order)


class RequestModel:
    """One request's view: the `StreamingChatModel` the handler calls (maybe several times, on its
    retries), all within the request's deadline."""

    def __init__(self, pool: FailoverModels, deadline: float, order: Sequence[StreamingChatModel]) -> None:
        self._pool = pool
        self._deadline = deadline
        self._order = order
        self.name = order[0].name

    async def complete(self, messages: list[dict[str, str]], on_text: OnText | None = None) -> Completion:
        last: LLMError | None = None
        for model in self._order:
            remaining = self._deadline - time.monotonic()
            if remaining <= 0:
                break
            breaker = self._pool.breakers[model.name]
            if not breaker.allows(time.monotonic()):
                continue
            try:
                completion = await self._try(model, messages, on_text, remaining)
            except LLMError as exc:
                if not exc.retryable:
                    breaker.succeeded()  # it answered: a bad request is not an outage
                    raise
                breaker.failed(time.monotonic())
                telemetry.LLM_BREAKER_OPEN.labels(model=model.name).set(1 if breaker.opened_at is not None else 0)
                telemetry.LLM_FAILOVERS.labels(model=model.name, reason=failure_reason(exc)).inc()
                log.warning("model %s failed (%s); trying the next", model.name, exc)
                last = exc
                continue
            except BaseException:
                breaker.released()  # cancelled (a stop, a shutdown) or an unexpected error: no verdict
                raise
            breaker.succeeded()
            telemetry.LLM_BREAKER_OPEN.labels(model=model.name).set(0)
            self.name = model.name
            return completion
        if self._deadline - time.monotonic() <= 0:
            raise LLMError("no model answered in time", retryable=False) from last
        if last is None:
            raise LLMError("every model is unavailable (circuit open)", retryable=False)
        raise last

    async def _try(
        self, model: StreamingChatModel, messages: list[dict[str, str]], on_text: OnText | None, remaining: float
    ) -> Completion:
        first_token = asyncio.Event()

        def seen(text: str) -> None:
            first_token.set()
            if on_text is not None:
                on_text(text)

        call = asyncio.ensure_future(model.complete(messages, on_text=seen))
        waiter = asyncio.ensure_future(first_token.wait())
        limit = min(self._pool.settings.first_token_timeout_s, remaining)
        try:
            await asyncio.wait({call, waiter}, timeout=limit, return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiter.cancel()
        if not call.done() and not first_token.is_set():
            call.cancel()
            await asyncio.gather(call, return_exceptions=True)
            raise LLMError(f"model timed out: no first token within {limit:.0f}s", retryable=True)
        return await call
