"""Access control end to end, every service a process: policy, pairing through the admin API, a
developer's model switch, a refused /grant, a binding seen by every replica, and a quota.

A pipeline of its own (ingress-telegram, two core-llm replicas, the renderer) on a broker of its own
(the embedded one): these tests change the access policy and set quotas, which the other end-to-end
tests' pipeline must not see, and the pipeline's topics and consumer groups have fixed names, so on
the session's broker the two pipelines' replicas would share partitions. Its policy starts open
(the default) and each test sets what it needs through the admin API.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from aibot_cli.supervisor import ServiceProcess, Supervisor
from aibot_common.testing.broker import EmbeddedBroker, free_port
from aibot_fakes.llm import FakeLLM
from aibot_fakes.telegram import FakeTelegram
from tests.e2e.conftest import READY_TIMEOUT_S, pipeline_env

pytestmark = pytest.mark.e2e

AI_BOT = str(Path(sys.executable).parent / "ai-bot")
ADMIN, DEVELOPER = 7001, 7002
USER_RATE = 3  # messages a minute for the user role


@dataclass
class AccessPipeline:
    telegram: FakeTelegram
    main: FakeLLM
    second: FakeLLM
    supervisor: Supervisor
    bootstrap: str
    token: str
    admin_urls: list[str]  # each core-llm replica's admin API

    def cores(self) -> list[ServiceProcess]:
        return [p for p in self.supervisor.processes if p.name == "core-llm"]

    async def api(self, method: str, path: str, replica: int = 0, **kwargs: object) -> httpx.Response:
        async with httpx.AsyncClient(base_url=self.admin_urls[replica], timeout=10) as client:
            headers = {"Authorization": f"Bearer {self.token}"}
            return await client.request(method, path, headers=headers, **kwargs)

    def prompts(self, llm: FakeLLM) -> list[str]:
        """What each request to this model asked (its last message; the history comes before it)."""
        return [r["messages"][-1]["content"] for r in llm.requests]


async def _wait_http(url: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    async with httpx.AsyncClient(timeout=2) as client:
        while True:
            try:
                if (await client.get(url)).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, f"{url} did not answer"
            await asyncio.sleep(0.3)


@pytest.fixture(scope="module")
async def access_pipeline(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[AccessPipeline]:
    log_dir = Path(tmp_path_factory.mktemp("access-logs"))
    broker = EmbeddedBroker().start()  # no log file: EmbeddedBroker leaves its handle open
    kafka_bootstrap = broker.bootstrap
    telegram, main, second = FakeTelegram(), FakeLLM(), FakeLLM()
    for fake in (telegram, main, second):
        await fake.start()
    ingress_port = free_port()
    env = pipeline_env(kafka_bootstrap, telegram, main, f"http://127.0.0.1:{ingress_port}/telegram/webhook")
    env["AIBOT_MODELS"] = json.dumps(
        [
            {"name": "main", "type": "llm", "endpoint": main.endpoint, "timeout_s": 10},
            {"name": "second", "type": "llm", "endpoint": second.endpoint, "timeout_s": 10},
        ]
    )
    env["AIBOT_ACCESS"] = json.dumps(
        {
            "bindings": [
                {"subject": f"telegram:{ADMIN}", "role": "admin"},
                {"subject": f"telegram:{DEVELOPER}", "role": "developer"},
            ],
            "quotas": {"user": {"messages_per_minute": USER_RATE}},
        }
    )
    # The stand-in for the other pipeline's Feishu: not needed here.
    env["AIBOT_FEISHU__ENABLED"] = "false"
    supervisor = Supervisor(log_dir=log_dir, env=env)
    supervisor.add("ingress-telegram", ingress_port)
    admin_ports = [free_port(), free_port()]
    for port in admin_ports:
        supervisor.add("core-llm", free_port(), env={"AIBOT_ACCESS__ADMIN_PORT": str(port)})
    supervisor.add("renderer", free_port())
    supervisor.start()
    try:
        await asyncio.to_thread(supervisor.wait_ready, READY_TIMEOUT_S)
        admin_urls = [f"http://127.0.0.1:{port}" for port in admin_ports]
        for url in admin_urls:
            await _wait_http(f"{url}/healthz", READY_TIMEOUT_S)
        # The operator's first step: an admin token from the CLI, straight into the access topic.
        created = subprocess.run(
            [AI_BOT, "admin", "token", "create", "--role", "admin", "--name", "e2e"],
            env={**os.environ, "AIBOT_KAFKA__BOOTSTRAP_SERVERS": kafka_bootstrap},
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
        token = created.stdout.strip().splitlines()[-1]
        assert re.fullmatch(r"aibot_[A-Za-z0-9_-]{40,}", token), created.stdout
        pipeline = AccessPipeline(telegram, main, second, supervisor, kafka_bootstrap, token, admin_urls)
        for replica in (0, 1):  # every replica has read the token within seconds
            await _eventually_status(pipeline, "GET", "/v1/whoami", 200, replica)
        telegram.user_sends_text(ADMIN, "warm-up")
        await telegram.wait_for_sent(1, chat_id=ADMIN, timeout=90)
        yield pipeline
    finally:
        await asyncio.to_thread(supervisor.stop)
        for fake in (telegram, main, second):
            await fake.stop()
        broker.stop()
        print(f"service logs: {supervisor.log_dir}")


async def _eventually_status(
    pipeline: AccessPipeline, method: str, path: str, status: int, replica: int = 0, timeout_s: float = 20
) -> httpx.Response:
    deadline = time.monotonic() + timeout_s
    while True:
        response = await pipeline.api(method, path, replica)
        if response.status_code == status or time.monotonic() > deadline:
            assert response.status_code == status, response.text
            return response
        await asyncio.sleep(0.3)


async def _set_private_policy(pipeline: AccessPipeline, mode: str) -> None:
    response = await pipeline.api("PUT", "/v1/policy/telegram/private", json={"mode": mode})
    assert response.status_code == 200, response.text
    for replica in (0, 1):  # wait until both replicas have read it
        deadline = time.monotonic() + 20
        while (await pipeline.api("GET", "/v1/policy", replica)).json()["policy"]["telegram"]["private"] != mode:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.2)


async def test_an_unknown_user_in_allowlist_mode_is_refused_once_and_the_model_gets_nothing(
    access_pipeline: AccessPipeline,
) -> None:
    p = access_pipeline
    await _set_private_policy(p, "allowlist")
    stranger = 7100
    for i in range(3):
        p.telegram.user_sends_text(stranger, f"let me in {i}")
    (refusal,) = await p.telegram.wait_for_sent(1, chat_id=stranger, timeout=60)
    assert "not on its list of users" in refusal["text"] and f"telegram:{stranger}" in refusal["text"]
    await asyncio.sleep(3)  # the other two messages are processed by now (one lane, in order)
    assert len(p.telegram.sent_to(stranger)) == 1
    assert not [t for t in p.prompts(p.main) + p.prompts(p.second) if t.startswith("let me in")]


async def test_pairing_approved_through_the_admin_api_then_the_user_is_answered(
    access_pipeline: AccessPipeline,
) -> None:
    p = access_pipeline
    await _set_private_policy(p, "pairing")
    user = 7200
    p.telegram.user_sends_text(user, "hello?")
    (notice,) = await p.telegram.wait_for_sent(1, chat_id=user, timeout=60)
    code = re.search(r"pairing code is ([A-Z0-9]{8})", notice["text"]).group(1)
    pending = (await p.api("GET", "/v1/pairings", replica=1)).json()
    (request,) = [r for r in pending if r["code"] == code]
    assert request["subject"] == f"telegram:{user}" and request["conversation"] == f"telegram:{user}"
    approved = await p.api("POST", f"/v1/pairings/{code}/approve", replica=1)
    assert approved.status_code == 200 and approved.json()["subject"] == f"telegram:{user}"
    await asyncio.sleep(1)  # the approval reaches the replica that owns this chat
    p.telegram.user_sends_text(user, "paired now")
    sent = await p.telegram.wait_for_sent(2, chat_id=user, timeout=60)
    assert sent[1]["text"] == "Echo: paired now"
    audit = (await p.api("GET", "/v1/audit?limit=50")).json()
    entries = [(e["actor"], e["action"], e["target"]) for e in audit]
    assert ("token:e2e", "approve", f"telegram:{user}") in entries


async def test_a_developer_switches_the_chats_model_and_the_next_request_goes_to_its_endpoint(
    access_pipeline: AccessPipeline,
) -> None:
    p = access_pipeline
    p.telegram.user_sends_text(DEVELOPER, "/model use second")
    (switched,) = await p.telegram.wait_for_sent(1, chat_id=DEVELOPER, timeout=60)
    assert switched["text"] == "This chat now uses second."
    before_main, before_second = len(p.main.requests), len(p.second.requests)
    p.telegram.user_sends_text(DEVELOPER, "which model?")
    answer = (await p.telegram.wait_for_sent(2, chat_id=DEVELOPER, timeout=60))[1]
    assert answer["text"] == "Echo: which model?"
    assert len(p.second.requests) == before_second + 1 and len(p.main.requests) == before_main
    assert p.prompts(p.second)[-1] == "which model?"


async def test_a_users_grant_is_refused(access_pipeline: AccessPipeline) -> None:
    p = access_pipeline
    await _set_private_policy(p, "open")
    user = 7300
    p.telegram.user_sends_text(user, f"/grant telegram:{user} admin")
    (answer,) = await p.telegram.wait_for_sent(1, chat_id=user, timeout=60)
    assert answer["text"] == "Sorry, /grant needs the admin role; you have user."
    bindings = (await p.api("GET", "/v1/bindings")).json()
    assert not [b for b in bindings if b["subject"] == f"telegram:{user}"]


async def test_a_quota_exceeded_is_answered_clearly_and_counted(access_pipeline: AccessPipeline) -> None:
    p = access_pipeline
    await _set_private_policy(p, "open")
    user = 7500
    texts: list[str] = []
    # Until refused; should the clock's minute turn over on the way, the count starts again.
    for i in range(2 * USER_RATE + 1):
        p.telegram.user_sends_text(user, f"quota {i}")
        texts = [m["text"] for m in await p.telegram.wait_for_sent(i + 1, chat_id=user, timeout=60)]
        if not texts[-1].startswith("Echo:"):
            break
    assert "faster than your limit of 3 a minute" in texts[-1]
    answered = [t for t in texts if t.startswith("Echo:")]
    assert len([t for t in p.prompts(p.main) if t.startswith("quota")]) == len(answered)  # the refused one: never
    usage = (await p.api("GET", f"/v1/usage/telegram:{user}")).json()
    assert usage["messages"] >= USER_RATE and usage["tokens"] > 0
    exceeded = 0.0
    async with httpx.AsyncClient(timeout=5) as client:
        for core in p.cores():
            metrics = (await client.get(f"{core.url}/metrics")).text
            found = re.search(r'aibot_quota_exceeded_total\{limit="rate",scope="user"\} ([0-9.]+)', metrics)
            exceeded += float(found.group(1)) if found else 0.0
    assert exceeded >= 1


async def test_a_binding_made_through_one_replica_is_enforced_by_the_other(access_pipeline: AccessPipeline) -> None:
    """Last: it stops the first core-llm replica, so that the second one handles every chat."""
    p = access_pipeline
    await _set_private_policy(p, "allowlist")
    users = list(range(7400, 7404))
    for user in users:
        response = await p.api("PUT", "/v1/bindings", replica=0, json={"subject": f"telegram:{user}", "role": "user"})
        assert response.status_code == 200
    await asyncio.to_thread(p.cores()[0].stop)
    listed = {b["subject"] for b in (await p.api("GET", "/v1/bindings", replica=1)).json()}
    assert {f"telegram:{u}" for u in users} <= listed
    for user in [*users, 7499]:  # 7499 has no binding: refused by the second replica too
        p.telegram.user_sends_text(user, f"bound {user}")
    for user in users:
        (answer,) = await p.telegram.wait_for_sent(1, chat_id=user, timeout=90)
        assert answer["text"] == f"Echo: bound {user}"
    (refusal,) = await p.telegram.wait_for_sent(1, chat_id=7499, timeout=90)
    assert "not on its list of users" in refusal["text"]
