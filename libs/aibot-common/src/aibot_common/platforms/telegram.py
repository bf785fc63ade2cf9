"""The Telegram Bot API client, configured once for every service that calls it.

python-telegram-bot's `Bot` is the client: it knows the methods, the types and the error
classes. Its base URL comes from config, so the same code talks to api.telegram.org, a self-hosted
Bot API server or the test fake.
"""

from __future__ import annotations

from telegram import Bot
from telegram.request import HTTPXRequest

from aibot_common.settings import ConfigError, TelegramConfig


def bot_token(config: TelegramConfig) -> str:
    if config.bot_token is None or not config.bot_token.get_secret_value():
        raise ConfigError(
            "telegram.bot_token is not set: put it in AIBOT_TELEGRAM__BOT_TOKEN (from @BotFather), "
            "or set telegram.enabled: false"
        )
    return config.bot_token.get_secret_value()


# Telegram allows ~30 messages a second per bot; 16 connections carry that with room to spare, and
# httpcore checks every pooled connection whenever a request is assigned one, so a bigger pool costs
# CPU for nothing.
POOL_SIZE = 16


def make_bot(config: TelegramConfig, *, pool_size: int = POOL_SIZE, read_timeout_s: float = 15.0) -> Bot:
    base = config.api_base_url.rstrip("/")
    # Long polls (getUpdates) hold a connection for `polling_timeout_s`; give them their own room.
    request = HTTPXRequest(
        connection_pool_size=pool_size,
        read_timeout=read_timeout_s,
        write_timeout=15.0,
        connect_timeout=5.0,
        pool_timeout=10.0,
    )
    updates_request = HTTPXRequest(connection_pool_size=2, read_timeout=config.polling_timeout_s + 10.0)
    return Bot(
        bot_token(config),
        base_url=f"{base}/bot",
        base_file_url=f"{base}/file/bot",
        request=request,
        get_updates_request=updates_request,
    )


def bot_id(config: TelegramConfig) -> str:
    """The numeric bot id that prefixes the token: update ids are unique per bot."""
    return bot_token(config).split(":", 1)[0]
