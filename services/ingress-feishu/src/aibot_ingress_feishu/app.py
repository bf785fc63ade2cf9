"""ingress-feishu: Feishu event callbacks in, envelopes out to Kafka.

Feishu wants a 200 within 3 s and re-sends an event otherwise, for hours. An event is answered 200
only after the broker acknowledged its envelope; when the broker is slow the answer is 503 and the
re-send is harmless, because the envelope id is derived from Feishu's event id: this replica
remembers the events it took, and for a re-send that reaches another replica, core-llm (recent ids
per conversation) and the renderer (delivered ids per chat, and Feishu's `uuid`) drop the repeat.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse

from aibot_common import telemetry
from aibot_common.envelope import Platform
from aibot_common.kafka import publish
from aibot_common.platforms.feishu import FeishuClient, FeishuRejected, FeishuRetryable
from aibot_common.service import Started, background, create_service_app, kafka_producer
from aibot_common.settings import ConfigError, FeishuConfig, Settings
from aibot_common.stages import ServiceStatus
from aibot_ingress_feishu.handler import BotIdentity, MalformedEvent, event_id, handle_event, is_card_action
from aibot_ingress_feishu.security import Credentials, Refused, open_callback

log = logging.getLogger(__name__)

# Feishu gives up on an answer after 3 s: a stuck broker must become a 503 (and a re-send) before that.
ACK_TIMEOUT_S = 2.5
IDENTITY_RETRY_S = (2.0, 300.0)  # first and longest wait between attempts to learn the bot's open_id
PLATFORM = Platform.FEISHU.value


_EVENT = {
    "type": "object",
    "properties": {
        "schema": {"type": "string"},
        "header": {
            "type": "object",
            "properties": {
                "event_id": {"type": "string"},
                "event_type": {"type": "string"},
                "create_time": {"type": "string"},
                "token": {"type": "string"},
            },
        },
        "event": {
            "type": "object",
            "properties": {
                "sender": {
                    "type": "object",
                    "properties": {
                        "sender_id": {"type": "object", "properties": {"open_id": {"type": "string"}}},
                        "sender_type": {"type": "string"},
                    },
                },
                "message": {
                    "type": "object",
                    "properties": {
                        "message_id": {"type": "string"},
                        "chat_id": {"type": "string"},
                        "chat_type": {"type": "string"},
                        "message_type": {"type": "string"},
                        "content": {"type": "string"},
                    },
                },
            },
        },
        "challenge": {"type": "string"},
        "type": {"type": "string"},
        "token": {"type": "string"},
    },
}
# The callback's request in the service's OpenAPI document (what the schemathesis tests generate
# from; the document itself is not served): Feishu's encrypted form or its plaintext event.
EVENTS_OPENAPI = {
    "parameters": [
        {"name": name, "in": "header", "required": False, "schema": {"type": "string"}}
        for name in ("X-Lark-Request-Timestamp", "X-Lark-Request-Nonce", "X-Lark-Signature")
    ],
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "oneOf": [
                        {"type": "object", "properties": {"encrypt": {"type": "string"}}, "required": ["encrypt"]},
                        _EVENT,
                    ]
                }
            }
        },
    },
    "responses": {
        "200": {"description": "taken (on Kafka); the URL check's challenge; a card button press's toast"},
        "400": {"description": "signed by Feishu but unreadable"},
        "401": {"description": "not known to be from Feishu (one answer for every reason)"},
        "413": {"description": "body too large"},
        "429": {"description": "rate limited"},
        "503": {"description": "broker unavailable; Feishu sends again"},
    },
}


def credentials(config: FeishuConfig) -> Credentials:
    if config.verification_token is None or not config.verification_token.get_secret_value():
        raise ConfigError(
            "feishu.verification_token is not set: copy it from the app's Events & Callbacks > Encryption "
            "Strategy page (AIBOT_FEISHU__VERIFICATION_TOKEN), or set feishu.enabled: false"
        )
    key = config.encrypt_key.get_secret_value() if config.encrypt_key else None
    return Credentials(config.verification_token.get_secret_value(), key or None, config.timestamp_window_s)


class RecentEvents:
    """Event ids this replica has already put on Kafka, kept for the time Feishu may still re-send them."""

    def __init__(self, ttl_s: float, max_entries: int = 100_000) -> None:
        self._ttl_s = ttl_s
        self._max = max_entries
        self._seen: OrderedDict[str, float] = OrderedDict()

    def __contains__(self, event: str) -> bool:
        expires = self._seen.get(event)
        return expires is not None and expires > time.monotonic()

    def add(self, event: str) -> None:
        now = time.monotonic()
        self._seen[event] = now + self._ttl_s
        self._seen.move_to_end(event)
        while self._seen and (len(self._seen) > self._max or next(iter(self._seen.values())) <= now):
            self._seen.popitem(last=False)


class Ingress:
    def __init__(self, config: FeishuConfig, producer: AIOKafkaProducer, identity: BotIdentity) -> None:
        self.config = config
        self.producer = producer
        self.identity = identity
        self.recent = RecentEvents(config.dedupe_ttl_s)

    async def publish(self, payload: dict[str, Any]) -> str:
        """Write the event's envelopes and wait for the broker's ack; returns what became of it."""
        event = event_id(payload)
        if event is not None and event in self.recent:
            return "duplicate"
        try:
            outcome = handle_event(payload, self.identity)
        except MalformedEvent:
            raise
        except Exception as exc:
            # A verified event of a shape nobody foresaw (the SDK's model raising on a wrong type):
            # the sender's mistake, answered 400 and counted, never a 500 and never published.
            raise MalformedEvent(f"unreadable event ({type(exc).__name__}: {exc})") from exc
        with telemetry.span("feishu event", event_id=event or ""):
            await publish(self.producer, outcome.emit, ACK_TIMEOUT_S)
        if event is not None:
            self.recent.add(event)
        if outcome.emit:
            telemetry.USER_MESSAGES.labels(platform=PLATFORM).inc(len(outcome.emit))
        return "accepted" if outcome.emit else "ignored"


async def find_bot_identity(config: FeishuConfig, ingress: Ingress) -> None:
    """Without feishu.bot_open_id, ask Feishu who the bot is (until it answers): a group message is
    answered only when it @mentions this open_id."""
    delay, longest = IDENTITY_RETRY_S
    async with FeishuClient(config) as client:
        while True:
            try:
                info = await client.bot_info()
            except (FeishuRetryable, FeishuRejected) as exc:
                log.warning(
                    "could not ask Feishu for the bot's open_id (groups need it; or set "
                    "feishu.bot_open_id): %s; retrying in %.0fs",
                    exc,
                    delay,
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, longest)
                continue
            ingress.identity = BotIdentity(open_id=info.open_id, name=config.bot_name or info.name)
            log.info("bot identity from Feishu", extra={"bot_open_id": info.open_id})
            return


def _answer(status: int, body: dict[str, Any]) -> Response:
    return JSONResponse(body, status_code=status)


# What a card button press is answered with (Feishu shows the toast; the card is left as it is, the
# renderer changes it). Feishu does not re-send a card callback: a broker failure is said in the toast.
CARD_TOASTS = {
    ("stop", "accepted"): ("info", "Stopping…"),
    ("regen", "accepted"): ("info", "Regenerating…"),
    ("stop", "duplicate"): ("info", "Stopping…"),
    ("regen", "duplicate"): ("info", "Regenerating…"),
}


def card_action_answer(payload: dict[str, Any], outcome: str) -> dict[str, Any]:
    """The body a `card.action.trigger` callback returns (lark-oapi's P2CardActionTriggerResponse)."""
    event = payload.get("event")
    action = event.get("action") if isinstance(event, dict) else None
    value = action.get("value") if isinstance(action, dict) else None
    word = value.get("action") if isinstance(value, dict) else None
    if outcome == "unavailable":
        return {"toast": {"type": "error", "content": "Not delivered, please press again."}}
    toast = CARD_TOASTS.get((str(word), outcome))
    return {"toast": {"type": toast[0], "content": toast[1]}} if toast else {}


def create_app(settings: Settings) -> FastAPI:
    config = settings.feishu
    creds = credentials(config)  # fail fast, before start-up
    if not creds.encrypt_key:
        log.warning(
            "feishu.encrypt_key is not set: events arrive unencrypted and unsigned; set an Encrypt Key "
            "in the developer console and in feishu.encrypt_key"
        )
    running: Started[Ingress] = Started()
    status = ServiceStatus()

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        async with kafka_producer(settings, "aibot-ingress-feishu") as (producer, health):
            ingress = Ingress(config, producer, BotIdentity(open_id=config.bot_open_id, name=config.bot_name))
            tasks = [] if config.bot_open_id else [find_bot_identity(config, ingress)]
            running.set(ingress)
            status.health = health
            try:
                async with background(*tasks, name="ingress-feishu"):
                    yield
            finally:
                running.set(None)

    app = create_service_app("ingress-feishu", lifespan, status.ready, settings.security)

    unauthorized_log = telemetry.LogThrottle()  # anyone can send these: not a line each

    def refused(request: Request, status: int, reason: str, detail: str) -> Response:
        outcome = "unauthorized" if status == 401 else "malformed"
        telemetry.INGRESS_EVENTS.labels(platform=PLATFORM, outcome=outcome).inc()
        skipped = unauthorized_log.allow() if status == 401 else 0
        if skipped is not None:
            client = request.client.host if request.client else "unknown"
            log.warning(
                "feishu callback refused (%d): %s", status, detail, extra={"client": client, "left_out": skipped}
            )
        return _answer(status, {"msg": reason})

    # The body limit (security.max_body_bytes, counted as read) is the request guard's, in front of this.
    @app.post(config.event_path, openapi_extra=EVENTS_OPENAPI)
    async def events(request: Request) -> Response:
        body = await request.body()
        try:
            opened = open_callback(body, request.headers, creds)
        except Refused as exc:
            return refused(request, exc.status, exc.reason, exc.detail)
        if opened.challenge is not None:
            telemetry.INGRESS_EVENTS.labels(platform=PLATFORM, outcome="url_verification").inc()
            log.info("answered Feishu's URL verification")
            return _answer(200, {"challenge": opened.challenge})
        ingress = running.get()
        card_action = is_card_action(opened.payload)
        try:
            outcome = await ingress.publish(opened.payload)
        except MalformedEvent as exc:
            return refused(request, 400, "malformed event", str(exc))
        except (KafkaError, TimeoutError) as exc:
            # Not acknowledged: Feishu will send an event again (a card press it does not: the toast says so).
            telemetry.INGRESS_EVENTS.labels(platform=PLATFORM, outcome="unavailable").inc()
            log.error("broker did not acknowledge feishu event %s: %s", event_id(opened.payload), exc)
            if card_action:
                return _answer(200, card_action_answer(opened.payload, "unavailable"))
            return _answer(503, {"msg": "try again"})
        telemetry.INGRESS_EVENTS.labels(platform=PLATFORM, outcome=outcome).inc()
        if card_action:
            return _answer(200, card_action_answer(opened.payload, outcome))
        return _answer(200, {"msg": "success"})

    return app
