"""Text pipeline benchmark: each figure of the performance goals, printed beside its goal.

Processes, so that each is measured apart: the driver (this script), the fakes (fake Telegram and a
fake model that answers in exactly `--model-latency` seconds, `bench_fakes.py`), the broker (what
`aibot_common.testing.broker.test_broker` gives: AIBOT_TEST_KAFKA_BOOTSTRAP, Apache Kafka, or the
embedded one), and the product's services (ingress-telegram, core-llm, renderer) in their default
configuration (acks=all), with the renderer's Telegram send limit raised so the pipeline is measured,
not Telegram's 30 messages/s. Asserts nothing.

    uv run python benchmarks/pipeline_bench.py                 # the goals table
    uv run python benchmarks/pipeline_bench.py --compare       # ... and the same load on a no-broker bot
    uv run python benchmarks/pipeline_bench.py --replicas 2    # two core-llm and two renderers
    uv run python benchmarks/pipeline_bench.py --soak 100000 --rate 100   # RSS over time (make soak)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from text_pipeline import text_pipeline

from aibot_common.testing.broker import free_port, test_broker

HERE = Path(__file__).resolve().parent


# --- process accounting (Linux /proc) -------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far, its reaped children included."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(fields[i]) for i in (11, 12, 13, 14)) / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def listening_pid(port: int) -> int | None:
    """The process that listens on a loopback TCP port (the broker, whoever started it)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            cols = line.split()
            if cols[3] == "0A" and int(cols[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(cols[9])
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            for fd in (proc / "fd").iterdir():
                target = os.readlink(fd)
                if target.startswith("socket:[") and target[8:-1] in inodes:
                    return int(proc.name)
        except OSError:
            continue
    return None


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


# --- the fakes, in their own process ---------------------------------------------------------------


@dataclass
class Fakes:
    process: subprocess.Popen[str]
    telegram: str
    token: str
    llm: str
    control: str
    client: httpx.AsyncClient = field(default_factory=lambda: httpx.AsyncClient(timeout=120))
    cursor: int = 0
    replies: dict[str, float] = field(default_factory=dict)  # reply text -> when the fake got it

    @classmethod
    def start(cls, model_latency: float) -> Fakes:
        process = subprocess.Popen(
            [sys.executable, str(HERE / "bench_fakes.py"), "--model-latency", str(model_latency)],
            stdout=subprocess.PIPE,
            text=True,
        )
        urls = json.loads(process.stdout.readline())  # type: ignore[union-attr]
        return cls(process, urls["telegram"], urls["token"], urls["llm"], urls["control"])

    async def _poll(self) -> None:
        answer = (await self.client.get(f"{self.control}/sent", params={"since": self.cursor})).json()
        self.cursor = answer["next"]
        for row in answer["sent"]:
            self.replies[row["text"]] = row["time"]

    async def exchange(self, messages: list[tuple[int, str]], timeout: float) -> list[tuple[float, float | None]]:
        """Send (chat, text) pairs at once; (sent, replied) times for each, None where no reply came."""
        sent_at = (await self.client.post(f"{self.control}/send", json={"messages": messages})).json()["sent_at"]
        wanted = [f"Echo: {text}" for _, text in messages]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            await self._poll()
            if all(text in self.replies for text in wanted):
                break
            await asyncio.sleep(0.05)
        return [(sent_at[text], self.replies.pop(f"Echo: {text}", None)) for _, text in messages]

    async def stop(self) -> None:
        await self.client.aclose()
        self.process.terminate()
        self.process.wait(10)


# --- what runs the bot: the product, or the no-broker yardstick -------------------------------------


@dataclass
class Measured:
    name: str
    pids: dict[str, int]  # what counts as the bot: services (+ broker)
    alone: list[float] = field(default_factory=list)
    wave: list[float] = field(default_factory=list)
    burst_rate: float = 0.0
    burst_missing: int = 0
    cpu_ms_per_reply: dict[str, float] = field(default_factory=dict)
    rss_idle: dict[str, float] = field(default_factory=dict)
    rss_after: dict[str, float] = field(default_factory=dict)
    messages: int = 0


@contextmanager
def product(fakes: Fakes, bootstrap: str, args: argparse.Namespace) -> Iterator[dict[str, int]]:
    supervisor = text_pipeline(
        bootstrap,
        fakes.telegram,
        fakes.token,
        {"name": "fake", "type": "llm", "endpoint": fakes.llm},
        replicas=args.replicas,
        AIBOT_TELEGRAM__MESSAGES_PER_SECOND=str(args.telegram_rate),
    )
    supervisor.start()
    try:
        supervisor.wait_ready(300)
        pids = {}
        for proc in supervisor.processes:
            name = proc.name if args.replicas == 1 or proc.name == "ingress-telegram" else f"{proc.name}@{proc.port}"
            pids[name] = proc.process.pid  # type: ignore[union-attr]
        broker = listening_pid(int(bootstrap.rsplit(":", 1)[1]))
        if broker is not None:
            pids["broker"] = broker
        yield pids
    finally:
        supervisor.stop()


@contextmanager
def minimal_bot(fakes: Fakes) -> Iterator[dict[str, int]]:
    port = free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            str(HERE / "minimal_bot.py"),
            "--port",
            str(port),
            "--telegram",
            fakes.telegram,
            "--token",
            fakes.token,
            "--model",
            fakes.llm,
        ]
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        yield {"minimal-bot": process.pid}
    finally:
        process.terminate()
        process.wait(10)


async def measure(name: str, fakes: Fakes, pids: dict[str, int], args: argparse.Namespace) -> Measured:
    m = Measured(name, pids)
    tag = name.replace(" ", "-")
    ((_, first),) = await fakes.exchange([(1, f"{tag} warm-up")], timeout=120)
    if first is None:
        raise SystemExit(f"{name}: no answer to the warm-up message")
    m.rss_idle = {n: rss_mb(p) for n, p in pids.items()}

    for i in range(args.single):  # one at a time on an idle bot: the cost of the hops themselves
        ((sent, reply),) = await fakes.exchange([(30_000, f"{tag} alone {i}")], timeout=60)
        if reply is not None:
            m.alone.append(reply - sent - args.model_latency)

    for wave in range(args.waves):  # many users at the same moment, one message each
        batch = [(10_000 + chat, f"{tag} wave {wave} from {chat}") for chat in range(args.wave_chats)]
        results = await fakes.exchange(batch, timeout=180)
        m.wave += [reply - sent - args.model_latency for sent, reply in results if reply is not None]
        if len(m.wave) < (wave + 1) * args.wave_chats:
            print(f"{name}: {(wave + 1) * args.wave_chats - len(m.wave)} replies missing in wave {wave}")

    bench_pids = {"fakes": fakes.process.pid, "driver": os.getpid()}
    every = {**pids, **bench_pids}
    cpu_before = {n: cpu_seconds(p) for n, p in every.items()}
    burst = [(20_000 + chat, f"{tag} burst from {chat}") for chat in range(args.burst_chats)]
    results = await fakes.exchange(burst, timeout=300)
    cpu_used = {n: cpu_seconds(p) - cpu_before[n] for n, p in every.items()}
    replies = [reply for _, reply in results if reply is not None]
    m.burst_missing = len(burst) - len(replies)
    if replies:
        m.burst_rate = len(replies) / (max(replies) - min(sent for sent, _ in results))
        m.cpu_ms_per_reply = {n: used / len(replies) * 1000 for n, used in cpu_used.items()}
    m.messages = 1 + args.single + args.waves * args.wave_chats + args.burst_chats
    m.rss_after = {n: rss_mb(p) for n, p in pids.items()}
    return m


# --- reporting ------------------------------------------------------------------------------------


def bot_cpu(m: Measured) -> float:
    return sum(v for n, v in m.cpu_ms_per_reply.items() if n not in ("fakes", "driver"))


def figures(m: Measured) -> dict[str, tuple[str, bool | None]]:
    idle, after = sum(m.rss_idle.values()), sum(m.rss_after.values())
    ms = 1000
    return {
        "burst": (f"{m.burst_rate:.0f} replies/s ({m.burst_missing} missing)", m.burst_rate >= 400),
        "wave": (
            f"p50 {statistics.median(m.wave) * ms:.0f} / p99 {percentile(m.wave, 99) * ms:.0f} ms" if m.wave else "-",
            bool(m.wave) and percentile(m.wave, 99) <= 0.150,
        ),
        "alone": (
            f"{statistics.median(m.alone) * ms:.0f} / {percentile(m.alone, 99) * ms:.0f} ms" if m.alone else "-",
            bool(m.alone) and statistics.median(m.alone) <= 0.020 and percentile(m.alone, 99) <= 0.040,
        ),
        "cpu": (f"{bot_cpu(m):.1f} ms", bot_cpu(m) <= 2.0),
        "rss": (f"{idle:.0f} / {after:.0f} MB after {m.messages} messages", after <= 400),
    }


GOALS = {
    "burst": ("{burst} chats × 1 message at once, replies/s (ideal: {burst})", "≥ 400"),
    "wave": ("{wave} chats × 1 at once, added latency", "p99 ≤ 150 ms"),
    "alone": ("one message at a time, added latency p50 / p99", "≤ 20 / 40 ms"),
    "cpu": ("CPU per reply, the bot's processes (services + broker), burst", "≤ 2 ms"),
    "rss": ("RSS of the bot's processes, idle / after the run", "≤ 400 MB"),
}


def report(results: list[Measured], args: argparse.Namespace, broker: str) -> None:
    print(f"# text pipeline benchmark ({platform.node()}, {os.cpu_count()} cores, {time.strftime('%Y-%m-%d %H:%M')})")
    print(
        f"model latency {args.model_latency:.1f} s, broker: {broker}, core-llm and renderer replicas: {args.replicas}, "
        f"load average at start {os.getloadavg()[0]:.1f}"
    )
    print()
    head = "| figure | " + " | ".join(m.name for m in results) + " | goal | met |"
    print(head)
    print("|" + " --- |" * (head.count("|") - 1))
    table = [figures(m) for m in results]
    for key, (label, goal) in GOALS.items():
        cells = " | ".join(t[key][0] for t in table)
        met = table[0][key][1]
        print(
            f"| {label.format(burst=args.burst_chats, wave=args.wave_chats)} | {cells} | {goal} | "
            f"{'yes' if met else 'no'} |"
        )
    if len(results) == 2:
        ours, yard = results
        print()
        print(
            f"ratio ai-bot / no-broker bot: throughput {ours.burst_rate / yard.burst_rate:.2f}, "
            f"CPU per reply {bot_cpu(ours) / bot_cpu(yard):.1f}x"
            if yard.burst_rate and bot_cpu(yard)
            else "ratio: the no-broker bot answered nothing in the burst"
        )
    for m in results:
        print()
        print(
            f"{m.name}: CPU ms per reply in the burst, per process (driver and fakes are not the bot's): "
            + ", ".join(f"{n} {v:.2f}" for n, v in m.cpu_ms_per_reply.items())
        )
        print(
            f"{m.name}: RSS MB idle -> after: "
            + ", ".join(f"{n} {m.rss_idle[n]:.0f} -> {m.rss_after[n]:.0f}" for n in m.pids)
        )


async def soak(fakes: Fakes, pids: dict[str, int], args: argparse.Namespace) -> None:
    """A steady rate of messages over many chats; RSS per process every tenth of the run."""
    print(f"# soak: {args.soak} messages at {args.rate}/s over {args.soak_chats} chats")
    names = list(pids)
    print("| messages | " + " | ".join(names) + " | total MB |")
    print("|" + " --- |" * (len(names) + 2))
    samples: dict[int, float] = {}
    step = max(1, args.soak // 10)
    sent, started, lost = 0, time.monotonic(), 0
    pending: list[asyncio.Task[list[tuple[float, float | None]]]] = []
    while sent < args.soak:
        batch_size = max(1, int(args.rate / 10))
        batch = [
            (40_000 + (sent + i) % args.soak_chats, f"soak {sent + i}")
            for i in range(min(batch_size, args.soak - sent))
        ]
        pending.append(asyncio.create_task(fakes.exchange(batch, timeout=120)))
        sent += len(batch)
        if sent % step < len(batch) or sent == args.soak:
            rss = {n: rss_mb(p) for n, p in pids.items()}
            samples[sent] = sum(rss.values())
            print(f"| {sent} | " + " | ".join(f"{rss[n]:.0f}" for n in names) + f" | {samples[sent]:.0f} |", flush=True)
        await asyncio.sleep(max(0.0, started + sent / args.rate - time.monotonic()))
    for task in pending:
        lost += sum(1 for _, reply in await task if reply is None)
    marks = sorted(samples)
    at_fifth = next(s for s in marks if s >= args.soak // 5)
    growth = samples[marks[-1]] - samples[at_fifth]
    print(f"lost {lost}; RSS growth from message {at_fifth} to {marks[-1]}: {growth:+.0f} MB (goal: none)")


async def main(args: argparse.Namespace) -> None:
    fakes = Fakes.start(args.model_latency)
    try:
        with test_broker() as bootstrap:
            broker = "AIBOT_TEST_KAFKA_BOOTSTRAP" if os.environ.get("AIBOT_TEST_KAFKA_BOOTSTRAP") else "test_broker()"
            with product(fakes, bootstrap, args) as pids:
                if args.soak:
                    await soak(fakes, pids, args)
                    return
                results = [await measure("ai-bot", fakes, pids, args)]
        if args.compare:
            with minimal_bot(fakes) as pids:
                results.append(await measure("no-broker bot", fakes, pids, args))
        report(results, args, broker)
    finally:
        await fakes.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-latency", type=float, default=1.0)
    parser.add_argument("--burst-chats", type=int, default=500, help="chats that each send one message at once")
    parser.add_argument("--wave-chats", type=int, default=200)
    parser.add_argument("--waves", type=int, default=3)
    parser.add_argument("--single", type=int, default=20, help="messages sent one at a time on an idle pipeline")
    parser.add_argument("--replicas", type=int, default=1, help="core-llm and renderer processes each")
    parser.add_argument("--compare", action="store_true", help="also run the load on a minimal no-broker bot")
    parser.add_argument("--soak", type=int, default=0, help="messages for a soak run (RSS over time)")
    parser.add_argument("--rate", type=float, default=100.0, help="soak messages per second")
    parser.add_argument("--soak-chats", type=int, default=1000)
    parser.add_argument(
        "--telegram-rate",
        type=float,
        default=100000.0,
        help="renderer's send limit per second (Telegram's real limit is 30/s per bot)",
    )
    asyncio.run(main(parser.parse_args()))
