"""Both ingress apps, real FastAPI apps behind the real request guard, with the broker and the
Telegram Bot API replaced by stubs that record what would have been published. For the HTTP-level
hardening and fuzz tests: they need thousands of requests, which a broker round trip would make slow."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from pydantic import SecretStr

from aibot_common.settings import FeishuConfig, SecuritySettings, Settings, TelegramConfig, TelegramWebhook
from aibot_fakes.feishu import encrypt, sign

TG_SECRET = "unit-webhook-secret"
TG_PATH = "/telegram/webhook"
FS_PATH = "/feishu/events"
FS_TOKEN = "unit-verification-token"
FS_KEY = "unit-encrypt-key"


class StubProducer:
    """Takes records like AIOKafkaProducer.send and acknowledges them at once."""

    def __init__(self) -> None:
        self.records: list[tuple[str, bytes]] = []

    async def send(self, topic: str, *, value: bytes, **_: Any) -> asyncio.Future[None]:
        self.records.append((topic, value))
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        future.set_result(None)
        return future


class StubHealth:
    ok = True


class StubBot:
    """What the Telegram ingress asks of python-telegram-bot's Bot in webhook mode without a URL."""

    username = "aibot_test_bot"

    def __init__(self) -> None:
        self.answered: list[tuple[str, str | None]] = []  # callback queries answered, with their toast

    async def initialize(self) -> None:
        return None

    async def shutdown(self) -> None:
        return None

    async def answer_callback_query(self, query_id: str, text: str | None = None) -> bool:
        self.answered.append((query_id, text))
        return True


def _stub_kafka(producer: StubProducer) -> Any:
    @asynccontextmanager
    async def kafka_producer(settings: Settings, client_id: str) -> AsyncIterator[tuple[StubProducer, StubHealth]]:
        yield producer, StubHealth()

    return kafka_producer


def unlimited() -> SecuritySettings:
    """The fuzz tests send thousands of requests from one address: no rate limit for them."""
    return SecuritySettings(rate_limit={"enabled": False})


def telegram_app(
    monkeypatch: pytest.MonkeyPatch, security: SecuritySettings | None = None
) -> tuple[FastAPI, StubProducer]:
    from aibot_ingress_telegram import app as module

    producer = StubProducer()
    monkeypatch.setattr(module, "kafka_producer", _stub_kafka(producer))
    monkeypatch.setattr(module, "make_bot", lambda config: StubBot())
    settings = Settings(
        telegram=TelegramConfig(
            bot_token=SecretStr("123456:unit-token"), webhook=TelegramWebhook(secret_token=SecretStr(TG_SECRET))
        ),
        security=security or SecuritySettings(),
    )
    return module.create_app(settings), producer


def feishu_app(
    monkeypatch: pytest.MonkeyPatch, security: SecuritySettings | None = None
) -> tuple[FastAPI, StubProducer]:
    from aibot_ingress_feishu import app as module

    producer = StubProducer()
    monkeypatch.setattr(module, "kafka_producer", _stub_kafka(producer))
    settings = Settings(
        feishu=FeishuConfig(
            enabled=True,
            verification_token=SecretStr(FS_TOKEN),
            encrypt_key=SecretStr(FS_KEY),
            bot_open_id="ou_bot",
        ),
        security=security or SecuritySettings(),
    )
    return module.create_app(settings), producer


@asynccontextmanager
async def client(app: FastAPI, peer: str = "203.0.113.7") -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client on the app, its lifespan running, requests arriving from `peer`."""
    transport = httpx.ASGITransport(app=app, client=(peer, 40000))
    async with app.router.lifespan_context(app), httpx.AsyncClient(transport=transport, base_url="http://ingress") as c:
        yield c


def telegram_headers() -> dict[str, str]:
    return {"X-Telegram-Bot-Api-Secret-Token": TG_SECRET, "Content-Type": "application/json"}


def telegram_update(update_id: int = 1, text: str = "hello") -> dict[str, Any]:
    return {
        "update_id": update_id,
        "message": {
            "message_id": 5,
            "date": 1_700_000_000,
            "chat": {"id": 77, "type": "private"},
            "from": {"id": 9, "is_bot": False, "first_name": "Ann"},
            "text": text,
        },
    }


def feishu_event(event_id: str = "e1", content: Any = None) -> dict[str, Any]:
    return {
        "schema": "2.0",
        "header": {
            "event_id": event_id,
            "event_type": "im.message.receive_v1",
            "create_time": "1700000000000",
            "token": FS_TOKEN,
        },
        "event": {
            "sender": {"sender_id": {"open_id": "ou_a"}, "sender_type": "user"},
            "message": {
                "message_id": f"om_{event_id}",
                "chat_id": "oc_1",
                "chat_type": "p2p",
                "message_type": "text",
                "content": json.dumps({"text": "hi"}) if content is None else content,
            },
        },
    }


def feishu_signed(payload: Any, *, encrypted: bool = True) -> tuple[bytes, dict[str, str]]:
    """The body and headers Feishu would send for this payload: encrypted and signed."""
    plaintext = payload if isinstance(payload, str) else json.dumps(payload)
    body = json.dumps({"encrypt": encrypt(plaintext, FS_KEY)}).encode() if encrypted else plaintext.encode()
    stamp, nonce = str(int(time.time())), "n0nce"
    headers = {
        "Content-Type": "application/json",
        "X-Lark-Request-Timestamp": stamp,
        "X-Lark-Request-Nonce": nonce,
        "X-Lark-Signature": sign(stamp, nonce, FS_KEY, body),
    }
    return body, headers


class SyncApp:
    """An app with its lifespan running on a private event loop, called synchronously: for
    hypothesis tests (which are sync) without the thread hop of Starlette's TestClient per request,
    which made thousands of requests take minutes on a busy machine."""

    def __init__(self, app: FastAPI) -> None:
        self.app = app
        self.loop = asyncio.new_event_loop()
        self._lifespan = app.router.lifespan_context(app)
        transport = httpx.ASGITransport(app=app, client=("203.0.113.7", 40000))
        self.http = httpx.AsyncClient(transport=transport, base_url="http://ingress")
        self.loop.run_until_complete(self._lifespan.__aenter__())

    def post(self, path: str, body: bytes, headers: dict[str, str]) -> httpx.Response:
        return self.loop.run_until_complete(self.http.post(path, content=body, headers=headers))

    def get(self, path: str) -> httpx.Response:
        return self.loop.run_until_complete(self.http.get(path))

    def close(self) -> None:
        self.loop.run_until_complete(self.http.aclose())
        self.loop.run_until_complete(self._lifespan.__aexit__(None, None, None))
        self.loop.run_until_complete(self.loop.shutdown_asyncgens())
        self.loop.close()
