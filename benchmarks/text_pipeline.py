"""The product's text pipeline as the benchmarks start it: ingress-telegram, core-llm and renderer as
processes against a broker, a Bot API and one model, in the default configuration."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

from aibot_cli.supervisor import Supervisor
from aibot_common.testing.broker import free_port


def text_pipeline(
    bootstrap: str, telegram_url: str, token: str, model: dict[str, Any], *, replicas: int = 1, **env: str
) -> Supervisor:
    """A supervisor with the three services added (not started); `env` adds or overrides settings."""
    ingress_port = free_port()
    settings = {
        "AIBOT_KAFKA__BOOTSTRAP_SERVERS": bootstrap,
        "AIBOT_TELEGRAM__BOT_TOKEN": token,
        "AIBOT_TELEGRAM__API_BASE_URL": telegram_url,
        "AIBOT_TELEGRAM__WEBHOOK__URL": f"http://127.0.0.1:{ingress_port}/telegram/webhook",
        "AIBOT_TELEGRAM__WEBHOOK__SECRET_TOKEN": "bench-secret",
        "AIBOT_MODELS": json.dumps([model]),
        "AIBOT_OBSERVABILITY__LOG_LEVEL": "WARNING",
        # A load test from one address: the per-IP limit (100/s) would measure itself, not the pipeline.
        "AIBOT_SECURITY__RATE_LIMIT__ENABLED": "false",
        **env,
    }
    supervisor = Supervisor(log_dir=Path(tempfile.mkdtemp(prefix="aibot-bench-")), env=settings)
    supervisor.add("ingress-telegram", ingress_port)
    for _ in range(replicas):
        # Each replica its own admin API port: two on one host cannot share the default.
        supervisor.add("core-llm", free_port(), env={"AIBOT_ACCESS__ADMIN_PORT": str(free_port())})
        supervisor.add("renderer", free_port())
    return supervisor
