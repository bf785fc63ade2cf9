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
from aibot_common.outcome import Handler, Outcome
from aibot_common.service import create_service_app, kafka_producer
from aibot_common.settings import Settings
from aibot_common.stages import ServiceStatus, Stage, running_stages
from aibot_common.state import ChangelogTable
from aibot_common.topics import CORE_CONVERSATIONS, GROUP_CORE, consumed_by
from aibot_core_llm.access_gate import AccessGate
from aibot_core_llm.admin_api import create_admin_app
from aibot_core_llm.handler import ConversationState
from aibot_core_llm.llm import OpenAICompatibleModel
from aibot_core_llm.privacy import guard
from aibot_core_llm.quota import UsageCounter


def make_handler(gate: AccessGate) -> Handler:
    async def handle_message(envelope: Envelope, stored: Any) -> Outcome:
        state = ConversationState.model_validate(stored) if stored else ConversationState()
        return await gate(envelope, state)

    return handle_message


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
    configured = settings.llm_model()  # fails fast when the models list has no llm
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
            models = {m.name: OpenAICompatibleModel(m, http) for m in settings.models if m.type == "llm"}
            store = AccessStore(settings.access, settings.kafka, producer, "aibot-core-llm")
            usage = UsageCounter(settings.kafka, producer, "aibot-core-llm")
            gate = AccessGate(store, usage, dict(models), configured.name, settings.core, settings.access)
            stage = Stage(
                name="core-llm",
                group_id=GROUP_CORE,
                topics=consumed_by(GROUP_CORE),
                # Personal data masked (and /forget honoured) before the access gate and the model.
                handler=guard(make_handler(gate), settings.privacy),
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
