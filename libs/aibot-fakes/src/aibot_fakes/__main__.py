"""Run one fake as its own process: `python -m aibot_fakes telegram|llm|feishu --port P`.

Prints exactly one line, `ready <url>`, once the port accepts connections, so a supervisor (the local
`ai-bot up`) can wait for it; SIGTERM or SIGINT stops it cleanly.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from typing import Protocol

from aibot_fakes.feishu import FakeFeishu
from aibot_fakes.llm import FakeLLM
from aibot_fakes.telegram import FakeTelegram


class _Fake(Protocol):
    @property
    def url(self) -> str: ...

    async def start(self, host: str = ..., port: int = ...) -> None: ...
    async def stop(self) -> None: ...


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m aibot_fakes", description=__doc__)
    kinds = parser.add_subparsers(dest="kind", required=True)

    telegram = kinds.add_parser("telegram", help="a fake Telegram Bot API server")
    telegram.add_argument("--host", default="127.0.0.1")
    telegram.add_argument("--port", type=int, default=0, help="0 picks a free port (see the ready line)")
    telegram.add_argument("--token", default="123456:TEST-TOKEN")
    telegram.add_argument("--bot-username", default="aibot_test_bot")

    llm = kinds.add_parser("llm", help="a fake OpenAI-compatible chat-completions server")
    llm.add_argument("--host", default="127.0.0.1")
    llm.add_argument("--port", type=int, default=0, help="0 picks a free port (see the ready line)")
    llm.add_argument("--latency", type=float, default=0.0, help="seconds before the first byte of an answer")
    llm.add_argument("--chunk-delay", type=float, default=0.0, help="seconds between streamed deltas")
    llm.add_argument("--api-key", default=None, help="require this bearer key")
    llm.add_argument("--model", default="fake-echo")

    feishu = kinds.add_parser("feishu", help="a fake Feishu (Lark) Open Platform server")
    feishu.add_argument("--host", default="127.0.0.1")
    feishu.add_argument("--port", type=int, default=0, help="0 picks a free port (see the ready line)")
    feishu.add_argument("--app-id", default="cli_fake0000000001")
    feishu.add_argument("--app-secret", default="fake-app-secret-0001")
    feishu.add_argument("--verification-token", default="fake-verification-token")
    feishu.add_argument("--encrypt-key", default="fake-encrypt-key", help="empty: events unencrypted and unsigned")
    feishu.add_argument("--bot-open-id", default="ou_fakebot000000000000000000000001")
    feishu.add_argument("--event-url", default=None, help="where events go (or POST /_fake/subscribe later)")
    return parser


def _build(args: argparse.Namespace) -> _Fake:
    if args.kind == "telegram":
        return FakeTelegram(args.token, bot_username=args.bot_username)
    if args.kind == "feishu":
        return FakeFeishu(
            app_id=args.app_id,
            app_secret=args.app_secret,
            verification_token=args.verification_token,
            encrypt_key=args.encrypt_key or None,
            bot_open_id=args.bot_open_id,
            event_url=args.event_url,
        )
    return FakeLLM(latency_s=args.latency, chunk_delay_s=args.chunk_delay, api_key=args.api_key, model=args.model)


async def _run(args: argparse.Namespace) -> None:
    fake = _build(args)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await fake.start(args.host, args.port)
    print(f"ready {fake.url}", flush=True)
    try:
        await stop.wait()
    finally:
        await fake.stop()


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(asctime)s %(name)s %(message)s")
    try:
        asyncio.run(_run(args))
    except OSError as exc:  # typically the port is taken
        print(f"error: {exc}", file=sys.stderr, flush=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
