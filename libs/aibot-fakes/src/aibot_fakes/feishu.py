"""A fake Feishu (Lark) Open Platform: the real HTTP protocol both ways, simulated users, and a record
of what the bot did.

- Events: a simulated user's message becomes an `im.message.receive_v1` event (schema 2.0), encrypted
  with the Encrypt Key and signed (X-Lark-Request-Timestamp/Nonce/Signature) as Feishu does, POSTed
  to the subscribed URL, and re-sent when the answer is not a 200 within 3 s.
- Open API: the tenant token endpoint (tokens that expire, and can be invalidated mid-run), message
  send and reply (with `uuid` idempotency and Feishu's size limits), message resources (voice notes
  added by tests), and the bot's own info. Failures can be injected per API, like FakeTelegram's.

Point `feishu.domain` at `.url` and subscribe the ingress with `.subscribe(url)`.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import copy
import hashlib
import json
import secrets
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
from Crypto.Cipher import AES
from Crypto.Util.Padding import pad
from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse

from aibot_fakes.feishu_cardkit import CardKit, CardKitError
from aibot_fakes.feishu_control import add_control_routes
from aibot_fakes.server import PlatformFake

TEXT_LIMIT_BYTES = 150 * 1024
CARD_OR_POST_LIMIT_BYTES = 30 * 1024
UUID_WINDOW_S = 3600.0
TOKEN_REUSE_S = 1800.0  # Feishu hands out the same token until less than 30 minutes are left
MSG_TYPES = {"text", "post", "interactive", "image", "file", "audio", "media", "sticker", "share_chat", "share_user"}


class FeishuApiError(Exception):
    def __init__(self, code: int, msg: str, *, http_status: int = 400, headers: dict[str, str] | None = None) -> None:
        super().__init__(msg)
        self.code = code
        self.msg = msg
        self.http_status = http_status
        self.headers = headers or {}

    def response(self) -> Response:
        return JSONResponse({"code": self.code, "msg": self.msg}, status_code=self.http_status, headers=self.headers)


def _content_error(msg: str) -> FeishuApiError:
    return FeishuApiError(230001, f"invalid message content: {msg}")


_Handler = Callable[[dict[str, Any], dict[str, Any]], Any]


@dataclass
class _Token:
    value: str
    expires_at: float
    revoked: bool = False

    def valid(self, now: float) -> bool:
        return not self.revoked and now < self.expires_at


@dataclass
class _Resource:
    content: bytes
    content_type: str
    file_name: str


@dataclass
class _Message:
    message_id: str
    chat_id: str
    from_bot: bool
    recalled: bool = False
    resources: dict[str, _Resource] = field(default_factory=dict)


def encrypt(plaintext: str, encrypt_key: str) -> str:
    """Feishu's event encryption: AES-256-CBC, key = SHA-256(Encrypt Key), a random IV in front, base64."""
    iv = secrets.token_bytes(16)
    cipher = AES.new(hashlib.sha256(encrypt_key.encode()).digest(), AES.MODE_CBC, iv)
    return base64.b64encode(iv + cipher.encrypt(pad(plaintext.encode(), AES.block_size))).decode()


def sign(timestamp: str, nonce: str, encrypt_key: str, body: bytes) -> str:
    return hashlib.sha256((timestamp + nonce + encrypt_key).encode() + body).hexdigest()


class FakeFeishu(PlatformFake):
    # Feishu re-sends after 15 s, 5 min, 1 h and 6 h; the same shape, quick enough for tests.
    redelivery_delays: tuple[float, ...] = (0.5, 1.0, 2.0, 4.0)
    answer_timeout_s: float = 3.0  # Feishu's deadline for the 200

    def __init__(
        self,
        *,
        app_id: str = "cli_fake0000000001",
        app_secret: str = "fake-app-secret-0001",  # noqa: S107 - a fake's well-known test secret
        verification_token: str = "fake-verification-token",  # noqa: S107
        encrypt_key: str | None = "fake-encrypt-key",
        bot_open_id: str = "ou_fakebot000000000000000000000001",
        bot_name: str = "AI Bot",
        tenant_key: str = "fake-tenant",
        token_ttl_s: float = 7200.0,
        event_url: str | None = None,
    ) -> None:
        super().__init__()
        self.app_id = app_id
        self.app_secret = app_secret
        self.verification_token = verification_token
        self.encrypt_key = encrypt_key
        self.bot_open_id = bot_open_id
        self.bot_name = bot_name
        self.tenant_key = tenant_key
        self.token_ttl_s = token_ttl_s
        self.event_url = event_url  # set without the console's URL check; subscribe() checks

        self.sent: list[dict[str, Any]] = []  # messages the bot created (deduplicated repeats are not)
        self.calls: list[dict[str, Any]] = []  # every Open API call, failed and repeated ones included
        self.deliveries: list[dict[str, Any]] = []  # every event POST and how the receiver answered
        self.undelivered: list[dict[str, Any]] = []  # events given up on after every re-send
        self.tokens_issued: list[str] = []
        self.card_actions: list[dict[str, Any]] = []  # button presses and how the receiver answered

        self._tokens: list[_Token] = []
        self._messages: dict[str, _Message] = {}
        self._uuids: dict[str, tuple[float, dict[str, Any]]] = {}
        self._failures: dict[str, deque[FeishuApiError]] = {}
        # (until, apis, error): every call of those apis fails so until `until` (time.monotonic()).
        self._failure_windows: list[tuple[float, frozenset[str], FeishuApiError]] = []
        self._sent_changed = asyncio.Event()
        self.cardkit = CardKit()
        self.app = self._build_app()

    # ------------------------------------------------------------------ lifecycle

    @property
    def client_timeout_s(self) -> float:
        return self.answer_timeout_s

    def _wake_waiters(self) -> None:
        self._notify()

    # ------------------------------------------------------------------ the developer console

    async def subscribe(self, url: str, *, verify: bool = True) -> None:
        """Set the event request URL. Like the console's Save, first checks that it echoes a challenge."""
        if verify:
            challenge = secrets.token_urlsafe(16)
            payload = {"challenge": challenge, "token": self.verification_token, "type": "url_verification"}
            response = await self.deliver_raw(self._body(payload), signed=False, url=url)
            answer = response.json() if response.status_code == 200 else {}
            if answer.get("challenge") != challenge:
                raise ValueError(f"URL verification failed: {response.status_code} {response.text[:200]}")
        self.event_url = url

    # ------------------------------------------------------------------ simulated users

    def user_sends_text(
        self,
        chat_id: str,
        text: str,
        *,
        chat_type: str = "p2p",
        open_id: str = "ou_user0000000000000000000000001",
        mention_bot: bool = False,
        mentions: Sequence[tuple[str, str]] = (),
    ) -> dict[str, Any]:
        """A user's text message; with mention_bot it starts with the bot's @mention (`@_user_1`)."""
        people = ([(self.bot_open_id, self.bot_name)] if mention_bot else []) + list(mentions)
        keys = [f"@_user_{index + 1}" for index in range(len(people))]
        prefix = "".join(f"{key} " for key in keys[: 1 if mention_bot else 0])
        others = " ".join(keys[1 if mention_bot else 0 :])
        body = f"{prefix}{text}" + (f" {others}" if others else "")
        return self.user_sends(
            chat_id,
            "text",
            {"text": body},
            chat_type=chat_type,
            open_id=open_id,
            mentions=list(zip(keys, people, strict=True)),
        )

    def user_sends_post(
        self,
        chat_id: str,
        title: str,
        paragraphs: list[list[dict[str, Any]]],
        *,
        chat_type: str = "p2p",
        open_id: str = "ou_user0000000000000000000000001",
        mention_bot: bool = False,
    ) -> dict[str, Any]:
        mentions = [("@_user_1", (self.bot_open_id, self.bot_name))] if mention_bot else []
        if mention_bot:
            paragraphs = [[{"tag": "at", "user_id": "@_user_1", "user_name": self.bot_name}], *paragraphs]
        return self.user_sends(
            chat_id,
            "post",
            {"title": title, "content": paragraphs},
            chat_type=chat_type,
            open_id=open_id,
            mentions=mentions,
        )

    def user_sends_audio(
        self,
        chat_id: str,
        audio: bytes,
        *,
        duration_ms: int,
        chat_type: str = "p2p",
        open_id: str = "ou_user0000000000000000000000001",
        content_type: str = "audio/ogg",
    ) -> dict[str, Any]:
        """A voice note (Opus); the bot downloads it from the resources endpoint with the returned keys."""
        file_key = f"file_v3_{secrets.token_hex(12)}"
        event = self.user_sends(
            chat_id,
            "audio",
            {"file_key": file_key, "duration": duration_ms},
            chat_type=chat_type,
            open_id=open_id,
            resources={file_key: _Resource(bytes(audio), content_type, f"{file_key}.opus")},
        )
        return event

    def user_sends(
        self,
        chat_id: str,
        message_type: str,
        content: dict[str, Any],
        *,
        chat_type: str = "p2p",
        open_id: str = "ou_user0000000000000000000000001",
        mentions: Sequence[tuple[str, tuple[str, str]]] = (),
        resources: dict[str, _Resource] | None = None,
    ) -> dict[str, Any]:
        """Any message type (image, file, sticker...); returns the plaintext event and delivers it."""
        if chat_type not in ("p2p", "group"):
            raise ValueError("chat_type is 'p2p' or 'group'")
        message_id = f"om_{secrets.token_hex(16)}"
        self._messages[message_id] = _Message(message_id, chat_id, from_bot=False, resources=dict(resources or {}))
        now_ms = str(int(time.time() * 1000))
        event = {
            "schema": "2.0",
            "header": {
                "event_id": secrets.token_hex(16),
                "event_type": "im.message.receive_v1",
                "create_time": now_ms,
                "token": self.verification_token,
                "app_id": self.app_id,
                "tenant_key": self.tenant_key,
            },
            "event": {
                "sender": {
                    "sender_id": {"open_id": open_id, "union_id": f"on_{open_id[3:]}", "user_id": open_id[3:11]},
                    "sender_type": "user",
                    "tenant_key": self.tenant_key,
                },
                "message": {
                    "message_id": message_id,
                    "root_id": "",
                    "parent_id": "",
                    "create_time": now_ms,
                    "update_time": now_ms,
                    "chat_id": chat_id,
                    "chat_type": chat_type,
                    "message_type": message_type,
                    "content": json.dumps(content, ensure_ascii=False),
                    "mentions": [
                        {
                            "key": key,
                            "id": {"open_id": person_id, "union_id": "", "user_id": ""},
                            "name": name,
                            "tenant_key": self.tenant_key,
                        }
                        for key, (person_id, name) in mentions
                    ],
                    "user_agent": "fake-feishu",
                },
            },
        }
        if self.event_url is None:
            self.undelivered.append(event)  # no request URL configured: Feishu has nowhere to send it
        else:
            self.redeliver(event)
        return copy.deepcopy(event)

    def add_resource(
        self,
        message_id: str,
        file_key: str,
        content: bytes,
        *,
        content_type: str = "audio/ogg",
        file_name: str | None = None,
    ) -> None:
        message = self._messages.setdefault(message_id, _Message(message_id, "", from_bot=False))
        message.resources[file_key] = _Resource(bytes(content), content_type, file_name or file_key)

    def recall(self, message_id: str) -> None:
        """The user withdraws a message: replying to it fails from now on."""
        self._messages[message_id].recalled = True

    def _button(self, message_id: str, action: str) -> dict[str, Any] | None:
        item = next((m for m in self.sent if m["message_id"] == message_id), None)
        if item is None:
            raise ValueError(f"no bot message {message_id}")
        card = self.cardkit.get(item["card_id"]).card if item.get("card_id") else item["content"]
        return next((v for v in _button_values(card) if v.get("action") == action), None)

    def shows_button(self, message_id: str, action: str) -> bool:
        """Whether the bot's card message, as it is now, has a button with this callback action."""
        return self._button(message_id, action) is not None

    async def press_card_button(
        self, message_id: str, action: str, *, open_id: str = "ou_user0000000000000000000000001"
    ) -> dict[str, Any]:
        """A user presses the button of the bot's card message whose callback value has this `action`:
        Feishu POSTs a signed (and encrypted) `card.action.trigger` callback to the request URL and
        shows the toast the answer holds. Returns that answer's JSON; ValueError if the card, as it
        is now, has no such button (a button the bot replaced can no longer be pressed)."""
        value = self._button(message_id, action)
        item = next(m for m in self.sent if m["message_id"] == message_id)
        if value is None:
            raise ValueError(f"message {message_id} shows no button with action {action!r}")
        now_ms = str(int(time.time() * 1000))
        event_id = secrets.token_hex(16)
        callback = {
            "schema": "2.0",
            "header": {
                "event_id": event_id,
                "token": self.verification_token,
                "create_time": now_ms,
                "event_type": "card.action.trigger",
                "tenant_key": self.tenant_key,
                "app_id": self.app_id,
            },
            "event": {
                "operator": {"tenant_key": self.tenant_key, "open_id": open_id, "union_id": f"on_{open_id[3:]}"},
                "token": f"c-{secrets.token_hex(8)}",  # the card's update token (valid 30 min)
                "action": {"value": copy.deepcopy(value), "tag": "button"},
                "host": "im_message",
                "context": {"open_message_id": message_id, "open_chat_id": item["chat_id"]},
            },
        }
        response = await self.deliver_raw(self._body(callback))
        answer = response.json() if response.status_code == 200 else {}
        self.card_actions.append({"event_id": event_id, "status": response.status_code, "answer": answer})
        return answer

    # ------------------------------------------------------------------ event delivery

    def redeliver(self, event: dict[str, Any]) -> None:
        """Deliver this event (again): the same event_id, a fresh timestamp, nonce and signature."""
        if self.event_url is None:
            raise RuntimeError("no event URL subscribed (call subscribe(url) first)")
        self._spawn(self._deliver(copy.deepcopy(event), self.event_url))

    async def _deliver(self, event: dict[str, Any], url: str) -> None:
        body = self._body(event)  # encrypted once: Feishu re-sends the same ciphertext
        for attempt, delay in enumerate((0.0, *self.redelivery_delays)):
            await asyncio.sleep(delay)
            if self._closed:
                return
            record: dict[str, Any] = {
                "event_id": event["header"]["event_id"],
                "attempt": attempt + 1,
                "time": time.time(),
            }
            self.deliveries.append(record)
            try:
                response = await self.deliver_raw(body, url=url)
                record["status"] = response.status_code
                if response.status_code == 200:
                    return
            except httpx.TimeoutException:
                record["status"] = "timeout"
            except httpx.HTTPError as exc:
                record["status"] = f"error: {type(exc).__name__}"
        self.undelivered.append(event)

    def _body(self, payload: dict[str, Any]) -> bytes:
        plaintext = json.dumps(payload, ensure_ascii=False)
        if self.encrypt_key:
            return json.dumps({"encrypt": encrypt(plaintext, self.encrypt_key)}).encode()
        return plaintext.encode()

    def signed_headers(self, body: bytes, *, timestamp: int | None = None, key: str | None = None) -> dict[str, str]:
        stamp = str(int(time.time()) if timestamp is None else timestamp)
        nonce = secrets.token_hex(8)
        headers = {"Content-Type": "application/json", "X-Lark-Request-Timestamp": stamp, "X-Lark-Request-Nonce": nonce}
        signing_key = key if key is not None else self.encrypt_key
        if signing_key:
            headers["X-Lark-Signature"] = sign(stamp, nonce, signing_key, body)
        return headers

    def event_body(self, payload: dict[str, Any]) -> bytes:
        """The bytes Feishu would POST for this payload (encrypted when an Encrypt Key is set)."""
        return self._body(payload)

    async def deliver_raw(
        self, body: bytes, *, headers: dict[str, str] | None = None, signed: bool = True, url: str | None = None
    ) -> httpx.Response:
        """POST bytes to the event URL once, signed unless told otherwise or given explicit headers."""
        target = url or self.event_url
        if target is None or self._client is None:
            raise RuntimeError("no event URL subscribed, or the fake is not started")
        if headers is None:
            headers = self.signed_headers(body) if signed else {"Content-Type": "application/json"}
        return await self._client.post(target, content=body, headers=headers)

    # ------------------------------------------------------------------ what the bot did

    def sent_to(self, chat_id: str) -> list[dict[str, Any]]:
        return [item for item in self.sent if item["chat_id"] == chat_id]

    def shown_in(self, chat_id: str) -> list[str]:
        """What the chat shows now, in order: each bot message's text, a card entity's as it is now
        (after its streamed updates), recalled messages left out."""
        shown = []
        for item in self.sent_to(chat_id):
            message = self._messages.get(item["message_id"])
            if message is None or message.recalled:
                continue
            shown.append(self.cardkit.get(item["card_id"]).text() if item.get("card_id") else item["text"])
        return shown

    def _recall_own(self, message_id: str) -> dict[str, Any]:
        message = self._messages.get(message_id)
        if message is None or message.recalled:
            raise FeishuApiError(230011, "The message was recalled or deleted.")
        if not message.from_bot:
            raise FeishuApiError(230027, "Lack of necessary permissions: the bot can only recall its own messages")
        message.recalled = True
        return {"code": 0, "msg": "success", "data": {}}

    def calls_to(self, api: str) -> list[dict[str, Any]]:
        return [call for call in self.calls if call["api"] == api]

    async def wait_for_sent(
        self, count: int, *, chat_id: str | None = None, timeout: float = 30
    ) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while True:
            items = self.sent_to(chat_id) if chat_id is not None else list(self.sent)
            if len(items) >= count:
                return items
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                where = f" to chat {chat_id}" if chat_id is not None else ""
                raise TimeoutError(
                    f"expected {count} sent message(s){where} within {timeout}s, got {[item['text'] for item in items]}"
                )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._sent_changed.wait(), remaining)

    async def wait_sent_after(self, after_index: int, chat_id: str | None, timeout: float) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while True:
            items = [i for i in self.sent[after_index + 1 :] if chat_id is None or i["chat_id"] == chat_id]
            remaining = deadline - time.monotonic()
            if items or remaining <= 0 or self._closed:
                return items
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._sent_changed.wait(), remaining)

    def _notify(self) -> None:
        self._sent_changed.set()
        self._sent_changed = asyncio.Event()

    # ------------------------------------------------------------------ failure injection and tokens

    def fail_next(
        self,
        api: str,
        *,
        code: int,
        msg: str = "",
        http_status: int = 400,
        retry_after: int | None = None,
        times: int = 1,
    ) -> None:
        """The next `times` calls of api ("token", "send", "reply", "download", "bot_info") fail so.
        With retry_after, the answer carries the gateway's x-ogw-ratelimit-* headers."""
        headers = {"x-ogw-ratelimit-limit": "5", "x-ogw-ratelimit-reset": str(retry_after)} if retry_after else {}
        queue = self._failures.setdefault(api, deque())
        queue.extend(
            FeishuApiError(code, msg or f"injected failure {code}", http_status=http_status, headers=headers)
            for _ in range(times)
        )

    def fail_for(
        self,
        apis: Iterable[str],
        seconds: float,
        *,
        code: int,
        msg: str = "",
        http_status: int = 400,
        retry_after: int | None = None,
    ) -> None:
        """Every call of `apis` fails so for the next `seconds` (an outage, or a long rate limit with
        the gateway's headers when retry_after is given), however many calls are made meanwhile."""
        headers = {"x-ogw-ratelimit-limit": "5", "x-ogw-ratelimit-reset": str(retry_after)} if retry_after else {}
        error = FeishuApiError(code, msg or f"injected failure {code}", http_status=http_status, headers=headers)
        self._failure_windows.append((time.monotonic() + seconds, frozenset(apis), error))

    def _window_failure(self, api: str) -> FeishuApiError | None:
        now = time.monotonic()
        self._failure_windows = [w for w in self._failure_windows if w[0] > now]
        return next((error for _, apis, error in self._failure_windows if api in apis), None)

    def expire_tokens(self) -> None:
        """Every tenant token issued so far stops working now (as if it had expired)."""
        for token in self._tokens:
            token.revoked = True

    def _issue_token(self) -> tuple[str, int]:
        now = time.time()
        current = next((t for t in reversed(self._tokens) if t.valid(now)), None)
        if current is not None and current.expires_at - now > TOKEN_REUSE_S:
            return current.value, int(current.expires_at - now)
        token = _Token(f"t-{secrets.token_hex(20)}", now + self.token_ttl_s)
        self._tokens.append(token)
        self.tokens_issued.append(token.value)
        return token.value, int(self.token_ttl_s)

    def _authorize(self, request: Request) -> None:
        auth = request.headers.get("authorization", "")
        if not auth.startswith("Bearer ") or not auth[7:].strip():
            raise FeishuApiError(
                99991661, "Missing access token for authorization. Please make a request with token attached."
            )
        value = auth[7:].strip()
        now = time.time()
        if not any(t.value == value and t.valid(now) for t in self._tokens):
            raise FeishuApiError(
                99991663, "Invalid access token for authorization. Please make a request with token attached."
            )

    # ------------------------------------------------------------------ HTTP

    def _build_app(self) -> FastAPI:
        app = FastAPI(title="fake Feishu Open Platform", docs_url=None, redoc_url=None, openapi_url=None)

        @app.post("/open-apis/auth/v3/tenant_access_token/internal")
        async def tenant_token(request: Request) -> Response:
            return await self._api("token", request, self._token_endpoint, authorize=False)

        @app.post("/open-apis/im/v1/messages")
        async def send(request: Request) -> Response:
            return await self._api("send", request, self._send)

        @app.post("/open-apis/im/v1/messages/{message_id}/reply")
        async def reply(message_id: str, request: Request) -> Response:
            return await self._api("reply", request, lambda body, call: self._reply(message_id, body, call))

        @app.delete("/open-apis/im/v1/messages/{message_id}")
        async def recall(message_id: str, request: Request) -> Response:
            return await self._api("recall", request, lambda _, __: self._recall_own(message_id))

        @app.post("/open-apis/cardkit/v1/cards")
        async def create_card(request: Request) -> Response:
            return await self._api("card_create", request, lambda body, _: self.cardkit.create(body))

        @app.put("/open-apis/cardkit/v1/cards/{card_id}/elements/{element_id}/content")
        async def card_content(card_id: str, element_id: str, request: Request) -> Response:
            handler = lambda body, _: self.cardkit.update_content(card_id, element_id, body)  # noqa: E731
            return await self._api("card_content", request, handler)

        @app.delete("/open-apis/cardkit/v1/cards/{card_id}/elements/{element_id}")
        async def card_element_delete(card_id: str, element_id: str, request: Request) -> Response:
            handler = lambda body, _: self.cardkit.delete_element(card_id, element_id, body)  # noqa: E731
            return await self._api("card_element_delete", request, handler)

        @app.patch("/open-apis/cardkit/v1/cards/{card_id}/settings")
        async def card_settings(card_id: str, request: Request) -> Response:
            return await self._api("card_settings", request, lambda body, _: self.cardkit.settings(card_id, body))

        @app.put("/open-apis/cardkit/v1/cards/{card_id}")
        async def card_update(card_id: str, request: Request) -> Response:
            return await self._api("card_update", request, lambda body, _: self.cardkit.replace(card_id, body))

        @app.get("/open-apis/im/v1/messages/{message_id}/resources/{file_key}")
        async def resource(message_id: str, file_key: str, request: Request) -> Response:
            kind = request.query_params.get("type")
            return await self._api("download", request, lambda _, __: self._download(message_id, file_key, kind))

        @app.get("/open-apis/bot/v3/info")
        async def bot_info(request: Request) -> Response:
            bot = {
                "activate_status": 2,
                "app_name": self.bot_name,
                "avatar_url": "",
                "ip_white_list": [],
                "open_id": self.bot_open_id,
            }
            return await self._api("bot_info", request, lambda _, __: {"code": 0, "msg": "ok", "bot": bot})

        add_control_routes(app, self)
        return app

    async def _api(self, api: str, request: Request, handler: _Handler, *, authorize: bool = True) -> Response:
        call: dict[str, Any] = {
            "api": api,
            "path": request.url.path,
            "query": dict(request.query_params),
            "time": time.time(),
        }
        self.calls.append(call)
        try:
            body: dict[str, Any] = {}
            if request.method in ("POST", "PUT", "PATCH", "DELETE"):
                try:
                    body = json.loads(await request.body() or b"{}")
                except ValueError:
                    raise FeishuApiError(9499, "Bad Request: body is not JSON") from None
                call["body"] = body
            window = self._window_failure(api)
            if window is not None:
                raise window
            failures = self._failures.get(api)
            if failures:
                raise failures.popleft()
            if authorize:
                self._authorize(request)
            result = handler(body, call)
        except CardKitError as exc:
            call["code"] = exc.code
            return FeishuApiError(exc.code, exc.msg, http_status=exc.http_status).response()
        except FeishuApiError as exc:
            call["code"] = exc.code
            return exc.response()
        call["code"] = 0
        return result if isinstance(result, Response) else JSONResponse(result)

    def _token_endpoint(self, body: dict[str, Any], call: dict[str, Any]) -> dict[str, Any]:
        if body.get("app_id") != self.app_id:
            raise FeishuApiError(10003, "invalid param: app_id")
        if body.get("app_secret") != self.app_secret:
            raise FeishuApiError(10014, "app secret invalid")
        token, expire = self._issue_token()
        return {"code": 0, "msg": "ok", "tenant_access_token": token, "expire": expire}

    def _send(self, body: dict[str, Any], call: dict[str, Any]) -> dict[str, Any]:
        receive_id_type = call["query"].get("receive_id_type")
        if receive_id_type not in ("chat_id", "open_id", "user_id", "union_id", "email"):
            raise FeishuApiError(99992402, "field validation failed: receive_id_type")
        receive_id = body.get("receive_id")
        if not isinstance(receive_id, str) or not receive_id:
            raise FeishuApiError(99992402, "field validation failed: receive_id is required")
        chat_id = receive_id if receive_id_type == "chat_id" else f"p2p:{receive_id}"
        return self._create(chat_id, body, call, reply_to=None)

    def _reply(self, message_id: str, body: dict[str, Any], call: dict[str, Any]) -> dict[str, Any]:
        target = self._messages.get(message_id)
        if target is None or target.recalled:
            raise FeishuApiError(230011, "The message was recalled or deleted.")
        return self._create(target.chat_id, body, call, reply_to=message_id)

    def _create(
        self, chat_id: str, body: dict[str, Any], call: dict[str, Any], *, reply_to: str | None
    ) -> dict[str, Any]:
        msg_type, content = body.get("msg_type"), body.get("content")
        if msg_type not in MSG_TYPES:
            raise FeishuApiError(230001, f"invalid message content: unknown msg_type {msg_type!r}")
        if not isinstance(content, str):
            raise _content_error("content must be a JSON string")
        size = len(content.encode())
        limit = TEXT_LIMIT_BYTES if msg_type == "text" else CARD_OR_POST_LIMIT_BYTES
        if size > limit:
            raise FeishuApiError(230022, f"The message content exceeds the limit ({size} > {limit} bytes).")
        parsed = _parse_content(msg_type, content)
        card_id = (parsed.get("data") or {}).get("card_id") if parsed.get("type") == "card" else None
        if card_id is not None:
            self.cardkit.get(card_id)
        uuid = body.get("uuid")
        now = time.time()
        if isinstance(uuid, str) and uuid:
            if len(uuid) > 50:
                raise FeishuApiError(99992402, "field validation failed: uuid is longer than 50 characters")
            previous = self._uuids.get(uuid)
            if previous is not None and now - previous[0] < UUID_WINDOW_S:
                call["deduplicated"] = True
                return {"code": 0, "msg": "success", "data": previous[1]}
        message_id = f"om_{secrets.token_hex(16)}"
        if card_id is not None:
            self.cardkit.attach(card_id, message_id)
        self._messages[message_id] = _Message(message_id, chat_id, from_bot=True)
        data = {
            "message_id": message_id,
            "chat_id": chat_id,
            "msg_type": msg_type,
            "parent_id": reply_to or "",
            "create_time": str(int(now * 1000)),
            "sender": {"id": self.app_id, "sender_type": "app"},
        }
        if isinstance(uuid, str) and uuid:
            self._uuids[uuid] = (now, data)
        self.sent.append(
            {
                "index": len(self.sent),
                "message_id": message_id,
                "chat_id": chat_id,
                "msg_type": msg_type,
                "content": parsed,
                "text": self.cardkit.get(card_id).text() if card_id else _visible_text(msg_type, parsed),
                "card_id": card_id,
                "reply_to": reply_to,
                "uuid": uuid,
                "time": now,
            }
        )
        self._notify()
        return {"code": 0, "msg": "success", "data": data}

    def _download(self, message_id: str, file_key: str, resource_type: str | None) -> Response:
        if resource_type not in ("file", "image"):
            raise FeishuApiError(234001, "Invalid request param: type must be file or image.")
        message = self._messages.get(message_id)
        stored = message.resources.get(file_key) if message else None
        if stored is None:
            raise FeishuApiError(234043, "Resource does not belong to the message.")
        return Response(
            stored.content,
            media_type=stored.content_type,
            headers={"Content-Disposition": f'attachment; filename="{stored.file_name}"'},
        )


def _button_values(card: Any) -> list[dict[str, Any]]:
    """The callback values of a card JSON 2.0's buttons (callback behaviours; old-style `value` too)."""
    if not isinstance(card, dict):
        return []
    elements = (card.get("body") or {}).get("elements") or []
    values: list[dict[str, Any]] = []
    for element in elements:
        if not isinstance(element, dict) or element.get("tag") != "button":
            continue
        for behavior in element.get("behaviors") or []:
            if isinstance(behavior, dict) and behavior.get("type") == "callback":
                values.append(behavior.get("value") or {})
        if isinstance(element.get("value"), dict):
            values.append(element["value"])
    return values


def _parse_content(msg_type: str, content: str) -> Any:
    try:
        parsed = json.loads(content)
    except ValueError:
        raise _content_error("content is not JSON") from None
    if not isinstance(parsed, dict):
        raise _content_error("content is not a JSON object")
    if msg_type == "text" and not (isinstance(parsed.get("text"), str) and parsed["text"].strip()):
        raise _content_error("text content needs a non-empty 'text'")
    if msg_type == "interactive":
        if parsed.get("type") == "card":  # a CardKit card entity, by id
            if not isinstance((parsed.get("data") or {}).get("card_id"), str):
                raise FeishuApiError(230099, "Failed to create card content: data.card_id is required")
        elif parsed.get("schema") == "2.0":
            elements = (parsed.get("body") or {}).get("elements")
            if not isinstance(elements, list) or not elements:
                raise FeishuApiError(230099, "Failed to create card content: body.elements is required")
            for element in elements:
                if element.get("tag") == "markdown" and not isinstance(element.get("content"), str):
                    raise FeishuApiError(230099, "Failed to create card content: markdown needs content")
        elif not isinstance(parsed.get("elements"), list):
            raise FeishuApiError(230099, "Failed to create card content: no elements")
    if msg_type == "post":
        document = parsed if "content" in parsed else next(iter(parsed.values()), None)
        if not isinstance(document, dict) or not isinstance(document.get("content"), list):
            raise _content_error("post needs {locale: {title, content: [[...]]}}")
    return parsed


def _visible_text(msg_type: str, parsed: dict[str, Any]) -> str:
    """What a user would read, for assertions: the text, a card's markdown, or a post's text runs."""
    if msg_type == "text":
        return parsed["text"]
    if msg_type == "interactive":
        elements = (parsed.get("body") or {}).get("elements") or parsed.get("elements") or []
        # The card's text, not its buttons' labels (a Stop or Regenerate button is not the answer).
        texts = [
            e.get("content") or (e.get("text") or {}).get("content") or "" for e in elements if e.get("tag") != "button"
        ]
        return "\n".join(t for t in texts if t)
    if msg_type == "post":
        document = parsed if "content" in parsed else next(iter(parsed.values()))
        return "\n".join("".join(str(e.get("text", "")) for e in line) for line in document.get("content", []))
    return ""
