"""The `ai-bot` command."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import time

from aibot_cli import admin
from aibot_common.settings import ConfigError, load_settings


def cmd_up(args: argparse.Namespace) -> int:
    from aibot_cli.chat import run_chat
    from aibot_cli.local import LocalStack, default_state_dir

    stack = LocalStack(settings=load_settings(), state_dir=default_state_dir())
    try:
        stack.start()
        if args.chat and stack.telegram_fake_url:
            run_chat(stack.telegram_fake_url)
            return 0
        if args.chat:
            print("A real Telegram bot is configured: chat with it in Telegram. Ctrl-C stops the stack.")
        while True:
            time.sleep(2)
            stack.watch()
    except KeyboardInterrupt:
        return 0
    finally:
        # A second Ctrl-C while the services stop would leave them half-stopped and print a traceback.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        print("stopping ...", flush=True)
        stack.stop()


def cmd_chat(args: argparse.Namespace) -> int:
    from aibot_cli.chat import run_chat

    run_chat(args.telegram_url, chat_id=args.chat_id)
    return 0


def cmd_lag(args: argparse.Namespace) -> int:
    from aibot_cli.lag import run

    return run(args)


def cmd_dlq(args: argparse.Namespace) -> int:
    from aibot_cli.dlq import run

    return run(args)


def cmd_topics(args: argparse.Namespace) -> int:
    from aibot_common.kafka import ensure_topics
    from aibot_common.service import pipeline_topics
    from aibot_common.topics import ALL_TOPICS, CONSUMPTION

    settings = load_settings()
    if args.action == "create":
        asyncio.run(ensure_topics(settings.kafka, pipeline_topics(settings)))
        print(
            f"{len(ALL_TOPICS)} topics present on {settings.kafka.bootstrap_servers} "
            f"({settings.kafka.partitions} partitions each)"
        )
        return 0
    groups = dict(CONSUMPTION)
    for topic in ALL_TOPICS:
        print(
            f"{topic.name:45} {'compacted' if topic.compacted else 'retained':10} "
            f"{groups.get(topic.name, '-'):28} {topic.description}"
        )
    return 0


def cmd_forget(args: argparse.Namespace) -> int:
    """An operator's erasure of a user's conversation: a request on the inbound topic, keyed by the
    conversation, which core-llm turns into a tombstone in the conversation changelog."""
    from aibot_common.erasure import erasure_request
    from aibot_common.kafka import make_producer, publish

    try:
        request = erasure_request(args.conversation, requested_by=args.requested_by)
    except ValueError as exc:
        print(f"ai-bot forget: {exc}", file=sys.stderr)
        return 2
    settings = load_settings()

    async def send() -> None:
        producer = make_producer(settings.kafka, "aibot-cli-forget")
        await producer.start()
        try:
            await publish(producer, [request], timeout_s=30)
        finally:
            await producer.stop()

    asyncio.run(send())
    print(f"erasure of {args.conversation} requested ({request.id}); core-llm writes the tombstone")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ai-bot", description="ai-bot: chat with LLMs from Feishu and Telegram")
    sub = parser.add_subparsers(dest="command", required=True)

    up = sub.add_parser("up", help="run every service on this host (embedded broker and fakes when needed)")
    up.add_argument("--chat", action="store_true", help="chat in this terminal (with the local fake Telegram)")
    up.set_defaults(func=cmd_up)

    chat = sub.add_parser("chat", help="chat with a running local stack through its fake Telegram")
    chat.add_argument("--telegram-url", required=True, help="the fake Telegram's URL (printed by `ai-bot up`)")
    chat.add_argument("--chat-id", type=int, default=4242)
    chat.set_defaults(func=cmd_chat)

    topics = sub.add_parser("topics", help="create or list the pipeline's Kafka topics")
    topics.add_argument("action", choices=["create", "list"])
    topics.set_defaults(func=cmd_topics)

    forget = sub.add_parser("forget", help="erase what ai-bot keeps about a conversation (operator erasure)")
    forget.add_argument("conversation", help="telegram:<chat_id> or feishu:<chat_id>")
    forget.add_argument("--requested-by", default="admin", help="who asked, for the log (no personal data)")
    forget.set_defaults(func=cmd_forget)

    lag = sub.add_parser("lag", help="records waiting per topic and consumer group (table, --watch, or --serve PORT)")
    lag.add_argument("--partitions", action="store_true", help="also show every partition")
    lag.add_argument("--watch", action="store_true", help="refresh the table in place until Ctrl-C")
    lag.add_argument("--interval", type=float, default=5.0, help="seconds between refreshes (--watch, --serve)")
    lag.add_argument(
        "--serve",
        type=int,
        metavar="PORT",
        nargs="?",
        const=9308,
        help="serve the figures as Prometheus metrics on PORT (default 9308)",
    )
    lag.add_argument("--group", action="append", default=[], help="only this consumer group (repeatable)")
    lag.add_argument(
        "--pair",
        action="append",
        default=[],
        metavar="TOPIC:GROUP",
        help="watch this (topic, group) instead of the pipeline's own (repeatable)",
    )
    lag.set_defaults(func=cmd_lag)

    dlq = sub.add_parser("dlq", help="list, show and replay dead letters (records no stage could process)")
    dlq.add_argument("action", choices=["list", "show", "replay"])
    dlq.add_argument("ids", nargs="*", metavar="ID", help="dead letters by PARTITION:OFFSET, as `list` prints them")
    dlq.add_argument("--source", help="only those from this source topic")
    dlq.add_argument("--reason", help="only those whose reason or error type contains this (any case)")
    dlq.add_argument("--since", help="only those filed since: 30m, 2h, 7d ago, or an ISO time")
    dlq.add_argument("--until", help="only those filed until: 30m, 2h, 7d ago, or an ISO time")
    dlq.add_argument("--all", action="store_true", help="replay: every dead letter (no filter)")
    dlq.add_argument("--dry-run", action="store_true", help="replay: print what would be replayed, send nothing")
    dlq.set_defaults(func=cmd_dlq)

    admin.add_parser(sub)

    from aibot_cli.archive import add_parser as add_archive

    add_archive(sub)
    from aibot_cli.alerts import add_parser as add_alerts

    add_alerts(sub)
    from aibot_cli.onboard import add_parser as add_onboard

    add_onboard(sub)
    from aibot_cli.doctor import add_parser as add_doctor

    add_doctor(sub)
    from aibot_cli.webhook import add_parser as add_webhook

    add_webhook(sub)
    from aibot_cli.status import add_parser as add_status

    add_status(sub)
    return parser


# Commands that talk to the broker: pointed at the one a running `ai-bot up` uses when no broker is named.
BROKER_COMMANDS = {"lag", "dlq", "topics", "forget", "admin", "doctor"}


def use_local_broker(command: str) -> None:
    """`ai-bot up` may have started the embedded broker on a free port: the other commands find it in
    its state file, so `ai-bot lag` works without a port. Another broker named in the environment wins."""
    from aibot_cli.local import default_state_dir, read_state

    if command not in BROKER_COMMANDS:
        return
    state = read_state(default_state_dir())
    if state is None or not state.get("embedded_broker"):
        return
    named = os.environ.get("AIBOT_KAFKA__BOOTSTRAP_SERVERS")
    # The broker named here is the one that did not answer when `ai-bot up` started: use its stand-in.
    if named is None or named == state.get("configured_kafka"):
        os.environ["AIBOT_KAFKA__BOOTSTRAP_SERVERS"] = str(state["kafka"])


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    try:
        use_local_broker(args.command)
        sys.exit(args.func(args))
    except ConfigError as exc:
        print(f"ai-bot: {exc}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(130)
