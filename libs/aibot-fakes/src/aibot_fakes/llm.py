"""A fake OpenAI-compatible chat-completions server with deterministic answers.

The answer is always `Echo: <last user message>`, so tests can assert that the user's words made the
round trip. Streaming follows OpenAI's wire format (server-sent events of chat.completion.chunk, a
comment line, an optional usage chunk, `data: [DONE]`), which the other OpenAI-compatible servers
(vLLM, llama.cpp, Ollama's /v1) share.
"""

from __future__ import annotations

import asyncio
import json
import re
import secrets
import time
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, Field

from aibot_fakes.server import BackgroundServer

ROLES = ("system", "developer", "user", "assistant", "tool", "function")

_DEFAULT_ERRORS: dict[int, tuple[str, str, str | None]] = {
    400: ("Bad request.", "invalid_request_error", None),
    401: ("Incorrect API key provided.", "invalid_request_error", "invalid_api_key"),
    403: ("You are not allowed to use this model.", "invalid_request_error", "model_not_found"),
    404: ("The model does not exist or you do not have access to it.", "invalid_request_error", "model_not_found"),
    429: ("Rate limit reached for requests. Please try again later.", "requests", "rate_limit_exceeded"),
    500: ("The server had an error while processing your request. Sorry about that!", "server_error", None),
    502: ("Bad gateway.", "server_error", None),
    503: ("The engine is currently overloaded, please try again later.", "server_error", None),
}


def openai_error(message: str, *, type_: str, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def default_error_body(status: int) -> dict[str, Any]:
    message, type_, code = _DEFAULT_ERRORS.get(status, (f"Error {status}.", "server_error", None))
    return openai_error(message, type_=type_, code=code)


class RequestInvalid(Exception):
    def __init__(self, status: int, body: dict[str, Any]) -> None:
        super().__init__(body["error"]["message"])
        self.status = status
        self.body = body


def _invalid(message: str, *, param: str | None = None, code: str | None = None) -> RequestInvalid:
    return RequestInvalid(400, openai_error(message, type_="invalid_request_error", param=param, code=code))


@dataclass
class _Failure:
    status: int
    body: dict[str, Any]
    retry_after: int | None


def content_text(content: Any) -> str:
    """The text of a message's content: a string, or the text parts of a list of content parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            part.get("text", "") for part in content if isinstance(part, dict) and part.get("type") == "text"
        )
    return ""


def count_tokens(text: str) -> int:
    return len(text.split())  # roughly one token a word; good enough for usage accounting in tests


def split_deltas(text: str) -> list[str]:
    """Word by word, each word with the whitespace after it, so the deltas join back to the text."""
    return re.findall(r"^\s+|\S+\s*", text)


def _validate(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise _invalid("The request body must be a JSON object.")
    if not isinstance(body.get("model"), str) or not body["model"]:
        raise _invalid("you must provide a model parameter")
    messages = body.get("messages")
    if messages is None:
        raise _invalid("Missing required parameter: 'messages'.", param="messages", code="missing_required_parameter")
    if not isinstance(messages, list):
        raise _invalid(
            f"Invalid type for 'messages': expected an array, but got {type(messages).__name__} instead.",
            param="messages",
            code="invalid_type",
        )
    if not messages:
        raise _invalid(
            "Invalid 'messages': empty array. Expected an array with minimum length 1, but got an empty array instead.",
            param="messages",
            code="empty_array",
        )
    for index, message in enumerate(messages):
        if not isinstance(message, dict):
            raise _invalid(f"Invalid type for 'messages[{index}]': expected an object.", param=f"messages[{index}]")
        if message.get("role") not in ROLES:
            supported = ", ".join(f"'{role}'" for role in ROLES)
            raise _invalid(
                f"Invalid value: '{message.get('role')}'. Supported values are: {supported}.",
                param=f"messages[{index}].role",
                code="invalid_value",
            )
        content = message.get("content")
        if content is not None and not isinstance(content, str | list):
            raise _invalid(
                f"Invalid type for 'messages[{index}].content': expected one of a string or array of objects.",
                param=f"messages[{index}].content",
                code="invalid_type",
            )
    if "stream" in body and not isinstance(body["stream"], bool):
        raise _invalid("Invalid type for 'stream': expected a boolean.", param="stream", code="invalid_type")
    if body.get("stream_options") is not None and not body.get("stream"):
        raise _invalid(
            "The 'stream_options' parameter is only allowed when 'stream' is enabled.",
            param="stream_options",
            code="invalid_value",
        )
    limit = body.get("max_completion_tokens", body.get("max_tokens"))
    if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool) or limit < 1):
        raise _invalid("Invalid 'max_tokens': expected an integer of at least 1.", param="max_tokens")
    return body


class ConfigUpdate(BaseModel):
    latency_s: float | None = Field(default=None, ge=0)
    chunk_delay_s: float | None = Field(default=None, ge=0)


class FailureRequest(BaseModel):
    status: int = Field(ge=400, le=599)
    body: dict[str, Any] | None = None
    times: int = Field(default=1, ge=1)
    retry_after: int | None = Field(default=None, ge=0)


class FakeLLM:
    def __init__(
        self,
        *,
        latency_s: float = 0.0,
        chunk_delay_s: float = 0.0,
        api_key: str | None = None,
        model: str = "fake-echo",
    ) -> None:
        self.latency_s = latency_s
        self.chunk_delay_s = chunk_delay_s
        self.api_key = api_key
        self.model = model
        self.requests: list[dict[str, Any]] = []
        self._failures: deque[_Failure] = deque()
        self._server: BackgroundServer | None = None
        self.app = self._build_app()

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self._server = BackgroundServer(self.app, host, port)
        await self._server.start()

    async def stop(self) -> None:
        if self._server is not None:
            await self._server.stop()
            self._server = None

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("FakeLLM is not started")
        return self._server.url

    @property
    def endpoint(self) -> str:
        return f"{self.url}/v1/chat/completions"

    @property
    def server(self) -> BackgroundServer | None:
        return self._server

    def fail_next(
        self, *, status: int, body: dict[str, Any] | None = None, times: int = 1, retry_after: int | None = None
    ) -> None:
        failure = _Failure(status, body if body is not None else default_error_body(status), retry_after)
        self._failures.extend(failure for _ in range(times))

    # ------------------------------------------------------------------ HTTP

    def _build_app(self) -> FastAPI:
        app = FastAPI(title="fake OpenAI-compatible LLM", docs_url=None, redoc_url=None, openapi_url=None)
        # The canonical path, the path under a base that already ends in /v1, and the bare mount point,
        # so an `endpoint` setting of any of these shapes reaches the same handler.
        for path in ("/v1/chat/completions", "/chat/completions", "/"):
            app.add_api_route(path, self._complete, methods=["POST"])
        for path in ("/v1/models", "/models"):
            app.add_api_route(path, self._models, methods=["GET"])

        @app.get("/_fake/config")
        async def get_config() -> dict[str, Any]:
            return self._config()

        @app.post("/_fake/config")
        async def set_config(update: ConfigUpdate) -> dict[str, Any]:
            if update.latency_s is not None:
                self.latency_s = update.latency_s
            if update.chunk_delay_s is not None:
                self.chunk_delay_s = update.chunk_delay_s
            return self._config()

        @app.post("/_fake/fail")
        async def fail(request: FailureRequest) -> dict[str, Any]:
            self.fail_next(
                status=request.status, body=request.body, times=request.times, retry_after=request.retry_after
            )
            return {"queued": len(self._failures)}

        @app.get("/_fake/requests")
        async def requests() -> list[dict[str, Any]]:
            return self.requests

        return app

    def _config(self) -> dict[str, Any]:
        return {"latency_s": self.latency_s, "chunk_delay_s": self.chunk_delay_s, "model": self.model}

    async def _models(self) -> dict[str, Any]:
        return {
            "object": "list",
            "data": [{"id": self.model, "object": "model", "created": 1_700_000_000, "owned_by": "aibot-fakes"}],
        }

    def _auth_error(self, request: Request) -> JSONResponse | None:
        if self.api_key is None:
            return None
        header = request.headers.get("authorization", "")
        scheme, _, key = header.partition(" ")
        if scheme.lower() != "bearer" or not key:
            message = (
                "You didn't provide an API key. You need to provide your API key in an Authorization header "
                "using Bearer auth (i.e. Authorization: Bearer YOUR_KEY)."
            )
            return JSONResponse(openai_error(message, type_="invalid_request_error"), status_code=401)
        if not secrets.compare_digest(key.strip(), self.api_key):
            shown = f"{key[:3]}***{key[-4:]}" if len(key) > 8 else "***"
            message = f"Incorrect API key provided: {shown}."
            body = openai_error(message, type_="invalid_request_error", code="invalid_api_key")
            return JSONResponse(body, status_code=401)
        return None

    async def _complete(self, request: Request) -> Response:
        denied = self._auth_error(request)
        if denied is not None:
            return denied
        try:
            body = json.loads(await request.body())
        except ValueError:
            message = "We could not parse the JSON body of your request. The OpenAI API expects a JSON payload."
            return JSONResponse(openai_error(message, type_="invalid_request_error"), status_code=400)
        self.requests.append(body)
        if self._failures:
            failure = self._failures.popleft()
            headers = {"Retry-After": str(failure.retry_after)} if failure.retry_after is not None else None
            return JSONResponse(failure.body, status_code=failure.status, headers=headers)
        try:
            body = _validate(body)
        except RequestInvalid as exc:
            return JSONResponse(exc.body, status_code=exc.status)

        answer, finish_reason = self._answer(body)
        usage = {
            "prompt_tokens": sum(count_tokens(content_text(m.get("content"))) for m in body["messages"]),
            "completion_tokens": count_tokens(answer),
        }
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        head = {
            "id": f"chatcmpl-{secrets.token_hex(12)}",
            "created": int(time.time()),
            "model": body["model"],
            "system_fingerprint": "fp_fake",
        }
        await asyncio.sleep(self.latency_s)  # before the first byte, streaming or not
        if body.get("stream"):
            options = body.get("stream_options") or {}
            include_usage = isinstance(options, dict) and options.get("include_usage") is True
            return StreamingResponse(
                self._stream(head, answer, finish_reason, usage if include_usage else None),
                media_type="text/event-stream",
                headers={"Cache-Control": "no-cache"},
            )
        return JSONResponse(
            {
                **head,
                "object": "chat.completion",
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": answer, "refusal": None},
                        "logprobs": None,
                        "finish_reason": finish_reason,
                    }
                ],
                "usage": usage,
            }
        )

    def _answer(self, body: dict[str, Any]) -> tuple[str, str]:
        users = [m for m in body["messages"] if m.get("role") == "user"]
        answer = "Echo: " + (content_text(users[-1].get("content")) if users else "")
        limit = body.get("max_completion_tokens", body.get("max_tokens"))
        words = split_deltas(answer)
        if limit is not None and len(words) > limit:
            return "".join(words[:limit]).rstrip(), "length"
        return answer, "stop"

    async def _stream(
        self, head: dict[str, Any], answer: str, finish_reason: str, usage: dict[str, int] | None
    ) -> AsyncIterator[str]:
        def event(choices: list[dict[str, Any]], **extra: Any) -> str:
            chunk = {**head, "object": "chat.completion.chunk", "choices": choices, **extra}
            if usage is not None and "usage" not in extra:
                chunk["usage"] = None  # OpenAI marks every chunk but the last when usage is asked for
            return f"data: {json.dumps(chunk)}\n\n"

        def choice(delta: dict[str, Any], finish: str | None = None) -> list[dict[str, Any]]:
            return [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]

        yield event(choice({"role": "assistant", "content": "", "refusal": None}))
        yield ": keep-alive\n\n"
        for number, piece in enumerate(split_deltas(answer)):
            if number and self.chunk_delay_s:
                await asyncio.sleep(self.chunk_delay_s)
            yield event(choice({"content": piece}))
        yield event(choice({}, finish_reason))
        if usage is not None:
            yield event([], usage=usage)
        yield "data: [DONE]\n\n"
