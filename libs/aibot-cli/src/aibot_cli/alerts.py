"""`ai-bot alerts config|relay`: alerts that reach a person.

- `config` writes Alertmanager's configuration from the `alerting:` settings (the channels chosen at
  onboarding; secrets from the environment): routes by severity, grouping per alert and namespace,
  the broker-down alert inhibiting the stage-down alerts it causes, and the receivers — e-mail and a
  Telegram admin chat through Alertmanager's own integrations, a Feishu group custom bot and an SMS
  gateway through the relay. The chart and compose run it before Alertmanager starts, so there is one
  generator of that file; an operator with their own Alertmanager can print it and merge it.
- `relay` is the small webhook receiver for what Alertmanager cannot speak: Feishu's custom bot wants
  a signed body of its own shape, an SMS gateway a short text. It answers 502 when the channel
  refuses, so Alertmanager retries the notification.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import logging
import sys
import time
from typing import Any

import httpx
import yaml
from fastapi import FastAPI, HTTPException, Request

from aibot_common.settings import AlertingSettings, Settings, load_settings

log = logging.getLogger(__name__)

RELAY_PORT = 9095
# The alerts that stop when the broker stops: while AibotKafkaUnreachable fires they are noise.
BROKER_CHILDREN = (
    "AibotStageNoConsumer",
    "AibotConsumerLagGrowing",
    "AibotLagFiguresStale",
    "AibotIngressErrorRateHigh",
    "AibotStageErrorRateHigh",
    "AibotEndToEndLatencyHigh",
)


# ---------------------------------------------------------------- Alertmanager's configuration


def _receiver(name: str, alerting: AlertingSettings, severity: str) -> dict[str, Any]:
    receiver: dict[str, Any] = {"name": name}
    if alerting.email_to and alerting.smtp_smarthost and alerting.email_from:
        email: dict[str, Any] = {
            "to": ", ".join(alerting.email_to),
            "from": alerting.email_from,
            "smarthost": alerting.smtp_smarthost,
            "require_tls": alerting.smtp_require_tls,
            "send_resolved": True,
        }
        if alerting.smtp_username:
            email["auth_username"] = alerting.smtp_username
        if alerting.smtp_password:
            email["auth_password"] = alerting.smtp_password.get_secret_value()
        receiver["email_configs"] = [email]
    if alerting.telegram_bot_token and alerting.telegram_chat_id is not None:
        receiver["telegram_configs"] = [
            {
                "bot_token": alerting.telegram_bot_token.get_secret_value(),
                "chat_id": alerting.telegram_chat_id,
                "api_url": alerting.telegram_api_url,
                "send_resolved": True,
            }
        ]
    hooks = []
    if alerting.feishu_webhook_url:
        hooks.append({"url": f"{alerting.relay_url}/alerts/feishu", "send_resolved": True})
    if alerting.sms_gateway_url and alerting.sms_to and severity in alerting.sms_severities:
        # Resolved notices by SMS wake nobody up for good news.
        hooks.append({"url": f"{alerting.relay_url}/alerts/sms", "send_resolved": False})
    if hooks:
        receiver["webhook_configs"] = hooks
    return receiver


def alertmanager_config(alerting: AlertingSettings) -> dict[str, Any]:
    return {
        "route": {
            "receiver": "aibot-warning",
            # One notification per alert name and release: ten stages down is one message, not ten.
            "group_by": ["alertname", "namespace"],
            "group_wait": alerting.group_wait,
            "group_interval": alerting.group_interval,
            "repeat_interval": alerting.repeat_interval,
            "routes": [{"matchers": ['severity="critical"'], "receiver": "aibot-critical", "repeat_interval": "1h"}],
        },
        "inhibit_rules": [
            {
                "source_matchers": ['alertname="AibotKafkaUnreachable"'],
                "target_matchers": [f'alertname=~"{"|".join(BROKER_CHILDREN)}"'],
                "equal": ["namespace"],
            },
            {
                "source_matchers": ['severity="critical"'],
                "target_matchers": ['severity="warning"'],
                "equal": ["alertname", "namespace"],
            },
        ],
        "receivers": [
            _receiver("aibot-critical", alerting, "critical"),
            _receiver("aibot-warning", alerting, "warning"),
        ],
    }


def render_config(settings: Settings) -> str:
    header = "# Written by `ai-bot alerts config` from the `alerting:` settings; holds credentials, keep it private.\n"
    return header + yaml.safe_dump(alertmanager_config(settings.alerting), sort_keys=False)


# ---------------------------------------------------------------- the relay


def alert_text(payload: dict[str, Any], runbook_base_url: str, limit: int | None = None) -> str:
    """A notification as plain text: status, alert name, severity, each alert's summary, the runbook."""
    labels = payload.get("commonLabels") or {}
    alerts = payload.get("alerts") or []
    status = str(payload.get("status", "firing")).upper()
    name = labels.get("alertname", "alerts")
    lines = [f"[{status}:{len(alerts)}] {name}" + (f" ({labels['severity']})" if "severity" in labels else "")]
    for alert in alerts:
        annotations = alert.get("annotations") or {}
        summary = annotations.get("summary") or ", ".join(f"{k}={v}" for k, v in (alert.get("labels") or {}).items())
        lines.append(f"- {summary}")
    runbook = (payload.get("commonAnnotations") or {}).get("runbook_url") or next(
        (a.get("annotations", {}).get("runbook_url") for a in alerts if a.get("annotations", {}).get("runbook_url")),
        None,
    )
    if runbook:
        lines.append(f"Runbook: {runbook_base_url}{runbook}")
    text = "\n".join(lines)
    return text if limit is None or len(text) <= limit else text[: limit - 1] + "…"


def feishu_sign(secret: str, timestamp: int) -> str:
    """Feishu custom bot signature: HMAC-SHA256 keyed by "timestamp\\nsecret" over nothing, base64."""
    key = f"{timestamp}\n{secret}".encode()
    return base64.b64encode(hmac.new(key, b"", hashlib.sha256).digest()).decode()


class DeliveryError(RuntimeError):
    """A channel did not take a notification; the message says why (never a credential)."""


async def deliver_feishu(http: httpx.AsyncClient, alerting: AlertingSettings, text: str) -> None:
    """Post a text to the Feishu group custom bot, signed when a secret is set."""
    if alerting.feishu_webhook_url is None:
        raise DeliveryError("alerting.feishu_webhook_url is not set")
    body: dict[str, Any] = {"msg_type": "text", "content": {"text": text}}
    if alerting.feishu_secret is not None:
        timestamp = int(time.time())
        body |= {"timestamp": str(timestamp), "sign": feishu_sign(alerting.feishu_secret.get_secret_value(), timestamp)}
    try:
        response = await http.post(alerting.feishu_webhook_url.get_secret_value(), json=body)
        answer = response.json()
    except (httpx.HTTPError, ValueError) as exc:
        raise DeliveryError(f"feishu did not answer: {type(exc).__name__}") from None
    # Feishu answers 200 with a non-zero code for a bad signature or a rate limit.
    if response.status_code != 200 or answer.get("code", answer.get("StatusCode", 0)) != 0:
        log.warning("feishu refused the alert: %s %s", response.status_code, answer)
        raise DeliveryError(f"feishu refused: {answer.get('msg') or answer}")


async def deliver_sms(http: httpx.AsyncClient, alerting: AlertingSettings, text: str) -> None:
    """POST {"to": [...], "text": ...} to the SMS gateway with its bearer token."""
    if not alerting.sms_gateway_url or not alerting.sms_to:
        raise DeliveryError("alerting.sms_gateway_url and sms_to are not set")
    headers = {"Authorization": f"Bearer {alerting.sms_token.get_secret_value()}"} if alerting.sms_token else {}
    try:
        response = await http.post(
            alerting.sms_gateway_url, json={"to": alerting.sms_to, "text": text}, headers=headers
        )
    except httpx.HTTPError as exc:
        raise DeliveryError(f"the SMS gateway did not answer: {type(exc).__name__}") from None
    if response.status_code >= 300:
        log.warning("the SMS gateway refused the alert: %s", response.status_code)
        raise DeliveryError(f"the SMS gateway answered {response.status_code}")


def relay_app(settings: Settings, client: httpx.AsyncClient | None = None) -> FastAPI:
    from contextlib import asynccontextmanager

    from aibot_common.service import create_service_app

    alerting = settings.alerting
    http = client or httpx.AsyncClient(timeout=10)

    @asynccontextmanager
    async def lifespan(_: FastAPI):  # type: ignore[no-untyped-def]
        try:
            yield
        finally:
            if client is None:
                await http.aclose()

    app = create_service_app("alert-relay", lifespan, lambda: True)

    @app.post("/alerts/feishu")
    async def to_feishu(request: Request) -> dict[str, str]:
        if alerting.feishu_webhook_url is None:
            raise HTTPException(404, "alerting.feishu_webhook_url is not set")
        try:
            await deliver_feishu(http, alerting, alert_text(await request.json(), alerting.runbook_base_url))
        except DeliveryError as exc:
            raise HTTPException(502, str(exc)) from None
        return {"status": "sent"}

    @app.post("/alerts/sms")
    async def to_sms(request: Request) -> dict[str, str]:
        if not alerting.sms_gateway_url or not alerting.sms_to:
            raise HTTPException(404, "alerting.sms_gateway_url and sms_to are not set")
        # One SMS segment holds 70 Chinese characters: a short text, the runbook in the e-mail.
        text = alert_text(await request.json(), "", limit=300).split("\nRunbook:")[0]
        try:
            await deliver_sms(http, alerting, text)
        except DeliveryError as exc:
            raise HTTPException(502, str(exc)) from None
        return {"status": "sent"}

    return app


# ---------------------------------------------------------------- the command


def run(args: argparse.Namespace) -> int:
    if args.action == "config":
        text = render_config(load_settings())
        if args.out:
            with open(args.out, "w") as out:
                out.write(text)
        else:
            sys.stdout.write(text)
        return 0
    import uvicorn

    from aibot_common import telemetry
    from aibot_common.service import prepare

    settings = prepare("alert-relay")
    for secret in (settings.alerting.feishu_webhook_url, settings.alerting.feishu_secret, settings.alerting.sms_token):
        if secret is not None:
            telemetry.register_secret(secret.get_secret_value())
    uvicorn.run(relay_app(settings), host=settings.http.host, port=args.port, log_config=None, access_log=False)
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    alerts = sub.add_parser(
        "alerts", help="Alertmanager's config from `alerting:` (config), or the webhook relay (relay)"
    )
    alerts.add_argument("action", choices=["config", "relay"])
    alerts.add_argument("--out", help="config: write to this file instead of stdout")
    alerts.add_argument("--port", type=int, default=RELAY_PORT, help=f"relay: HTTP port (default {RELAY_PORT})")
    alerts.set_defaults(func=run)
