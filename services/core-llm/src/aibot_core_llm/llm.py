"""An OpenAI-compatible chat completions client (streaming, over httpx)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import httpx
from httpx_sse import SSEError, aconnect_sse

from aibot_common import telemetry
from aibot_common.settings import ModelConfig


@dataclass(frozen=True)
class Completion:
    text: str
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    first_token_s: float | None = None  # from the request to the first streamed piece


class LLMError(Exception):
    """The model could not answer. `retryable` says whether trying again may help."""

    def __init__(self, message: str, *, retryable: bool, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.retry_after = retry_after


class ChatModel(Protocol):
    name: str

    async def complete(self, messages: list[dict[str, str]]) -> Completion: ...


# Called with the whole answer so far after each piece the model streams (cheap and synchronous:
# the caller coalesces, so the stream is never held up by what is done with it).
OnText = Callable[[str], None]


class StreamingChatModel(Protocol):
    name: str

    async def complete(self, messages: list[dict[str, str]], on_text: OnText | None = None) -> Completion: ...


class OpenAICompatibleModel:
    def __init__(self, config: ModelConfig, client: httpx.AsyncClient) -> None:
        assert config.endpoint
        self.name = config.name
        self._config = config
        self._client = client
        self._endpoint = config.endpoint

    async def complete(self, messages: list[dict[str, str]], on_text: OnText | None = None) -> Completion:
        body: dict[str, object] = {
            "model": self._config.api_model,
            "messages": messages,
            "max_tokens": self._config.max_tokens,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        if self._config.temperature is not None:
            body["temperature"] = self._config.temperature
        headers = {"Accept": "text/event-stream"}
        if self._config.api_key is not None:
            headers["Authorization"] = f"Bearer {self._config.api_key.get_secret_value()}"
        started = time.perf_counter()
        try:
            with telemetry.span("llm chat", model=self.name):
                completion = await self._stream(body, headers, on_text, started)
        except LLMError as exc:
            telemetry.LLM_ERRORS.labels(model=self.name, reason=_reason(exc)).inc()
            raise
        telemetry.LLM_SECONDS.labels(model=self.name).observe(time.perf_counter() - started)
        if completion.prompt_tokens is not None:
            telemetry.LLM_TOKENS.labels(model=self.name, kind="prompt").inc(completion.prompt_tokens)
        if completion.completion_tokens is not None:
            telemetry.LLM_TOKENS.labels(model=self.name, kind="completion").inc(completion.completion_tokens)
            if completion.first_token_s is not None:
                writing = time.perf_counter() - started - completion.first_token_s
                if writing > 0 and completion.completion_tokens > 1:
                    rate = (completion.completion_tokens - 1) / writing
                    telemetry.LLM_TOKENS_PER_SECOND.labels(model=self.name).observe(rate)
        return completion

    async def _stream(
        self, body: dict[str, object], headers: dict[str, str], on_text: OnText | None, started: float
    ) -> Completion:
        pieces: list[str] = []
        so_far = ""
        first_token_s: float | None = None
        usage: dict[str, int] = {}
        timeout = httpx.Timeout(self._config.timeout_s, connect=10.0)
        try:
            async with aconnect_sse(
                self._client, "POST", self._endpoint, json=body, headers=headers, timeout=timeout
            ) as source:
                response = source.response
                if response.status_code != 200:
                    await response.aread()
                    raise _http_error(response)
                content_type = response.headers.get("content-type", "")
                if "text/event-stream" not in content_type:
                    # A server that ignores `stream` answers one JSON object.
                    await response.aread()
                    return _from_json(response.json())
                async for event in source.aiter_sse():
                    if event.data.strip() == "[DONE]":
                        break
                    chunk = json.loads(event.data)
                    if "error" in chunk:
                        raise LLMError(f"model error: {chunk['error']}", retryable=True)
                    for choice in chunk.get("choices") or ():
                        delta = choice.get("delta") or {}
                        if delta.get("content"):
                            if not pieces:
                                first_token_s = time.perf_counter() - started
                                telemetry.LLM_FIRST_TOKEN_SECONDS.labels(model=self.name).observe(first_token_s)
                            pieces.append(delta["content"])
                            if on_text is not None:
                                so_far += delta["content"]
                                on_text(so_far)
                    if chunk.get("usage"):
                        usage = chunk["usage"]
        except httpx.TimeoutException as exc:
            raise LLMError(f"model timed out after {self._config.timeout_s}s", retryable=True) from exc
        except (httpx.TransportError, SSEError) as exc:
            raise LLMError(f"model connection failed: {type(exc).__name__}", retryable=True) from exc
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise LLMError(f"model sent an unreadable stream: {exc}", retryable=True) from exc
        text = "".join(pieces).strip()
        if not text:
            raise LLMError("model returned an empty answer", retryable=True)
        return Completion(text, usage.get("prompt_tokens"), usage.get("completion_tokens"), first_token_s)


def _from_json(data: dict) -> Completion:
    try:
        text = data["choices"][0]["message"]["content"] or ""
    except (KeyError, IndexError, TypeError) as exc:
        raise LLMError("model answered without choices[0].message.content", retryable=False) from exc
    usage = data.get("usage") or {}
    return Completion(text.strip(), usage.get("prompt_tokens"), usage.get("completion_tokens"))


def _http_error(response: httpx.Response) -> LLMError:
    status = response.status_code
    try:
        detail = response.json().get("error", {}).get("message") or response.text[:200]
    except (ValueError, AttributeError):
        detail = response.text[:200]
    retry_after = response.headers.get("retry-after")
    if status == 429 or status >= 500:
        return LLMError(
            f"model endpoint answered {status}: {detail}",
            retryable=True,
            retry_after=float(retry_after) if retry_after and retry_after.isdigit() else None,
        )
    return LLMError(f"model endpoint answered {status}: {detail}", retryable=False)


def failure_reason(exc: LLMError) -> str:
    """A short label for a failure (metrics): timeout, the HTTP status, connection or invalid."""
    return _reason(exc)


def _reason(exc: LLMError) -> str:
    message = str(exc)
    if "timed out" in message:
        return "timeout"
    if "answered" in message:
        return message.split("answered ", 1)[1][:3]
    return "connection" if "connection" in message else "invalid"
