"""renderer: replies -> platform-ready messages (response processor) -> platform APIs (senders).

Two stages in one service: the processor formats and splits, the per-platform sender delivers
each part once (a Kafka-backed record of delivered ids per chat dedupes re-deliveries).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

from fastapi import FastAPI

from aibot_common.envelope import Envelope, Platform
from aibot_common.outcome import Handler, Outcome
from aibot_common.platforms.telegram import bot_token, make_bot
from aibot_common.service import create_service_app, kafka_producer
from aibot_common.settings import Settings
from aibot_common.stages import ServiceStatus, Stage, running_stages
from aibot_common.state import ChangelogTable
from aibot_common.topics import GROUP_RESPONSE_PROCESSOR, GROUP_SENDER, RENDERER_DELIVERED, consumed_by
from aibot_renderer.handler import PlatformSender, deliver, process_reply
from aibot_renderer.telegram_sender import TelegramSender


def make_processor(settings: Settings) -> Handler:
    async def handle_reply(reply: Envelope, _stored: Any) -> Outcome:
        return process_reply(reply, settings.renderer)

    return handle_reply


def make_sender(sender: PlatformSender) -> Handler:
    async def handle_message(message: Envelope, delivered: Any) -> Outcome:
        return await deliver(message, delivered, sender)

    return handle_message


async def make_senders(settings: Settings, stack: AsyncExitStack) -> dict[Platform, PlatformSender]:
    senders: dict[Platform, PlatformSender] = {}
    if settings.telegram.enabled:
        bot = make_bot(settings.telegram)
        await stack.enter_async_context(bot)
        senders[Platform.TELEGRAM] = TelegramSender(bot, settings.telegram, drafts=settings.streaming.telegram_drafts)
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
                    topics=consumed_by(GROUP_RESPONSE_PROCESSOR),
                    handler=make_processor(settings),
                    max_in_flight=settings.renderer.max_in_flight,
                )
            ]
            for platform, sender in senders.items():
                delivered = ChangelogTable(RENDERER_DELIVERED, settings.kafka, f"aibot-renderer-{platform.value}")
                stages.append(
                    Stage(
                        name=f"sender-{platform.value}",
                        group_id=GROUP_SENDER[platform],
                        topics=consumed_by(GROUP_SENDER[platform]),
                        handler=make_sender(sender),
                        max_in_flight=settings.renderer.max_in_flight,
                        attempts=settings.renderer.send_attempts,
                        outage_max_s=settings.renderer.outage_max_s,
                        table=delivered,
                        # The overall flood limit is the bot's, shared by every replica: split by ownership.
                        on_assignment=getattr(sender, "set_share", None),
                    )
                )
            async with running_stages(settings, producer, stages, "renderer") as runners:
                status.health, status.runners = health, runners
                yield

    return create_service_app("renderer", lifespan, status.ready, settings.security)
