"""The README's run command: `ai-bot up --chat` starts everything and answers in the terminal."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pexpect
import pytest

pytestmark = pytest.mark.e2e


def test_ai_bot_up_chats_in_the_terminal(tmp_path: Path) -> None:
    ai_bot = shutil.which("ai-bot", path=str(Path(sys.executable).parent))
    assert ai_bot, "the ai-bot console script is installed with the workspace"
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIBOT_")}
    env.update(AIBOT_STATE_DIR=str(tmp_path), AIBOT_KAFKA__BOOTSTRAP_SERVERS="127.0.0.1:1")  # nothing there
    child = pexpect.spawn(ai_bot, ["up", "--chat"], env=env, encoding="utf-8", timeout=150)
    try:
        child.expect("embedded dev broker")
        child.expect("local fake Telegram")
        child.expect("bundled English tiny.en")
        child.expect("all services ready")
        child.expect("you> ")
        child.sendline("hello from the terminal")
        child.expect("bot> Echo: hello from the terminal")
        child.sendline("/help")
        child.expect("/reset - forget our conversation")
        if shutil.which("espeak-ng") and shutil.which("ffmpeg"):
            child.sendline("/voice hello how is the weather in London today")
            child.expect("sent a")
            child.expect("bot> 🎤 .*London.*\r\n\r\nEcho: .*London")
    finally:
        child.sendeof()
        child.expect(pexpect.EOF, timeout=60)
        child.close()
    logs = tmp_path / "logs"
    assert (logs / "core-llm.log").exists() and (logs / "broker.log").exists()


def test_ai_bot_up_is_found_by_status_and_lag_and_stops_on_ctrl_c_without_tracebacks(tmp_path: Path) -> None:
    import signal
    import subprocess

    ai_bot = str(Path(sys.executable).parent / "ai-bot")
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIBOT_")}
    env.update(AIBOT_STATE_DIR=str(tmp_path), AIBOT_KAFKA__BOOTSTRAP_SERVERS="127.0.0.1:1")  # nothing there
    child = pexpect.spawn(ai_bot, ["up"], env=env, encoding="utf-8", timeout=150)
    try:
        child.expect("embedded dev broker on (127.0.0.1:\\d+)")
        broker = child.match.group(1)
        child.expect("all services ready")
        status = subprocess.run([ai_bot, "status"], env=env, capture_output=True, text=True, timeout=60)
        assert status.returncode == 0, status.stdout + status.stderr
        assert broker in status.stdout and "core-llm" in status.stdout and "8083" in status.stdout
        # No port given: lag finds the embedded broker `ai-bot up` started.
        lag = subprocess.run([ai_bot, "lag"], env=env, capture_output=True, text=True, timeout=60)
        assert lag.returncode == 0, lag.stdout + lag.stderr
        assert "aibot.inbound.v1" in lag.stdout
        # A second `ai-bot up` meets the first: one line, naming what runs.
        again = subprocess.run([ai_bot, "up"], env=env, capture_output=True, text=True, timeout=60)
        assert again.returncode == 2 and "already runs here" in again.stderr
        assert len(again.stderr.strip().splitlines()) == 1
        child.kill(signal.SIGINT)  # Ctrl-C
        child.expect(pexpect.EOF, timeout=90)
    finally:
        child.close(force=True)
    output = child.before or ""
    assert "Traceback" not in output
    assert child.exitstatus == 0, output
    for log in (tmp_path / "logs").glob("*.log"):
        assert "Traceback" not in log.read_text(errors="replace"), log.name
    assert not (tmp_path / "up.json").exists()
    done = subprocess.run([ai_bot, "status"], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and "no `ai-bot up` runs here" in done.stdout


def test_a_port_in_use_stops_ai_bot_up_with_one_line_naming_it(tmp_path: Path) -> None:
    import socket
    import subprocess

    from aibot_common import catalog

    port = catalog.service("ingress-telegram").port
    holder = socket.socket()
    try:
        holder.bind(("0.0.0.0", port))
        holder.listen()
    except OSError:
        pass  # something already holds it: the same situation
    try:
        env = {k: v for k, v in os.environ.items() if not k.startswith("AIBOT_")} | {"AIBOT_STATE_DIR": str(tmp_path)}
        done = subprocess.run(
            [str(Path(sys.executable).parent / "ai-bot"), "up"], env=env, capture_output=True, text=True, timeout=60
        )
    finally:
        holder.close()
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr
    assert "is already in use" in lines[0] and "port " in lines[0]
