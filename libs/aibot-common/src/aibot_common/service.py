"""What every service shares around its handler: the HTTP app, health, and the process entry point."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import ipaddress
import logging
import math
import signal
import sys
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, MutableMapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, Generic, TypeVar

import uvicorn
from aiokafka import AIOKafkaProducer
from fastapi import FastAPI, HTTPException, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from aibot_common import catalog, telemetry
from aibot_common.kafka import ensure_topics, make_producer
from aibot_common.settings import ConfigError, RateLimitSettings, SecuritySettings, Settings, load_settings
from aibot_common.topics import ALL_TOPICS, DEAD_LETTERS, Topic

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
        await ensure_topics(settings.kafka, pipeline_topics(settings))
    producer = make_producer(settings.kafka, client_id)
    await producer.start()
    health = KafkaHealth(producer)
    health.start()
    try:
        yield producer, health
    finally:
        await health.stop()
        await producer.stop()


def pipeline_topics(settings: Settings) -> list[Topic]:
    """Every topic, with the deployment's retention for dead letters (they hold users' messages)."""
    retention = {"retention.ms": str(settings.retention.dead_letter_retention_ms)}
    return [dataclasses.replace(t, config={**t.config, **retention}) if t is DEAD_LETTERS else t for t in ALL_TOPICS]


Lifespan = Callable[[FastAPI], AbstractAsyncContextManager[None]]
Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

# Probes and scrapes come from the kubelet and Prometheus, a few a minute: never rate limited, so a
# flood from one address cannot make a replica look dead.
UNLIMITED_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})


class BodyTooLarge(HTTPException):
    """Raised from `receive` once a body passes the limit. An HTTPException, so FastAPI's own body
    parsing (which turns other errors into 400) and the exception middleware answer it as a 413."""

    def __init__(self) -> None:
        super().__init__(status_code=413, detail="request body too large")


class TokenBuckets:
    """A token bucket per client: `burst` requests at once, refilled at `rate` per second. The least
    recently seen clients are forgotten past `max_clients`, which bounds memory under a spoofed-source
    flood (a forgotten client starts again with a full bucket)."""

    def __init__(self, config: RateLimitSettings, clock: Callable[[], float] = time.monotonic) -> None:
        self._rate = config.requests_per_s
        self._burst = float(config.burst)
        self._max = config.max_clients
        self._clock = clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def take(self, client: str) -> float:
        """0 when the request may go on, else the seconds until this client has a token again."""
        now = self._clock()
        tokens, last = self._buckets.pop(client, (self._burst, now))
        tokens = min(self._burst, tokens + (now - last) * self._rate)
        wait = 0.0
        if tokens >= 1:
            tokens -= 1
        else:
            wait = (1 - tokens) / self._rate
        self._buckets[client] = (tokens, now)
        if len(self._buckets) > self._max:
            self._buckets.popitem(last=False)
        return wait


def _networks(values: list[str]) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    return [ipaddress.ip_network(v, strict=False) for v in values]


def client_ip(scope: Scope, trusted: list[ipaddress.IPv4Network | ipaddress.IPv6Network]) -> str:
    """The address to rate-limit by: the TCP peer, or, only when the peer is a trusted proxy, the
    right-most address in X-Forwarded-For that is not itself a trusted proxy (anything left of it was
    written by the client and may be forged). IPv6 clients are grouped by /64, what one host gets."""

    def parse(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
        try:
            return ipaddress.ip_address(text.strip().strip("[]"))
        except ValueError:
            return None

    def is_trusted(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
        return any(address in network for network in trusted)

    peer_text = (scope.get("client") or ("unknown", 0))[0]
    chosen = parse(peer_text)
    if chosen is not None and trusted and is_trusted(chosen):
        forwarded = b",".join(v for k, v in scope.get("headers", ()) if k == b"x-forwarded-for")
        for item in reversed(forwarded.decode("latin-1").split(",")):
            address = parse(item)
            if address is None:
                break  # garbage: keep the last address we could trust
            chosen = address
            if not is_trusted(address):
                break
    if chosen is None:
        return peer_text
    if isinstance(chosen, ipaddress.IPv6Address) and chosen.ipv4_mapped is None:
        return str(ipaddress.ip_network(f"{chosen}/64", strict=False))
    return str(chosen.ipv4_mapped or chosen) if isinstance(chosen, ipaddress.IPv6Address) else str(chosen)


class RequestGuard:
    """ASGI middleware in front of every route of a service: a per-IP rate limit (429 with
    Retry-After) and a body limit counted while the body is read, so a chunked upload without a
    Content-Length is cut at the limit too (413). It runs in the process itself, so it holds under
    `ai-bot up`, compose, systemd and any ingress controller alike. Refusals are counted in
    HTTP_REFUSED and never logged one line each."""

    def __init__(
        self, app: ASGIApp, service: str, config: SecuritySettings, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.app = app
        self.service = service
        self.max_body = config.max_body_bytes
        self.trusted = _networks(config.trusted_proxies)
        self.exempt = _networks(config.rate_limit.exempt_networks)
        self.buckets = TokenBuckets(config.rate_limit, clock) if config.rate_limit.enabled else None

    def _exempt(self, client: str) -> bool:
        try:
            address = ipaddress.ip_address(client)
        except ValueError:  # an IPv6 /64 bucket or an unknown peer: never exempt
            return False
        return any(address in network for network in self.exempt)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self.buckets is not None and scope.get("path") not in UNLIMITED_PATHS:
            client = client_ip(scope, self.trusted)
            wait = 0.0 if self._exempt(client) else self.buckets.take(client)
            if wait > 0:
                retry = str(max(1, math.ceil(wait)))
                await self._refuse(send, 429, "rate_limited", b"too many requests", [(b"retry-after", retry.encode())])
                return
        declared = [v for k, v in scope.get("headers", ()) if k == b"content-length"]
        if declared:
            if len(declared) > 1 or not declared[0].isdigit():
                await self._refuse(send, 400, "bad_content_length", b"bad Content-Length")
                return
            if int(declared[0]) > self.max_body:
                await self._refuse(send, 413, "body_too_large", b"request body too large")
                return
        received = 0
        started = exceeded = False

        async def counted_receive() -> Message:
            nonlocal received, exceeded
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body:
                    exceeded = True
                    raise BodyTooLarge()
            return message

        async def watched_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                if exceeded:
                    telemetry.HTTP_REFUSED.labels(service=self.service, reason="body_too_large").inc()
                    # Close after answering: otherwise the server keeps reading (and discarding) the
                    # rest of the upload to reuse the connection, however long the client goes on.
                    headers = [*message.get("headers", []), (b"connection", b"close")]
                    message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, counted_receive, watched_send)
        except BodyTooLarge:
            # Raised where no exception handler saw it (outside a route): answer it here.
            if not started:
                await self._refuse(send, 413, "body_too_large", b"request body too large")

    async def _refuse(
        self, send: Send, status: int, reason: str, text: bytes, headers: list[tuple[bytes, bytes]] | None = None
    ) -> None:
        telemetry.HTTP_REFUSED.labels(service=self.service, reason=reason).inc()
        body = b'{"detail":"' + text + b'"}'
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),
                    *(headers or []),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


def create_service_app(
    name: str, lifespan: Lifespan, ready: Callable[[], bool], security: SecuritySettings | None = None
) -> FastAPI:
    """The HTTP app of a service: /healthz (alive), /readyz (can do its work), /metrics, behind the
    request guard (rate and body limits) with the deployment's `security` settings."""
    app = FastAPI(title=f"ai-bot {name}", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.add_middleware(RequestGuard, service=name, config=security or SecuritySettings())

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
        app,
        host=settings.http.host,
        port=port,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=30,
        # The request guard decides whose X-Forwarded-For to believe (security.trusted_proxies);
        # uvicorn's own rewrite would believe any local peer's.
        proxy_headers=False,
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
