"""ingress-telegram: Telegram updates in (webhook or long polling), envelopes out to Kafka.

An update is acknowledged to Telegram (HTTP 200, or the getUpdates offset moving past it) only after
the broker acknowledged its envelope, so nothing Telegram considers delivered can be lost.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from fastapi import FastAPI, Request, Response
from telegram import Bot, Update
from telegram.error import Conflict, TelegramError

from aibot_common import telemetry
from aibot_common.envelope import Platform
from aibot_common.kafka import make_consumer, publish
from aibot_common.platforms.telegram import bot_id, bot_token, make_bot
from aibot_common.service import Started, background, create_service_app, kafka_producer
from aibot_common.settings import Settings
from aibot_common.stages import ServiceStatus
from aibot_common.topics import GROUP_TELEGRAM_POLLER, TELEGRAM_POLLER_LEASE
from aibot_ingress_telegram.handler import BotIdentity, handle_update

log = logging.getLogger(__name__)

ACK_TIMEOUT_S = 10.0  # Telegram waits longer, but a stuck broker must turn into a retry, not a hang.


_USER = {
    "type": "object",
    "properties": {"id": {"type": "integer"}, "is_bot": {"type": "boolean"}, "first_name": {"type": "string"}},
    "required": ["id", "is_bot", "first_name"],
}
_MESSAGE = {
    "type": "object",
    "properties": {
        "message_id": {"type": "integer"},
        "date": {"type": "integer"},
        "chat": {
            "type": "object",
            "properties": {"id": {"type": "integer"}, "type": {"enum": ["private", "group", "supergroup", "channel"]}},
            "required": ["id", "type"],
        },
        "from": _USER,
        "text": {"type": "string"},
        "caption": {"type": "string"},
        "voice": {
            "type": "object",
            "properties": {
                "file_id": {"type": "string"},
                "file_unique_id": {"type": "string"},
                "duration": {"type": "integer"},
            },
            "required": ["file_id", "file_unique_id", "duration"],
        },
    },
    "required": ["message_id", "date", "chat"],
}
# The webhook's request in the service's OpenAPI document (what the schemathesis tests generate from;
# the document itself is not served). A subset of Telegram's Update: what this ingress reads.
WEBHOOK_OPENAPI = {
    "parameters": [
        {"name": "X-Telegram-Bot-Api-Secret-Token", "in": "header", "required": True, "schema": {"type": "string"}}
    ],
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "update_id": {"type": "integer"},
                        "message": _MESSAGE,
                        "edited_message": _MESSAGE,
                        "callback_query": {
                            "type": "object",
                            "properties": {
                                "id": {"type": "string"},
                                "from": _USER,
                                "data": {"type": "string"},
                                "message": _MESSAGE,
                                "chat_instance": {"type": "string"},
                            },
                            "required": ["id", "from", "chat_instance"],
                        },
                    },
                    "required": ["update_id"],
                }
            }
        },
    },
    "responses": {
        "200": {"description": "taken (on Kafka)"},
        "400": {"description": "malformed update"},
        "401": {"description": "wrong secret token"},
        "413": {"description": "body too large"},
        "429": {"description": "rate limited"},
        "503": {"description": "broker unavailable; Telegram sends again"},
    },
}


class MalformedUpdate(ValueError):
    """An update (with the right secret) that python-telegram-bot or our mapping cannot read."""


def parse_update(body: bytes, bot: Bot | None) -> Update:
    """The webhook body as an Update, or MalformedUpdate. python-telegram-bot's `de_json` raises
    whatever a wrong type makes it raise (TypeError, AttributeError, KeyError, ValueError...), so
    every exception is the sender's mistake here: answered 400, never a 500."""
    try:
        data = json.loads(body)
        if not isinstance(data, dict) or type(data.get("update_id")) is not int:
            raise ValueError("an update is a JSON object with an integer update_id")
        update = Update.de_json(data, bot)
    except Exception as exc:
        raise MalformedUpdate(f"{type(exc).__name__}: {exc}") from exc
    if update is None:
        raise MalformedUpdate("empty update")
    return update


# The toast a press of our buttons is answered with (the renderer's STOP/REGENERATE buttons' data).
CALLBACK_TOASTS = {"stop": "Stopping…", "regen": "Regenerating…"}


class Ingress:
    def __init__(self, settings: Settings, producer: AIOKafkaProducer, bot: Bot) -> None:
        self.settings = settings
        self.producer = producer
        self.bot = bot
        self.identity: BotIdentity | None = None
        self.allowed = set(settings.telegram.allowed_updates)
        self._side_tasks: set[asyncio.Task[None]] = set()

    async def publish(self, update: Update) -> int:
        """Write the update's envelopes and wait for the broker's ack. Returns how many."""
        if self.identity is None:
            raise RuntimeError("publish() before the bot's identity is known (getMe)")
        try:
            outcome = handle_update(update, self.identity, self.allowed)
        except Exception as exc:
            # Fields of a type nobody foresaw (python-telegram-bot keeps what it cannot check): the
            # sender's mistake; nothing is published.
            raise MalformedUpdate(f"unreadable update {update.update_id} ({type(exc).__name__}: {exc})") from exc
        with telemetry.span("telegram update", update_id=update.update_id):
            await publish(self.producer, outcome.emit, ACK_TIMEOUT_S)
        result = "accepted" if outcome.emit else "ignored"
        telemetry.INGRESS_EVENTS.labels(platform=Platform.TELEGRAM.value, outcome=result).inc()
        if outcome.emit:
            telemetry.USER_MESSAGES.labels(platform=Platform.TELEGRAM.value).inc()
        if update.callback_query:
            # The user's client shows a spinner until the query is answered; answer it right away,
            # every press (Stop too). Telegram takes one answer per query: this is the only one.
            query = update.callback_query
            task = asyncio.create_task(self._answer_callback(query.id, CALLBACK_TOASTS.get(query.data or "")))
            self._side_tasks.add(task)
            task.add_done_callback(self._side_tasks.discard)
        return len(outcome.emit)

    async def _answer_callback(self, query_id: str, text: str | None) -> None:
        try:
            await self.bot.answer_callback_query(query_id, text=text)
        except TelegramError as exc:
            log.warning("answerCallbackQuery failed: %s", exc)

    async def register_webhook(self) -> None:
        config = self.settings.telegram
        if not config.webhook.url:
            log.info("no telegram.webhook.url: not calling setWebhook (set it, or use mode: polling)")
            return
        secret = config.webhook.secret_token.get_secret_value() if config.webhook.secret_token else None
        await self.bot.set_webhook(
            url=config.webhook.url,
            secret_token=secret,
            max_connections=config.max_connections,
            allowed_updates=list(config.allowed_updates),
            drop_pending_updates=config.drop_pending_updates,
        )
        log.info("webhook registered", extra={"url": config.webhook.url})

    async def poll(self) -> None:
        """Long polling for operators without public HTTPS.

        Telegram answers 409 to a second concurrent poller, so exactly one replica may poll: the one
        that owns the single partition of the lease topic in the poller consumer group. When it dies
        the group hands the lease to another replica, which continues from the last confirmed offset.
        """
        config = self.settings.telegram
        await self.bot.delete_webhook(drop_pending_updates=config.drop_pending_updates)
        lease = make_consumer(self.settings.kafka, GROUP_TELEGRAM_POLLER, "aibot-telegram-poller")
        lease.subscribe([TELEGRAM_POLLER_LEASE.name])
        await lease.start()
        offset: int | None = None
        try:
            while True:
                await lease.getmany(timeout_ms=100)  # keeps our group membership alive
                if not lease.assignment():
                    await asyncio.sleep(1.0)
                    continue
                try:
                    updates = await self.bot.get_updates(
                        offset=offset, timeout=config.polling_timeout_s, allowed_updates=list(config.allowed_updates)
                    )
                except Conflict as exc:
                    log.warning("getUpdates conflict (another poller or a webhook is set): %s", exc)
                    await asyncio.sleep(5.0)
                    continue
                except TelegramError as exc:
                    log.warning("getUpdates failed: %s", exc)
                    await asyncio.sleep(2.0)
                    continue
                for update in updates:
                    while True:
                        try:
                            await self.publish(update)
                            break
                        except MalformedUpdate as exc:
                            # Re-fetching it would fail the same way, for ever: skip it, counted.
                            telemetry.INGRESS_EVENTS.labels(platform=Platform.TELEGRAM.value, outcome="malformed").inc()
                            log.warning("skipping an unreadable update: %s", exc)
                            break
                        except (KafkaError, TimeoutError) as exc:
                            log.warning("broker did not take update %s, retrying: %s", update.update_id, exc)
                            await asyncio.sleep(1.0)
                    # Only now may Telegram forget it: the next getUpdates confirms it.
                    offset = update.update_id + 1
        finally:
            await lease.stop()


def create_app(settings: Settings) -> FastAPI:
    config = settings.telegram
    bot_token(config)  # fail fast, before start-up, when the token is missing
    running: Started[Ingress] = Started()
    status = ServiceStatus()

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        bot = make_bot(config)
        async with kafka_producer(settings, "aibot-ingress-telegram") as (producer, health):
            ingress = Ingress(settings, producer, bot)
            await bot.initialize()  # getMe: also proves the token works
            ingress.identity = BotIdentity(id=bot_id(config), username=bot.username)
            running.set(ingress)
            status.health = health
            tasks = [ingress.poll()] if config.mode == "polling" else []
            if config.mode == "webhook":
                await ingress.register_webhook()
            try:
                async with background(*tasks, name="ingress-telegram"):
                    yield
            finally:
                running.set(None)
                await bot.shutdown()

    app = create_service_app("ingress-telegram", lifespan, status.ready, settings.security)
    expected_secret = config.webhook.secret_token.get_secret_value().encode() if config.webhook.secret_token else None

    unauthorized_log = telemetry.LogThrottle()  # anyone can send these: not a line each

    @app.post(config.webhook.path, openapi_extra=WEBHOOK_OPENAPI)
    async def webhook(request: Request) -> Response:
        given = request.headers.get("X-Telegram-Bot-Api-Secret-Token", "").encode()
        if expected_secret is not None and not hmac.compare_digest(given, expected_secret):
            telemetry.INGRESS_EVENTS.labels(platform=Platform.TELEGRAM.value, outcome="unauthorized").inc()
            skipped = unauthorized_log.allow()
            if skipped is not None:
                log.warning(
                    "webhook call with a wrong or missing secret token from %s (%d more left out)",
                    request.client,
                    skipped,
                )
            return Response(
                status_code=401, content=b'{"ok":false,"description":"bad secret token"}', media_type="application/json"
            )
        ingress = running.get()
        body = await request.body()  # the request guard cuts it at security.max_body_bytes (413)
        try:
            update = parse_update(body, ingress.bot)
            await ingress.publish(update)
        except MalformedUpdate as exc:
            telemetry.INGRESS_EVENTS.labels(platform=Platform.TELEGRAM.value, outcome="malformed").inc()
            log.warning("malformed webhook body: %s", exc)
            return Response(
                status_code=400, content=b'{"ok":false,"description":"malformed update"}', media_type="application/json"
            )
        except (KafkaError, TimeoutError) as exc:
            # Not acknowledged: Telegram will deliver the update again.
            telemetry.INGRESS_EVENTS.labels(platform=Platform.TELEGRAM.value, outcome="unavailable").inc()
            log.error("broker did not acknowledge update %s: %s", update.update_id, exc)
            return Response(
                status_code=503, content=b'{"ok":false,"description":"try again"}', media_type="application/json"
            )
        return Response(status_code=200, content=b'{"ok":true}', media_type="application/json")

    return app
