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
