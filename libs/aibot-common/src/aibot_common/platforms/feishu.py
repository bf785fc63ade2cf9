"""The Feishu (Lark) Open Platform client, shared by ingress-feishu, the renderer and the asr-worker.

lark-oapi provides the request and response models, the transport (whose `domain` comes from config,
so the same code talks to open.feishu.cn, open.larksuite.com or the test fake) and the error
taxonomy. Three things are done here because the SDK falls short for an asyncio service:

- the tenant token: the SDK's `TokenManager` fetches it with blocking `requests` inside `verify()`
  and caches it process-wide with no way to drop a token Feishu has rejected. Here the SDK's own
  token request goes over its async transport; the token is cached until shortly before it expires,
  fetched once for all concurrent callers, and dropped (then fetched again, once) after an
  invalid-token code, as the Go and Java SDKs do;
- rate limits: the SDK's channel layer files 99991400 under "permission denied", yet Feishu's
  gateway answers it with HTTP 429 and `x-ogw-ratelimit-reset` (seconds to wait): those are trusted;
- downloads: the SDK reads a resource into memory whatever its size; here it is streamed and cut
  off at a bound, so a 100 MB file cannot exhaust a worker.

Errors come out as the runner's two kinds: `FeishuRetryable` (429, throttling codes, 5xx, timeouts)
and `FeishuRejected` (everything Feishu refuses for good; Feishu's code is in the message, so a
dead letter says why).
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx
from lark_oapi.api.cardkit.v1 import (
    Card,
    ContentCardElementRequest,
    ContentCardElementRequestBody,
    CreateCardRequest,
    CreateCardRequestBody,
    DeleteCardElementRequest,
    DeleteCardElementRequestBody,
    UpdateCardRequest,
    UpdateCardRequestBody,
)
from lark_oapi.api.im.v1 import (
    CreateMessageRequest,
    CreateMessageRequestBody,
    DeleteMessageRequest,
    ReplyMessageRequest,
    ReplyMessageRequestBody,
)
from lark_oapi.channel.errors import classify_error, is_reply_target_gone
from lark_oapi.core.enum import AccessTokenType, HttpMethod
from lark_oapi.core.http import Transport

# The SDK's own URL and header builders (path encoding, user agent, token header), so a call sent on
# our pooled client is byte-for-byte the request the SDK's transport would send.
from lark_oapi.core.http.transport import _build_header, _build_url
from lark_oapi.core.json import JSON
from lark_oapi.core.model import BaseRequest, Config, RawResponse, RequestOption
from lark_oapi.core.token.auth import verify
from lark_oapi.core.token.create_self_tenant_token_request import (
    CreateSelfTenantTokenRequest,
    CreateSelfTenantTokenRequestBuilder,
)
from lark_oapi.core.token.create_token_request_body import CreateTokenRequestBody
from opentelemetry.trace import SpanKind

from aibot_common import telemetry
from aibot_common.errors import InvalidMessage, Retryable, Unavailable
from aibot_common.settings import ConfigError, FeishuConfig

log = logging.getLogger(__name__)

PLATFORM = "feishu"
# The SDK's invalid-token set, plus 99991671 ("access token invalid"), which the Go SDK also retries.
INVALID_TOKEN_CODES = frozenset({99991663, 99991664, 99991665, 99991666, 99991668, 99991671})
# 99991400 is the gateway's frequency limit (HTTP 429); the others are per-API throttling codes.
RATE_LIMIT_CODES = frozenset({99991400, 99991402, 11020, 11021})
# A reply whose target was recalled or deleted can still be said as a fresh message in the chat. The
# SDK's channel layer knows some of these codes; 230011 ("the message was recalled") is added.
REPLY_TARGET_GONE_CODES = frozenset({230011})
# CardKit: the card's own frequency limit (10 operations a second) and "try again" errors, which a
# streaming card backs off on; and the app lacking the cardkit:card:write scope (fall back to messages).
CARD_THROTTLED_CODES = frozenset({230020, 200850})
CARD_STREAMING_CLOSED_CODES = frozenset({300309})
CARD_SEQUENCE_CODES = frozenset({300317})
PERMISSION_CODES = frozenset({99991672, 230003, 99991679})
MAX_DOWNLOAD_BYTES = 100 * 1024 * 1024  # Feishu's own limit for a message resource
_ERROR_BODY_BYTES = 64 * 1024


class FeishuRetryable(Retryable):
    """Try again later: rate limited, throttled, Feishu unavailable, or the call timed out."""

    def __init__(
        self, message: str, *, code: int | None = None, http_status: int | None = None, retry_after: float | None = None
    ) -> None:
        super().__init__(message, retry_after=retry_after)
        self.code = code
        self.http_status = http_status


class FeishuUnavailable(FeishuRetryable, Unavailable):
    """Feishu itself is down or unreachable (5xx, connection error, timeout): waited out, see Unavailable."""


class FeishuRejected(InvalidMessage):
    """Feishu refused the call for good (bad content, no permission, resource gone...)."""

    def __init__(self, message: str, *, code: int | None = None, http_status: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.http_status = http_status

    @property
    def reply_target_gone(self) -> bool:
        if self.code is None:
            return False
        return self.code in REPLY_TARGET_GONE_CODES or is_reply_target_gone(classify_error(self.code).code)


@dataclass(frozen=True)
class Resource:
    """A downloaded message resource (a voice note, a file)."""

    content: bytes
    content_type: str | None
    file_name: str | None


@dataclass(frozen=True)
class BotInfo:
    open_id: str
    name: str | None


def app_credentials(config: FeishuConfig) -> tuple[str, str]:
    if not config.app_id or config.app_secret is None or not config.app_secret.get_secret_value():
        raise ConfigError(
            "feishu.app_id and feishu.app_secret are not set: copy them from the app's Credentials page in the "
            "Feishu developer console (AIBOT_FEISHU__APP_ID, AIBOT_FEISHU__APP_SECRET), or set feishu.enabled: false"
        )
    return config.app_id, config.app_secret.get_secret_value()


def sdk_config(config: FeishuConfig, timeout_s: float) -> Config:
    """The SDK's configuration: our domain, and tokens handed in per call (see TenantTokens)."""
    app_id, app_secret = app_credentials(config)
    sdk = Config()
    sdk.app_id = app_id
    sdk.app_secret = app_secret
    sdk.domain = config.domain.rstrip("/")
    sdk.timeout = timeout_s
    sdk.enable_set_token = True
    return sdk


def _count(method: str, code: int | str) -> None:
    telemetry.PLATFORM_API_CALLS.labels(platform=PLATFORM, method=method, code=str(code)).inc()


def _retry_after(headers: dict[str, str] | httpx.Headers | None) -> float | None:
    value = (headers or {}).get("x-ogw-ratelimit-reset")
    try:
        return max(float(value), 0.0) if value is not None else None
    except ValueError:
        return None


def classify(method: str, status: int, code: int | None, msg: str, headers: Any = None) -> Exception:
    """Feishu's answer -> the runner's kind of failure."""
    what = f"feishu {method}: code {code} ({msg or 'no message'}), HTTP {status}"
    if status == 429 or code in RATE_LIMIT_CODES or code in CARD_THROTTLED_CODES:
        wait = _retry_after(headers)
        return FeishuRetryable(f"{what}: rate limited", code=code, http_status=status, retry_after=wait)
    if code in INVALID_TOKEN_CODES:
        return FeishuRetryable(f"{what}: token still refused after a refresh", code=code, http_status=status)
    if status >= 500 or (code is not None and classify_error(code, msg).retryable):
        if status >= 500:
            return FeishuUnavailable(f"{what}: Feishu unavailable", code=code, http_status=status)
        return FeishuRetryable(f"{what}: Feishu unavailable", code=code, http_status=status)
    return FeishuRejected(what, code=code, http_status=status)


async def _execute(client: httpx.AsyncClient, conf: Config, req: BaseRequest, option: RequestOption) -> RawResponse:
    """What the SDK's `Transport.aexecute` does for a JSON call (its URL, headers and body, built by
    its own helpers), on the caller's pooled client instead of a new one per call."""
    if req.files:
        raise ValueError("multipart uploads are not sent through this client")
    url = _build_url(conf.domain, req.uri, req.paths)
    _build_header(req, option, conf)  # writes the user agent and the token into req.headers
    body = json.loads(JSON.marshal(req.body)) if req.body is not None else None
    response = await client.request(
        str(req.http_method.name), url, headers=req.headers, params=req.queries, json=body, timeout=conf.timeout
    )
    raw = RawResponse()
    raw.status_code = response.status_code
    raw.headers = dict(response.headers)
    raw.content = response.content
    return raw


class TenantTokens:
    """The app's tenant_access_token: fetched on demand, cached, refreshed before it expires."""

    # The SDKs refresh 3 to 10 minutes before expiry; a short-lived token is refreshed at half-life.
    refresh_margin_s: float = 600.0

    def __init__(self, sdk: Config) -> None:
        self._sdk = sdk
        self._token: str | None = None
        self._refresh_at = 0.0
        self._lock = asyncio.Lock()

    async def get(self) -> str:
        token = self._token
        if token is not None and time.monotonic() < self._refresh_at:
            return token
        async with self._lock:  # one fetch for every caller waiting on it
            if self._token is not None and time.monotonic() < self._refresh_at:
                return self._token
            self._token, expire = await self._fetch()
            self._refresh_at = time.monotonic() + max(expire - self.refresh_margin_s, expire / 2)
            return self._token

    def invalidate(self, token: str) -> None:
        """Feishu refused this token: the next get() fetches another (unless one already did)."""
        if self._token == token:
            self._token = None

    async def _fetch(self) -> tuple[str, float]:
        body = CreateTokenRequestBody.builder().app_id(self._sdk.app_id).app_secret(self._sdk.app_secret).build()
        # A fresh request object: the SDK's builder() shares one default instance between calls.
        request = CreateSelfTenantTokenRequestBuilder(CreateSelfTenantTokenRequest()).request_body(body).build()
        try:
            raw = await Transport.aexecute(self._sdk, request)
        except httpx.HTTPError as exc:
            _count("tenant_access_token", "network")
            raise FeishuRetryable(f"feishu tenant_access_token: {type(exc).__name__}") from exc
        answer = _json_body(raw.content)
        code = answer.get("code") if isinstance(answer.get("code"), int) else None
        _count("tenant_access_token", code if code is not None else raw.status_code)
        token, expire = answer.get("tenant_access_token"), answer.get("expire")
        if code == 0 and isinstance(token, str) and token and isinstance(expire, int | float) and expire > 0:
            return token, float(expire)
        error = classify("tenant_access_token", raw.status_code, code, str(answer.get("msg") or ""), raw.headers)
        if isinstance(error, FeishuRejected):
            error = FeishuRejected(
                f"{error}: check feishu.app_id and feishu.app_secret", code=code, http_status=raw.status_code
            )
        raise error


def _json_body(content: bytes | None) -> dict[str, Any]:
    try:
        answer = json.loads(content or b"")
    except (ValueError, UnicodeDecodeError):
        return {}
    return answer if isinstance(answer, dict) else {}


_FILENAME = re.compile(r"""filename\*?=(?:UTF-8'')?"?([^";]+)"?""", re.IGNORECASE)


class FeishuClient:
    """The Open API calls ai-bot makes, with the tenant token handled and errors classified."""

    def __init__(self, config: FeishuConfig, *, timeout_s: float = 10.0, download_timeout_s: float = 30.0) -> None:
        self._sdk = sdk_config(config, timeout_s)
        self.domain = self._sdk.domain
        self.tokens = TenantTokens(self._sdk)
        # Downloads (see the module docstring).
        self._http = httpx.AsyncClient(timeout=httpx.Timeout(download_timeout_s, connect=5.0))
        # The JSON API calls, on kept-alive connections: the SDK's async transport opens a new
        # httpx client (an SSL context, a TCP and TLS handshake) per call, a third of the renderer's
        # CPU under load in a py-spy profile, and a handshake's latency on every message sent.
        self._api = httpx.AsyncClient(limits=httpx.Limits(max_connections=32, max_keepalive_connections=32))

    async def aclose(self) -> None:
        await self._http.aclose()
        await self._api.aclose()

    async def __aenter__(self) -> FeishuClient:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()

    # ------------------------------------------------------------------ messages

    async def send_message(
        self, receive_id_type: str, receive_id: str, msg_type: str, content: str, *, uuid: str | None = None
    ) -> str:
        """POST /open-apis/im/v1/messages; returns the new message_id."""

        def request() -> BaseRequest:
            body = CreateMessageRequestBody.builder().receive_id(receive_id).msg_type(msg_type).content(content)
            if uuid:
                body = body.uuid(uuid)
            return CreateMessageRequest.builder().receive_id_type(receive_id_type).request_body(body.build()).build()

        answer = await self._call("send", request)
        return str((answer.get("data") or {}).get("message_id") or "")

    async def reply_message(self, message_id: str, msg_type: str, content: str, *, uuid: str | None = None) -> str:
        """POST /open-apis/im/v1/messages/{message_id}/reply; returns the new message_id."""

        def request() -> BaseRequest:
            body = ReplyMessageRequestBody.builder().msg_type(msg_type).content(content)
            if uuid:
                body = body.uuid(uuid)
            return ReplyMessageRequest.builder().message_id(message_id).request_body(body.build()).build()

        answer = await self._call("reply", request)
        return str((answer.get("data") or {}).get("message_id") or "")

    async def recall_message(self, message_id: str) -> None:
        """DELETE /open-apis/im/v1/messages/{message_id}: withdraw one of the bot's own messages."""
        await self._call("recall", lambda: DeleteMessageRequest.builder().message_id(message_id).build())

    # ------------------------------------------------------------------ CardKit (streaming cards)

    async def create_card(self, card_json: str) -> str:
        """POST /open-apis/cardkit/v1/cards: a card entity (JSON 2.0) to send by id; returns card_id."""

        def request() -> BaseRequest:
            body = CreateCardRequestBody.builder().type("card_json").data(card_json).build()
            return CreateCardRequest.builder().request_body(body).build()

        answer = await self._call("card_create", request)
        card_id = (answer.get("data") or {}).get("card_id")
        if not isinstance(card_id, str) or not card_id:
            raise FeishuRejected("feishu card_create: no card_id in the answer")
        return card_id

    async def stream_card_content(self, card_id: str, element_id: str, content: str, sequence: int) -> None:
        """PUT .../cards/{card_id}/elements/{element_id}/content: the element's whole text so far."""

        def request() -> BaseRequest:
            body = ContentCardElementRequestBody.builder().content(content).sequence(sequence).build()
            return (
                ContentCardElementRequest.builder().card_id(card_id).element_id(element_id).request_body(body).build()
            )

        await self._call("card_content", request)

    async def replace_card(self, card_id: str, card_json: str, sequence: int) -> None:
        """PUT .../cards/{card_id}: the whole card (its config too: streaming_mode off ends the stream)."""

        def request() -> BaseRequest:
            card = Card.builder().type("card_json").data(card_json).build()
            body = UpdateCardRequestBody.builder().card(card).sequence(sequence).build()
            return UpdateCardRequest.builder().card_id(card_id).request_body(body).build()

        await self._call("card_update", request)

    async def delete_card_element(self, card_id: str, element_id: str, sequence: int) -> None:
        """DELETE .../cards/{card_id}/elements/{element_id}: one element (a button) out of the card."""

        def request() -> BaseRequest:
            body = DeleteCardElementRequestBody.builder().sequence(sequence).build()
            return DeleteCardElementRequest.builder().card_id(card_id).element_id(element_id).request_body(body).build()

        await self._call("card_element_delete", request)

    async def bot_info(self) -> BotInfo:
        """GET /open-apis/bot/v3/info: the bot's own open_id, to recognise its @mentions in groups."""

        def request() -> BaseRequest:
            # The SDK generates no resource for bot/v3; its channel layer builds the raw request too.
            raw = BaseRequest()
            raw.http_method = HttpMethod.GET
            raw.uri = "/open-apis/bot/v3/info"
            raw.token_types = {AccessTokenType.TENANT}
            return raw

        answer = await self._call("bot_info", request)
        bot = answer.get("bot") or (answer.get("data") or {}).get("bot") or {}
        open_id = bot.get("open_id")
        if not isinstance(open_id, str) or not open_id:
            raise FeishuRejected("feishu bot_info: no open_id in the answer (is the app's bot capability enabled?)")
        return BotInfo(open_id=open_id, name=bot.get("app_name") or bot.get("name"))

    async def _call(self, method: str, build: Any) -> dict[str, Any]:
        for attempt in range(2):
            token = await self.tokens.get()
            request: BaseRequest = build()  # fresh each time: the SDK's transport writes into it
            option = RequestOption.builder().tenant_access_token(token).build()
            verify(self._sdk, request, option)  # selects the tenant token we hand in; no I/O
            try:
                # A CLIENT span per API call, as for Telegram's sendMessage: a trace shows each call.
                with telemetry.span(f"feishu {method}", kind=SpanKind.CLIENT, **{"rpc.method": method}):
                    raw = await _execute(self._api, self._sdk, request, option)
            except httpx.TimeoutException as exc:
                _count(method, "timeout")
                raise FeishuUnavailable(f"feishu {method}: timed out") from exc
            except httpx.HTTPError as exc:
                _count(method, "network")
                raise FeishuUnavailable(f"feishu {method}: {type(exc).__name__}") from exc
            answer = _json_body(raw.content)
            code = answer.get("code") if isinstance(answer.get("code"), int) else None
            _count(method, code if code is not None else raw.status_code)
            if code == 0 and raw.status_code < 400:
                return answer
            if code in INVALID_TOKEN_CODES and attempt == 0:
                log.info("feishu %s: token refused (code %s); fetching a new one and retrying once", method, code)
                self.tokens.invalidate(token)
                continue
            raise classify(method, raw.status_code, code, str(answer.get("msg") or ""), raw.headers)
        raise AssertionError("unreachable")

    # ------------------------------------------------------------------ resources

    async def download_message_resource(
        self, message_id: str, file_key: str, *, resource_type: str = "file", max_bytes: int = MAX_DOWNLOAD_BYTES
    ) -> Resource:
        """GET /open-apis/im/v1/messages/{message_id}/resources/{file_key}?type=file (voice notes, files;
        type=image for images). A resource larger than max_bytes is refused without reading it all."""
        url = (
            f"{self.domain}/open-apis/im/v1/messages/{quote(message_id, safe='')}/resources/{quote(file_key, safe='')}"
        )
        for attempt in range(2):
            token = await self.tokens.get()
            try:
                async with self._http.stream(
                    "GET", url, params={"type": resource_type}, headers={"Authorization": f"Bearer {token}"}
                ) as response:
                    if response.status_code == 200:
                        _count("download", 200)
                        return await _read_bounded(response, max_bytes, file_key)
                    content = await _read_prefix(response, _ERROR_BODY_BYTES)
            except httpx.TimeoutException as exc:
                _count("download", "timeout")
                raise FeishuRetryable("feishu download: timed out") from exc
            except httpx.HTTPError as exc:
                _count("download", "network")
                raise FeishuRetryable(f"feishu download: {type(exc).__name__}") from exc
            answer = _json_body(content)
            code = answer.get("code") if isinstance(answer.get("code"), int) else None
            _count("download", code if code is not None else response.status_code)
            if code in INVALID_TOKEN_CODES and attempt == 0:
                self.tokens.invalidate(token)
                continue
            raise classify("download", response.status_code, code, str(answer.get("msg") or ""), response.headers)
        raise AssertionError("unreachable")


async def _read_bounded(response: httpx.Response, max_bytes: int, file_key: str) -> Resource:
    declared = response.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise FeishuRejected(f"feishu download: resource {file_key} is {declared} bytes, over the {max_bytes} limit")
    chunks: list[bytes] = []
    total = 0
    async for chunk in response.aiter_bytes():
        total += len(chunk)
        if total > max_bytes:
            raise FeishuRejected(f"feishu download: resource {file_key} is over the {max_bytes} bytes limit")
        chunks.append(chunk)
    disposition = response.headers.get("content-disposition") or ""
    match = _FILENAME.search(disposition)
    return Resource(
        content=b"".join(chunks),
        content_type=response.headers.get("content-type"),
        file_name=match.group(1) if match else None,
    )


async def _read_prefix(response: httpx.Response, limit: int) -> bytes:
    data = b""
    async for chunk in response.aiter_bytes():
        data += chunk
        if len(data) >= limit:
            break
    return data[:limit]
