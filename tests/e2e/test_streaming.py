"""A long answer streamed through every service: previews while the model writes, and one complete
answer at the end, under 429s from Telegram and a kill -9 of core-llm and of the renderer mid-stream.

The kill tests are marked `disrupts_pipeline` (they run after every other test of the session).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from tests.e2e.conftest import Pipeline

pytestmark = pytest.mark.e2e

MENTION = "@aibot_test_bot"
# About 5,600 characters: two Telegram messages, streamed a word every 10 ms (several seconds).
WORDS = [f"word{n:04d}" for n in range(620)]


def _question(tag: str) -> str:
    return f"{tag} " + " ".join(WORDS)


def _visible(pipeline: Pipeline, chat: int) -> str:
    return "\n".join(pipeline.telegram.shown_in(chat))


@contextmanager
def _slow_model(pipeline: Pipeline, chunk_delay_s: float = 0.01) -> Iterator[None]:
    pipeline.llm.chunk_delay_s = chunk_delay_s
    try:
        yield
    finally:
        pipeline.llm.chunk_delay_s = 0.0


async def _until(condition, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        await asyncio.sleep(0.05)


async def _complete(pipeline: Pipeline, chat: int, expected: str, timeout: float = 120) -> None:
    """Wait until the chat shows exactly the whole answer (every word, in order, once)."""

    def done() -> bool:
        return _visible(pipeline, chat).split() == expected.split()

    try:
        await _until(done, timeout, "answer never complete")
    except TimeoutError:
        raise AssertionError(f"chat {chat} shows {_visible(pipeline, chat)[-300:]!r}") from None
    await asyncio.sleep(1.5)  # a late preview or a duplicate would arrive by now
    assert _visible(pipeline, chat).split() == expected.split(), "the final answer was overwritten"


async def test_a_long_answer_streams_and_arrives_complete_under_429s(pipeline: Pipeline) -> None:
    private, group = 7101, -7102
    telegram = pipeline.telegram
    # Telegram pushing back mid-stream: on previews (skipped) and on final parts (retried).
    telegram.fail_next(
        "sendMessageDraft", error_code=429, description="Too Many Requests: retry after 1", retry_after=1
    )
    telegram.fail_next(
        "editMessageText", error_code=429, description="Too Many Requests: retry after 1", retry_after=1, times=2
    )
    with _slow_model(pipeline):
        telegram.user_sends_text(private, _question("private"))
        telegram.user_sends_text(group, f"{MENTION} {_question('group')}", chat_type="group")
        await _until(lambda: len([d for d in telegram.drafts if d["chat_id"] == private]) >= 2, 60, "no drafts")
        await _complete(pipeline, private, f"Echo: {_question('private')}")
        await _complete(pipeline, group, f"Echo: {_question('group')}")
    assert telegram.live_drafts(private) == []
    group_calls = [m["method"] for m in telegram.sent_to(group)]
    assert "editMessageText" in group_calls, "the group saw the answer grow in place"
    assert len(telegram.shown_in(group)) == 2, "past 4096 characters: a second message"


async def test_a_long_answer_streams_into_a_feishu_card_and_arrives_complete_under_throttling(
    pipeline: Pipeline,
) -> None:
    feishu = pipeline.feishu
    assert feishu is not None
    chat = "oc_stream_e2e"
    # Feishu pushing back mid-stream: the card's frequency limit, then the gateway's 429.
    feishu.fail_next("card_content", code=230020, msg="card frequency limit", http_status=429, retry_after=1)
    feishu.fail_next("card_content", code=99991400, msg="request trigger frequency limit", http_status=429)
    expected = f"Echo: {_question('feishu')}"
    with _slow_model(pipeline):
        feishu.user_sends_text(chat, _question("feishu"))

        def done() -> bool:
            return " ".join(feishu.shown_in(chat)).split() == expected.split()

        await _until(lambda: feishu.calls_to("card_content"), 60, "the card never streamed")
        await _until(done, 120, f"feishu shows {' '.join(feishu.shown_in(chat))[-300:]!r}")
    await asyncio.sleep(1.5)
    assert " ".join(feishu.shown_in(chat)).split() == expected.split()
    assert len(feishu.sent_to(chat)) == 1, "one card, updated in place"


async def test_stop_ends_an_answer_mid_stream_and_regenerate_answers_again(pipeline: Pipeline) -> None:
    group = -7401
    telegram = pipeline.telegram
    with _slow_model(pipeline, 0.03):
        telegram.user_sends_text(group, f"{MENTION} {_question('stop me')}", chat_type="group")
        await _until(lambda: telegram.shown_in(group), 60, "no preview")
        preview = telegram.sent_to(group)[0]
        assert preview["reply_markup"]["inline_keyboard"][0][0]["callback_data"] == "stop"
        telegram.user_presses_button(group, preview["message_id"], "stop")
        await _until(lambda: telegram.shown_in(group)[-1].endswith("(stopped)"), 60, "never stopped")
    shown = telegram.shown_in(group)
    assert len(shown) == 1 and len(shown[0]) < len(f"Echo: {_question('stop me')}")
    last = telegram.sent_to(group)[-1]
    assert last["reply_markup"]["inline_keyboard"][0][0]["callback_data"] == "regen"
    telegram.user_presses_button(group, last["message_id"], "regen")
    await _until(lambda: len(telegram.shown_in(group)) >= 3, 120, "no regenerated answer")
    await asyncio.sleep(1)
    assert "\n".join(telegram.shown_in(group)[1:]).split() == f"Echo: {_question('stop me')}".split()
    toasts = [a.get("text") for a in telegram.callback_answers]
    assert "Stopping…" in toasts and "Regenerating…" in toasts, "every press's spinner was stopped"
    with pytest.raises(ValueError, match="no button"):  # only the latest answer offers Regenerate
        telegram.user_presses_button(group, last["message_id"], "regen")


async def test_feishu_stop_and_regenerate_card_buttons(pipeline: Pipeline) -> None:
    feishu = pipeline.feishu
    assert feishu is not None
    chat = "oc_stop_e2e"
    expected = f"Echo: {_question('feishu stop me')}"
    with _slow_model(pipeline, 0.03):
        feishu.user_sends_text(chat, _question("feishu stop me"))
        await _until(lambda: feishu.sent_to(chat) and feishu.calls_to("card_content"), 60, "no streaming card")
        card = feishu.sent_to(chat)[0]["message_id"]
        answer = await feishu.press_card_button(card, "stop")  # the card shows a Stop button while it streams
        assert answer == {"toast": {"type": "info", "content": "Stopping…"}}
        await _until(lambda: feishu.shown_in(chat)[-1].endswith("(stopped)"), 60, "never stopped")
    shown = feishu.shown_in(chat)
    assert len(shown) == 1 and len(shown[0]) < len(expected)
    with pytest.raises(ValueError, match="no button"):
        await feishu.press_card_button(card, "stop")  # the final card has no Stop any more
    answer = await feishu.press_card_button(card, "regen")
    assert answer["toast"]["content"] == "Regenerating…"
    await _until(lambda: len(feishu.shown_in(chat)) >= 2, 120, "no regenerated answer")
    await _until(lambda: feishu.shown_in(chat)[1].split() == expected.split(), 120, "regenerated answer incomplete")
    await asyncio.sleep(1)
    assert [text.split() for text in feishu.shown_in(chat)[1:]] == [expected.split()]
    # Only the latest answer offers Regenerate: the renderer takes it off the older card just after.
    await _until(lambda: not feishu.shows_button(card, "regen"), 30, "the older card still offers Regenerate")
    with pytest.raises(ValueError, match="no button"):
        await feishu.press_card_button(card, "regen")


@pytest.mark.disrupts_pipeline
async def test_killing_core_llm_mid_stream_ends_in_one_complete_answer(pipeline: Pipeline) -> None:
    group = -7201
    telegram = pipeline.telegram
    cores = [p for p in pipeline.supervisor.processes if p.name == "core-llm"]
    with _slow_model(pipeline, 0.02):
        telegram.user_sends_text(group, f"{MENTION} {_question('core crash')}", chat_type="group")
        await _until(lambda: telegram.shown_in(group), 60, "no preview")
        for core in cores:  # whichever replica streams this answer dies mid-stream
            await asyncio.to_thread(core.kill)
        pipeline.supervisor.restart_crashed()
        await asyncio.to_thread(pipeline.supervisor.wait_ready, 400, cores)
        await _complete(pipeline, group, f"Echo: {_question('core crash')}", timeout=240)
    assert len(telegram.shown_in(group)) == 2


@pytest.mark.disrupts_pipeline
async def test_killing_the_renderer_mid_stream_ends_in_one_complete_answer(pipeline: Pipeline) -> None:
    group = -7301
    telegram = pipeline.telegram
    renderer = pipeline.service("renderer")
    with _slow_model(pipeline, 0.02):
        telegram.user_sends_text(group, f"{MENTION} {_question('renderer crash')}", chat_type="group")
        await _until(lambda: telegram.shown_in(group), 60, "no preview")
        await asyncio.sleep(0.5)
        await asyncio.to_thread(renderer.kill)
        pipeline.supervisor.restart_crashed()
        await asyncio.to_thread(pipeline.supervisor.wait_ready, 400, [renderer])
        await _complete(pipeline, group, f"Echo: {_question('renderer crash')}", timeout=240)
    # The new owner read what the stream showed from the changelog and edited the same messages.
    assert len(telegram.shown_in(group)) == 2
