"""/readyz follows the Kafka connection: ready while metadata requests succeed, 503 once they stop."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
from fastapi import FastAPI

from aibot_common.service import KafkaHealth, create_service_app


class _Client:
    def __init__(self) -> None:
        self.broker_up = True

    async def fetch_all_metadata(self) -> None:
        if not self.broker_up:
            raise ConnectionError("broker unreachable")


class _Producer:
    def __init__(self) -> None:
        self.client = _Client()


async def test_readyz_turns_503_when_the_broker_stops_answering_and_back() -> None:
    producer = _Producer()
    health = KafkaHealth(producer, interval_s=0.05)  # type: ignore[arg-type]

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield

    app = create_service_app("test", lifespan, lambda: health.ok)
    health.start()
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://svc") as client:
            assert (await client.get("/readyz")).status_code == 200
            producer.client.broker_up = False
            await asyncio.sleep(0.3)
            response = await client.get("/readyz")
            assert response.status_code == 503 and response.json()["status"] == "not ready"
            assert (await client.get("/healthz")).status_code == 200  # alive, just not ready
            producer.client.broker_up = True
            await asyncio.sleep(0.15)
            assert (await client.get("/readyz")).status_code == 200
            assert "aibot_" in (await client.get("/metrics")).text
    finally:
        await health.stop()
