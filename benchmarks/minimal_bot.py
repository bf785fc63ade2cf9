"""The yardstick for `pipeline_bench.py --compare`: the smallest correct Telegram bot with no broker.

One process: the webhook answers 200 at once (as python-telegram-bot's webhook mode does) and a
task per update asks the model and calls sendMessage, over one pooled HTTP client each. It keeps no
history, survives nothing and scales to one process: what the peers that run as one process cost,
so the price of ai-bot's Kafka hops is measured against it on the same machine in the same run.

    uv run python benchmarks/minimal_bot.py --port 8090 --telegram URL --token T --model URL
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import httpx
import uvicorn
from fastapi import FastAPI, Request, Response

SECRET = "minimal-bot-secret"  # noqa: S105 - the fake Telegram on loopback, nothing real


def make_app(args: argparse.Namespace) -> FastAPI:
    clients: dict[str, httpx.AsyncClient] = {}
    tasks: set[asyncio.Task[None]] = set()
    api = f"{args.telegram}/bot{args.token}"

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        # The same pool sizes as the product's (core-llm: one connection per call in flight; renderer:
        # 16 to the Bot API), so neither side is handicapped by connection churn.
        model_pool = httpx.Limits(max_connections=512, max_keepalive_connections=512)
        telegram_pool = httpx.Limits(max_connections=16, max_keepalive_connections=16)
        async with (
            httpx.AsyncClient(timeout=60, limits=model_pool) as model,
            httpx.AsyncClient(timeout=30, limits=telegram_pool) as telegram,
        ):
            clients.update(model=model, telegram=telegram)
            webhook = {"url": f"http://127.0.0.1:{args.port}/webhook", "secret_token": SECRET, "max_connections": 100}
            (await telegram.post(f"{api}/setWebhook", json=webhook)).raise_for_status()
            yield

    app = FastAPI(lifespan=lifespan)

    async def answer(message: dict[str, Any]) -> None:
        body = {"model": "fake", "messages": [{"role": "user", "content": message["text"]}]}
        completion = (await clients["model"].post(args.model, json=body)).json()
        text = completion["choices"][0]["message"]["content"]
        send = {"chat_id": message["chat"]["id"], "text": text}
        (await clients["telegram"].post(f"{api}/sendMessage", json=send)).raise_for_status()

    @app.post("/webhook")
    async def webhook(request: Request) -> Response:
        if request.headers.get("x-telegram-bot-api-secret-token") != SECRET:
            return Response(status_code=401)
        message = (await request.json()).get("message") or {}
        if "text" in message:
            task = asyncio.create_task(answer(message))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        return Response(status_code=200)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--telegram", required=True, help="Bot API base URL")
    parser.add_argument("--token", required=True)
    parser.add_argument("--model", required=True, help="chat completions URL")
    arguments = parser.parse_args()
    uvicorn.run(make_app(arguments), host="127.0.0.1", port=arguments.port, log_level="warning", access_log=False)
