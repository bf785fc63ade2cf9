"""`ai-bot onboard`: from nothing to a configured bot in one guided command.

It asks for each platform, the model, access, the notification channels and the storage backend,
checks every answer against the real service as it is given (Telegram `getMe`, a Feishu tenant token,
a one-token model request, a test notice per channel, a probe object), and writes `config.yaml`
(secrets only as `${VAR}` references) and `.env` (the secrets, mode 0600) for this host.

Every prompt is also a flag (`--telegram-token`...) and a key of an answers file (`--answers FILE`,
YAML, the same names with underscores); with `--non-interactive` nothing is asked: what no flag or
file gives keeps its current value or default, and a failed check stops the run with exit status 1.
Re-running shows the current values as defaults and changes only what the operator changes; a secret
is never echoed back or printed.
"""

from __future__ import annotations

import argparse
import os
import re
import secrets
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from aibot_cli import checks
from aibot_common.settings import AlertingSettings, ModelConfig, StorageSettings

_REF = re.compile(r"^\$\{([A-Za-z_][A-Za-z0-9_]*)\}$")
ENV_VARS = {
    "telegram_token": "TELEGRAM_BOT_TOKEN",
    "telegram_webhook_secret": "TELEGRAM_WEBHOOK_SECRET",
    "feishu_app_secret": "FEISHU_APP_SECRET",
    "feishu_verification_token": "FEISHU_VERIFICATION_TOKEN",
    "feishu_encrypt_key": "FEISHU_ENCRYPT_KEY",
    "model_api_key": "MODEL_API_KEY",
    "smtp_password": "SMTP_PASSWORD",
    "sms_token": "SMS_TOKEN",
    "feishu_bot_webhook": "FEISHU_BOT_WEBHOOK_URL",
    "feishu_bot_secret": "FEISHU_BOT_SECRET",
    "s3_access_key_id": "STORAGE_ACCESS_KEY_ID",
    "s3_secret_access_key": "STORAGE_SECRET_ACCESS_KEY",
}

# (key, help, kind): kind is "text", "secret", "bool"; each is a flag --key-with-dashes.
QUESTIONS: list[tuple[str, str, str]] = [
    ("platforms", "telegram, feishu or both", "text"),
    ("telegram_api_url", "Telegram Bot API base URL (default https://api.telegram.org)", "text"),
    ("telegram_token", "the bot token from @BotFather", "secret"),
    ("telegram_mode", "webhook or polling", "text"),
    ("public_url", "this host's public HTTPS base URL (webhook, Feishu events)", "text"),
    ("feishu_domain", "Feishu Open API base URL (default https://open.feishu.cn)", "text"),
    ("feishu_app_id", "Feishu App ID", "text"),
    ("feishu_app_secret", "Feishu App Secret", "secret"),
    ("feishu_verification_token", "Feishu Verification Token", "secret"),
    ("feishu_encrypt_key", "Feishu Encrypt Key", "secret"),
    ("model_endpoint", "OpenAI-compatible chat completions URL", "text"),
    ("model_api_key", "the model's API key", "secret"),
    ("model_name", "the model id", "text"),
    ("model_max_tokens", "most tokens per answer", "text"),
    ("voice", "transcribe voice notes (Whisper)", "bool"),
    ("asr_language", "voice: language (en, zh, auto)", "text"),
    ("asr_device", "voice: auto, cuda or cpu", "text"),
    ("access_policy", "open, allowlist or pairing", "text"),
    ("admin", "the first admin: telegram:<user id> or feishu:<open_id>", "text"),
    ("notify_email", "alerts by e-mail", "bool"),
    ("smtp_smarthost", "SMTP server host:port", "text"),
    ("smtp_require_tls", "SMTP with STARTTLS", "bool"),
    ("smtp_username", "SMTP login (empty: none)", "text"),
    ("smtp_password", "SMTP password", "secret"),
    ("email_from", "alerts' From address", "text"),
    ("email_to", "alerts' recipients, comma-separated", "text"),
    ("notify_sms", "alerts by SMS (an HTTP gateway)", "bool"),
    ("sms_gateway_url", "the SMS gateway URL", "text"),
    ("sms_token", "the SMS gateway's bearer token", "secret"),
    ("sms_to", "phone numbers, comma-separated", "text"),
    ("notify_feishu_bot", "alerts to a Feishu group custom bot", "bool"),
    ("feishu_bot_webhook", "the custom bot's webhook URL", "secret"),
    ("feishu_bot_secret", "the custom bot's signing secret", "secret"),
    ("notify_telegram", "alerts to a Telegram admin chat", "bool"),
    ("telegram_admin_chat", "the admin chat's id", "text"),
    ("storage_backend", "local or s3", "text"),
    ("storage_path", "local: the folder", "text"),
    ("s3_endpoint", "s3: endpoint URL (empty for AWS)", "text"),
    ("s3_bucket", "s3: bucket", "text"),
    ("s3_region", "s3: region", "text"),
    ("s3_prefix", "s3: key prefix", "text"),
    ("s3_access_key_id", "s3: access key id", "secret"),
    ("s3_secret_access_key", "s3: secret access key", "secret"),
]


class OnboardError(RuntimeError):
    """The wizard cannot go on (a failed check with --non-interactive, a missing answer)."""


def _flag(key: str) -> str:
    return "--" + key.replace("_", "-")


@dataclass
class Asker:
    """One answer per key: a flag or the answers file first, else a prompt (or, non-interactive, the
    current value)."""

    answers: dict[str, Any]
    interactive: bool
    out: Callable[[str], None] = print

    def _given(self, key: str) -> Any:
        return self.answers.get(key)

    def text(self, key: str, message: str, default: str | None = None, required: bool = True) -> str:
        given = self._given(key)
        if given is not None:
            return str(given)
        if not self.interactive:
            if default is None and required:
                raise OnboardError(f"{_flag(key)} is needed (or an `{key}:` in the answers file)")
            return default or ""
        import questionary

        while True:
            value = questionary.text(message, default=default or "").ask()
            if value is None:
                raise KeyboardInterrupt
            if value.strip() or not required:
                return value.strip()

    def secret(self, key: str, message: str, current: str | None, required: bool = True) -> str:
        given = self._given(key)
        if given is not None:
            return str(given)
        if not self.interactive:
            if not current and required:
                raise OnboardError(f"{_flag(key)} is needed (or an `{key}:` in the answers file)")
            return current or ""
        import questionary

        hint = " (Enter keeps the current one)" if current else ""
        while True:
            value = questionary.password(message + hint).ask()
            if value is None:
                raise KeyboardInterrupt
            if value.strip():
                return value.strip()
            if current or not required:
                return current or ""

    def select(self, key: str, message: str, choices: list[str], default: str) -> str:
        given = self._given(key)
        if given is not None:
            if str(given) not in choices:
                raise OnboardError(f"{_flag(key)}: one of {', '.join(choices)}")
            return str(given)
        if not self.interactive:
            return default
        import questionary

        value = questionary.select(message, choices=choices, default=default).ask()
        if value is None:
            raise KeyboardInterrupt
        return str(value)

    def confirm(self, key: str, message: str, default: bool) -> bool:
        given = self._given(key)
        if given is not None:
            return given if isinstance(given, bool) else str(given).lower() in ("1", "true", "yes", "y")
        if not self.interactive:
            return default
        import questionary

        value = questionary.confirm(message, default=default).ask()
        if value is None:
            raise KeyboardInterrupt
        return bool(value)

    def checked(self, check: Callable[[], checks.Check], retry: Callable[[], None]) -> None:
        """Run a check; on failure say why and what to do, then ask again (or stop, non-interactive)."""
        while True:
            result = check()
            if result.ok:
                self.out(f"  ✓ {result.name}: {result.detail}")
                return
            self.out(f"  ✗ {result.name}: {result.detail}" + (f" — {result.fix}" if result.fix else ""))
            if not self.interactive:
                raise OnboardError(f"{result.name} failed")
            retry()


# ---------------------------------------------------------------- the files


def read_env(path: Path) -> dict[str, str]:
    env: dict[str, str] = {}
    if not path.is_file():
        return env
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        name, _, value = line.partition("=")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] == '"':
            value = re.sub(r'\\([\\"$`])', r"\1", value[1:-1])  # what _quote escaped
        elif len(value) >= 2 and value[0] == value[-1] == "'":
            value = value[1:-1]
        env[name.strip()] = value
    return env


def _quote(value: str) -> str:
    if "'" not in value:
        return f"'{value}'"
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("$", "\\$").replace("`", "\\`") + '"'


def write_env(path: Path, env: dict[str, str]) -> None:
    text = "# Written by `ai-bot onboard`: the secrets config.yaml refers to. Keep it private (mode 0600).\n"
    text += "".join(f"{name}={_quote(value)}\n" for name, value in sorted(env.items()))
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)
    os.chmod(path, 0o600)


@dataclass
class Draft:
    """The config document being edited (kept as written: `${VAR}` stay references) and the .env."""

    doc: dict[str, Any]
    env: dict[str, str] = field(default_factory=dict)

    def get(self, *path: str | int) -> Any:
        node: Any = self.doc
        for part in path:
            if isinstance(part, int):
                if not isinstance(node, list) or part >= len(node):
                    return None
                node = node[part]
            elif isinstance(node, dict):
                node = node.get(part)
            else:
                return None
        return node

    def section(self, *path: str) -> dict[str, Any]:
        node = self.doc
        for part in path:
            child = node.get(part)
            if not isinstance(child, dict):
                child = node[part] = {}
            node = child
        return node

    def secret(self, node: dict[str, Any] | None, name: str) -> str | None:
        """The current value of a secret field: the .env value of its `${VAR}`, or a literal."""
        value = (node or {}).get(name)
        if not isinstance(value, str):
            return None
        match = _REF.match(value)
        return self.env.get(match.group(1)) or os.environ.get(match.group(1)) if match else value

    def put_secret(self, node: dict[str, Any], name: str, key: str, value: str) -> None:
        if not value:
            node.pop(name, None)
            return
        var = ENV_VARS[key]
        node[name] = f"${{{var}}}"
        self.env[var] = value


def _model_index(models: list[dict[str, Any]], kind: str) -> int | None:
    return next((i for i, m in enumerate(models) if isinstance(m, dict) and m.get("type") == kind), None)


# ---------------------------------------------------------------- the steps


def step_telegram(ask: Asker, draft: Draft, enabled: bool) -> None:
    node = draft.section("telegram")
    node["enabled"] = enabled
    if not enabled:
        return
    ask.out("\nTelegram")
    api = ask.text("telegram_api_url", "Bot API URL", node.get("api_base_url") or "https://api.telegram.org")
    if api != "https://api.telegram.org" or "api_base_url" in node:
        node["api_base_url"] = api
    token = {"value": ask.secret("telegram_token", "Bot token (from @BotFather)", draft.secret(node, "bot_token"))}

    def again() -> None:
        ask.answers.pop("telegram_token", None)
        token["value"] = ask.secret("telegram_token", "Bot token (from @BotFather)", None)

    ask.checked(lambda: checks.telegram_get_me(api, token["value"]), again)
    draft.put_secret(node, "bot_token", "telegram_token", token["value"])
    mode = ask.select(
        "telegram_mode",
        "How does Telegram deliver updates?",
        ["webhook", "polling"],
        node.get("mode") or "polling",
    )
    node["mode"] = mode
    if mode == "webhook":
        webhook = draft.section("telegram", "webhook")
        path = webhook.get("path") or "/telegram/webhook"
        current = str(webhook.get("url") or "").removesuffix(path) or draft.get("_public_url")
        public = ask.text("public_url", "Public HTTPS base URL of this host", current or None).rstrip("/")
        draft.doc["_public_url"] = public
        webhook["url"] = public + path
        secret = draft.secret(webhook, "secret_token") or secrets.token_urlsafe(32)
        draft.put_secret(webhook, "secret_token", "telegram_webhook_secret", secret)
        ask.out(f"  webhook: {webhook['url']} (a secret token is generated and kept in .env)")
        ask.out("  ingress-telegram registers it with setWebhook at start; `ai-bot webhook info` shows it")


def step_feishu(ask: Asker, draft: Draft, enabled: bool) -> None:
    node = draft.section("feishu")
    node["enabled"] = enabled
    if not enabled:
        return
    ask.out("\nFeishu")
    domain = ask.text("feishu_domain", "Open API URL", node.get("domain") or "https://open.feishu.cn")
    if domain != "https://open.feishu.cn" or "domain" in node:
        node["domain"] = domain
    values = {
        "id": ask.text("feishu_app_id", "App ID", node.get("app_id")),
        "secret": ask.secret("feishu_app_secret", "App Secret", draft.secret(node, "app_secret")),
    }

    def again() -> None:
        for key in ("feishu_app_id", "feishu_app_secret"):
            ask.answers.pop(key, None)
        values["id"] = ask.text("feishu_app_id", "App ID", values["id"])
        values["secret"] = ask.secret("feishu_app_secret", "App Secret", None)

    ask.checked(lambda: checks.feishu_tenant_token(domain, values["id"], values["secret"]), again)
    node["app_id"] = values["id"]
    draft.put_secret(node, "app_secret", "feishu_app_secret", values["secret"])
    ask.out("  Developer console > Events & Callbacks > Encryption Strategy: copy both values")
    token = ask.secret("feishu_verification_token", "Verification Token", draft.secret(node, "verification_token"))
    key = ask.secret("feishu_encrypt_key", "Encrypt Key", draft.secret(node, "encrypt_key"))
    draft.put_secret(node, "verification_token", "feishu_verification_token", token)
    draft.put_secret(node, "encrypt_key", "feishu_encrypt_key", key)
    public = ask.text("public_url", "Public HTTPS base URL of this host", draft.get("_public_url")).rstrip("/")
    draft.doc["_public_url"] = public
    event_url = public + (node.get("event_path") or "/feishu/events")
    ask.out("  In the developer console, Events & Callbacks > Event Configuration > Request URL, paste:")
    ask.out(f"\n      {event_url}\n")
    ask.out("  then add the event im.message.receive_v1, and publish a version of the app.")


def step_model(ask: Asker, draft: Draft) -> None:
    ask.out("\nModel")
    models = draft.doc.setdefault("models", [])
    index = _model_index(models, "llm")
    node: dict[str, Any] = models[index] if index is not None else {"type": "llm"}
    endpoint = ask.text(
        "model_endpoint",
        "Chat completions URL",
        node.get("endpoint") or "https://api.openai.com/v1/chat/completions",
    )
    key = ask.secret("model_api_key", "API key (empty: none)", draft.secret(node, "api_key"), required=False)
    name = ask.text("model_name", "Model id", node.get("model") or node.get("name") or "gpt-4o-mini")
    max_tokens = int(ask.text("model_max_tokens", "Most tokens per answer", str(node.get("max_tokens") or 1024)))
    state = {"endpoint": endpoint, "key": key}

    def again() -> None:
        for k in ("model_endpoint", "model_api_key"):
            ask.answers.pop(k, None)
        state["endpoint"] = ask.text("model_endpoint", "Chat completions URL", state["endpoint"])
        state["key"] = ask.secret("model_api_key", "API key (empty: none)", None, required=False)

    ask.checked(
        lambda: checks.model_answers(
            ModelConfig(name=name, type="llm", endpoint=state["endpoint"], api_key=state["key"] or None, model=name)
        ),
        again,
    )
    node.update(
        name=node.get("name") or name, type="llm", endpoint=state["endpoint"], model=name, max_tokens=max_tokens
    )
    draft.put_secret(node, "api_key", "model_api_key", state["key"])
    if index is None:
        models.insert(0, node)
    asr = _model_index(models, "asr")
    if ask.confirm("voice", "Transcribe voice notes (Whisper, on this host)?", asr is not None):
        asr_node: dict[str, Any] = models[asr] if asr is not None else {"name": "whisper", "type": "asr"}
        asr_node["language"] = ask.text(
            "asr_language", "Voice language (en, zh, auto)", asr_node.get("language") or "auto"
        )
        asr_node["device"] = ask.select(
            "asr_device", "Run Whisper on", ["auto", "cuda", "cpu"], asr_node.get("device") or "auto"
        )
        if asr is None:
            models.append(asr_node)
    elif asr is not None:
        models.pop(asr)


def step_access(ask: Asker, draft: Draft, platforms: list[str]) -> None:
    ask.out("\nAccess")
    access = draft.section("access")
    current = str(draft.get("access", "policy", platforms[0], "private") or "open")
    policy = ask.select("access_policy", "Who may talk to the bot?", ["open", "allowlist", "pairing"], current)
    for platform in platforms:
        access.setdefault("policy", {})[platform] = {"private": policy, "group": policy}
    bindings = access.setdefault("bindings", [])
    admins = [b.get("subject") for b in bindings if isinstance(b, dict) and b.get("role") == "admin"]
    admin = ask.text(
        "admin", "First admin (telegram:<user id> or feishu:<open_id>; empty: none)", admins[0] if admins else "", False
    )
    if admin and not re.fullmatch(r"(telegram|feishu):[^:\s]+", admin):
        raise OnboardError(f"{_flag('admin')}: telegram:<user id> or feishu:<open_id>, not {admin!r}")
    if admin and admin not in admins:
        bindings.append({"subject": admin, "role": "admin"})


def step_alerting(ask: Asker, draft: Draft) -> None:
    ask.out("\nNotification channels (alerts and operator notices)")
    node = draft.section("alerting")

    def settings() -> AlertingSettings:
        from aibot_common.settings import expand_env

        return AlertingSettings(**expand_env({k: v for k, v in node.items()}, {**os.environ, **draft.env}))

    if ask.confirm("notify_email", "Alerts by e-mail (SMTP)?", bool(node.get("email_to"))):
        node["smtp_smarthost"] = ask.text("smtp_smarthost", "SMTP server (host:port)", node.get("smtp_smarthost"))
        node["smtp_require_tls"] = ask.confirm("smtp_require_tls", "STARTTLS?", node.get("smtp_require_tls", True))
        user = ask.text("smtp_username", "SMTP login (empty: none)", node.get("smtp_username") or "", False)
        if user:
            node["smtp_username"] = user
            draft.put_secret(
                node,
                "smtp_password",
                "smtp_password",
                ask.secret("smtp_password", "SMTP password", draft.secret(node, "smtp_password")),
            )
        else:
            node.pop("smtp_username", None)
            node.pop("smtp_password", None)
        node["email_from"] = ask.text("email_from", "From address", node.get("email_from"))
        to = ask.text("email_to", "Recipients (comma-separated)", ", ".join(node.get("email_to") or []) or None)
        node["email_to"] = [a.strip() for a in to.split(",") if a.strip()]
        ask.checked(lambda: checks.send_email(settings()), lambda: _stop("e-mail"))
    else:
        for k in ("email_to", "email_from", "smtp_smarthost", "smtp_username", "smtp_password"):
            node.pop(k, None)
    if ask.confirm("notify_sms", "Alerts by SMS (an HTTP gateway)?", bool(node.get("sms_gateway_url"))):
        node["sms_gateway_url"] = ask.text("sms_gateway_url", "Gateway URL", node.get("sms_gateway_url"))
        draft.put_secret(
            node,
            "sms_token",
            "sms_token",
            ask.secret("sms_token", "Gateway token", draft.secret(node, "sms_token"), False),
        )
        to = ask.text("sms_to", "Phone numbers (comma-separated)", ", ".join(node.get("sms_to") or []) or None)
        node["sms_to"] = [n.strip() for n in to.split(",") if n.strip()]
        ask.checked(lambda: checks.send_sms(settings()), lambda: _stop("sms"))
    else:
        for k in ("sms_gateway_url", "sms_token", "sms_to"):
            node.pop(k, None)
    if ask.confirm("notify_feishu_bot", "Alerts to a Feishu group custom bot?", bool(node.get("feishu_webhook_url"))):
        url = ask.secret("feishu_bot_webhook", "Custom bot webhook URL", draft.secret(node, "feishu_webhook_url"))
        draft.put_secret(node, "feishu_webhook_url", "feishu_bot_webhook", url)
        sign = ask.secret(
            "feishu_bot_secret", "Signing secret (empty: none)", draft.secret(node, "feishu_secret"), False
        )
        draft.put_secret(node, "feishu_secret", "feishu_bot_secret", sign)
        ask.checked(lambda: checks.send_feishu_bot(settings()), lambda: _stop("feishu group bot"))
    else:
        node.pop("feishu_webhook_url", None)
        node.pop("feishu_secret", None)
    telegram = draft.get("telegram") or {}
    if telegram.get("enabled") and ask.confirm(
        "notify_telegram",
        "Alerts to a Telegram admin chat (through this bot)?",
        node.get("telegram_chat_id") is not None,
    ):
        current = node.get("telegram_chat_id")
        node["telegram_chat_id"] = int(
            ask.text("telegram_admin_chat", "Admin chat id", str(current) if current else None)
        )
        node["telegram_bot_token"] = telegram.get("bot_token")
        node["telegram_api_url"] = telegram.get("api_base_url") or "https://api.telegram.org"
        ask.checked(lambda: checks.send_telegram(settings()), lambda: _stop("telegram admin chat"))
    else:
        for k in ("telegram_chat_id", "telegram_bot_token", "telegram_api_url"):
            node.pop(k, None)


def _stop(channel: str) -> None:
    raise OnboardError(f"the {channel} test notice was not delivered; fix it and run `ai-bot onboard` again")


def step_storage(ask: Asker, draft: Draft) -> None:
    ask.out("\nStorage (archives and old log days)")
    node = draft.section("storage")
    backend = ask.select("storage_backend", "Where?", ["local", "s3"], node.get("backend") or "local")
    node["backend"] = backend
    if backend == "local":
        node["path"] = ask.text("storage_path", "Folder", node.get("path") or "var/storage")
        for k in ("bucket", "endpoint", "region", "prefix", "access_key_id", "secret_access_key"):
            node.pop(k, None)
    else:
        endpoint = ask.text("s3_endpoint", "Endpoint URL (empty for AWS)", node.get("endpoint") or "", False)
        if endpoint:
            node["endpoint"] = endpoint
        else:
            node.pop("endpoint", None)
        node["bucket"] = ask.text("s3_bucket", "Bucket", node.get("bucket"))
        node["region"] = ask.text("s3_region", "Region", node.get("region") or "us-east-1")
        prefix = ask.text("s3_prefix", "Key prefix (empty: none)", node.get("prefix") or "", False)
        node["prefix"] = prefix
        key_id = ask.secret("s3_access_key_id", "Access key id", draft.secret(node, "access_key_id"))
        key = ask.secret("s3_secret_access_key", "Secret access key", draft.secret(node, "secret_access_key"))
        draft.put_secret(node, "access_key_id", "s3_access_key_id", key_id)
        draft.put_secret(node, "secret_access_key", "s3_secret_access_key", key)
    from aibot_common.settings import expand_env

    probe = StorageSettings(**expand_env(dict(node), {**os.environ, **draft.env}))
    ask.checked(lambda: checks.storage_probe(probe), lambda: _stop("storage"))


def run_wizard(ask: Asker, config_path: Path, env_path: Path) -> None:
    existing = yaml.safe_load(config_path.read_text()) if config_path.is_file() else {}
    draft = Draft(existing or {}, read_env(env_path))
    if not isinstance(draft.doc, dict):
        raise OnboardError(f"{config_path} does not hold a mapping")
    ask.out(f"ai-bot onboard: writes {config_path} and {env_path} (Ctrl-C stops, nothing written)")
    on = [p for p in ("telegram", "feishu") if (draft.get(p) or {}).get("enabled")]
    current = "both" if len(on) == 2 else (on[0] if on else "telegram")
    choice = ask.select("platforms", "Which platforms?", ["telegram", "feishu", "both"], current)
    platforms = ["telegram", "feishu"] if choice == "both" else [choice]
    webhook = draft.get("telegram", "webhook", "url")
    if isinstance(webhook, str):
        draft.doc["_public_url"] = webhook.removesuffix(draft.get("telegram", "webhook", "path") or "/telegram/webhook")
    step_telegram(ask, draft, "telegram" in platforms)
    step_feishu(ask, draft, "feishu" in platforms)
    step_model(ask, draft)
    step_access(ask, draft, platforms)
    step_alerting(ask, draft)
    step_storage(ask, draft)
    draft.doc.pop("_public_url", None)
    config_path.parent.mkdir(parents=True, exist_ok=True)
    header = (
        "# Written by `ai-bot onboard` (re-run it to change a value); secrets are ${VAR}s from the .env beside it.\n"
    )
    config_path.write_text(header + yaml.safe_dump(draft.doc, sort_keys=False, allow_unicode=True))
    write_env(env_path, draft.env)
    ask.out(f"\nwrote {config_path} and {env_path} (mode 0600)")
    ask.out("\nNext, on this host:")
    ask.out(f"    set -a; . {env_path}; set +a; AIBOT_CONFIG={config_path} ai-bot up")
    ask.out("  or as a systemd service (from a checkout: the installer says what it installs first):")
    ask.out("    sudo deploy/systemd/install.sh --no-start")
    ask.out(f"    sudo install -m 0640 -g ai-bot {env_path} /etc/ai-bot/ai-bot.env")
    ask.out(f"    sudo install -m 0640 -g ai-bot {config_path} /etc/ai-bot/config.yaml")
    ask.out("    sudo systemctl start ai-bot-service")
    ask.out("  then `ai-bot doctor` checks every dependency the config names.")


def answers_from(args: argparse.Namespace) -> dict[str, Any]:
    answers: dict[str, Any] = {}
    if args.answers:
        loaded = yaml.safe_load(Path(args.answers).read_text()) or {}
        if not isinstance(loaded, dict):
            raise OnboardError(f"{args.answers} must hold a mapping of answers")
        answers.update({str(k).replace("-", "_"): v for k, v in loaded.items()})
    for key, _, _ in QUESTIONS:
        value = getattr(args, key, None)
        if value is not None:
            answers[key] = value
    unknown = set(answers) - {k for k, _, _ in QUESTIONS}
    if unknown:
        raise OnboardError(f"unknown answers: {', '.join(sorted(unknown))}")
    return answers


def run(args: argparse.Namespace) -> int:
    directory = Path(args.dir).resolve()
    interactive = not args.non_interactive and sys.stdin.isatty()
    try:
        ask = Asker(answers_from(args), interactive)
        run_wizard(ask, directory / "config.yaml", directory / ".env")
    except OnboardError as exc:
        print(f"ai-bot onboard: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\nai-bot onboard: stopped; nothing written", file=sys.stderr)
        return 130
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = sub.add_parser("onboard", help="guided set-up: platforms, model, access, alerts, storage → config.yaml")
    parser.add_argument("--dir", default=".", help="where config.yaml and .env go (default: here)")
    parser.add_argument("--answers", help="a YAML file of answers (the flags' names, with underscores)")
    parser.add_argument("--non-interactive", action="store_true", help="ask nothing: flags, answers file, defaults")
    for key, help_text, kind in QUESTIONS:
        if kind == "bool":
            parser.add_argument(
                _flag(key), dest=key, action=argparse.BooleanOptionalAction, default=None, help=help_text
            )
        else:
            parser.add_argument(_flag(key), dest=key, default=None, help=help_text)
    parser.set_defaults(func=run)
