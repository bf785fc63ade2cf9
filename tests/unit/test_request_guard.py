"""The request guard every service's HTTP app has (service.py): bodies bounded while they are read,
a per-IP rate limit with Retry-After, X-Forwarded-For believed only from trusted proxies."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
from fastapi import FastAPI, Request
from prometheus_client import REGISTRY
from pydantic import BaseModel

from aibot_common.service import TokenBuckets, client_ip, create_service_app, pipeline_topics
from aibot_common.settings import RateLimitSettings, SecuritySettings, Settings, load_settings
from aibot_common.topics import DEAD_LETTERS
from tests.unit.ingress_apps import (
    FS_PATH,
    TG_PATH,
    client,
    feishu_app,
    telegram_app,
    telegram_headers,
    telegram_update,
)


@asynccontextmanager
async def _nothing(_: FastAPI) -> AsyncIterator[None]:
    yield


class Item(BaseModel):
    text: str


def _app(security: SecuritySettings) -> FastAPI:
    """A service app with the kind of routes another engineer's admin API would add."""
    app = create_service_app("guard-test", _nothing, lambda: True, security)

    @app.post("/raw")
    async def raw(request: Request) -> dict[str, int]:
        return {"bytes": len(await request.body())}

    @app.post("/parsed")
    async def parsed(item: Item) -> dict[str, int]:  # FastAPI reads and validates the body itself
        return {"chars": len(item.text)}

    return app


def _refused(reason: str) -> float:
    return REGISTRY.get_sample_value("aibot_http_refused_total", {"service": "guard-test", "reason": reason}) or 0.0


class Chunks:
    """A chunked body without Content-Length that would go on for 100 MiB; counts what was read."""

    def __init__(self, size: int = 64 * 1024, count: int = 1600) -> None:
        self.size, self.count, self.sent = size, count, 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for _ in range(self.count):
            self.sent += 1
            yield b"x" * self.size


@pytest.mark.parametrize("path", ["/raw", "/parsed"])
async def test_a_declared_body_over_the_limit_is_refused_before_reading(path: str) -> None:
    async with client(_app(SecuritySettings(max_body_bytes=1000))) as http:
        before = _refused("body_too_large")
        response = await http.post(path, content=b"x" * 1001)
        assert response.status_code == 413
        assert _refused("body_too_large") == before + 1
        assert (await http.post(path, json={"text": "ok"})).status_code == 200


@pytest.mark.parametrize("path", ["/raw", "/parsed"])
async def test_a_chunked_body_without_length_is_cut_at_the_limit(path: str) -> None:
    limit = 256 * 1024
    async with client(_app(SecuritySettings(max_body_bytes=limit))) as http:
        body = Chunks()
        response = await http.post(path, content=body)
        assert "content-length" not in {k.lower() for k in response.request.headers}
        assert response.status_code == 413
        # Cut at the limit: only the chunks up to it were ever read, not the 100 MiB.
        assert body.sent <= limit // body.size + 2
        small = Chunks(count=2)
        assert (await http.post("/raw", content=small)).json() == {"bytes": 2 * 64 * 1024}


async def test_a_garbled_content_length_is_a_bad_request() -> None:
    async with client(_app(SecuritySettings())) as http:
        response = await http.post("/raw", content=b"abc", headers={"Content-Length": "-3"})
        assert response.status_code == 400


@pytest.mark.parametrize("make", [telegram_app, feishu_app])
async def test_both_ingresses_cut_chunked_bodies(make, monkeypatch: pytest.MonkeyPatch) -> None:
    app, producer = make(monkeypatch, SecuritySettings(max_body_bytes=100_000))
    path = TG_PATH if make is telegram_app else FS_PATH
    async with client(app) as http:
        body = Chunks(size=10_000, count=10_000)
        response = await http.post(path, content=body, headers=telegram_headers())
        assert response.status_code == 413
        assert body.sent <= 12
        assert producer.records == []


async def test_each_ip_gets_a_burst_then_429_with_retry_after() -> None:
    security = SecuritySettings(rate_limit=RateLimitSettings(requests_per_s=0.5, burst=3))
    app = _app(security)
    before = _refused("rate_limited")
    async with client(app, peer="198.51.100.10") as one, client(app, peer="198.51.100.11") as other:
        assert [(await one.post("/raw", content=b"x")).status_code for _ in range(3)] == [200, 200, 200]
        refused = await one.post("/raw", content=b"x")
        assert refused.status_code == 429
        assert refused.headers["retry-after"] == "2"  # one token per 2 s
        assert (await other.post("/raw", content=b"x")).status_code == 200  # another address: its own bucket
        # Probes and scrapes are never limited, so a flood cannot make the replica look dead.
        assert (await one.get("/healthz")).status_code == 200
        assert (await one.get("/metrics")).status_code == 200
    assert _refused("rate_limited") == before + 1


async def test_refusals_are_counted_not_logged(caplog: pytest.LogCaptureFixture) -> None:
    app = _app(SecuritySettings(rate_limit=RateLimitSettings(requests_per_s=1, burst=1)))
    async with client(app) as http:
        codes = [(await http.post("/raw", content=b"x")).status_code for _ in range(50)]
    assert codes.count(429) == 49
    assert not [r for r in caplog.records if "429" in r.getMessage() or "rate" in r.getMessage().lower()]


async def test_the_default_limit_is_100_per_second_with_a_burst() -> None:
    defaults = load_settings().security.rate_limit
    assert defaults.enabled and defaults.requests_per_s == 100 and defaults.burst >= 100
    ticks = iter([i / 1000 for i in range(10_000)])  # a request every millisecond
    buckets = TokenBuckets(defaults, clock=lambda: next(ticks))
    allowed = sum(buckets.take("ip") == 0 for _ in range(2000))  # 2 s of 1000 req/s
    # The burst, then 100 a second: never much above 100/s sustained.
    assert defaults.burst + 190 <= allowed <= defaults.burst + 201


async def test_the_ingress_apps_are_rate_limited_too(monkeypatch: pytest.MonkeyPatch) -> None:
    app, _ = telegram_app(monkeypatch, SecuritySettings(rate_limit=RateLimitSettings(requests_per_s=1, burst=2)))
    async with client(app) as http:
        codes = [
            (await http.post(TG_PATH, json=telegram_update(i), headers=telegram_headers())).status_code
            for i in range(3)
        ]
    assert codes == [200, 200, 429]


def _scope(peer: str, forwarded: str | None = None) -> dict:
    headers = [(b"x-forwarded-for", forwarded.encode())] if forwarded else []
    return {"client": (peer, 1234), "headers": headers}


def test_forwarded_for_is_believed_only_from_a_trusted_proxy() -> None:
    import ipaddress

    trusted = [ipaddress.ip_network("10.0.0.0/8")]
    # Untrusted peer: whatever it writes in X-Forwarded-For is ignored.
    assert client_ip(_scope("203.0.113.5", "1.2.3.4"), trusted) == "203.0.113.5"
    assert client_ip(_scope("10.0.0.2", "1.2.3.4"), []) == "10.0.0.2"
    # Trusted proxy: the right-most address that is not a proxy; anything left of it may be forged.
    assert client_ip(_scope("10.0.0.2", "1.2.3.4"), trusted) == "1.2.3.4"
    assert client_ip(_scope("10.0.0.2", "6.6.6.6, 1.2.3.4, 10.0.0.9"), trusted) == "1.2.3.4"
    assert client_ip(_scope("10.0.0.2", "garbage"), trusted) == "10.0.0.2"
    # One IPv6 host holds a /64: one bucket for all of it.
    assert client_ip(_scope("2001:db8::1"), trusted) == client_ip(_scope("2001:db8::ffff"), trusted)


async def test_a_trusted_proxy_passes_each_clients_own_limit() -> None:
    security = SecuritySettings(
        rate_limit=RateLimitSettings(requests_per_s=0.1, burst=1), trusted_proxies=["192.0.2.0/24"]
    )
    app = _app(security)
    async with client(app, peer="192.0.2.1") as proxy:
        first = await proxy.post("/raw", content=b"x", headers={"X-Forwarded-For": "198.51.100.1"})
        second = await proxy.post("/raw", content=b"x", headers={"X-Forwarded-For": "198.51.100.2"})
        again = await proxy.post("/raw", content=b"x", headers={"X-Forwarded-For": "198.51.100.1"})
    assert (first.status_code, second.status_code, again.status_code) == (200, 200, 429)


def test_trusted_proxies_must_be_addresses() -> None:
    from aibot_common.settings import ConfigError

    with pytest.raises(ConfigError, match="trusted_proxies"):
        load_settings(security={"trusted_proxies": ["the ingress"]})


def test_dead_letter_retention_is_the_deployments() -> None:
    settings = Settings(retention={"dead_letter_retention_ms": 2 * 24 * 3600 * 1000})
    (dead,) = [t for t in pipeline_topics(settings) if t.name == DEAD_LETTERS.name]
    assert dead.creation_config()["retention.ms"] == str(2 * 24 * 3600 * 1000)
    assert len(pipeline_topics(settings)) == len({t.name for t in pipeline_topics(settings)})


async def test_the_real_server_cuts_a_chunked_upload(unused_tcp_port: int) -> None:
    """Through uvicorn itself, as `ai-bot up` serves it: raw chunked bytes on a socket."""
    import asyncio

    import uvicorn

    app = _app(SecuritySettings(max_body_bytes=50_000))
    config = uvicorn.Config(app, host="127.0.0.1", port=unused_tcp_port, log_config=None, proxy_headers=False)
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    try:
        while not server.started:
            await asyncio.sleep(0.01)
        reader, writer = await asyncio.open_connection("127.0.0.1", unused_tcp_port)
        writer.write(b"POST /raw HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
        status = b""
        for _ in range(200):  # up to 2 MB offered, 10 KB a chunk
            writer.write(b"2710\r\n" + b"x" * 10_000 + b"\r\n")
            try:
                await writer.drain()
            except ConnectionError:
                break
            if reader.at_eof() or len(reader._buffer):  # type: ignore[attr-defined]
                break
            await asyncio.sleep(0)
        status = await asyncio.wait_for(reader.readline(), 5)
        assert status.startswith(b"HTTP/1.1 413"), status
        writer.close()
    finally:
        server.should_exit = True
        await task


def test_every_service_app_is_guarded_with_the_deployments_limits(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib

    from aibot_common import catalog
    from aibot_common.service import RequestGuard

    security = SecuritySettings(max_body_bytes=4321)
    settings = Settings(
        telegram={"bot_token": "123456:unit-token"},
        feishu={"enabled": True, "app_id": "cli_x", "app_secret": "s", "verification_token": "t", "encrypt_key": "k"},
        models=[{"name": "m", "type": "llm", "endpoint": "http://127.0.0.1:1/v1"}, {"name": "w", "type": "asr"}],
        security=security,
    )
    for name in catalog.NAMES:
        module = importlib.import_module(f"{catalog.service(name).module}.app")
        app = module.create_app(settings)
        (guard,) = [m for m in app.user_middleware if m.cls is RequestGuard]
        assert guard.kwargs["config"] == security, name
