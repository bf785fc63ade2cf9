"""`ai-bot doctor`: check every dependency the configuration names, and say how to fix each failure.

The broker (reachable, the pipeline's topics present), each llm model (a one-token request), Telegram
(`getMe`, `getWebhookInfo`: pending updates and the last delivery error), Feishu (a tenant token), the
storage backend (a probe object written, read and deleted) and the notification channels'
configuration. Exit status 1 when any check fails.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
from pathlib import Path

from rich.console import Console
from rich.table import Table

from aibot_cli import checks
from aibot_cli.checks import Check
from aibot_cli.onboard import read_env
from aibot_common.settings import Settings, load_settings


def use_config_files(config: str | None, env_file: str | None) -> None:
    """Point the settings at a config file and put its .env into this process's environment: the
    given ones, else ./config.yaml and ./.env (what `ai-bot onboard` writes) when AIBOT_CONFIG is unset."""
    if config is None and "AIBOT_CONFIG" not in os.environ and Path("config.yaml").is_file():
        config = "config.yaml"
    if config is not None:
        os.environ["AIBOT_CONFIG"] = str(Path(config).resolve())
        env_file = env_file or str(Path(config).resolve().parent / ".env")
    if env_file is not None:
        for name, value in read_env(Path(env_file)).items():
            os.environ.setdefault(name, value)


def broker_check(settings: Settings) -> Check:
    from aiokafka.admin import AIOKafkaAdminClient
    from aiokafka.errors import KafkaError

    from aibot_common.kafka import connection_kwargs
    from aibot_common.service import pipeline_topics

    servers = settings.kafka.bootstrap_servers

    async def topics() -> set[str]:
        admin = AIOKafkaAdminClient(
            client_id="aibot-doctor", request_timeout_ms=8000, **connection_kwargs(settings.kafka)
        )
        try:
            await asyncio.wait_for(admin.start(), 10)
            return set(await asyncio.wait_for(admin.list_topics(), 10))
        finally:
            await admin.close()

    try:
        existing = asyncio.run(topics())
    except (KafkaError, OSError, TimeoutError) as exc:
        return Check(
            "kafka",
            False,
            f"{servers} does not answer ({type(exc).__name__})",
            "start the broker (or `ai-bot up`), or fix kafka.bootstrap_servers",
        )
    missing = sorted(t.name for t in pipeline_topics(settings) if t.name not in existing)
    if missing:
        return Check("kafka", False, f"{servers}: missing topics {', '.join(missing)}", "`ai-bot topics create`")
    return Check("kafka", True, f"{servers}: every pipeline topic present")


def alerting_checks(settings: Settings) -> list[Check]:
    alerting = settings.alerting
    found: list[Check] = []
    if alerting.email_to or alerting.smtp_smarthost:
        ready = bool(alerting.email_to and alerting.smtp_smarthost and alerting.email_from)
        found.append(
            Check(
                "alerts: e-mail",
                ready,
                f"to {', '.join(alerting.email_to) or '(nobody)'} via {alerting.smtp_smarthost or '(no server)'}",
                "" if ready else "set alerting.email_to, email_from and smtp_smarthost (`ai-bot onboard`)",
            )
        )
    if alerting.sms_gateway_url or alerting.sms_to:
        ready = bool(alerting.sms_gateway_url and alerting.sms_to)
        found.append(
            Check(
                "alerts: sms",
                ready,
                f"{len(alerting.sms_to)} number(s)",
                "" if ready else "set sms_gateway_url and sms_to",
            )
        )
    if alerting.feishu_webhook_url is not None:
        signed = alerting.feishu_secret is not None
        found.append(Check("alerts: feishu bot", True, "signed" if signed else "unsigned (no feishu_secret)"))
    if alerting.telegram_chat_id is not None or alerting.telegram_bot_token is not None:
        ready = alerting.telegram_chat_id is not None and alerting.telegram_bot_token is not None
        found.append(
            Check(
                "alerts: telegram chat",
                ready,
                f"chat {alerting.telegram_chat_id}",
                "" if ready else "set both alerting.telegram_bot_token and telegram_chat_id",
            )
        )
    if not found:
        found.append(Check("alerts", False, "no notification channel is configured", "`ai-bot onboard` (channels)"))
    return found


def run_checks(settings: Settings) -> list[Check]:
    found = [broker_check(settings)]
    llms = [m for m in settings.models if m.type == "llm"]
    if not llms:
        found.append(Check("model", False, "no llm model in `models:`", "`ai-bot onboard` (model)"))
    found += [checks.model_answers(m) for m in llms]
    telegram = settings.telegram
    if telegram.enabled:
        if telegram.bot_token is None:
            found.append(Check("telegram getMe", False, "telegram.bot_token is not set", "`ai-bot onboard`"))
        else:
            me = checks.telegram_get_me(telegram.api_base_url, telegram.bot_token.get_secret_value())
            found.append(me)
            if me.ok:
                found.append(checks.telegram_webhook_info(telegram))
    if settings.feishu.enabled:
        found.append(checks.feishu_config_token(settings.feishu))
    found.append(checks.storage_probe(settings.storage))
    found += alerting_checks(settings)
    return found


def run(args: argparse.Namespace) -> int:
    # aiokafka logs each refused connection itself; the table already says the broker is down.
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    use_config_files(args.config, args.env_file)
    settings = load_settings()
    found = run_checks(settings)
    table = Table(title="ai-bot doctor")
    for column in ("", "check", "what was seen", "fix"):
        table.add_column(column, overflow="fold")
    for check in found:
        table.add_row("[green]ok[/]" if check.ok else "[red]FAIL[/]", check.name, check.detail, check.fix)
    console = Console(width=max(Console().width, 120))
    console.print(table)
    failed = [c for c in found if not c.ok]
    console.print(f"{len(failed)} of {len(found)} checks failed" if failed else f"all {len(found)} checks passed")
    return 1 if failed else 0


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = sub.add_parser("doctor", help="check the broker, model, platforms, storage and alert channels")
    parser.add_argument("--config", help="the config file (default: $AIBOT_CONFIG, else ./config.yaml)")
    parser.add_argument("--env-file", help="its secrets (default: the .env beside the config file)")
    parser.set_defaults(func=run)
