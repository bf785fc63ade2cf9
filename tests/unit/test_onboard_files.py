"""The files `ai-bot onboard` writes: `.env` (secrets, 0600, read back as written, by the shell and by
systemd's EnvironmentFile rules) and the config document's `${VAR}` references."""

from __future__ import annotations

import stat
import subprocess
from pathlib import Path

import pytest

from aibot_cli.onboard import Asker, Draft, OnboardError, read_env, write_env

VALUES = {
    "PLAIN": "777:abc-DEF_ghi",
    "SPACES": "a b  c",
    "QUOTE": 'it\'s $HOME and `x` and \\ and "q"',
    "HASH": "x#y",
}


def test_env_file_is_private_and_reads_back_what_was_written(tmp_path: Path) -> None:
    path = tmp_path / ".env"
    write_env(path, VALUES)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert read_env(path) == VALUES  # a re-run of onboard keeps each secret as it was
    # The shell that `set -a; . .env` uses sees every value exactly.
    for name, value in VALUES.items():
        assert _shell(path, name) == value


def _shell(path: Path, name: str) -> str:
    script = f'set -a; . "{path}"; set +a; printf %s "${name}"'
    return subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=True).stdout


def test_a_secret_goes_to_the_env_and_the_document_keeps_a_reference() -> None:
    draft = Draft({"telegram": {"bot_token": "${TELEGRAM_BOT_TOKEN}"}}, {"TELEGRAM_BOT_TOKEN": "old"})
    node = draft.section("telegram")
    assert draft.secret(node, "bot_token") == "old"
    draft.put_secret(node, "bot_token", "telegram_token", "new")
    assert node["bot_token"] == "${TELEGRAM_BOT_TOKEN}" and draft.env["TELEGRAM_BOT_TOKEN"] == "new"


def test_non_interactive_asks_nothing_and_names_the_flag_a_missing_answer_needs() -> None:
    ask = Asker({}, interactive=False)
    assert ask.text("model_name", "Model id", "gpt-4o-mini") == "gpt-4o-mini"
    assert ask.secret("model_api_key", "API key", "kept") == "kept"
    with pytest.raises(OnboardError, match="--telegram-token is needed"):
        ask.secret("telegram_token", "Bot token", None)
    with pytest.raises(OnboardError, match="--telegram-mode: one of webhook, polling"):
        Asker({"telegram_mode": "push"}, interactive=False).select(
            "telegram_mode", "", ["webhook", "polling"], "polling"
        )
