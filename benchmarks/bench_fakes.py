"""The benchmark's fake Telegram and fake model in a process of their own, driven over HTTP.

The driver must not share a process (or a GIL) with the fakes, or its own work would be counted as,
and slow down, the platform the product talks to. This process serves:

- the fake Telegram Bot API and the fake OpenAI-compatible model (real HTTP servers, as in tests);
- a control API for the driver: `POST /send` with `{"messages": [[chat, text], ...]}` makes each user
  send a text at once and answers each one's send time, taken here by the clock of the reply times;
  `GET /sent?since=N` returns the messages the bot sent from index N on.

It prints one JSON line with the URLs when it is ready, then serves until killed.

    uv run python benchmarks/bench_fakes.py --model-latency 1.0
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

from fastapi import FastAPI, Request

from aibot_fakes.llm import FakeLLM
from aibot_fakes.server import BackgroundServer
from aibot_fakes.telegram import FakeTelegram


def control_app(telegram: FakeTelegram) -> FastAPI:
    app = FastAPI()

    @app.post("/send")
    async def send(request: Request) -> dict[str, dict[str, float]]:
        messages = (await request.json())["messages"]
        sent_at = {}
        for chat, text in messages:
            sent_at[text] = time.time()
            telegram.user_sends_text(int(chat), text)
        return {"sent_at": sent_at}

    @app.get("/sent")
    async def sent(since: int = 0) -> dict[str, object]:
        rows = [
            {"chat_id": m["chat_id"], "text": m["plain_text"], "time": m["time"]}
            for m in telegram.sent[since:]
            if m["method"] == "sendMessage"
        ]
        return {"next": len(telegram.sent), "sent": rows}

    return app


async def main(args: argparse.Namespace) -> None:
    telegram = FakeTelegram()
    llm = FakeLLM(latency_s=args.model_latency)
    await telegram.start()
    await llm.start()
    control = BackgroundServer(control_app(telegram))
    await control.start()
    print(
        json.dumps({"telegram": telegram.url, "token": telegram.token, "llm": llm.endpoint, "control": control.url}),
        flush=True,
    )
    await control.serve_forever()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-latency", type=float, default=1.0)
    asyncio.run(main(parser.parse_args()))
