"""Alerts reach a person: the real Alertmanager (Debian's prometheus-alertmanager), started with the
configuration `ai-bot alerts config` writes (what compose and the chart run it with), delivers a
firing alert by e-mail to an SMTP server on loopback (aiosmtpd), to a fake Telegram Bot API (the
admin chat) and, through `ai-bot alerts relay`, to a fake Feishu group custom bot that checks the
signature the way Feishu does and to a fake SMS gateway. The broker-down
alert holds back the stage-down alerts it causes."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from email import message_from_bytes
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from aibot_cli.alerts import alert_text
from tests.storage_helpers import free_port, free_ports

AI_BOT = str(Path(sys.executable).parent / "ai-bot")
FEISHU_SECRET = "feishu-bot-signing-secret"


def _alertmanager() -> str:
    found = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")
    if found is None:
        pytest.skip("Debian prometheus-alertmanager is not installed (scripts/bootstrap.sh installs it as root)")
    return found


class FakeFeishuBot:
    """A Feishu custom-bot webhook: checks timestamp and sign as Feishu does (code 19021 when wrong)."""

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        self.rejected: list[dict[str, Any]] = []
        bot = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                timestamp = int(body.get("timestamp", 0))
                key = f"{timestamp}\n{FEISHU_SECRET}".encode()
                expected = base64.b64encode(hmac.new(key, b"", hashlib.sha256).digest()).decode()
                fresh = abs(time.time() - timestamp) < 3600
                if body.get("sign") == expected and fresh:
                    bot.received.append(body)
                    answer = {"code": 0, "msg": "success", "data": {}}
                else:
                    bot.rejected.append(body)
                    answer = {
                        "code": 19021,
                        "msg": "sign match fail or timestamp is not within one hour from current time",
                    }
                data = json.dumps(answer).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/open-apis/bot/v2/hook/test-hook-token"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class Recorder:
    """A fake HTTP API that records every POST (path, headers, JSON body): the Telegram Bot API for
    Alertmanager's telegram_configs, and an SMS gateway for the relay."""

    def __init__(self) -> None:
        self.posts: list[tuple[str, dict[str, str], dict[str, Any]]] = []
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                try:
                    body = json.loads(raw) if raw else {}
                except ValueError:
                    from urllib.parse import parse_qsl

                    body = dict(parse_qsl(raw.decode()))
                recorder.posts.append((self.path, dict(self.headers), body))
                message = {
                    "message_id": len(recorder.posts),
                    "date": int(time.time()),
                    "chat": {"id": 0, "type": "group"},
                }
                data = json.dumps({"ok": True, "result": message}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class Mailbox:
    def __init__(self) -> None:
        from aiosmtpd.controller import Controller

        self.messages: list[Any] = []
        box = self

        class Handler:
            async def handle_DATA(self, server: object, session: object, envelope: Any) -> str:
                box.messages.append(message_from_bytes(envelope.content))
                return "250 OK"

        self.port = free_port()
        self.controller = Controller(Handler(), hostname="127.0.0.1", port=self.port)
        self.controller.start()

    def close(self) -> None:
        self.controller.stop()


@pytest.fixture
def channels() -> Iterator[tuple[Mailbox, FakeFeishuBot]]:
    pytest.importorskip("aiosmtpd", reason="PyPI aiosmtpd (dev group) is the SMTP server of this test")
    mailbox, bot = Mailbox(), FakeFeishuBot()
    try:
        yield mailbox, bot
    finally:
        mailbox.close()
        bot.close()


def _wait(condition, timeout_s: float = 60.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.2)
    return False


def _wait_http(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    def up() -> bool:
        assert process.poll() is None, log.read_text()
        try:
            return httpx.get(url, timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    assert _wait(up, 60), log.read_text()


def test_a_firing_alert_reaches_email_and_the_signed_feishu_bot(
    channels: tuple[Mailbox, FakeFeishuBot], tmp_path: Path
) -> None:
    binary = _alertmanager()
    mailbox, bot = channels
    telegram, sms = Recorder(), Recorder()
    relay_port, am_port = free_ports(2)
    env = {
        **os.environ,
        "AIBOT_ALERTING__RELAY_URL": f"http://127.0.0.1:{relay_port}",
        "AIBOT_ALERTING__RUNBOOK_BASE_URL": "https://git.example.com/ai-bot/blob/main/",
        "AIBOT_ALERTING__GROUP_WAIT": "1s",
        "AIBOT_ALERTING__GROUP_INTERVAL": "2s",
        "AIBOT_ALERTING__EMAIL_TO": '["sre@example.com"]',
        "AIBOT_ALERTING__EMAIL_FROM": "alertmanager@example.com",
        "AIBOT_ALERTING__SMTP_SMARTHOST": f"127.0.0.1:{mailbox.port}",
        "AIBOT_ALERTING__SMTP_REQUIRE_TLS": "false",
        "AIBOT_ALERTING__FEISHU_WEBHOOK_URL": bot.url,
        "AIBOT_ALERTING__FEISHU_SECRET": FEISHU_SECRET,
        "AIBOT_ALERTING__TELEGRAM_BOT_TOKEN": "123456:alert-bot-token",
        "AIBOT_ALERTING__TELEGRAM_CHAT_ID": "-1001234567890",
        "AIBOT_ALERTING__TELEGRAM_API_URL": telegram.url,
        "AIBOT_ALERTING__SMS_GATEWAY_URL": f"{sms.url}/v1/send",
        "AIBOT_ALERTING__SMS_TOKEN": "sms-gateway-token",
        "AIBOT_ALERTING__SMS_TO": '["+8613800000000"]',
        "AIBOT_OBSERVABILITY__LOG_FORMAT": "text",
    }
    config = tmp_path / "alertmanager.yml"
    subprocess.run([AI_BOT, "alerts", "config", "--out", str(config)], env=env, check=True, timeout=60)
    checked = subprocess.run(["amtool", "check-config", str(config)], capture_output=True, text=True, timeout=60)
    assert checked.returncode == 0, checked.stdout + checked.stderr

    log = tmp_path / "processes.log"
    with log.open("ab") as out:
        relay = subprocess.Popen(
            [AI_BOT, "alerts", "relay", "--port", str(relay_port)], env=env, stdout=out, stderr=out
        )
        alertmanager = subprocess.Popen(
            [
                binary,
                f"--config.file={config}",
                f"--storage.path={tmp_path / 'am-data'}",
                f"--web.listen-address=127.0.0.1:{am_port}",
                "--cluster.listen-address=",
            ],
            stdout=out,
            stderr=out,
        )
    api = f"http://127.0.0.1:{am_port}/api/v2"
    try:
        _wait_http(f"http://127.0.0.1:{relay_port}/healthz", relay, log)
        _wait_http(f"http://127.0.0.1:{am_port}/-/ready", alertmanager, log)
        stage_down = {
            "labels": {
                "alertname": "AibotStageNoConsumer",
                "severity": "critical",
                "namespace": "bots",
                "group": "aibot-core-llm",
            },
            "annotations": {
                "summary": "No consumer is running in aibot-core-llm",
                "runbook_url": "docs/runbooks.md#aibotstagenoconsumer",
            },
        }
        httpx.post(f"{api}/alerts", json=[stage_down], timeout=10).raise_for_status()

        assert _wait(lambda: mailbox.messages and bot.received), (
            f"mail: {len(mailbox.messages)}, feishu: {bot.received}, rejected: {bot.rejected}\n"
            f"{log.read_text()[-3000:]}"
        )
        mail = mailbox.messages[0]
        assert "AibotStageNoConsumer" in mail["Subject"]
        assert mail["To"] == "sre@example.com"
        text = bot.received[0]["content"]["text"]
        assert text.startswith("[FIRING:1] AibotStageNoConsumer (critical)")
        assert "No consumer is running in aibot-core-llm" in text
        assert "Runbook: https://git.example.com/ai-bot/blob/main/docs/runbooks.md#aibotstagenoconsumer" in text
        assert bot.rejected == []
        # The Telegram admin chat, by Alertmanager's own integration, and the SMS (critical only).
        assert _wait(lambda: telegram.posts and sms.posts, 30), (telegram.posts, sms.posts, log.read_text()[-2000:])
        path, _, sent = telegram.posts[0]
        assert path == "/bot123456:alert-bot-token/sendMessage"
        assert str(sent["chat_id"]) == "-1001234567890" and "AibotStageNoConsumer" in sent["text"]
        path, headers, text = sms.posts[0]
        assert path == "/v1/send" and headers["Authorization"] == "Bearer sms-gateway-token"
        assert text["to"] == ["+8613800000000"]
        assert text["text"].startswith("[FIRING:1] AibotStageNoConsumer (critical)")

        # The broker is down too, in another release's namespace and in this one: the stage-down
        # alert of this namespace is held back (inhibited), the other namespace's is not touched.
        broker_down = {"labels": {"alertname": "AibotKafkaUnreachable", "severity": "critical", "namespace": "bots"}}
        other = {"labels": {**stage_down["labels"], "namespace": "other"}, "annotations": stage_down["annotations"]}
        httpx.post(f"{api}/alerts", json=[broker_down, stage_down, other], timeout=10).raise_for_status()

        def states() -> dict[tuple[str, str], dict[str, Any]]:
            alerts = httpx.get(f"{api}/alerts", timeout=10).json()
            return {(a["labels"]["alertname"], a["labels"]["namespace"]): a["status"] for a in alerts}

        assert _wait(lambda: states().get(("AibotStageNoConsumer", "bots"), {}).get("state") == "suppressed", 30)
        now = states()
        assert now[("AibotStageNoConsumer", "bots")]["inhibitedBy"]
        assert now[("AibotStageNoConsumer", "other")]["state"] == "active"
        assert now[("AibotKafkaUnreachable", "bots")]["state"] == "active"
    finally:
        for process in (alertmanager, relay):
            process.terminate()
            process.wait(15)
        telegram.close()
        sms.close()


def test_the_relay_refuses_what_feishu_refuses(channels: tuple[Mailbox, FakeFeishuBot]) -> None:
    """A wrong signing secret: Feishu answers code 19021 with HTTP 200; the relay answers 502, so
    Alertmanager retries instead of counting the notification as sent."""
    from fastapi.testclient import TestClient

    from aibot_cli.alerts import relay_app
    from aibot_common.settings import Settings

    _, bot = channels
    settings = Settings(alerting={"feishu_webhook_url": bot.url, "feishu_secret": "not-the-secret"})
    with TestClient(relay_app(settings)) as client:
        response = client.post("/alerts/feishu", json={"status": "firing", "alerts": [{"labels": {"alertname": "X"}}]})
    assert response.status_code == 502
    assert len(bot.rejected) == 1 and bot.received == []


def test_alert_text_is_short_for_sms() -> None:
    payload = {
        "status": "firing",
        "commonLabels": {"alertname": "A", "severity": "critical"},
        "alerts": [{"annotations": {"summary": "x" * 500}}],
    }
    assert len(alert_text(payload, "", limit=300)) == 300


def test_the_chart_runs_alertmanager_on_the_config_the_cli_writes(render, tmp_path: Path) -> None:
    """The chart's Alertmanager starts from `ai-bot alerts config` (init container) over the release's
    config file; that file's `alerting:` section, with the secrets set, gives a config amtool accepts
    that routes to the chart's relay."""
    from aibot_cli.alerts import render_config
    from aibot_common.settings import Settings

    rendered = render("alerting-values.yaml")
    deployments = rendered.by_component("Deployment")
    spec = deployments["alertmanager"]["spec"]["template"]["spec"]
    (init,) = spec["initContainers"]
    assert init["command"][:3] == ["ai-bot", "alerts", "config"]
    written = init["command"][init["command"].index("--out") + 1]
    (alertmanager,) = spec["containers"]
    assert f"--config.file={written}" in alertmanager["args"]
    assert {"secretRef": {"name": "ai-bot-alerting"}} in init["envFrom"]
    relay = deployments["alert-relay"]["spec"]["template"]["spec"]["containers"][0]
    assert relay["command"][:3] == ["ai-bot", "alerts", "relay"]

    alerting = rendered.config()["alerting"]
    assert alerting["relay_url"] == "http://ai-bot-alert-relay:9095"
    secrets = {
        "smtp_password": "smtp-pass",
        "telegram_bot_token": "123:tg-token",
        "feishu_webhook_url": "https://open.feishu.cn/open-apis/bot/v2/hook/x",
        "feishu_secret": "sign-secret",
        "sms_token": "sms-token",
    }
    config = tmp_path / "alertmanager.yml"
    config.write_text(render_config(Settings(alerting={**alerting, **secrets})))
    if shutil.which("amtool") is None:
        pytest.skip("amtool (Debian prometheus-alertmanager) is not installed")
    checked = subprocess.run(["amtool", "check-config", str(config)], capture_output=True, text=True, timeout=60)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    receivers = {r["name"]: r for r in yaml.safe_load(config.read_text())["receivers"]}
    critical_hooks = [h["url"] for h in receivers["aibot-critical"]["webhook_configs"]]
    assert critical_hooks == [
        "http://ai-bot-alert-relay:9095/alerts/feishu",
        "http://ai-bot-alert-relay:9095/alerts/sms",
    ]
    # SMS for critical alerts only; e-mail and Telegram for both.
    assert [h["url"] for h in receivers["aibot-warning"]["webhook_configs"]] == critical_hooks[:1]
    assert receivers["aibot-warning"]["telegram_configs"][0]["chat_id"] == -1001234567890
