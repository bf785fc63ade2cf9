"""Text pipeline benchmark: replies per second, and the latency the pipeline adds beyond the model.

Runs the real services as processes (ingress-telegram, core-llm, renderer) against the embedded
broker (or AIBOT_TEST_KAFKA_BOOTSTRAP), the fake Telegram and a fake model that takes a fixed time
to answer. Prints figures; asserts nothing.

    uv run python benchmarks/pipeline_bench.py [--chats 200] [--model-latency 1.0] [--waves 3] [--burst 5]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

from aibot_cli.supervisor import Supervisor
from aibot_common.testing.broker import free_port, test_broker
from aibot_fakes.llm import FakeLLM
from aibot_fakes.telegram import FakeTelegram


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


async def send_and_collect(telegram: FakeTelegram, messages: list[tuple[int, str]], timeout: float) -> dict:
    """Send (chat, text) pairs at once; return per-message send and reply times."""
    start_index = len(telegram.sent)
    sent_at = {}
    for chat, text in messages:
        sent_at[(chat, f"Echo: {text}")] = time.time()
        telegram.user_sends_text(chat, text)
    deadline = time.monotonic() + timeout
    while len(telegram.sent) - start_index < len(messages) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    replies = {(m["chat_id"], m["text"]): m["time"] for m in telegram.sent[start_index:]}
    return {key: (sent_at[key], replies.get(key)) for key in sent_at}


async def main(args: argparse.Namespace) -> None:
    with test_broker() as bootstrap:
        telegram = FakeTelegram()
        llm = FakeLLM(latency_s=args.model_latency)
        await telegram.start()
        await llm.start()
        ingress_port = free_port()
        env = {
            "AIBOT_KAFKA__BOOTSTRAP_SERVERS": bootstrap,
            "AIBOT_TELEGRAM__BOT_TOKEN": telegram.token,
            "AIBOT_TELEGRAM__API_BASE_URL": telegram.url,
            "AIBOT_TELEGRAM__WEBHOOK__URL": f"http://127.0.0.1:{ingress_port}/telegram/webhook",
            "AIBOT_TELEGRAM__WEBHOOK__SECRET_TOKEN": "bench-secret",
            "AIBOT_TELEGRAM__MESSAGES_PER_SECOND": str(args.telegram_rate),
            "AIBOT_MODELS": json.dumps([{"name": "fake", "type": "llm", "endpoint": llm.endpoint}]),
            "AIBOT_OBSERVABILITY__LOG_LEVEL": "WARNING",
            # A load test from one address: the per-IP limit (100/s) would measure itself, not the pipeline.
            "AIBOT_SECURITY__RATE_LIMIT__ENABLED": "false",
        }
        logs = Path(tempfile.mkdtemp(prefix="aibot-bench-"))
        supervisor = Supervisor(log_dir=logs, env=env)
        supervisor.add("ingress-telegram", ingress_port)
        supervisor.add("core-llm", free_port())
        supervisor.add("renderer", free_port())
        supervisor.start()
        try:
            await asyncio.to_thread(supervisor.wait_ready, 120)
            telegram.user_sends_text(1, "warm-up")
            await telegram.wait_for_sent(1, chat_id=1, timeout=120)

            # Latency of one message on an idle pipeline: the cost of the hops themselves.
            alone: list[float] = []
            for i in range(args.single):
                results = await send_and_collect(telegram, [(30_000, f"alone {i}")], timeout=60)
                ((sent, reply),) = results.values()
                alone.append(reply - sent - args.model_latency)

            # Latency: waves of one message per chat; what the pipeline adds beyond the model's time.
            added: list[float] = []
            for wave in range(args.waves):
                batch = [(10_000 + chat, f"wave {wave} from {chat}") for chat in range(args.chats)]
                results = await send_and_collect(telegram, batch, timeout=120)
                lost = [k for k, (_, reply) in results.items() if reply is None]
                if lost:
                    raise SystemExit(f"{len(lost)} replies missing in wave {wave}")
                added += [reply - sent - args.model_latency for sent, reply in results.values()]

            # Throughput: a burst of several messages per chat, all sent at once.
            burst = [(20_000 + chat, f"burst {i} from {chat}") for i in range(args.burst) for chat in range(args.chats)]
            processes = {p.name: p.process.pid for p in supervisor.processes if p.process}
            processes["fakes+bench"] = os.getpid()
            cpu_before = {name: cpu_seconds(pid) for name, pid in processes.items()}
            started = time.time()
            results = await send_and_collect(telegram, burst, timeout=300)
            cpu_used = {name: cpu_seconds(pid) - cpu_before[name] for name, pid in processes.items()}
            finished = max(reply for _, reply in results.values() if reply is not None)
            missing = sum(1 for _, reply in results.values() if reply is None)
            elapsed = finished - started
        finally:
            await asyncio.to_thread(supervisor.stop)
            await llm.stop()
            await telegram.stop()

    print(f"# text pipeline benchmark ({platform.node()}, {os.cpu_count()} cores, {time.strftime('%Y-%m-%d')})")
    print(f"model latency {args.model_latency:.1f} s, {args.chats} chats, broker: {bootstrap_kind()}")
    print(
        f"added latency over {len(added)} replies (waves of {args.chats} chats, one message each): "
        f"p50 {statistics.median(added) * 1000:.0f} ms, p99 {percentile(added, 99) * 1000:.0f} ms, "
        f"max {max(added) * 1000:.0f} ms"
    )
    print(
        f"added latency of one message at a time ({len(alone)} messages): "
        f"p50 {statistics.median(alone) * 1000:.0f} ms, "
        f"p99 {percentile(alone, 99) * 1000:.0f} ms"
    )
    print(
        f"throughput: {len(burst) - missing} replies in {elapsed:.1f} s = {(len(burst) - missing) / elapsed:.1f} "
        f"replies/s ({args.burst} messages per chat sent at once; {missing} missing)"
    )
    print(
        "CPU seconds per 1000 replies during the burst: "
        + ", ".join(f"{name} {used / (len(burst) - missing) * 1000:.1f}" for name, used in cpu_used.items())
    )
    print(
        f"ideal for this burst with a {args.model_latency:.1f} s model and per-chat order: "
        f"{len(burst) / (args.burst * args.model_latency):.1f} replies/s"
    )


def bootstrap_kind() -> str:
    return "AIBOT_TEST_KAFKA_BOOTSTRAP" if os.environ.get("AIBOT_TEST_KAFKA_BOOTSTRAP") else "embedded (Tansu)"


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chats", type=int, default=200)
    parser.add_argument("--model-latency", type=float, default=1.0)
    parser.add_argument("--waves", type=int, default=3)
    parser.add_argument("--burst", type=int, default=5)
    parser.add_argument("--single", type=int, default=20, help="messages sent one at a time on an idle pipeline")
    parser.add_argument(
        "--telegram-rate",
        type=float,
        default=1000.0,
        help="renderer's send limit per second (Telegram's real limit is 30/s per bot)",
    )
    asyncio.run(main(parser.parse_args()))
