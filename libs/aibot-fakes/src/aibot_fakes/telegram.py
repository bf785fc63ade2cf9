"""A fake Telegram Bot API server: the real HTTP protocol, simulated users, and a record of what the bot did.

It behaves like a self-hosted (`--local`) Bot API server: webhooks may be plain http on any port, so a
product configured with this base URL talks to it exactly as it would talk to api.telegram.org.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import re
import secrets
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

import httpx
from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse

from aibot_fakes.server import PlatformFake
from aibot_fakes.telegram_control import add_control_routes
from aibot_fakes.telegram_flood import LIMITED_METHODS, FloodControl, FloodLimits
from aibot_fakes.telegram_markup import EntityParseError, detect_entities, format_text, utf16_len
from aibot_fakes.telegram_params import ApiError, bad_request, coerce_params, read_params, require_int

MAX_TEXT_UTF16 = 4096
MAX_DOWNLOAD_BYTES = 20 * 1024 * 1024  # getFile's limit on the public Bot API server
DEFAULT_GROUP_USER_ID = 1001
# Telegram sends every kind of update except these unless allowed_updates asks for them.
NOT_SENT_BY_DEFAULT = frozenset({"chat_member", "message_reaction", "message_reaction_count"})
CHAT_ACTIONS = frozenset(
    {
        "typing",
        "upload_photo",
        "record_video",
        "upload_video",
        "record_voice",
        "upload_voice",
        "upload_document",
        "choose_sticker",
        "find_location",
        "record_video_note",
        "upload_video_note",
    }
)
_SECRET_TOKEN_RE = re.compile(r"[A-Za-z0-9_-]{1,256}")
_NOT_MODIFIED = (
    "message is not modified: specified new message content and reply markup are exactly the same as a "
    "current content and reply markup of the message"
)
_POLL_CONFLICT = "Conflict: terminated by other getUpdates request; make sure that only one bot instance is running"
_WEBHOOK_CONFLICT = (
    "Conflict: can't use getUpdates method while webhook is active; use deleteWebhook to delete the webhook first"
)


@dataclass
class _Described:
    """A successful answer that also carries Telegram's "description" (setWebhook, deleteWebhook)."""

    result: Any
    description: str


@dataclass
class _StoredFile:
    file_id: str
    file_unique_id: str
    file_path: str
    content: bytes


Handler = Callable[[dict[str, Any]], Awaitable[Any]]


def _jsonable(params: dict[str, Any]) -> dict[str, Any]:
    return {k: f"<{len(v)} bytes>" if isinstance(v, bytes) else v for k, v in params.items()}


class FakeTelegram(PlatformFake):
    # Telegram publishes no redelivery schedule (it keeps an update up to 24 h); this one is quick enough
    # for tests, still backs off, and lasts about a minute so a receiver that restarts does not lose updates.
    redelivery_delays: tuple[float, ...] = (0.2, 0.5, 1.0, 2.0, 4.0, 5.0)
    max_delivery_attempts: int = 15
    webhook_timeout_s: float = 10.0

    def __init__(
        self,
        token: str = "123456:TEST-TOKEN",  # noqa: S107 - a fake's well-known test token
        *,
        bot_username: str = "aibot_test_bot",
        bot_first_name: str = "AI Bot",
        strict_chats: bool = False,
        flood_limits: FloodLimits | None = None,
    ) -> None:
        super().__init__()
        bot_id, sep, _ = token.partition(":")
        if not sep or not bot_id.isdigit():
            raise ValueError("a bot token looks like '<bot id>:<secret>'")
        self.token = token
        self.bot_id = int(bot_id)
        self.bot_username = bot_username
        self.bot_first_name = bot_first_name
        # Telegram answers "chat not found" to a bot that never met the chat; off by default so a test
        # may send to any chat without simulating a user first.
        self.strict_chats = strict_chats
        # Off by default: most tests are about other things, and the real limits make them slow.
        self.flood = FloodControl(flood_limits) if flood_limits is not None else None
        # Drafts shown now, per (chat, draft_id): Telegram keeps one ~30 s unless refreshed, and a
        # message the bot sends to the chat takes the draft's place.
        self.draft_ttl_s = 30.0
        self._live_drafts: dict[tuple[int, int], dict[str, Any]] = {}

        self.sent: list[dict[str, Any]] = []
        self.markup_edits: list[dict[str, Any]] = []  # editMessageReplyMarkup: buttons changed, not text
        self.calls: list[dict[str, Any]] = []
        self.drafts: list[dict[str, Any]] = []
        self.callback_answers: list[dict[str, Any]] = []
        self.undelivered: list[dict[str, Any]] = []  # webhook updates given up on after max_delivery_attempts
        self.webhook: dict[str, Any] | None = None
        self.commands: list[dict[str, Any]] = []

        self._update_id = 100_000_000
        self._pending: OrderedDict[int, dict[str, Any]] = OrderedDict()
        self._allowed_updates: list[str] = []
        self._hook_generation = 0
        self._hook_slots = asyncio.Semaphore(40)
        self._chat_locks: dict[int | None, asyncio.Lock] = {}
        self._last_error: tuple[int, str] | None = None
        self._poll_generation = 0
        self._updates_changed = asyncio.Event()
        self._sent_changed = asyncio.Event()

        self._chats: dict[int, dict[str, Any]] = {}
        self._messages: dict[tuple[int, int], dict[str, Any]] = {}
        self._bot_messages: set[tuple[int, int]] = set()
        self._next_message_id: dict[int, int] = {}
        self._files: dict[str, _StoredFile] = {}
        self._files_by_path: dict[str, _StoredFile] = {}
        self._callback_queries: dict[str, bool] = {}  # id -> answered
        self._failures: dict[str, deque[ApiError]] = {}
        # (until, lower-case methods, error): every call of those methods fails so until `until`.
        self._failure_windows: list[tuple[float, frozenset[str], ApiError]] = []

        self._methods: dict[str, tuple[str, Handler]] = {}
        for name, handler in {
            "getMe": self._get_me,
            "getUpdates": self._get_updates,
            "setWebhook": self._set_webhook,
            "deleteWebhook": self._delete_webhook,
            "getWebhookInfo": self._get_webhook_info,
            "sendMessage": self._send_message,
            "editMessageText": self._edit_message_text,
            "editMessageReplyMarkup": self._edit_message_reply_markup,
            "sendMessageDraft": self._send_message_draft,
            "deleteMessage": self._delete_message,
            "sendChatAction": self._send_chat_action,
            "answerCallbackQuery": self._answer_callback_query,
            "getFile": self._get_file,
            "getChat": self._get_chat,
            "setMyCommands": self._set_my_commands,
            "getMyCommands": self._get_my_commands,
            "deleteMyCommands": self._delete_my_commands,
        }.items():
            self._methods[name.lower()] = (name, handler)  # Bot API method names are case-insensitive
        self.app = self._build_app()

    # ------------------------------------------------------------------ lifecycle

    @property
    def client_timeout_s(self) -> float:
        return self.webhook_timeout_s

    def _wake_waiters(self) -> None:
        self._wake_pollers()
        self._sent_changed.set()  # ends long polls of GET /_fake/sent

    # ------------------------------------------------------------------ simulated users

    def _user(self, user_id: int, first_name: str = "Test") -> dict[str, Any]:
        return {"id": user_id, "is_bot": False, "first_name": first_name, "language_code": "en"}

    def _bot_user(self) -> dict[str, Any]:
        return {"id": self.bot_id, "is_bot": True, "first_name": self.bot_first_name, "username": self.bot_username}

    def _user_chat(self, chat_id: int, chat_type: str, first_name: str) -> dict[str, Any]:
        if chat_id in self._chats:
            return self._chats[chat_id]
        if chat_type == "private":
            if chat_id <= 0:
                raise ValueError("a private chat's id is the user's id, a positive number")
            chat: dict[str, Any] = {"id": chat_id, "type": "private", "first_name": first_name}
        elif chat_type in ("group", "supergroup", "channel"):
            if chat_id >= 0:
                raise ValueError("group, supergroup and channel ids are negative")
            chat = {"id": chat_id, "type": chat_type, "title": f"Test {chat_type} {chat_id}"}
        else:
            raise ValueError(f"unknown chat type {chat_type!r}")
        self._chats[chat_id] = chat
        return chat

    def _sender(self, chat: dict[str, Any], user_id: int | None, first_name: str = "Test") -> dict[str, Any]:
        if user_id is None:
            user_id = chat["id"] if chat["type"] == "private" else DEFAULT_GROUP_USER_ID
        return self._user(user_id, first_name)

    def _new_message_id(self, chat_id: int) -> int:
        next_id = self._next_message_id.get(chat_id, 1)
        self._next_message_id[chat_id] = next_id + 1
        return next_id

    def _store(self, message: dict[str, Any], *, from_bot: bool) -> dict[str, Any]:
        key = (message["chat"]["id"], message["message_id"])
        self._messages[key] = message
        if from_bot:
            self._bot_messages.add(key)
        return copy.deepcopy(message)

    def _reply_copy(self, chat_id: int, message_id: int) -> dict[str, Any] | None:
        stored = self._messages.get((chat_id, message_id))
        if stored is None:
            return None
        replied = copy.deepcopy(stored)
        replied.pop("reply_to_message", None)  # Telegram nests one level only
        return replied

    def user_sends_text(
        self,
        chat_id: int,
        text: str,
        *,
        user_id: int | None = None,
        chat_type: str = "private",
        reply_to_message_id: int | None = None,
        first_name: str = "Test",
    ) -> dict[str, Any]:
        chat = self._user_chat(chat_id, chat_type, first_name)
        message: dict[str, Any] = {
            "message_id": self._new_message_id(chat_id),
            "from": self._sender(chat, user_id, first_name),
            "chat": copy.deepcopy(chat),
            "date": int(time.time()),
            "text": text,
        }
        entities = detect_entities(text)
        if entities:
            message["entities"] = entities
        if reply_to_message_id is not None:
            replied = self._reply_copy(chat_id, reply_to_message_id)
            if replied is None:
                raise ValueError(f"no message {reply_to_message_id} in chat {chat_id} to reply to")
            message["reply_to_message"] = replied
        return self._emit({"message": self._store(message, from_bot=False)})

    def user_edits_text(
        self, chat_id: int, message_id: int, text: str, *, user_id: int | None = None
    ) -> dict[str, Any]:
        key = (chat_id, message_id)
        stored = self._messages.get(key)
        if stored is None or key in self._bot_messages:
            raise ValueError(f"no user message {message_id} in chat {chat_id} to edit")
        if user_id is not None and stored["from"]["id"] != user_id:
            raise ValueError("a user can only edit their own messages")
        stored["text"] = text
        stored.pop("entities", None)
        entities = detect_entities(text)
        if entities:
            stored["entities"] = entities
        stored["edit_date"] = int(time.time())
        return self._emit({"edited_message": copy.deepcopy(stored)})

    def user_presses_button(
        self, chat_id: int, message_id: int, data: str, *, user_id: int | None = None
    ) -> dict[str, Any]:
        key = (chat_id, message_id)
        stored = self._messages.get(key)
        chat = self._chats.get(chat_id) or self._user_chat(chat_id, "private" if chat_id > 0 else "supergroup", "Test")
        if stored is None:
            # A message the bot can no longer see: Telegram sends it as inaccessible, with date 0.
            message: dict[str, Any] = {"chat": copy.deepcopy(chat), "message_id": message_id, "date": 0}
        else:
            buttons = [
                button.get("callback_data")
                for row in stored.get("reply_markup", {}).get("inline_keyboard", [])
                for button in row
            ]
            if data not in buttons:
                raise ValueError(f"message {message_id} in chat {chat_id} has no button with callback_data {data!r}")
            message = copy.deepcopy(stored)
        query_id = str(secrets.randbelow(10**18) + 10**18)
        self._callback_queries[query_id] = False
        query = {
            "id": query_id,
            "from": self._sender(chat, user_id),
            "message": message,
            "chat_instance": str(-abs(chat_id) * 7919 - 1),
            "data": data,
        }
        return self._emit({"callback_query": query})

    def add_file(self, content: bytes, *, file_path: str | None = None) -> str:
        number = len(self._files)
        stored = _StoredFile(
            file_id="AwACAgIAAxkBAAI" + secrets.token_urlsafe(32),
            file_unique_id="AgAD" + secrets.token_urlsafe(9),
            file_path=file_path or f"documents/file_{number}",
            content=bytes(content),
        )
        self._files[stored.file_id] = stored
        self._files_by_path[stored.file_path] = stored
        return stored.file_id

    def user_sends_voice(
        self,
        chat_id: int,
        audio: bytes,
        *,
        duration: int,
        mime_type: str = "audio/ogg",
        user_id: int | None = None,
    ) -> dict[str, Any]:
        chat = self._user_chat(chat_id, "private" if chat_id > 0 else "supergroup", "Test")
        file_id = self.add_file(audio, file_path=f"voice/file_{len(self._files)}.oga")
        stored = self._files[file_id]
        message = {
            "message_id": self._new_message_id(chat_id),
            "from": self._sender(chat, user_id),
            "chat": copy.deepcopy(chat),
            "date": int(time.time()),
            "voice": {
                "file_id": file_id,
                "file_unique_id": stored.file_unique_id,
                "duration": duration,
                "mime_type": mime_type,
                "file_size": len(audio),
            },
        }
        return self._emit({"message": self._store(message, from_bot=False)})

    # ------------------------------------------------------------------ update delivery

    def _allowed(self, kind: str) -> bool:
        if self._allowed_updates:
            return kind in self._allowed_updates
        return kind not in NOT_SENT_BY_DEFAULT

    def _emit(self, payload: dict[str, Any]) -> dict[str, Any]:
        self._update_id += 1
        update = {"update_id": self._update_id, **payload}
        kind = next(iter(payload))
        if self._allowed(kind):  # Telegram never creates updates the bot did not ask for
            self._pending[self._update_id] = copy.deepcopy(update)
            self._wake_pollers()
            if self.webhook is not None and not self._closed:
                self._spawn(self._deliver(self._update_id, self._hook_generation))
        return update

    def _wake_pollers(self) -> None:
        self._updates_changed.set()
        self._updates_changed = asyncio.Event()

    def deliveries_pending(self) -> int:
        return len(self._pending) if self.webhook is not None else 0

    def _chat_of(self, update_id: int) -> int | None:
        update = self._pending.get(update_id) or {}
        for kind in ("message", "edited_message", "channel_post", "edited_channel_post"):
            if kind in update:
                return update[kind]["chat"]["id"]
        message = (update.get("callback_query") or {}).get("message")
        return message["chat"]["id"] if message else None

    async def _deliver(self, update_id: int, generation: int) -> None:
        # Like the Bot API server, updates of one chat go out one at a time, in order (the next only
        # after the previous was acknowledged); different chats are delivered in parallel.
        chat_id = self._chat_of(update_id)
        lock = self._chat_locks.setdefault(chat_id, asyncio.Lock()) if chat_id is not None else None
        if lock is None:
            await self._deliver_now(update_id, generation)
            return
        async with lock:
            await self._deliver_now(update_id, generation)

    async def _deliver_now(self, update_id: int, generation: int) -> None:
        attempt = 0
        while True:
            if generation != self._hook_generation or self.webhook is None or update_id not in self._pending:
                return  # webhook changed or removed: the update waits for the next consumer
            async with self._hook_slots:
                error = await self._post_update(self.webhook, self._pending.get(update_id))
            if error is None:
                self._pending.pop(update_id, None)
                return
            self._last_error = (int(time.time()), error)
            attempt += 1
            if attempt >= self.max_delivery_attempts:
                dropped = self._pending.pop(update_id, None)
                if dropped is not None:
                    self.undelivered.append(dropped)
                return
            await asyncio.sleep(self.redelivery_delays[min(attempt, len(self.redelivery_delays)) - 1])

    async def _post_update(self, webhook: dict[str, Any], update: dict[str, Any] | None) -> str | None:
        """One delivery; None when the receiver answered 2xx, else the error getWebhookInfo reports."""
        if update is None:
            return None  # confirmed meanwhile (e.g. drop_pending_updates)
        if self._client is None:
            return "the fake is stopped"
        headers = {"Content-Type": "application/json"}
        if webhook.get("secret_token"):
            headers["X-Telegram-Bot-Api-Secret-Token"] = webhook["secret_token"]
        try:
            response = await self._client.post(webhook["url"], content=json.dumps(update), headers=headers)
        except httpx.TimeoutException:
            return "Read timeout expired"
        except httpx.HTTPError as exc:
            return f"Connection failed: {exc.__class__.__name__}"
        if not 200 <= response.status_code < 300:
            return f"Wrong response from the webhook: {response.status_code} {response.reason_phrase}"
        await self._run_webhook_reply(response)
        return None

    async def _run_webhook_reply(self, response: httpx.Response) -> None:
        """Telegram performs a method call given in the webhook's answer ({"method": ..., params}).

        Its outcome is not reported to anyone, so errors are only recorded in `calls`.
        """
        if not response.headers.get("content-type", "").startswith("application/json"):
            return
        try:
            body = response.json()
        except ValueError:
            return
        if not isinstance(body, dict) or not isinstance(body.get("method"), str):
            return
        entry = self._methods.get(body["method"].lower())
        if entry is None:
            return
        name, handler = entry
        params = {key: value for key, value in body.items() if key != "method"}
        call: dict[str, Any] = {"method": name, "params": params, "time": time.time(), "via": "webhook answer"}
        self.calls.append(call)
        try:
            await handler(coerce_params(params))
        except ApiError as exc:
            call["error"] = exc.body()

    async def deliver_raw(self, body: bytes, *, secret_token: str | None) -> httpx.Response:
        """POST arbitrary bytes to the webhook once, as Telegram would, to test malformed input."""
        if self.webhook is None or self._client is None:
            raise RuntimeError("no webhook is set (call setWebhook first) or the fake is not started")
        headers = {"Content-Type": "application/json"}
        if secret_token is not None:
            headers["X-Telegram-Bot-Api-Secret-Token"] = secret_token
        return await self._client.post(self.webhook["url"], content=body, headers=headers)

    # ------------------------------------------------------------------ what the bot did

    def live_drafts(self, chat_id: int) -> list[str]:
        """The texts of the drafts a user of this chat sees now (not yet expired nor finished)."""
        now = time.monotonic()
        return [d["plain_text"] for (chat, _), d in self._live_drafts.items() if chat == chat_id and d["until"] > now]

    def shown_in(self, chat_id: int) -> list[str]:
        """The bot's messages in this chat as they read now (after edits and deletions), in order."""
        return [
            self._messages[key]["text"]
            for key in sorted(self._bot_messages)
            if key[0] == chat_id and key in self._messages
        ]

    def sent_to(self, chat_id: int) -> list[dict[str, Any]]:
        return [item for item in self.sent if item["chat_id"] == chat_id]

    async def wait_for_sent(
        self,
        count: int,
        *,
        chat_id: int | None = None,
        timeout: float = 30,
    ) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while True:
            items = self.sent_to(chat_id) if chat_id is not None else list(self.sent)
            if len(items) >= count:
                return items
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                where = f" to chat {chat_id}" if chat_id is not None else ""
                texts = [item["text"] for item in items]
                raise TimeoutError(f"expected {count} sent message(s){where} within {timeout}s, got {texts}")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._sent_changed.wait(), remaining)

    def _record_sent(
        self, method: str, params: dict[str, Any], message: dict[str, Any], into: list[dict[str, Any]] | None = None
    ) -> None:
        reply = message.get("reply_to_message")
        target = self.sent if into is None else into
        target.append(
            {
                "index": len(target),
                "method": method,
                "chat_id": message["chat"]["id"],
                "text": params.get("text"),
                "entities": params.get("entities"),
                "parse_mode": params.get("parse_mode"),
                "reply_to_message_id": reply["message_id"] if reply else None,
                "message_id": message["message_id"],
                "time": time.time(),
                "plain_text": message["text"],
                "message_entities": message.get("entities", []),
                "reply_markup": params.get("reply_markup"),
            }
        )
        self._sent_changed.set()
        self._sent_changed = asyncio.Event()

    async def wait_sent_after(
        self,
        after_index: int,
        chat_id: int | None,
        timeout: float,
    ) -> list[dict[str, Any]]:
        """Sent items with index > after_index, waiting up to timeout for the first one (a long poll)."""
        deadline = time.monotonic() + timeout
        while True:
            items = [item for item in self.sent[after_index + 1 :] if chat_id is None or item["chat_id"] == chat_id]
            remaining = deadline - time.monotonic()
            if items or remaining <= 0 or self._closed:
                return items
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._sent_changed.wait(), remaining)

    # ------------------------------------------------------------------ failure injection

    def fail_next(
        self,
        method: str,
        *,
        error_code: int,
        description: str,
        retry_after: int | None = None,
        times: int = 1,
    ) -> None:
        parameters = {"retry_after": retry_after} if retry_after is not None else None
        queue = self._failures.setdefault(method.lower(), deque())
        queue.extend(ApiError(error_code, description, parameters) for _ in range(times))

    def fail_for(
        self,
        methods: Iterable[str],
        seconds: float,
        *,
        error_code: int,
        description: str,
        retry_after: int | None = None,
    ) -> None:
        """Every call of `methods` fails so for the next `seconds`: an outage or a long flood ban, not
        a count of bad answers (how many calls a client makes in that time is its own business)."""
        parameters = {"retry_after": retry_after} if retry_after is not None else None
        error = ApiError(error_code, description, parameters)
        self._failure_windows.append((time.monotonic() + seconds, frozenset(m.lower() for m in methods), error))

    def _window_failure(self, method: str) -> ApiError | None:
        now = time.monotonic()
        self._failure_windows = [w for w in self._failure_windows if w[0] > now]
        return next((error for _, methods, error in self._failure_windows if method in methods), None)

    # ------------------------------------------------------------------ HTTP

    def _build_app(self) -> FastAPI:
        app = FastAPI(title="fake Telegram Bot API", docs_url=None, redoc_url=None, openapi_url=None)

        @app.api_route("/bot{token}/{method}", methods=["GET", "POST"])
        async def api(token: str, method: str, request: Request) -> Response:
            return await self._api(token, method, request)

        @app.get("/file/bot{token}/{file_path:path}")
        async def download(token: str, file_path: str) -> Response:
            if token != self.token:
                return JSONResponse(ApiError(401, "Unauthorized").body(), status_code=401)
            stored = self._files_by_path.get(file_path)
            if stored is None:
                return JSONResponse(ApiError(404, "Not Found").body(), status_code=404)
            media_type = "audio/ogg" if file_path.endswith((".oga", ".ogg")) else "application/octet-stream"
            return Response(stored.content, media_type=media_type)

        add_control_routes(app, self)
        return app

    async def _api(self, token: str, method: str, request: Request) -> Response:
        if token != self.token:
            return JSONResponse(ApiError(401, "Unauthorized").body(), status_code=401)
        entry = self._methods.get(method.lower())
        if entry is None:
            return JSONResponse(ApiError(404, "Not Found").body(), status_code=404)
        name, handler = entry
        call: dict[str, Any] = {"method": name, "params": {}, "time": time.time()}
        self.calls.append(call)
        try:
            params = await read_params(request)
            call["params"] = _jsonable(params)
            window = self._window_failure(name.lower())
            if window is not None:
                raise window
            failures = self._failures.get(name.lower())
            if failures:
                raise failures.popleft()
            if self.flood is not None and name.lower() in LIMITED_METHODS:
                chat_id = params.get("chat_id")
                if isinstance(chat_id, int):
                    self.flood.check(chat_id, is_group=chat_id < 0)
            result = await handler(params)
        except ApiError as exc:
            call["error"] = exc.body()
            # Telegram's 429 names the wait in the body and, as HTTP clients expect, in Retry-After.
            retry_after = (exc.parameters or {}).get("retry_after")
            headers = {"Retry-After": str(retry_after)} if retry_after is not None else None
            return JSONResponse(exc.body(), status_code=exc.error_code, headers=headers)
        if isinstance(result, _Described):
            return JSONResponse({"ok": True, "result": result.result, "description": result.description})
        return JSONResponse({"ok": True, "result": result})

    # ------------------------------------------------------------------ methods: bot and updates

    async def _get_me(self, params: dict[str, Any]) -> dict[str, Any]:
        return {
            **self._bot_user(),
            "can_join_groups": True,
            # Every group message reaches the bot (privacy mode off), which is what the fake delivers.
            "can_read_all_group_messages": True,
            "supports_inline_queries": False,
            "can_connect_to_business": False,
            "has_main_web_app": False,
        }

    def _set_allowed_updates(self, params: dict[str, Any]) -> None:
        allowed = params.get("allowed_updates")
        if allowed is None:
            return  # not given: the previous setting stays
        if not isinstance(allowed, list) or not all(isinstance(kind, str) for kind in allowed):
            raise bad_request("can't parse allowed_updates JSON object")
        self._allowed_updates = list(allowed)

    async def _get_updates(self, params: dict[str, Any]) -> list[dict[str, Any]]:
        if self.webhook is not None:
            raise ApiError(409, _WEBHOOK_CONFLICT)
        offset = params.get("offset") or 0
        limit = min(max(params.get("limit") or 100, 1), 100)
        timeout = max(params.get("timeout") or 0, 0)
        self._set_allowed_updates(params)
        # A new getUpdates ends the one in progress with 409, as on Telegram: only one poller may run.
        self._poll_generation += 1
        generation = self._poll_generation
        self._wake_pollers()
        self._confirm(offset)
        deadline = time.monotonic() + timeout
        while True:
            if generation != self._poll_generation:
                raise ApiError(409, _POLL_CONFLICT)
            if self.webhook is not None:
                raise ApiError(409, _WEBHOOK_CONFLICT)
            updates = [copy.deepcopy(update) for update in self._pending.values()][:limit]
            remaining = deadline - time.monotonic()
            if updates or remaining <= 0 or self._closed:
                return updates
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._updates_changed.wait(), remaining)

    def _confirm(self, offset: int) -> None:
        """offset confirms every update below it; a negative one keeps only the last -offset updates."""
        if offset < 0:
            keep = set(list(self._pending)[offset:])
            for update_id in list(self._pending):
                if update_id not in keep:
                    del self._pending[update_id]
        elif offset > 0:
            for update_id in list(self._pending):
                if update_id < offset:
                    del self._pending[update_id]

    async def _set_webhook(self, params: dict[str, Any]) -> _Described:
        url = params.get("url") or ""
        if not url:
            return await self._delete_webhook(params)
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise bad_request("bad webhook: An HTTPS URL must be provided for webhook")
        secret = params.get("secret_token")
        if secret is not None and not _SECRET_TOKEN_RE.fullmatch(str(secret)):
            raise bad_request("bad webhook: secret token contains unallowed characters")
        max_connections = int(params.get("max_connections") or 40)
        if not 1 <= max_connections <= 100:
            raise bad_request("bad webhook: max_connections must be between 1 and 100")
        self._set_allowed_updates(params)
        if params.get("drop_pending_updates"):
            self._pending.clear()
        unchanged = self.webhook is not None and self.webhook == params
        self.webhook = dict(params)
        if unchanged:
            return _Described(True, "Webhook is already set")
        self._hook_generation += 1
        self._hook_slots = asyncio.Semaphore(max_connections)
        self._last_error = None
        self._wake_pollers()  # a running getUpdates now answers 409
        for update_id in list(self._pending):
            self._spawn(self._deliver(update_id, self._hook_generation))
        return _Described(True, "Webhook was set")

    async def _delete_webhook(self, params: dict[str, Any]) -> _Described:
        if params.get("drop_pending_updates"):
            self._pending.clear()
        was_set = self.webhook is not None
        self.webhook = None
        self._hook_generation += 1
        return _Described(True, "Webhook was deleted" if was_set else "Webhook is already deleted")

    async def _get_webhook_info(self, params: dict[str, Any]) -> dict[str, Any]:
        info: dict[str, Any] = {
            "url": self.webhook["url"] if self.webhook else "",
            "has_custom_certificate": bool(self.webhook and self.webhook.get("certificate")),
            "pending_update_count": len(self._pending),
        }
        if self.webhook is not None:
            info["max_connections"] = int(self.webhook.get("max_connections") or 40)
            if self.webhook.get("ip_address"):
                info["ip_address"] = self.webhook["ip_address"]
            if self._allowed_updates:
                info["allowed_updates"] = list(self._allowed_updates)
            if self._last_error is not None:
                info["last_error_date"], info["last_error_message"] = self._last_error
        return info

    # ------------------------------------------------------------------ methods: messages

    def _chat_for_bot(self, params: dict[str, Any]) -> dict[str, Any]:
        chat_id = params.get("chat_id")
        if chat_id is None or chat_id == "":
            raise bad_request("chat_id is empty")
        if not isinstance(chat_id, int):
            raise bad_request("chat not found")  # @channel usernames: the fake knows no channels
        if chat_id in self._chats:
            return self._chats[chat_id]
        if self.strict_chats or chat_id == 0:
            raise bad_request("chat not found")
        chat_type = "private" if chat_id > 0 else ("supergroup" if str(chat_id).startswith("-100") else "group")
        return self._user_chat(chat_id, chat_type, "Test")

    def _formatted(self, params: dict[str, Any], *, allow_empty: bool = False) -> tuple[str, list[dict[str, Any]]]:
        text = params.get("text")
        if not isinstance(text, str) or (not text and not allow_empty):
            raise bad_request("message text is empty")
        try:
            plain, entities = format_text(text, parse_mode=params.get("parse_mode"), entities=params.get("entities"))
        except EntityParseError as exc:
            raise bad_request(f"can't parse entities: {exc}") from None
        except ValueError:
            raise bad_request("unsupported parse_mode") from None
        if not plain and not allow_empty:
            raise bad_request("message text is empty")
        if utf16_len(plain) > MAX_TEXT_UTF16:
            raise bad_request("message is too long")
        return plain, entities

    def _reply_target(self, chat_id: int, params: dict[str, Any]) -> dict[str, Any] | None:
        reply = params.get("reply_parameters")
        if isinstance(reply, dict):
            message_id, allow = reply.get("message_id"), bool(reply.get("allow_sending_without_reply"))
        elif reply is not None:
            raise bad_request("can't parse reply parameters JSON object")
        else:  # the pre-7.0 form, still accepted by Telegram
            message_id, allow = params.get("reply_to_message_id"), bool(params.get("allow_sending_without_reply"))
        if not message_id:
            return None
        replied = self._reply_copy(chat_id, int(message_id))
        if replied is None and not allow:
            raise bad_request("message to be replied not found")
        return replied

    def _inline_markup(self, params: dict[str, Any]) -> dict[str, Any] | None:
        markup = params.get("reply_markup")
        if markup is None:
            return None
        if not isinstance(markup, dict):
            raise bad_request("can't parse reply keyboard markup JSON object")
        keyboard = markup.get("inline_keyboard")
        if keyboard is None:
            return None  # reply keyboards and force_reply do not show up on the message
        if not isinstance(keyboard, list) or not all(isinstance(row, list) for row in keyboard):
            raise bad_request('can\'t parse inline keyboard markup: field "inline_keyboard" must be an Array')
        for row in keyboard:
            for button in row:
                if not isinstance(button, dict) or not isinstance(button.get("text"), str):
                    raise bad_request('can\'t parse inline keyboard button: Field "text" must be of type String')
                data = button.get("callback_data")
                if data is not None and not 1 <= len(str(data).encode()) <= 64:
                    raise bad_request("BUTTON_DATA_INVALID")
                if len(button) == 1:
                    raise bad_request(
                        "can't parse inline keyboard button: Text buttons are unallowed in the inline keyboard"
                    )
        return markup

    async def _send_message(self, params: dict[str, Any]) -> dict[str, Any]:
        chat = self._chat_for_bot(params)
        plain, entities = self._formatted(params)
        markup = self._inline_markup(params)
        message: dict[str, Any] = {
            "message_id": 0,
            "from": self._bot_user(),
            "chat": copy.deepcopy(chat),
            "date": int(time.time()),
        }
        replied = self._reply_target(chat["id"], params)
        if replied is not None:
            message["reply_to_message"] = replied
        message["text"] = plain
        if entities:
            message["entities"] = entities
        if markup is not None:
            message["reply_markup"] = markup
        message["message_id"] = self._new_message_id(chat["id"])
        stored = self._store(message, from_bot=True)
        for key in [k for k in self._live_drafts if k[0] == chat["id"]]:
            del self._live_drafts[key]  # the message finishes the draft
        self._record_sent("sendMessage", params, stored)
        return stored

    def _editable(self, params: dict[str, Any]) -> dict[str, Any]:
        """The bot's own message an edit names, as Telegram finds it (or refuses to)."""
        if params.get("inline_message_id"):
            raise bad_request("MESSAGE_ID_INVALID")  # the fake has no inline mode
        chat = self._chat_for_bot(params)
        message_id = require_int(params, "message_id")
        key = (chat["id"], message_id)
        stored = self._messages.get(key)
        if stored is None:
            raise bad_request("message to edit not found")
        if key not in self._bot_messages:
            raise bad_request("message can't be edited")
        return stored

    async def _edit_message_text(self, params: dict[str, Any]) -> dict[str, Any]:
        stored = self._editable(params)
        plain, entities = self._formatted(params)
        markup = self._inline_markup(params)
        if plain == stored["text"] and entities == stored.get("entities", []) and markup == stored.get("reply_markup"):
            raise bad_request(_NOT_MODIFIED)
        stored["text"] = plain
        stored.pop("entities", None)
        if entities:
            stored["entities"] = entities
        # An edit without reply_markup removes the inline keyboard, as on Telegram.
        stored.pop("reply_markup", None)
        if markup is not None:
            stored["reply_markup"] = markup
        stored["edit_date"] = int(time.time())
        self._record_sent("editMessageText", params, stored)
        return copy.deepcopy(stored)

    async def _edit_message_reply_markup(self, params: dict[str, Any]) -> dict[str, Any]:
        """Only the buttons change (none given: the keyboard goes); recorded in `markup_edits`."""
        stored = self._editable(params)
        markup = self._inline_markup(params)
        if markup == stored.get("reply_markup"):
            raise bad_request(_NOT_MODIFIED)
        stored.pop("reply_markup", None)
        if markup is not None:
            stored["reply_markup"] = markup
        stored["edit_date"] = int(time.time())
        # Kept apart from `sent` (what the user reads: messages and their text edits), so a test
        # counting a chat's messages does not count buttons taken off an older answer.
        self._record_sent("editMessageReplyMarkup", {**params, "text": None}, stored, into=self.markup_edits)
        return copy.deepcopy(stored)

    async def _send_message_draft(self, params: dict[str, Any]) -> bool:
        chat = self._chat_for_bot(params)
        if chat["type"] != "private":
            raise bad_request("TEXTDRAFT_PEER_INVALID")
        draft_id = require_int(params, "draft_id")
        if draft_id == 0:
            raise bad_request("draft_id must be non-zero")
        if params.get("text") is None:
            params = {**params, "text": ""}  # Bot API 10: no text shows a "Thinking..." placeholder
        plain, entities = self._formatted(params, allow_empty=True)
        self._live_drafts[(chat["id"], draft_id)] = {"plain_text": plain, "until": time.monotonic() + self.draft_ttl_s}
        self.drafts.append(
            {
                "chat_id": chat["id"],
                "draft_id": draft_id,
                "text": params.get("text"),
                "parse_mode": params.get("parse_mode"),
                "entities": params.get("entities"),
                "plain_text": plain,
                "message_entities": entities,
                "time": time.time(),
            }
        )
        return True

    async def _delete_message(self, params: dict[str, Any]) -> bool:
        chat = self._chat_for_bot(params)
        key = (chat["id"], require_int(params, "message_id"))
        if self._messages.pop(key, None) is None:
            raise bad_request("message to delete not found")
        self._bot_messages.discard(key)
        return True

    async def _send_chat_action(self, params: dict[str, Any]) -> bool:
        self._chat_for_bot(params)
        if params.get("action") not in CHAT_ACTIONS:
            raise bad_request("wrong parameter action in request")
        return True

    async def _answer_callback_query(self, params: dict[str, Any]) -> bool:
        query_id = str(params.get("callback_query_id") or "")
        if self._callback_queries.get(query_id, True):  # unknown, or answered already
            raise bad_request("query is too old and response timeout expired or query ID is invalid")
        self._callback_queries[query_id] = True
        self.callback_answers.append({**_jsonable(params), "time": time.time()})
        return True

    async def _get_file(self, params: dict[str, Any]) -> dict[str, Any]:
        stored = self._files.get(str(params.get("file_id") or ""))
        if stored is None:
            raise bad_request("invalid file_id")
        if len(stored.content) > MAX_DOWNLOAD_BYTES:
            raise bad_request("file is too big")
        return {
            "file_id": stored.file_id,
            "file_unique_id": stored.file_unique_id,
            "file_size": len(stored.content),
            "file_path": stored.file_path,
        }

    async def _get_chat(self, params: dict[str, Any]) -> dict[str, Any]:
        chat = self._chat_for_bot(params)
        return {**copy.deepcopy(chat), "accent_color_id": 0, "max_reaction_count": 11}

    async def _set_my_commands(self, params: dict[str, Any]) -> bool:
        commands = params.get("commands")
        if not isinstance(commands, list):
            raise bad_request("can't parse commands JSON object")
        for command in commands:
            name = command.get("command") if isinstance(command, dict) else None
            if not isinstance(name, str) or not re.fullmatch(r"[a-z0-9_]{1,32}", name):
                raise bad_request("BOT_COMMAND_INVALID")
            if not 1 <= len(str(command.get("description", ""))) <= 256:
                raise bad_request("BOT_COMMAND_DESCRIPTION_INVALID")
        self.commands = [dict(command) for command in commands]
        return True

    async def _get_my_commands(self, params: dict[str, Any]) -> list[dict[str, Any]]:
        return [dict(command) for command in self.commands]

    async def _delete_my_commands(self, params: dict[str, Any]) -> bool:
        self.commands = []
        return True
