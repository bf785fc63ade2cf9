"""The fake LLM answers like an OpenAI-compatible chat-completions server, streaming or not."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from aibot_fakes.llm import FakeLLM

KEY = "sk-test-key-123456"


@pytest.fixture
async def llm() -> AsyncIterator[FakeLLM]:
    server = FakeLLM(api_key=KEY)
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def client(llm: FakeLLM) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(headers={"Authorization": f"Bearer {KEY}"}, timeout=10) as http:
        yield http


def chat(text: str, **extra: Any) -> dict[str, Any]:
    messages = [{"role": "system", "content": "be brief"}, {"role": "user", "content": text}]
    return {"model": "fake-echo", "messages": messages, **extra}


async def read_events(response: httpx.Response) -> tuple[list[dict[str, Any]], list[str]]:
    """The JSON chunks of an SSE stream, and every raw line, to check the framing too."""
    chunks: list[dict[str, Any]] = []
    lines: list[str] = []
    async for line in response.aiter_lines():
        lines.append(line)
        if line.startswith("data: ") and line != "data: [DONE]":
            chunks.append(json.loads(line.removeprefix("data: ")))
    return chunks, lines


async def test_non_streaming_completion(llm: FakeLLM, client: httpx.AsyncClient) -> None:
    answer = await client.post(llm.endpoint, json=chat("hello there"))
    assert answer.status_code == 200
    body = answer.json()
    assert body["object"] == "chat.completion"
    assert body["model"] == "fake-echo"
    [choice] = body["choices"]
    assert choice["message"] == {"role": "assistant", "content": "Echo: hello there", "refusal": None}
    assert choice["finish_reason"] == "stop"
    assert body["usage"] == {"prompt_tokens": 4, "completion_tokens": 3, "total_tokens": 7}
    assert llm.requests == [chat("hello there")]


async def test_content_parts_and_the_bare_paths(llm: FakeLLM, client: httpx.AsyncClient) -> None:
    parts = [
        {"type": "text", "text": "from "},
        {"type": "image_url", "image_url": {"url": "x"}},
        {"type": "text", "text": "parts"},
    ]
    body = {"model": "m", "messages": [{"role": "user", "content": parts}]}
    for url in (llm.endpoint, f"{llm.url}/chat/completions", f"{llm.url}/"):
        answer = await client.post(url, json=body)
        assert answer.json()["choices"][0]["message"]["content"] == "Echo: from parts"


async def test_streaming_completion(llm: FakeLLM, client: httpx.AsyncClient) -> None:
    body = chat("one two three", stream=True, stream_options={"include_usage": True})
    async with client.stream("POST", llm.endpoint, json=body) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        chunks, lines = await read_events(response)
    assert ": keep-alive" in lines
    assert lines[-2:] == ["data: [DONE]", ""] or lines[-1] == "data: [DONE]"
    assert all(chunk["object"] == "chat.completion.chunk" for chunk in chunks)
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    deltas = [c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"]]
    assert "".join(deltas) == "Echo: one two three"
    assert len([d for d in deltas if d]) == 4  # word by word
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"] == {"prompt_tokens": 5, "completion_tokens": 4, "total_tokens": 9}
    assert all(chunk["usage"] is None for chunk in chunks[:-1])


async def test_streaming_without_usage_has_no_usage_chunk(llm: FakeLLM, client: httpx.AsyncClient) -> None:
    async with client.stream("POST", llm.endpoint, json=chat("hi", stream=True)) as response:
        chunks, _ = await read_events(response)
    assert all("usage" not in chunk for chunk in chunks)
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"


async def test_max_tokens_cuts_the_answer(llm: FakeLLM, client: httpx.AsyncClient) -> None:
    body = (await client.post(llm.endpoint, json=chat("a b c d e", max_tokens=3))).json()
    assert body["choices"][0]["message"]["content"] == "Echo: a b"
    assert body["choices"][0]["finish_reason"] == "length"


async def test_auth_is_checked(llm: FakeLLM) -> None:
    async with httpx.AsyncClient() as anonymous:
        missing = await anonymous.post(llm.endpoint, json=chat("x"))
        wrong = await anonymous.post(
            llm.endpoint, json=chat("x"), headers={"Authorization": "Bearer sk-wrong-key-0000"}
        )
    assert missing.status_code == 401 and "didn't provide an API key" in missing.json()["error"]["message"]
    assert wrong.status_code == 401 and wrong.json()["error"]["code"] == "invalid_api_key"
    assert "sk-wrong-key-0000" not in wrong.text
    assert llm.requests == []


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"model": "m"}, "messages"),
        ({"model": "m", "messages": "hi"}, "messages"),
        ({"model": "m", "messages": []}, "messages"),
        ({"model": "m", "messages": [{"role": "robot", "content": "x"}]}, "messages[0].role"),
        ({"messages": [{"role": "user", "content": "x"}]}, None),
        ({"model": "m", "messages": [{"role": "user"}], "stream_options": {"include_usage": True}}, "stream_options"),
    ],
)
async def test_invalid_bodies_are_refused(
    llm: FakeLLM, client: httpx.AsyncClient, body: dict[str, Any], param: str | None
) -> None:
    answer = await client.post(llm.endpoint, json=body)
    assert answer.status_code == 400
    error = answer.json()["error"]
    assert error["type"] == "invalid_request_error" and error["param"] == param


async def test_injected_failures(llm: FakeLLM, client: httpx.AsyncClient) -> None:
    llm.fail_next(status=500)
    llm.fail_next(status=429, retry_after=3, times=2)
    first = await client.post(llm.endpoint, json=chat("x"))
    assert first.status_code == 500 and first.json()["error"]["type"] == "server_error"
    for _ in range(2):
        limited = await client.post(llm.endpoint, json=chat("x"))
        assert limited.status_code == 429
        assert limited.headers["retry-after"] == "3"
        assert limited.json()["error"]["code"] == "rate_limit_exceeded"
    assert (await client.post(llm.endpoint, json=chat("x"))).status_code == 200
    assert len(llm.requests) == 4  # failed attempts are recorded too, so retries can be counted


async def test_latency_and_chunk_delay_are_respected(llm: FakeLLM, client: httpx.AsyncClient) -> None:
    llm.latency_s = 0.3
    started = time.monotonic()
    await client.post(llm.endpoint, json=chat("x"))
    assert time.monotonic() - started >= 0.3

    answer = await client.post(f"{llm.url}/_fake/config", json={"latency_s": 0.0, "chunk_delay_s": 0.1})
    assert answer.json()["chunk_delay_s"] == 0.1
    arrivals: list[float] = []
    started = time.monotonic()
    async with client.stream("POST", llm.endpoint, json=chat("one two three", stream=True)) as response:
        async for line in response.aiter_lines():
            if '"content": "' in line and '"role"' not in line:
                arrivals.append(time.monotonic() - started)
    assert len(arrivals) == 4
    assert arrivals[-1] >= 0.3  # three gaps of 0.1 s before the last delta
    assert arrivals[-1] - arrivals[0] >= 0.15  # and the first arrived well before it: not buffered


async def test_models_list(llm: FakeLLM, client: httpx.AsyncClient) -> None:
    models = (await client.get(f"{llm.url}/v1/models")).json()
    assert models["object"] == "list" and [m["id"] for m in models["data"]] == ["fake-echo"]


async def test_runs_as_a_process_and_prints_ready() -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "aibot_fakes", "llm", "--port", "0", "--latency", "0"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = await asyncio.wait_for(asyncio.to_thread(process.stdout.readline), 20)
        assert line.startswith("ready http://127.0.0.1:")
        url = line.split()[1]
        async with httpx.AsyncClient() as http:
            answer = await http.post(f"{url}/v1/chat/completions", json=chat("process"))
        assert answer.json()["choices"][0]["message"]["content"] == "Echo: process"
    finally:
        process.terminate()
        assert process.wait(timeout=10) == 0
        if process.stdout is not None:
            process.stdout.close()
