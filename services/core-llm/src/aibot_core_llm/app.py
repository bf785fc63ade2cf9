"""core-llm: inbound user messages -> the model -> replies, with per-conversation history.

History lives in a Kafka-backed table (changelog co-partitioned with the inbound topic), so the
replica that takes over a partition continues every conversation where the last one left it.
In front of the handler, the access gate (`access_gate.py`) applies the access policy, the role-gated
commands and the quotas; core-llm also serves the admin API on its second port (`admin_api.py`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Generator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import uvicorn
from fastapi import FastAPI

from aibot_common import catalog
from aibot_common.access import AccessStore, TopicFollower
from aibot_common.envelope import Envelope
from aibot_common.outcome import NOTHING, Handler, Outcome, PublishPartial, Streams
from aibot_common.service import create_service_app, kafka_producer
from aibot_common.settings import Settings
from aibot_common.stages import ServiceStatus, Stage, running_stages
from aibot_common.state import ChangelogTable
from aibot_common.topics import CORE_CONVERSATIONS, GROUP_CORE, consumed_by
from aibot_core_llm.access_gate import AccessGate
from aibot_core_llm.admin_api import create_admin_app
from aibot_core_llm.control import StoppableModel, StopSignals, is_regenerate, is_stop, regenerate
from aibot_core_llm.edits import answers_edit
from aibot_core_llm.failover import FailoverModels
from aibot_core_llm.handler import ConversationState
from aibot_core_llm.llm import ChatModel, Completion, OnText, OpenAICompatibleModel
from aibot_core_llm.privacy import guard
from aibot_core_llm.quota import UsageCounter
from aibot_core_llm.streaming import StreamingModel, mark_streamed, partial_replies


class _Whole:
    """A model that only answers whole (`ChatModel`, e.g. a test's scripted one) as a streaming one
    that streams nothing: its answer arrives with the completion."""

    def __init__(self, model: ChatModel) -> None:
        self.name = model.name
        self._model = model

    async def complete(self, messages: list[dict[str, str]], on_text: OnText | None = None) -> Completion:
        return await self._model.complete(messages)


def make_handler(gate: AccessGate, models: FailoverModels | ChatModel, settings: Settings) -> Handler | Streams:
    """core-llm's stage handler: the access gate (policy, commands, quotas, the chat's model) in front
    of the failover pool of streaming models (or one whole-answer model), with stop and regenerate."""
    pool = models if isinstance(models, FailoverModels) else FailoverModels([_Whole(models)], settings.failover)
    if not settings.streaming.enabled:

        async def handle_whole(envelope: Envelope, stored: Any) -> Outcome:
            if not answers_edit(envelope, settings.edits):
                return NOTHING
            state = ConversationState.model_validate(stored) if stored else ConversationState()
            return await gate(envelope, state, lambda name: pool.for_request(first=name))

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
        asked: list[StreamingModel] = []  # the model the gate chose for this chat, if it called one
        with stops.answering(envelope.key) as stop:
            async with partial_replies(
                envelope, publish, streaming.partial_interval_s, streaming.first_partial_after_s
            ) as partials:

                def model_for(name: str) -> StreamingModel:
                    asked.append(StreamingModel(StoppableModel(pool.for_request(first=name), stop), partials))
                    return asked[-1]

                outcome = await gate(envelope, state, model_for)
        return mark_streamed(outcome, partials, regenerable=bool(asked) and asked[-1].answered)

    return Streams(handle_streaming, interrupt=stops.interrupt)


class _EmbeddedServer(uvicorn.Server):
    """The admin API's server, inside core-llm's: the main server owns the signals and stops this one."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


@asynccontextmanager
async def admin_server(app: FastAPI, settings: Settings) -> AsyncIterator[None]:
    if not settings.access.admin_api:
        yield
        return
    port = settings.access.admin_port or catalog.service("core-llm").admin_port
    config = uvicorn.Config(app, host=settings.http.host, port=port, log_config=None, access_log=False)
    server = _EmbeddedServer(config)
    task = asyncio.create_task(server.serve())
    try:
        yield
    finally:
        server.should_exit = True
        await task


def create_app(settings: Settings) -> FastAPI:
    model_configs = settings.llm_models()  # fails fast when the models list has no llm; the configured first
    status = ServiceStatus()
    followers: list[TopicFollower] = []

    def ready() -> bool:
        # Also the access views: a replica that stopped following them would enforce stale bindings.
        return status.ready() and bool(followers) and all(f.healthy for f in followers)

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
            llms = [OpenAICompatibleModel(m, http) for m in model_configs]
            pool = FailoverModels(llms, settings.failover)
            models = {m.name: m for m in llms}
            store = AccessStore(settings.access, settings.kafka, producer, "aibot-core-llm")
            usage = UsageCounter(settings.kafka, producer, "aibot-core-llm")
            gate = AccessGate(store, usage, dict(models), model_configs[0].name, settings.core, settings.access)
            stage = Stage(
                name="core-llm",
                group_id=GROUP_CORE,
                topics=consumed_by(GROUP_CORE),
                # Personal data masked (and /forget honoured) before the access gate and the model.
                handler=guard(make_handler(gate, pool, settings), settings.privacy, gate.may_forget),
                max_in_flight=settings.core.max_in_flight,
                table=table,
            )
            admin = create_admin_app(store, usage, tuple(models), ready, settings.security)
            try:
                # Read the whole access state before the first message: a restarted replica must not
                # answer a user that was revoked, nor refuse one that was approved.
                await store.follower.start()
                await usage.follower.start()
                followers[:] = [store.follower, usage.follower]
                async with (
                    running_stages(settings, producer, [stage], "core-llm") as runners,
                    admin_server(admin, settings),
                ):
                    status.health, status.runners = health, runners
                    yield
            finally:
                await usage.follower.stop()
                await store.follower.stop()

    return create_service_app("core-llm", lifespan, ready, settings.security)
