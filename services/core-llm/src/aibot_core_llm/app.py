"""core-llm: inbound user messages -> the model -> replies, with per-conversation history.

History lives in a Kafka-backed table (changelog co-partitioned with the inbound topic), so the
replica that takes over a partition continues every conversation where the last one left it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
from fastapi import FastAPI

from aibot_common.envelope import Envelope
from aibot_common.outcome import NOTHING, Handler, Outcome, PublishPartial, Streams
from aibot_common.service import create_service_app, kafka_producer
from aibot_common.settings import Settings
from aibot_common.stages import ServiceStatus, Stage, running_stages
from aibot_common.state import ChangelogTable
from aibot_common.topics import CORE_CONVERSATIONS, GROUP_CORE, consumed_by
from aibot_core_llm.control import StoppableModel, StopSignals, is_regenerate, is_stop, regenerate
from aibot_core_llm.edits import answers_edit
from aibot_core_llm.failover import FailoverModels
from aibot_core_llm.handler import ConversationState, handle
from aibot_core_llm.llm import ChatModel, Completion, OnText, OpenAICompatibleModel
from aibot_core_llm.privacy import guard
from aibot_core_llm.streaming import StreamingModel, mark_streamed, partial_replies


class _Whole:
    """A model that only answers whole (`ChatModel`, e.g. a test's scripted one) as a streaming one
    that streams nothing: its answer arrives with the completion."""

    def __init__(self, model: ChatModel) -> None:
        self.name = model.name
        self._model = model

    async def complete(self, messages: list[dict[str, str]], on_text: OnText | None = None) -> Completion:
        return await self._model.complete(messages)


def make_handler(models: FailoverModels | ChatModel, settings: Settings) -> Handler | Streams:
    """core-llm's stage handler: the failover pool of streaming models, or one whole-answer model."""
    if not isinstance(models, FailoverModels):
        models = FailoverModels([_Whole(models)], settings.failover)
    if not settings.streaming.enabled:

        async def handle_whole(envelope: Envelope, stored: Any) -> Outcome:
            if not answers_edit(envelope, settings.edits):
                return NOTHING
            state = ConversationState.model_validate(stored) if stored else ConversationState()
            return await handle(envelope, state, models.for_request(), settings.core)

        return handle_whole

    stops = StopSignals()

    async def handle_streaming(envelope: Envelope, stored: Any, publish: PublishPartial) -> Outcome:
        if not answers_edit(envelope, settings.edits):
            return NOTHING  # an edit the settings leave unanswered (deterministic: a re-delivery agrees)
        if is_stop(envelope):
            return NOTHING  # done on arrival (`stops.interrupt`): the stopped answer went out as the answer
        state = ConversationState.model_validate(stored) if stored else ConversationState()
        if is_regenerate(envelope):
            again = regenerate(envelope, state)
            if again is None:
                return NOTHING
            envelope, state = again
        streaming = settings.streaming
        with stops.answering(envelope.key) as stop:
            async with partial_replies(
                envelope, publish, streaming.partial_interval_s, streaming.first_partial_after_s
            ) as partials:
                model = StreamingModel(StoppableModel(models.for_request(), stop), partials)
                outcome = await handle(envelope, state, model, settings.core)
        return mark_streamed(outcome, partials, regenerable=model.answered)

    return Streams(handle_streaming, interrupt=stops.interrupt)


def create_app(settings: Settings) -> FastAPI:
    model_configs = settings.llm_models()  # fails fast when the models list has no llm
    status = ServiceStatus()

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        table = ChangelogTable(CORE_CONVERSATIONS, settings.kafka, "aibot-core-llm")
        # Keep as many idle connections as calls can be in flight: closing the surplus after a burst
        # and reconnecting (TLS, against a real provider) for the next one showed up in profiles.
        in_flight = settings.core.max_in_flight
        limits = httpx.Limits(max_connections=in_flight, max_keepalive_connections=in_flight)
        async with (
            kafka_producer(settings, "aibot-core-llm") as (producer, health),
            httpx.AsyncClient(limits=limits) as http,
        ):
            models = FailoverModels([OpenAICompatibleModel(m, http) for m in model_configs], settings.failover)
            stage = Stage(
                name="core-llm",
                group_id=GROUP_CORE,
                topics=consumed_by(GROUP_CORE),
                handler=guard(make_handler(models, settings), settings.privacy),  # personal data masked
                max_in_flight=settings.core.max_in_flight,
                table=table,
            )
            async with running_stages(settings, producer, [stage], "core-llm") as runners:
                status.health, status.runners = health, runners
                yield

    return create_service_app("core-llm", lifespan, status.ready, settings.security)
