"""What every service shares around its handler: the HTTP app, health, and the process entry point."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, Generic, TypeVar

import uvicorn
from aiokafka import AIOKafkaProducer
from fastapi import FastAPI, HTTPException, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from aibot_common import catalog, telemetry
from aibot_common.kafka import ensure_topics, make_producer
from aibot_common.settings import ConfigError, Settings, load_settings

log = logging.getLogger(__name__)
_background_failed = False


T = TypeVar("T")


class Started(Generic[T]):
    """What the app's lifespan started (the ingress, with its producer), for the request handlers:
    typed, and a 503 (the platform sends again) for a request that arrives before or after it."""

    def __init__(self) -> None:
        self._value: T | None = None

    def set(self, value: T | None) -> None:
        self._value = value

    def get(self) -> T:
        if self._value is None:
            raise HTTPException(status_code=503, detail="starting up or shutting down; try again")
        return self._value


class KafkaHealth:
    """Readiness that reflects the Kafka connection: a metadata request answered recently."""

    def __init__(self, producer: AIOKafkaProducer, interval_s: float = 5.0) -> None:
        self._producer = producer
        self._interval_s = interval_s
        self._last_ok = 0.0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._last_ok = time.monotonic()
        self._task = asyncio.create_task(self._loop())

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    @property
    def ok(self) -> bool:
        return time.monotonic() - self._last_ok < self._interval_s * 3

    async def _loop(self) -> None:
        while True:
            try:
                await asyncio.wait_for(self._producer.client.fetch_all_metadata(), self._interval_s)
                self._last_ok = time.monotonic()
            except Exception as exc:
                log.warning("kafka metadata request failed: %s", exc)
            await asyncio.sleep(self._interval_s)


@asynccontextmanager
async def kafka_producer(settings: Settings, client_id: str) -> AsyncIterator[tuple[AIOKafkaProducer, KafkaHealth]]:
    """The start-up every service shares: the topics present, an acks=all producer, and the Kafka
    health that /readyz reads; stopped in reverse on the way out."""
    if settings.kafka.create_topics:
        await ensure_topics(settings.kafka)
    producer = make_producer(settings.kafka, client_id)
    await producer.start()
    health = KafkaHealth(producer)
    health.start()
    try:
        yield producer, health
    finally:
        await health.stop()
        await producer.stop()


Lifespan = Callable[[FastAPI], AbstractAsyncContextManager[None]]


def create_service_app(name: str, lifespan: Lifespan, ready: Callable[[], bool]) -> FastAPI:
    """The HTTP app of a service: /healthz (alive), /readyz (can do its work), /metrics."""
    app = FastAPI(title=f"ai-bot {name}", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok", "service": name}

    @app.get("/readyz")
    async def readyz(response: Response) -> dict[str, str]:
        if ready():
            return {"status": "ready", "service": name}
        response.status_code = 503
        return {"status": "not ready", "service": name}

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    return app


def settings_or_exit() -> Settings:
    try:
        return load_settings()
    except ConfigError as exc:
        print(f"ai-bot: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


def prepare(service: str) -> Settings:
    """Load settings, set up logs and traces, and register secrets so logs never print them."""
    settings = settings_or_exit()
    obs = settings.observability
    telemetry.setup_logging(service, obs.log_level, obs.log_format, obs.error_log_path)
    telemetry.setup_tracing(service, obs.otlp_endpoint)
    for secret in (
        settings.telegram.bot_token,
        settings.telegram.webhook.secret_token,
        settings.feishu.app_secret,
        settings.feishu.verification_token,
        settings.feishu.encrypt_key,
        settings.kafka.sasl_password,
        settings.storage.secret_access_key,
        *(m.api_key for m in settings.models),
    ):
        if secret is not None:
            telemetry.register_secret(secret.get_secret_value())
    return settings


def serve(app: FastAPI, settings: Settings, default_port: int) -> None:
    """Run the app until SIGTERM; the app's lifespan owns the Kafka clients and stage tasks."""
    port = settings.http.port or default_port
    config = uvicorn.Config(
        app, host=settings.http.host, port=port, log_config=None, access_log=False, timeout_graceful_shutdown=30
    )
    server = uvicorn.Server(config)
    server.run()
    if _background_failed:
        raise SystemExit(1)


@asynccontextmanager
async def background(*coroutines: Coroutine[Any, Any, None], name: str) -> AsyncIterator[list[asyncio.Task[None]]]:
    """Run coroutines for the life of the app. If one of them fails, the process exits non-zero so
    the supervisor (Kubernetes, systemd, the local runner) restarts it: uncommitted work comes back."""
    tasks = [asyncio.create_task(c) for c in coroutines]

    def crashed(task: asyncio.Task[None]) -> None:
        if task.cancelled():
            return
        error = task.exception()
        if error is not None:
            global _background_failed
            _background_failed = True
            log.critical("%s: background task failed, exiting: %r", name, error, exc_info=error)
            signal.raise_signal(signal.SIGTERM)

    for task in tasks:
        task.add_done_callback(crashed)
    try:
        yield tasks
    finally:
        for task in tasks:
            task.remove_done_callback(crashed)
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def run_service(name: str, create_app: Callable[[Settings], FastAPI]) -> None:
    """The `__main__` of every service: settings, telemetry, app, serve. A configuration that cannot
    work stops the process at once with a readable message (exit 2), before anything starts. The
    port, unless configured (AIBOT_HTTP__PORT), is the service's in the catalog."""
    settings = prepare(name)
    try:
        app = create_app(settings)
    except ConfigError as exc:
        log.critical("%s: %s", name, exc)
        print(f"ai-bot {name}: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    serve(app, settings, catalog.service(name).port)
