"""Delivering Telegram messages: flood limits, retries, and which errors are permanent."""

from __future__ import annotations

import asyncio
import logging

from aiolimiter import AsyncLimiter
from opentelemetry.trace import SpanKind
from telegram import Bot, MessageEntity, ReplyParameters
from telegram.error import BadRequest, ChatMigrated, Forbidden, InvalidToken, NetworkError, RetryAfter, TelegramError

from aibot_common import telemetry
from aibot_common.envelope import ChatType, Envelope, TextPart
from aibot_common.errors import InvalidMessage, Retryable
from aibot_common.platforms.telegram import POOL_SIZE
from aibot_common.settings import TelegramConfig
from aibot_renderer.limits import PerChatLimiter

log = logging.getLogger(__name__)
PLATFORM = "telegram"


class TelegramSender:
    def __init__(self, bot: Bot, config: TelegramConfig) -> None:
        self._bot = bot
        self._overall = AsyncLimiter(config.messages_per_second, 1)
        self._groups = PerChatLimiter(config.group_messages_per_minute, 60)
        # At most one request per pooled connection: a long queue inside httpcore's pool is scanned on
        # every assignment, which made connection bookkeeping most of the renderer's CPU under load.
        self._connections = asyncio.Semaphore(POOL_SIZE)

    async def send(self, message: Envelope) -> None:
        part = next((p for p in message.parts if isinstance(p, TextPart)), None)
        if part is None or not part.text.strip():
            raise InvalidMessage("outbound telegram message without text")
        chat_id = message.conversation.chat_id
        if message.conversation.chat_type is ChatType.GROUP:
            await self._groups.acquire(chat_id)
        await self._overall.acquire()
        entities = [MessageEntity.de_json(e, None) for e in part.entities or ()]
        reply = (
            ReplyParameters(message_id=int(message.reply_to_message_id), allow_sending_without_reply=True)
            if message.reply_to_message_id
            else None
        )
        try:
            await self._send(chat_id, part.text, entities, reply)
        except BadRequest as exc:
            if "entit" in str(exc).lower() and entities:
                # Formatting rejected: the words still matter more than the bold. Send them plain.
                log.warning("telegram rejected entities, sending plain text: %s", exc)
                await self._send(chat_id, part.text, [], reply)
            else:
                raise

    async def _send(self, chat_id: str, text: str, entities: list, reply: ReplyParameters | None) -> None:
        try:
            # A CLIENT span per API call, so a trace shows each sendMessage and its outcome.
            with telemetry.span("telegram sendMessage", kind=SpanKind.CLIENT, **{"rpc.method": "sendMessage"}):
                async with self._connections:
                    await self._bot.send_message(
                        chat_id=chat_id, text=text, entities=entities or None, reply_parameters=reply
                    )
            telemetry.PLATFORM_API_CALLS.labels(platform=PLATFORM, method="sendMessage", code="200").inc()
        except RetryAfter as exc:
            self._count("429")
            retry_after = exc.retry_after
            seconds = retry_after.total_seconds() if hasattr(retry_after, "total_seconds") else float(retry_after)
            raise Retryable(f"telegram flood control: retry in {seconds}s", retry_after=seconds) from exc
        except ChatMigrated as exc:
            self._count("400")
            log.info("chat %s migrated to %s; sending there", chat_id, exc.new_chat_id)
            await self._send(str(exc.new_chat_id), text, entities, None)
        except BadRequest as exc:
            self._count("400")
            if "entit" in str(exc).lower():
                raise
            raise InvalidMessage(f"telegram rejected the message (400): {exc}") from exc
        except (Forbidden, InvalidToken) as exc:
            self._count("403" if isinstance(exc, Forbidden) else "401")
            raise InvalidMessage(f"telegram refused delivery: {exc}") from exc
        except NetworkError as exc:  # timeouts, connection errors and 5xx
            self._count("5xx")
            raise Retryable(f"telegram unavailable: {exc}") from exc
        except TelegramError as exc:
            self._count("error")
            raise InvalidMessage(f"telegram error: {exc}") from exc

    @staticmethod
    def _count(code: str) -> None:
        telemetry.PLATFORM_API_CALLS.labels(platform=PLATFORM, method="sendMessage", code=code).inc()
