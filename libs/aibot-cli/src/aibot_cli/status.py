"""`ai-bot status`: what a running `ai-bot up` runs on this host, from the state file it writes
(`$AIBOT_STATE_DIR/up.json`, `.local/up.json` by default): each process, its pid, port and whether it
is ready, the broker and the fake Telegram. Exit status 1 when none runs or a service is not ready."""

from __future__ import annotations

import argparse

import httpx
from rich.console import Console
from rich.table import Table

from aibot_cli.local import STATE_FILE, default_state_dir, pid_alive, read_state


def _ready(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def run(args: argparse.Namespace) -> int:
    state_dir = default_state_dir()
    state = read_state(state_dir)
    if state is None:
        print(f"no `ai-bot up` runs here (no live {state_dir / STATE_FILE}); start one with `ai-bot up`")
        return 1
    broker = "embedded dev broker" if state.get("embedded_broker") else "configured cluster"
    print(f"ai-bot up: pid {state['pid']}, kafka {state['kafka']} ({broker})")
    if state.get("telegram_fake"):
        print(f"fake Telegram: {state['telegram_fake']} (`ai-bot chat --telegram-url {state['telegram_fake']}`)")
    table = Table()
    for column in ("service", "pid", "port", "admin port", "state"):
        table.add_column(column)
    bad = 0
    for service in state.get("services", []):
        pid = service.get("pid")
        alive = pid is not None and pid_alive(int(pid))
        ready = alive and _ready(int(service["port"]))
        bad += not ready
        table.add_row(
            service["name"],
            str(pid or "-"),
            str(service["port"]),
            str(service.get("admin_port") or "-"),
            "[green]ready[/]" if ready else ("[yellow]not ready[/]" if alive else "[red]exited[/]"),
        )
    Console().print(table)
    return 1 if bad else 0


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = sub.add_parser("status", help="the processes of a running `ai-bot up` on this host and their ports")
    parser.set_defaults(func=run)
