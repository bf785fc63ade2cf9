"""`ai-bot webhook set|info|delete`: the Telegram webhook of the configured bot.

`set` points Telegram at `telegram.webhook.url` with the secret token, the allowed updates and the
connection limit of the settings (what ingress-telegram does at start, on demand); `info` shows what
Telegram has (URL, pending updates, the last delivery error); `delete` goes back to no webhook (for
long polling). The bot token never appears in what is printed.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import httpx

from aibot_common.settings import ConfigError, TelegramConfig, load_settings


def call(config: TelegramConfig, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
    if config.bot_token is None:
        raise ConfigError("telegram.bot_token is not set (`ai-bot onboard`, or AIBOT_TELEGRAM__BOT_TOKEN)")
    url = f"{config.api_base_url.rstrip('/')}/bot{config.bot_token.get_secret_value()}/{method}"
    try:
        answer = httpx.post(url, json=params or {}, timeout=30).json()
    except (httpx.HTTPError, ValueError) as exc:
        raise ConfigError(f"{config.api_base_url} did not answer {method}: {type(exc).__name__}") from None
    if not answer.get("ok"):
        raise ConfigError(f"Telegram refused {method}: {answer.get('description', answer)}")
    return answer


def run(args: argparse.Namespace) -> int:
    from aibot_cli.doctor import use_config_files

    use_config_files(args.config, None)
    config = load_settings().telegram
    if args.action == "set":
        url = args.url or config.webhook.url
        if not url:
            raise ConfigError("no webhook URL: set telegram.webhook.url (`ai-bot onboard`) or pass --url")
        params: dict[str, Any] = {
            "url": url,
            "allowed_updates": list(config.allowed_updates),
            "max_connections": config.max_connections,
            "drop_pending_updates": args.drop_pending_updates,
        }
        if config.webhook.secret_token is not None:
            params["secret_token"] = config.webhook.secret_token.get_secret_value()
        else:
            print("warning: no telegram.webhook.secret_token: anyone who finds the URL can post updates")
        print(call(config, "setWebhook", params).get("description", "webhook set"), f"→ {url}")
        return 0
    if args.action == "delete":
        answer = call(config, "deleteWebhook", {"drop_pending_updates": args.drop_pending_updates})
        print(answer.get("description", "webhook deleted"))
        return 0
    info = call(config, "getWebhookInfo")["result"]
    print(f"url:              {info.get('url') or '(none: long polling)'}")
    print(f"pending updates:  {info.get('pending_update_count', 0)}")
    print(f"max connections:  {info.get('max_connections', '-')}")
    print(f"allowed updates:  {', '.join(info.get('allowed_updates') or []) or '(all)'}")
    if info.get("last_error_date"):
        when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(info["last_error_date"]))
        print(f"last error:       {when}: {info.get('last_error_message', '')}")
    wanted = config.webhook.url if config.mode == "webhook" else ""
    if (info.get("url") or "") != (wanted or ""):
        print(f"differs from the config ({wanted or 'polling: no webhook'}): `ai-bot webhook set` or `delete`")
        return 1
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = sub.add_parser("webhook", help="the Telegram webhook: set (from the config), info, delete")
    parser.add_argument("action", choices=["set", "info", "delete"])
    parser.add_argument("--url", help="set: this URL instead of telegram.webhook.url")
    parser.add_argument("--drop-pending-updates", action="store_true", help="set/delete: drop waiting updates")
    parser.add_argument("--config", help="the config file (default: $AIBOT_CONFIG, else ./config.yaml)")
    parser.set_defaults(func=run)
