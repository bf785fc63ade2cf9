"""renderer: replies -> platform-ready messages (response processor) -> platform APIs (senders).

Two stages in one service: the processor formats and splits, the per-platform sender delivers
each part once (a Kafka-backed record of delivered ids per chat dedupes re-deliveries).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager

from fastapi import FastAPI

from aibot_common import telemetry
from aibot_common.envelope import Platform
from aibot_common.kafka import OutRecord
from aibot_common.platforms.telegram import bot_token, make_bot
from aibot_common.runner import Consumed, Process
from aibot_common.service import create_service_app, kafka_producer
from aibot_common.settings import Settings
from aibot_common.stages import ServiceStatus, Stage, running_stages
from aibot_common.state import ChangelogTable
from aibot_common.topics import (
    GROUP_RESPONSE_PROCESSOR,
    GROUP_SENDER,
    OUTBOUND_BY_PLATFORM,
    RENDERER_DELIVERED,
    REPLIES,
)
from aibot_renderer.handler import PlatformSender, format_reply, is_last_part
from aibot_renderer.telegram_sender import TelegramSender

DELIVERED_IDS_KEPT = 500


def make_processor(settings: Settings) -> Process:
    async def process(record: Consumed) -> Sequence[OutRecord]:
        reply = record.envelope
        topic = OUTBOUND_BY_PLATFORM[reply.conversation.platform]
        return [OutRecord.of(topic, message) for message in format_reply(reply, settings.renderer)]

    return process


def make_sender(platform: Platform, sender: PlatformSender, delivered: ChangelogTable) -> Process:
    async def process(record: Consumed) -> Sequence[OutRecord]:
        message = record.envelope
        sent_ids: list[str] = delivered.get(record.partition, message.key) or []
        if message.id in sent_ids:
            return []  # delivered before a restart or rebalance: do not send it twice
        with telemetry.span(f"{platform.value} send"):
            await sender.send(message)
        if is_last_part(message):
            telemetry.END_TO_END_SECONDS.labels(platform=platform.value, origin=message.origin.value).observe(
                time.time() - message.event_time.timestamp()
            )
        kept = [*sent_ids, message.id][-DELIVERED_IDS_KEPT:]
        return [delivered.put(record.partition, message.key, kept)]

    return process


async def make_senders(settings: Settings, stack: AsyncExitStack) -> dict[Platform, PlatformSender]:
    senders: dict[Platform, PlatformSender] = {}
    if settings.telegram.enabled:
        bot = make_bot(settings.telegram)
        await stack.enter_async_context(bot)
        senders[Platform.TELEGRAM] = TelegramSender(bot, settings.telegram)
    if settings.feishu.enabled:
        # Imported here: lark-oapi takes seconds to import, and a Telegram-only deployment needs none of it.
        from aibot_common.platforms.feishu import FeishuClient
        from aibot_renderer.feishu_sender import FeishuSender

        client = FeishuClient(settings.feishu)
        stack.push_async_callback(client.aclose)
        senders[Platform.FEISHU] = FeishuSender(client)
    return senders


def create_app(settings: Settings) -> FastAPI:
    if settings.telegram.enabled:
        bot_token(settings.telegram)  # fail fast on a missing token
    if settings.feishu.enabled:
        from aibot_common.platforms.feishu import app_credentials

        app_credentials(settings.feishu)  # fail fast on missing Feishu app credentials
    status = ServiceStatus()

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        async with kafka_producer(settings, "aibot-renderer") as (producer, health), AsyncExitStack() as stack:
            senders = await make_senders(settings, stack)
            stages = [
                Stage(
                    name="response-processor",
                    group_id=GROUP_RESPONSE_PROCESSOR,
                    topics=[REPLIES.name],
                    process=make_processor(settings),
                    max_in_flight=settings.renderer.max_in_flight,
                )
            ]
            for platform, sender in senders.items():
                delivered = ChangelogTable(RENDERER_DELIVERED, settings.kafka, f"aibot-renderer-{platform.value}")
                stages.append(
                    Stage(
                        name=f"sender-{platform.value}",
                        group_id=GROUP_SENDER[platform],
                        topics=[OUTBOUND_BY_PLATFORM[platform].name],
                        process=make_sender(platform, sender, delivered),
                        max_in_flight=settings.renderer.max_in_flight,
                        attempts=settings.renderer.send_attempts,
                        table=delivered,
                    )
                )
            async with running_stages(settings, producer, stages, "renderer") as runners:
                status.health, status.runners = health, runners
                yield

    return create_service_app("renderer", lifespan, status.ready)
