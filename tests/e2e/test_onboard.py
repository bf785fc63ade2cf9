"""`ai-bot onboard` driven through its real prompts in a terminal (pexpect), for a Telegram-only host
set-up: the fake Telegram (getMe), the fake model (a one-token request with its key), a real SMTP
server on loopback (the test notice) and moto's S3 server (the storage probe); then the written
files loaded by the settings, a re-run that changes one value only, and `ai-bot doctor` on a broken
dependency."""

from __future__ import annotations

import os
import re
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from email.message import Message
from pathlib import Path

import httpx
import pexpect
import pytest
import yaml
from aiosmtpd.controller import Controller

from aibot_cli.onboard import read_env
from aibot_common.settings import load_settings
from tests.storage_helpers import moto_s3

pytestmark = pytest.mark.e2e

TOKEN = "777111:REAL-LOOKING-TOKEN-0123456789"
API_KEY = "sk-onboard-test-4242"
S3_SECRET = "testing-secret-onboard"
AI_BOT = str(Path(sys.executable).parent / "ai-bot")
DOWN = "\x1b[B"
UP = "\x1b[A"
CLEAR = "\x15"  # Ctrl-U: clears the default a text prompt starts with


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _fake(*args: str) -> Iterator[str]:
    port = _free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "aibot_fakes", *args, "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            httpx.get(url, timeout=0.5)
            break
        except httpx.HTTPError:
            if time.monotonic() > deadline or process.poll() is not None:
                raise RuntimeError(f"fake {args[0]} did not start") from None
            time.sleep(0.1)
    try:
        yield url
    finally:
        process.terminate()
        process.wait(10)


@pytest.fixture(scope="module")
def telegram() -> Iterator[str]:
    yield from _fake("telegram", "--token", TOKEN, "--bot-username", "onboard_test_bot")


@pytest.fixture(scope="module")
def llm() -> Iterator[str]:
    yield from _fake("llm", "--api-key", API_KEY)


class _Inbox:
    def __init__(self) -> None:
        self.messages: list[tuple[list[str], Message]] = []

    async def handle_DATA(self, server, session, envelope) -> str:
        from email import message_from_bytes

        self.messages.append((list(envelope.rcpt_tos), message_from_bytes(envelope.content)))
        return "250 OK"


@pytest.fixture(scope="module")
def smtp() -> Iterator[tuple[str, _Inbox]]:
    inbox = _Inbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=_free_port())
    controller.start()
    try:
        yield f"127.0.0.1:{controller.port}", inbox
    finally:
        controller.stop()


@pytest.fixture(scope="module")
def s3() -> Iterator[str]:
    with moto_s3() as endpoint:
        httpx.put(f"{endpoint}/onboard", timeout=10).raise_for_status()
        yield endpoint


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIBOT_")}
    return env | {"PROMPT_TOOLKIT_NO_CPR": "1", "TERM": "xterm", "NO_COLOR": "1"}


def _step(child: pexpect.spawn, prompt: str, keys: str) -> None:
    child.expect(re.escape(prompt))
    time.sleep(0.15)  # prompt_toolkit draws the prompt, then reads keys
    child.send(keys)


def _onboard_interactively(directory: Path, telegram: str, llm: str, smtp: str, s3: str) -> str:
    child = pexpect.spawn(
        AI_BOT,
        ["onboard", "--dir", str(directory), "--telegram-api-url", telegram],
        env=_env(),
        encoding="utf-8",
        timeout=60,
        dimensions=(40, 160),
    )
    transcript: list[str] = []
    child.logfile_read = _Collect(transcript)
    _step(child, "Which platforms?", "\r")  # telegram, the default
    _step(child, "Bot token", TOKEN + "\r")
    child.expect("@onboard_test_bot")
    _step(child, "How does Telegram deliver updates?", UP + "\r")  # polling is the default: up to webhook
    _step(child, "Public HTTPS base URL", "https://bot.example.com\r")
    _step(child, "Chat completions URL", CLEAR + f"{llm}/v1/chat/completions\r")
    _step(child, "API key", API_KEY + "\r")
    _step(child, "Model id", CLEAR + "fake-echo\r")
    _step(child, "Most tokens per answer", CLEAR + "256\r")
    child.expect("✓ model")
    _step(child, "Transcribe voice notes", "n")
    _step(child, "Who may talk to the bot?", DOWN + DOWN + "\r")  # pairing
    _step(child, "First admin", "telegram:42\r")
    _step(child, "Alerts by e-mail", "y")
    _step(child, "SMTP server", smtp + "\r")
    _step(child, "STARTTLS?", "n")
    _step(child, "SMTP login", "\r")
    _step(child, "From address", "bot@example.com\r")
    _step(child, "Recipients", "ops@example.com\r")
    child.expect("✓ e-mail")
    _step(child, "Alerts by SMS", "n")
    _step(child, "Feishu group custom bot", "n")
    _step(child, "Telegram admin chat", "n")
    _step(child, "Where?", DOWN + "\r")  # s3
    _step(child, "Endpoint URL", s3 + "\r")
    _step(child, "Bucket", "onboard\r")
    _step(child, "Region", "\r")
    _step(child, "Key prefix", "ai-bot/test\r")
    _step(child, "Access key id", "testing-key\r")
    _step(child, "Secret access key", S3_SECRET + "\r")
    child.expect("✓ storage")
    child.expect("ai-bot up")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0, "".join(transcript)
    return "".join(transcript)


class _Collect:
    def __init__(self, into: list[str]) -> None:
        self.into = into

    def write(self, text: str) -> None:
        self.into.append(text)

    def flush(self) -> None:
        pass


def _load(directory: Path, monkeypatch: pytest.MonkeyPatch):
    for name in [k for k in os.environ if k.startswith("AIBOT_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("AIBOT_CONFIG", str(directory / "config.yaml"))
    for name, value in read_env(directory / ".env").items():
        monkeypatch.setenv(name, value)
    return load_settings()


@pytest.fixture(scope="module")
def onboarded(tmp_path_factory: pytest.TempPathFactory, telegram: str, llm: str, smtp, s3: str):
    directory = tmp_path_factory.mktemp("host")
    transcript = _onboard_interactively(directory, telegram, llm, smtp[0], s3)
    return directory, transcript


def test_the_wizard_checks_each_answer_and_writes_a_config_the_services_load(
    onboarded, smtp, s3: str, telegram: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    directory, transcript = onboarded
    # Each answer was checked against the real thing: the bot's name, the model, the test e-mail.
    assert "✓ telegram getMe: @onboard_test_bot" in transcript
    rcpts, message = smtp[1].messages[-1]
    assert rcpts == ["ops@example.com"] and "test notice" in message.get_payload()
    # Secrets: never echoed, never in config.yaml; in .env, mode 0600.
    config_text = (directory / "config.yaml").read_text()
    for secret in (TOKEN, API_KEY, S3_SECRET):
        assert secret not in transcript
        assert secret not in config_text
    assert stat.S_IMODE((directory / ".env").stat().st_mode) == 0o600
    settings = _load(directory, monkeypatch)
    assert settings.telegram.bot_token.get_secret_value() == TOKEN
    assert settings.telegram.api_base_url == telegram
    assert settings.telegram.mode == "webhook"
    assert settings.telegram.webhook.url == "https://bot.example.com/telegram/webhook"
    assert len(settings.telegram.webhook.secret_token.get_secret_value()) >= 32
    assert not settings.feishu.enabled
    model = settings.llm_model()
    assert (model.api_model, model.max_tokens, model.api_key.get_secret_value()) == ("fake-echo", 256, API_KEY)
    assert not any(m.type == "asr" for m in settings.models)
    assert settings.access.policy["telegram"].private == "pairing"
    assert [(b.subject, b.role) for b in settings.access.bindings] == [("telegram:42", "admin")]
    assert settings.alerting.email_to == ["ops@example.com"] and settings.alerting.smtp_require_tls is False
    assert settings.storage.backend == "s3" and settings.storage.endpoint == s3
    assert settings.storage.secret_access_key.get_secret_value() == S3_SECRET
    # The probe object was cleaned up after it was read back.
    listing = httpx.get(f"{s3}/onboard?list-type=2", timeout=10).text
    assert "probes/" not in listing


def test_a_rerun_keeps_every_current_value_and_changes_only_the_one_given(
    onboarded, monkeypatch: pytest.MonkeyPatch
) -> None:
    directory, _ = onboarded
    before = _load(directory, monkeypatch)
    before_doc = yaml.safe_load((directory / "config.yaml").read_text())
    done = subprocess.run(
        [AI_BOT, "onboard", "--dir", str(directory), "--non-interactive", "--model-max-tokens", "512"],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr + done.stdout
    for secret in (TOKEN, API_KEY, S3_SECRET):
        assert secret not in done.stdout + done.stderr
    after = _load(directory, monkeypatch)
    assert after.llm_model().max_tokens == 512
    after_doc = yaml.safe_load((directory / "config.yaml").read_text())
    after_doc["models"][0]["max_tokens"] = 256
    assert after_doc == before_doc
    assert after.telegram.webhook.secret_token == before.telegram.webhook.secret_token


def test_doctor_names_each_broken_dependency_with_its_fix(onboarded, tmp_path: Path) -> None:
    directory, _ = onboarded
    doc = yaml.safe_load((directory / "config.yaml").read_text())
    doc["models"][0]["endpoint"] = f"http://127.0.0.1:{_free_port()}/v1/chat/completions"  # nothing listens
    doc["kafka"] = {"bootstrap_servers": f"127.0.0.1:{_free_port()}"}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(doc))
    (tmp_path / ".env").write_text((directory / ".env").read_text())
    done = subprocess.run(
        [AI_BOT, "doctor", "--config", str(tmp_path / "config.yaml")],
        env=_env() | {"COLUMNS": "200"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1, done.stdout + done.stderr
    lines = done.stdout.splitlines()

    def row(name: str) -> str:
        return next(line for line in lines if f" {name} " in line)

    assert "FAIL" in row("kafka") and "start the broker" in row("kafka")
    assert "FAIL" in row("model fake-echo") and "check the endpoint URL" in row("model fake-echo")
    assert "ok" in row("telegram getMe")
    # The webhook the config names is not registered yet: the fix is the command that registers it.
    assert "FAIL" in row("telegram webhook") and "ai-bot webhook set" in row("telegram webhook")
    assert "ok" in row("storage")
    assert "ok" in row("alerts: e-mail")
    assert "3 of 6 checks failed" in done.stdout
    assert API_KEY not in done.stdout + done.stderr and TOKEN not in done.stdout + done.stderr


@pytest.fixture(scope="module")
def feishu() -> Iterator[str]:
    yield from _fake("feishu", "--app-id", "cli_onboard01", "--app-secret", "feishu-secret-0001")


def test_a_feishu_answers_file_is_checked_with_a_tenant_token_and_prints_the_event_url(
    tmp_path: Path, feishu: str, llm: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    answers = {
        "platforms": "feishu",
        "feishu_domain": feishu,
        "feishu_app_id": "cli_onboard01",
        "feishu_app_secret": "wrong-secret",
        "feishu_verification_token": "vt-0001",
        "feishu_encrypt_key": "ek-0001",
        "public_url": "https://bot.example.cn/",
        "model_endpoint": f"{llm}/v1/chat/completions",
        "model_api_key": API_KEY,
        "model_name": "fake-echo",
        "voice": True,
        "asr_language": "zh",
        "asr_device": "cpu",
        "access_policy": "allowlist",
        "admin": "feishu:ou_admin01",
        "notify_email": False,
        "notify_sms": False,
        "notify_feishu_bot": False,
        "storage_path": str(tmp_path / "storage"),
    }
    (tmp_path / "answers.yaml").write_text(yaml.safe_dump(answers))

    def onboard() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [AI_BOT, "onboard", "--dir", str(tmp_path), "--answers", str(tmp_path / "answers.yaml")],
            env=_env(),
            capture_output=True,
            text=True,
            timeout=120,
            stdin=subprocess.DEVNULL,  # not a terminal: nothing is asked
        )

    refused = onboard()
    assert refused.returncode == 1
    assert "✗ feishu tenant token" in refused.stdout and "App Secret again" in refused.stdout
    assert not (tmp_path / "config.yaml").exists()  # a failed check writes nothing

    answers["feishu_app_secret"] = "feishu-secret-0001"
    (tmp_path / "answers.yaml").write_text(yaml.safe_dump(answers))
    done = onboard()
    assert done.returncode == 0, done.stdout + done.stderr
    assert "✓ feishu tenant token" in done.stdout
    assert "https://bot.example.cn/feishu/events" in done.stdout  # ready to paste into the console
    assert "feishu-secret-0001" not in done.stdout + done.stderr
    settings = _load(tmp_path, monkeypatch)
    assert settings.feishu.enabled and not settings.telegram.enabled
    assert settings.feishu.app_id == "cli_onboard01"
    assert settings.feishu.encrypt_key.get_secret_value() == "ek-0001"
    asr = settings.asr_model()
    assert (asr.language, asr.device) == ("zh", "cpu")
    assert settings.access.policy["feishu"].group == "allowlist"
    assert "telegram" not in settings.access.policy


def test_the_bot_answers_with_what_onboard_wrote(tmp_path: Path, telegram: str, llm: str) -> None:
    """The newcomer's path: `ai-bot onboard`, then the command it prints, and the bot answers."""
    done = subprocess.run(
        [
            AI_BOT,
            "onboard",
            "--dir",
            str(tmp_path),
            "--non-interactive",
            "--telegram-api-url",
            telegram,
            "--telegram-token",
            TOKEN,
            "--telegram-mode",
            "polling",
            "--model-endpoint",
            f"{llm}/v1/chat/completions",
            "--model-api-key",
            API_KEY,
            "--model-name",
            "fake-echo",
            "--no-voice",
            "--no-notify-email",
            "--no-notify-sms",
            "--no-notify-feishu-bot",
            "--no-notify-telegram",
            "--storage-path",
            str(tmp_path / "storage"),
        ],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"AIBOT_CONFIG={tmp_path / 'config.yaml'} ai-bot up" in done.stdout
    env = _env() | read_env(tmp_path / ".env")
    env |= {
        "AIBOT_CONFIG": str(tmp_path / "config.yaml"),
        "AIBOT_STATE_DIR": str(tmp_path / "state"),
        "AIBOT_KAFKA__BOOTSTRAP_SERVERS": "127.0.0.1:1",  # nothing there: the embedded broker
    }
    child = pexpect.spawn(AI_BOT, ["up"], env=env, encoding="utf-8", timeout=150)
    try:
        child.expect(f"telegram: real Bot API at {re.escape(telegram)} \\(polling\\)")
        child.expect("model: fake-echo")
        child.expect("all services ready")
        chat = 515151
        before = httpx.get(f"{telegram}/_fake/sent", timeout=10).json()
        last = len(before) - 1
        httpx.post(f"{telegram}/_fake/users/{chat}/messages", json={"text": "hello onboard"}, timeout=10)
        deadline = time.monotonic() + 60
        texts: list[str] = []
        while time.monotonic() < deadline and not any("Echo: hello onboard" in t for t in texts):
            sent = httpx.get(
                f"{telegram}/_fake/sent", params={"chat_id": chat, "after_index": last, "timeout": 5}, timeout=15
            ).json()
            texts = [str(item.get("text", "")) for item in sent]
        assert any("Echo: hello onboard" in t for t in texts), texts
        child.kill(2)
        child.expect(pexpect.EOF, timeout=90)
    finally:
        child.close(force=True)
