"""Live checks of what a configuration names, shared by `ai-bot onboard` (each answer checked as it is
given) and `ai-bot doctor` (everything the config file names, at any time later).

Each check returns a `Check`: passed or not, what was seen, and for a failure the fix. No check ever
puts a secret in what it returns: a platform's error text is passed on, never a token or key."""

from __future__ import annotations

import asyncio
import smtplib
import ssl
import uuid
from dataclasses import dataclass
from email.message import EmailMessage

import httpx

from aibot_common.settings import AlertingSettings, FeishuConfig, ModelConfig, StorageSettings, TelegramConfig

TIMEOUT_S = 15.0


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str
    fix: str = ""


def _error(exc: Exception) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def telegram_get_me(api_base_url: str, token: str) -> Check:
    """The bot behind a token (`getMe`): its @username in the detail."""
    try:
        answer = httpx.get(f"{api_base_url.rstrip('/')}/bot{token}/getMe", timeout=TIMEOUT_S).json()
    except (httpx.HTTPError, ValueError) as exc:
        return Check("telegram getMe", False, f"{api_base_url} did not answer ({_error(exc)})", "check the network")
    if not answer.get("ok"):
        return Check(
            "telegram getMe",
            False,
            f"Telegram refused the token: {answer.get('description', answer)}",
            "copy the token again from @BotFather (/token)",
        )
    bot = answer["result"]
    return Check("telegram getMe", True, f"@{bot.get('username')} ({bot.get('first_name', '')})")


def telegram_webhook_info(config: TelegramConfig) -> Check:
    token = config.bot_token.get_secret_value() if config.bot_token else ""
    try:
        answer = httpx.get(f"{config.api_base_url.rstrip('/')}/bot{token}/getWebhookInfo", timeout=TIMEOUT_S).json()
    except (httpx.HTTPError, ValueError) as exc:
        return Check("telegram webhook", False, f"no answer ({_error(exc)})", "check the network")
    info = answer.get("result") or {}
    url, pending, error = info.get("url", ""), info.get("pending_update_count", 0), info.get("last_error_message")
    detail = f"url={url or '(none)'} pending={pending}" + (f" last error: {error}" if error else "")
    wanted = config.webhook.url or ""
    if config.mode == "webhook" and wanted and url != wanted:
        return Check("telegram webhook", False, detail, f"`ai-bot webhook set` (points it at {wanted})")
    if config.mode == "polling" and url:
        return Check("telegram webhook", False, detail, "polling needs no webhook: `ai-bot webhook delete`")
    if error:
        return Check("telegram webhook", False, detail, "make the public URL reach ingress-telegram over HTTPS")
    return Check("telegram webhook", True, detail)


def feishu_tenant_token(domain: str, app_id: str, app_secret: str) -> Check:
    try:
        answer = httpx.post(
            f"{domain.rstrip('/')}/open-apis/auth/v3/tenant_access_token/internal",
            json={"app_id": app_id, "app_secret": app_secret},
            timeout=TIMEOUT_S,
        ).json()
    except (httpx.HTTPError, ValueError) as exc:
        return Check("feishu tenant token", False, f"{domain} did not answer ({_error(exc)})", "check the network")
    if answer.get("code") != 0 or not answer.get("tenant_access_token"):
        return Check(
            "feishu tenant token",
            False,
            f"Feishu refused: {answer.get('msg', answer)}",
            "copy App ID and App Secret again (developer console > Credentials & Basic Info)",
        )
    return Check("feishu tenant token", True, f"app {app_id}: token issued")


def feishu_config_token(config: FeishuConfig) -> Check:
    if not config.app_id or not config.app_secret:
        return Check("feishu tenant token", False, "feishu.app_id or app_secret is not set", "`ai-bot onboard`")
    return feishu_tenant_token(config.domain, config.app_id, config.app_secret.get_secret_value())


def model_answers(model: ModelConfig) -> Check:
    """A real one-token request to the model's chat completions endpoint."""
    name = f"model {model.name}"
    headers = {"Authorization": f"Bearer {model.api_key.get_secret_value()}"} if model.api_key else {}
    body = {"model": model.api_model, "messages": [{"role": "user", "content": "ping"}], "max_tokens": 1}
    try:
        response = httpx.post(str(model.endpoint), json=body, headers=headers, timeout=min(model.timeout_s, 60))
    except httpx.HTTPError as exc:
        return Check(name, False, f"{model.endpoint} did not answer ({_error(exc)})", "check the endpoint URL")
    if response.status_code in (401, 403):
        return Check(name, False, f"the endpoint refused the key ({response.status_code})", "check the API key")
    if response.status_code == 404:
        return Check(name, False, "404: not a chat completions URL, or no such model", "end it in /chat/completions")
    if response.status_code >= 300:
        return Check(name, False, f"answered {response.status_code}: {response.text[:200]}", "see the provider's error")
    try:
        choices = response.json()["choices"]
    except (ValueError, KeyError, TypeError):
        return Check(name, False, "the answer is not a chat completion", "use an OpenAI-compatible endpoint")
    return Check(name, True, f"{model.api_model} answered ({len(choices)} choice)")


def storage_probe(settings: StorageSettings) -> Check:
    """Write, read back and delete a probe object in the storage backend."""
    from aibot_common.storage import open_storage

    key = f"probes/onboard-{uuid.uuid4().hex}"
    payload = b"ai-bot storage probe"
    try:
        storage = open_storage(settings)

        async def probe() -> bytes:
            await storage.put(key, payload)
            try:
                return await storage.get(key)
            finally:
                await storage.delete([key])

        read = asyncio.run(probe())
    except Exception as exc:
        return Check("storage", False, f"{settings.backend}: {_error(exc)}", _storage_fix(settings))
    if read != payload:
        return Check("storage", False, "the probe read back differs from what was written", _storage_fix(settings))
    where = settings.path if settings.backend == "local" else f"s3://{settings.bucket}/{settings.prefix}"
    return Check("storage", True, f"probe written and read at {where}")


def _storage_fix(settings: StorageSettings) -> str:
    if settings.backend == "local":
        return f"make {settings.path} writable by the ai-bot user"
    return "check endpoint, bucket, region and the access keys (the bucket must exist)"


# ---------------------------------------------------------------- notification channels

NOTICE = "ai-bot: test notice from `ai-bot onboard` — alerts will reach this channel."


def send_email(alerting: AlertingSettings, text: str = NOTICE) -> Check:
    host, _, port = (alerting.smtp_smarthost or "").rpartition(":")
    message = EmailMessage()
    message["Subject"] = "ai-bot test notice"
    message["From"] = str(alerting.email_from)
    message["To"] = ", ".join(alerting.email_to)
    message.set_content(text)
    try:
        with smtplib.SMTP(host, int(port), timeout=TIMEOUT_S) as smtp:
            if alerting.smtp_require_tls:
                smtp.starttls(context=ssl.create_default_context())
            if alerting.smtp_username and alerting.smtp_password:
                smtp.login(alerting.smtp_username, alerting.smtp_password.get_secret_value())
            smtp.send_message(message)
    except (OSError, ValueError, smtplib.SMTPException) as exc:
        return Check("e-mail", False, _error(exc), "check smtp_smarthost (host:port), TLS and the login")
    return Check("e-mail", True, f"test notice sent to {', '.join(alerting.email_to)}")


def send_telegram(alerting: AlertingSettings, text: str = NOTICE) -> Check:
    token = alerting.telegram_bot_token.get_secret_value() if alerting.telegram_bot_token else ""
    try:
        answer = httpx.post(
            f"{alerting.telegram_api_url.rstrip('/')}/bot{token}/sendMessage",
            json={"chat_id": alerting.telegram_chat_id, "text": text},
            timeout=TIMEOUT_S,
        ).json()
    except (httpx.HTTPError, ValueError) as exc:
        return Check("telegram admin chat", False, _error(exc), "check the network")
    if not answer.get("ok"):
        return Check(
            "telegram admin chat",
            False,
            str(answer.get("description", answer)),
            "send the bot a message from that chat first, and check the chat id",
        )
    return Check("telegram admin chat", True, f"test notice sent to chat {alerting.telegram_chat_id}")


async def _relay(channel: str, alerting: AlertingSettings, text: str) -> None:
    from aibot_cli.alerts import deliver_feishu, deliver_sms

    async with httpx.AsyncClient(timeout=TIMEOUT_S) as http:
        await (deliver_feishu if channel == "feishu" else deliver_sms)(http, alerting, text)


def send_feishu_bot(alerting: AlertingSettings, text: str = NOTICE) -> Check:
    from aibot_cli.alerts import DeliveryError

    try:
        asyncio.run(_relay("feishu", alerting, text))
    except DeliveryError as exc:
        return Check("feishu group bot", False, str(exc), "copy the webhook URL and signing secret of the custom bot")
    return Check("feishu group bot", True, "test notice sent")


def send_sms(alerting: AlertingSettings, text: str = NOTICE) -> Check:
    from aibot_cli.alerts import DeliveryError

    try:
        asyncio.run(_relay("sms", alerting, text))
    except DeliveryError as exc:
        return Check("sms", False, str(exc), "check the gateway URL and its token")
    return Check("sms", True, f"test notice sent to {', '.join(alerting.sms_to)}")
