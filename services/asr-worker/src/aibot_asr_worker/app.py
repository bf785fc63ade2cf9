"""asr-worker: voice-note requests -> download -> Whisper -> the transcript as a user message.

The model is loaded once, when the app is created (a model that cannot load stops the process with
a readable message before it joins the consumer group), and shared by every request the stage holds.
The stage runner already works on different conversations at once and keeps one conversation's
notes in order; the transcriber pools or batches whatever is waiting.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

from fastapi import FastAPI

from aibot_asr_worker.download import AudioFetcher, FeishuAudio, TelegramAudio
from aibot_asr_worker.handler import AsrDeps, handle
from aibot_asr_worker.model import ModelPlan, load_model, plan_model
from aibot_asr_worker.transcriber import BatchedTranscriber, PooledTranscriber, Transcriber
from aibot_common.envelope import Envelope, Platform
from aibot_common.outcome import Handler, Outcome
from aibot_common.platforms.telegram import bot_token, make_bot
from aibot_common.service import create_service_app, kafka_producer
from aibot_common.settings import AsrSettings, Settings
from aibot_common.stages import ServiceStatus, Stage, running_stages
from aibot_common.topics import GROUP_ASR, consumed_by

log = logging.getLogger(__name__)


def engine_for(plan: ModelPlan, settings: AsrSettings) -> str:
    if settings.engine != "auto":
        return settings.engine
    return "batched" if plan.device == "cuda" else "pool"


def make_transcriber(plan: ModelPlan, settings: AsrSettings) -> Transcriber:
    engine = engine_for(plan, settings)
    if engine == "batched":
        # One batch at a time on the device; parallelism comes from the batch, not from threads.
        model = load_model(plan, workers=1)
        log.info("asr engine: batches of up to %d waiting voice notes", settings.batch_size)
        return BatchedTranscriber(
            model, name=plan.name, language=plan.language, batch_size=settings.batch_size, beam_size=settings.beam_size
        )
    model = load_model(plan, workers=settings.workers)
    log.info("asr engine: a pool of %d transcription threads", settings.workers)
    return PooledTranscriber(
        model, name=plan.name, language=plan.language, workers=settings.workers, beam_size=settings.beam_size
    )


def make_handler(deps: AsrDeps) -> Handler:
    async def handle_request(request: Envelope, _stored: Any) -> Outcome:
        return await handle(request, deps)

    return handle_request


async def make_fetchers(settings: Settings, stack: AsyncExitStack) -> dict[Platform, AudioFetcher]:
    fetchers: dict[Platform, AudioFetcher] = {}
    asr = settings.asr
    if settings.telegram.enabled:
        bot = make_bot(settings.telegram, read_timeout_s=asr.download_timeout_s)
        await stack.enter_async_context(bot)
        fetchers[Platform.TELEGRAM] = TelegramAudio(bot, max_bytes=asr.max_bytes, timeout_s=asr.download_timeout_s)
    if settings.feishu.enabled:
        from aibot_common.platforms.feishu import FeishuClient  # lark-oapi: seconds to import, Feishu only

        client = FeishuClient(settings.feishu, download_timeout_s=asr.download_timeout_s)
        await stack.enter_async_context(client)
        fetchers[Platform.FEISHU] = FeishuAudio(client, max_bytes=asr.max_bytes, timeout_s=asr.download_timeout_s)
    return fetchers


def create_app(settings: Settings) -> FastAPI:
    # faster-whisper logs two INFO lines per voice note; the stage's own logs and metrics say enough.
    logging.getLogger("faster_whisper").setLevel(logging.WARNING)
    plan = plan_model(settings.asr_model())  # fails fast: no asr model, unknown language, no GPU for cuda
    if settings.telegram.enabled:
        bot_token(settings.telegram)
    if settings.feishu.enabled:
        from aibot_common.platforms.feishu import app_credentials

        app_credentials(settings.feishu)
    transcriber = make_transcriber(plan, settings.asr)
    status = ServiceStatus()

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        try:
            async with kafka_producer(settings, "aibot-asr-worker") as (producer, health), AsyncExitStack() as stack:
                deps = AsrDeps(await make_fetchers(settings, stack), transcriber, settings.asr)
                stage = Stage(
                    name="asr-worker",
                    group_id=GROUP_ASR,
                    topics=consumed_by(GROUP_ASR),
                    handler=make_handler(deps),
                    max_in_flight=settings.asr.max_in_flight,
                )
                async with running_stages(settings, producer, [stage], "asr-worker") as runners:
                    status.health, status.runners = health, runners
                    yield
        finally:
            transcriber.close()

    return create_service_app("asr-worker", lifespan, status.ready, settings.security)
