"""The fake Feishu Open Platform speaks what Feishu speaks, checked with Feishu's own SDK (lark-oapi).

Events are decrypted with the SDK's AESCipher and signed as its dispatcher checks them; the Open API is
called with the SDK's own client (its blocking transport runs in a thread while the fake serves from
this loop), so a product that works against the fake needs only a `domain` change for Feishu.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import lark_oapi as lark
import pytest
from fastapi import FastAPI, Request, Response
from lark_oapi.api.im.v1 import (
    CreateMessageRequest,
    CreateMessageRequestBody,
    ReplyMessageRequest,
    ReplyMessageRequestBody,
)
from lark_oapi.core.utils import AESCipher

from aibot_fakes.feishu import FakeFeishu
from aibot_fakes.server import BackgroundServer

KEY = "contract-encrypt-key"
TOKEN = "contract-verification-token"


class Receiver:
    """An event endpoint that answers the statuses it is told to (then 200), optionally slowly."""

    def __init__(self, statuses: list[int] | None = None, delay_s: float = 0.0) -> None:
        self.statuses = list(statuses or [])
        self.delay_s = delay_s
        self.received: list[tuple[bytes, dict[str, str]]] = []
        self.app = FastAPI()
        self.app.post("/events")(self.events)
        self.server = BackgroundServer(self.app)

    async def events(self, request: Request) -> Response:
        body = await request.body()
        self.received.append((body, dict(request.headers)))
        payload = json.loads(AESCipher(KEY).decrypt_str(json.loads(body)["encrypt"]))
        if payload.get("type") == "url_verification":
            return Response(json.dumps({"challenge": payload["challenge"]}), media_type="application/json")
        if self.delay_s:
            self.delay_s, delay = 0.0, self.delay_s  # slow once
            await asyncio.sleep(delay)
        status = self.statuses.pop(0) if self.statuses else 200
        return Response(status_code=status)

    @property
    def url(self) -> str:
        return f"{self.server.url}/events"

    def payloads(self) -> list[dict[str, Any]]:
        return [json.loads(AESCipher(KEY).decrypt_str(json.loads(body)["encrypt"])) for body, _ in self.received]


@pytest.fixture
async def fake() -> AsyncIterator[FakeFeishu]:
    # A unique app id per test: the SDK caches tokens process-wide by app id.
    server = FakeFeishu(app_id=f"cli_{uuid.uuid4().hex[:16]}", encrypt_key=KEY, verification_token=TOKEN)
    server.redelivery_delays = (0.1, 0.2, 0.3, 0.4)
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    hook = Receiver()
    await hook.server.start()
    yield hook
    await hook.server.stop()


def sdk_client(fake: FakeFeishu) -> lark.Client:
    return lark.Client.builder().app_id(fake.app_id).app_secret(fake.app_secret).domain(fake.url).build()


async def test_events_are_encrypted_signed_and_carry_the_verification_token(
    fake: FakeFeishu, receiver: Receiver
) -> None:
    await fake.subscribe(receiver.url)  # the console's URL check: the receiver echoed the challenge
    event = fake.user_sends_text("oc_chat1", "hello", mention_bot=True, chat_type="group")
    await _until(lambda: len(receiver.received) == 2)
    body, headers = receiver.received[1]
    timestamp, nonce = headers["x-lark-request-timestamp"], headers["x-lark-request-nonce"]
    expected = hashlib.sha256((timestamp + nonce + KEY).encode() + body).hexdigest()
    assert headers["x-lark-signature"] == expected
    payload = receiver.payloads()[1]
    assert payload == event
    assert payload["schema"] == "2.0" and payload["header"]["token"] == TOKEN
    assert payload["header"]["event_type"] == "im.message.receive_v1"
    message = payload["event"]["message"]
    assert json.loads(message["content"]) == {"text": "@_user_1 hello"}
    assert message["mentions"][0]["id"]["open_id"] == fake.bot_open_id and message["chat_type"] == "group"


async def test_subscribe_refuses_a_url_that_does_not_echo_the_challenge(fake: FakeFeishu) -> None:
    wrong = FastAPI()
    wrong.post("/events")(lambda: {"challenge": "something else"})
    server = BackgroundServer(wrong)
    await server.start()
    try:
        with pytest.raises(ValueError, match="URL verification failed"):
            await fake.subscribe(f"{server.url}/events")
    finally:
        await server.stop()
    assert fake.event_url is None


async def test_an_event_is_sent_again_until_it_gets_a_200(fake: FakeFeishu, receiver: Receiver) -> None:
    await fake.subscribe(receiver.url, verify=False)
    receiver.statuses = [500, 503]
    event = fake.user_sends_text("oc_chat2", "are you there")
    await _until(lambda: len(receiver.received) == 3)
    await asyncio.sleep(0.5)
    assert len(receiver.received) == 3
    ids = {p["header"]["event_id"] for p in receiver.payloads()}
    assert ids == {event["header"]["event_id"]}
    nonces = {headers["x-lark-request-nonce"] for _, headers in receiver.received}
    assert len(nonces) == 3  # every attempt is signed afresh
    assert [d["status"] for d in fake.deliveries] == [500, 503, 200]


async def test_a_slow_answer_counts_as_no_answer(fake: FakeFeishu, receiver: Receiver) -> None:
    fake.answer_timeout_s = 0.3
    await fake.stop()
    await fake.start()  # the delivery client takes the shorter deadline
    await fake.subscribe(receiver.url, verify=False)
    receiver.delay_s = 1.0
    fake.user_sends_text("oc_chat3", "slow")
    await _until(lambda: any(d.get("status") == 200 for d in fake.deliveries))
    assert fake.deliveries[0]["status"] == "timeout"
    assert len({p["header"]["event_id"] for p in receiver.payloads()}) == 1


async def test_the_sdk_fetches_a_token_and_sends_and_replies(fake: FakeFeishu, receiver: Receiver) -> None:
    await fake.subscribe(receiver.url, verify=False)
    event = fake.user_sends_text("oc_chat4", "question")
    asked = event["event"]["message"]["message_id"]
    client = sdk_client(fake)
    create = (
        CreateMessageRequest.builder()
        .receive_id_type("chat_id")
        .request_body(
            CreateMessageRequestBody.builder()
            .receive_id("oc_chat4")
            .msg_type("text")
            .content(json.dumps({"text": "hi"}))
            .build()
        )
        .build()
    )
    response = await asyncio.to_thread(client.im.v1.message.create, create)
    assert response.success(), response.msg
    reply = (
        ReplyMessageRequest.builder()
        .message_id(asked)
        .request_body(
            ReplyMessageRequestBody.builder()
            .msg_type("text")
            .content(json.dumps({"text": "answer"}))
            .uuid("reply-1")
            .build()
        )
        .build()
    )
    first = await asyncio.to_thread(client.im.v1.message.reply, reply)
    assert first.success() and first.data.message_id
    sent = fake.sent_to("oc_chat4")
    assert [(m["text"], m["reply_to"]) for m in sent] == [("hi", None), ("answer", asked)]
    assert fake.tokens_issued and fake.calls_to("token")[0]["body"]["app_id"] == fake.app_id


async def test_the_same_uuid_within_an_hour_sends_once(fake: FakeFeishu) -> None:
    async with httpx.AsyncClient(base_url=fake.url) as http:
        token = await _token(http, fake)
        body = {"receive_id": "oc_u", "msg_type": "text", "content": json.dumps({"text": "once"}), "uuid": "u-1"}
        answers = [
            (
                await http.post(
                    "/open-apis/im/v1/messages",
                    params={"receive_id_type": "chat_id"},
                    json=body,
                    headers={"Authorization": f"Bearer {token}"},
                )
            ).json()
            for _ in range(3)
        ]
    assert len({a["data"]["message_id"] for a in answers}) == 1
    assert len(fake.sent_to("oc_u")) == 1
    assert [c.get("deduplicated", False) for c in fake.calls_to("send")] == [False, True, True]


async def test_expired_tokens_are_refused_and_a_new_one_is_issued(fake: FakeFeishu) -> None:
    async with httpx.AsyncClient(base_url=fake.url) as http:
        token = await _token(http, fake)
        assert await _token(http, fake) == token  # more than 30 minutes left: the same token again
        fake.expire_tokens()
        refused = await http.get("/open-apis/bot/v3/info", headers={"Authorization": f"Bearer {token}"})
        assert refused.status_code == 400 and refused.json()["code"] == 99991663
        fresh = await _token(http, fake)
        assert fresh != token
        info = await http.get("/open-apis/bot/v3/info", headers={"Authorization": f"Bearer {fresh}"})
        assert info.json()["bot"]["open_id"] == fake.bot_open_id
        missing = await http.get("/open-apis/bot/v3/info")
        assert missing.json()["code"] == 99991661
        wrong = await http.post(
            "/open-apis/auth/v3/tenant_access_token/internal", json={"app_id": fake.app_id, "app_secret": "nope"}
        )
        assert wrong.json()["code"] == 10014


async def test_short_lived_tokens_are_replaced_before_they_run_out(fake: FakeFeishu) -> None:
    fake.token_ttl_s = 600  # under 30 minutes left: each fetch issues a new token, and both stay valid
    async with httpx.AsyncClient(base_url=fake.url) as http:
        first, second = await _token(http, fake), await _token(http, fake)
        assert first != second
        for token in (first, second):
            ok = await http.get("/open-apis/bot/v3/info", headers={"Authorization": f"Bearer {token}"})
            assert ok.json()["code"] == 0


async def test_content_is_checked_like_feishu_does(fake: FakeFeishu) -> None:
    async with httpx.AsyncClient(base_url=fake.url) as http:
        token = await _token(http, fake)

        async def send(msg_type: str, content: Any) -> dict[str, Any]:
            body = {
                "receive_id": "oc_c",
                "msg_type": msg_type,
                "content": content if isinstance(content, str) else json.dumps(content),
            }
            answer = await http.post(
                "/open-apis/im/v1/messages",
                params={"receive_id_type": "chat_id"},
                json=body,
                headers={"Authorization": f"Bearer {token}"},
            )
            return answer.json()

        assert (await send("text", {"text": "x" * (150 * 1024 - 20)}))["code"] == 0
        assert (await send("text", {"text": "x" * (150 * 1024)}))["code"] == 230022
        card = {"schema": "2.0", "body": {"elements": [{"tag": "markdown", "content": "**hi**"}]}}
        assert (await send("interactive", card))["code"] == 0
        big = {"schema": "2.0", "body": {"elements": [{"tag": "markdown", "content": "y" * 31_000}]}}
        assert (await send("interactive", big))["code"] == 230022
        assert (await send("interactive", {"schema": "2.0", "body": {}}))["code"] == 230099
        assert (await send("text", "{not json"))["code"] == 230001
        assert (await send("text", {"text": "  "}))["code"] == 230001
        post = {"zh_cn": {"title": "T", "content": [[{"tag": "text", "text": "para"}]]}}
        assert (await send("post", post))["code"] == 0
    assert [m["text"] for m in fake.sent_to("oc_c")][-1] == "para"


async def test_replying_to_a_recalled_message_fails(fake: FakeFeishu, receiver: Receiver) -> None:
    await fake.subscribe(receiver.url, verify=False)
    asked = fake.user_sends_text("oc_r", "oops")["event"]["message"]["message_id"]
    fake.recall(asked)
    async with httpx.AsyncClient(base_url=fake.url) as http:
        token = await _token(http, fake)
        answer = await http.post(
            f"/open-apis/im/v1/messages/{asked}/reply",
            json={"msg_type": "text", "content": json.dumps({"text": "late"})},
            headers={"Authorization": f"Bearer {token}"},
        )
    assert answer.json()["code"] == 230011
    assert fake.sent_to("oc_r") == []


async def test_voice_notes_are_downloadable_from_their_message(fake: FakeFeishu, receiver: Receiver) -> None:
    await fake.subscribe(receiver.url, verify=False)
    event = fake.user_sends_audio("oc_v", b"OggS fake opus", duration_ms=2500)
    message = event["event"]["message"]
    content = json.loads(message["content"])
    assert message["message_type"] == "audio" and content["duration"] == 2500
    async with httpx.AsyncClient(base_url=fake.url) as http:
        token = await _token(http, fake)
        auth = {"Authorization": f"Bearer {token}"}
        path = f"/open-apis/im/v1/messages/{message['message_id']}/resources"
        got = await http.get(f"{path}/{content['file_key']}", params={"type": "file"}, headers=auth)
        assert got.status_code == 200 and got.content == b"OggS fake opus"
        assert got.headers["content-type"] == "audio/ogg"
        other = await http.get(f"{path}/file_v3_other", params={"type": "file"}, headers=auth)
        assert other.json()["code"] == 234043
        no_type = await http.get(f"{path}/{content['file_key']}", headers=auth)
        assert no_type.status_code == 400


async def test_injected_rate_limit_carries_the_gateway_headers(fake: FakeFeishu) -> None:
    fake.fail_next("send", code=99991400, msg="request trigger frequency limit", http_status=429, retry_after=2)
    async with httpx.AsyncClient(base_url=fake.url) as http:
        token = await _token(http, fake)
        body = {"receive_id": "oc_l", "msg_type": "text", "content": json.dumps({"text": "x"})}
        args = {"params": {"receive_id_type": "chat_id"}, "json": body, "headers": {"Authorization": f"Bearer {token}"}}
        limited = await http.post("/open-apis/im/v1/messages", **args)
        assert limited.status_code == 429 and limited.json()["code"] == 99991400
        assert limited.headers["x-ogw-ratelimit-reset"] == "2"
        assert (await http.post("/open-apis/im/v1/messages", **args)).json()["code"] == 0


async def test_a_failure_window_fails_every_call_until_it_ends(fake: FakeFeishu) -> None:
    fake.fail_for(["send"], 0.5, code=1500, msg="internal error", http_status=503)
    async with httpx.AsyncClient(base_url=fake.url) as http:
        token = await _token(http, fake)  # "token" is not in the window
        body = {"receive_id": "oc_w", "msg_type": "text", "content": json.dumps({"text": "x"})}
        args = {"params": {"receive_id_type": "chat_id"}, "json": body, "headers": {"Authorization": f"Bearer {token}"}}
        for _ in range(3):
            assert (await http.post("/open-apis/im/v1/messages", **args)).status_code == 503
        await asyncio.sleep(0.6)
        assert (await http.post("/open-apis/im/v1/messages", **args)).json()["code"] == 0


def test_runs_as_a_process_and_prints_its_url() -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "aibot_fakes", "feishu", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = process.stdout.readline() if process.stdout else ""
        assert line.startswith("ready http://127.0.0.1:")
        answer = httpx.post(
            f"{line.split()[1]}/open-apis/auth/v3/tenant_access_token/internal",
            json={"app_id": "cli_fake0000000001", "app_secret": "fake-app-secret-0001"},
        )
        assert answer.json()["code"] == 0 and answer.json()["expire"] == 7200
    finally:
        process.terminate()
        process.wait(10)
        for stream in (process.stdout, process.stderr):
            if stream:
                stream.close()


async def _token(http: httpx.AsyncClient, fake: FakeFeishu) -> str:
    answer = await http.post(
        "/open-apis/auth/v3/tenant_access_token/internal", json={"app_id": fake.app_id, "app_secret": fake.app_secret}
    )
    return answer.json()["tenant_access_token"]


async def _until(condition: Any, timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError("condition not met")
        await asyncio.sleep(0.02)
