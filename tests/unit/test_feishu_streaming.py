"""Streamed answers on Feishu against the fake Open Platform: CardKit streaming cards with growing
sequences, a new card past 30 KB and before the 10-minute window, back-off, and the plain fallback."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from pydantic import SecretStr

from aibot_common.envelope import ChatType, Conversation, Envelope, Kind, Platform, TextPart
from aibot_common.platforms.feishu import FeishuClient
from aibot_common.settings import FeishuConfig, RendererSettings
from aibot_core_llm.handler import reply
from aibot_core_llm.streaming import partial_reply
from aibot_fakes.feishu import FakeFeishu
from aibot_renderer import feishu_sender
from aibot_renderer.feishu_sender import FeishuSender
from aibot_renderer.handler import deliver, process_reply

SETTINGS = RendererSettings()


@pytest.fixture
async def fake() -> AsyncIterator[FakeFeishu]:
    server = FakeFeishu()
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def client(fake: FakeFeishu) -> AsyncIterator[FeishuClient]:
    config = FeishuConfig(enabled=True, app_id=fake.app_id, app_secret=SecretStr(fake.app_secret), domain=fake.url)
    async with FeishuClient(config) as feishu:
        yield feishu


def _question(fake: FakeFeishu, chat: str) -> Envelope:
    asked = fake.user_sends_text(chat, "question")["event"]["message"]["message_id"]
    return Envelope(
        id=f"fs-{chat}",
        kind=Kind.MESSAGE,
        conversation=Conversation(platform=Platform.FEISHU, chat_id=chat, chat_type=ChatType.PRIVATE),
        parts=[TextPart(text="question")],
        reply_to_message_id=asked,
    )


class Chat:
    def __init__(self, sender: FeishuSender) -> None:
        self.sender = sender
        self.state: Any = None

    async def show(self, envelope: Envelope) -> None:
        for outbound in process_reply(envelope, SETTINGS).emit:
            outcome = await deliver(outbound, self.state, self.sender)
            if outcome.state is not None:
                self.state = outcome.state_value()


def _final(asked: Envelope, text: str) -> Envelope:
    final = reply(asked, text)
    return final.model_copy(update={"meta": {**final.meta, "streamed": "1"}})


def _growing(text: str, steps: int) -> list[str]:
    return [text[: len(text) * (i + 1) // steps] for i in range(steps)]


async def test_an_answer_streams_into_one_card_that_ends_holding_all_of_it(
    fake: FakeFeishu, client: FeishuClient
) -> None:
    asked = _question(fake, "oc_stream")
    answer = "Streaming into a **card**, a few words at a time, `code` included, until done."
    chat = Chat(FeishuSender(client))
    for seq, text in enumerate(_growing(answer, 4), start=1):
        await chat.show(partial_reply(asked, text, seq))
    await chat.show(_final(asked, answer))
    (sent,) = fake.sent_to("oc_stream")
    assert sent["reply_to"] == asked.reply_to_message_id and sent["card_id"]
    card = fake.cardkit.get(sent["card_id"])
    assert fake.shown_in("oc_stream") == [answer]
    assert card.streaming_since is None and not card.card.get("config", {}).get("streaming_mode"), "closed at the end"
    assert len(fake.calls_to("card_create")) == 1 and len(fake.calls_to("card_content")) == 3
    sequences = [c["body"]["sequence"] for c in fake.calls if c["api"] in ("card_content", "card_update")]
    assert sequences == sorted(set(sequences)), "strictly increasing"


async def test_past_30_kb_the_answer_continues_in_a_second_card(fake: FakeFeishu, client: FeishuClient) -> None:
    asked = _question(fake, "oc_long")
    answer = "\n\n".join(f"Paragraph {n}: " + " ".join(f"w{n}x{i}" for i in range(300)) for n in range(20))
    assert len(answer.encode()) > 40 * 1024
    chat = Chat(FeishuSender(client))
    for seq, text in enumerate(_growing(answer, 5), start=1):
        await chat.show(partial_reply(asked, text, seq))
    await chat.show(_final(asked, answer))
    shown = fake.shown_in("oc_long")
    assert len(shown) == 2
    assert " ".join(shown).split() == answer.split(), "every word, in order, once"


async def test_without_the_cardkit_permission_the_answer_is_a_plain_message(
    fake: FakeFeishu, client: FeishuClient
) -> None:
    fake.cardkit.enabled = False
    asked = _question(fake, "oc_noperm")
    chat = Chat(FeishuSender(client))
    await chat.show(partial_reply(asked, "half", 1))
    await chat.show(partial_reply(asked, "half and", 2))
    await chat.show(_final(asked, "half and whole"))
    assert fake.shown_in("oc_noperm") == ["half and whole"]
    assert len(fake.calls_to("card_create")) == 1, "tried once, then remembered"


async def test_frequency_errors_pause_previews_and_the_final_still_holds_everything(
    fake: FakeFeishu, client: FeishuClient
) -> None:
    asked = _question(fake, "oc_busy")
    chat = Chat(FeishuSender(client))
    await chat.show(partial_reply(asked, "one", 1))
    fake.fail_next("card_content", code=230020, msg="frequency limit", http_status=429, retry_after=1)
    await chat.show(partial_reply(asked, "one two", 2))  # throttled: no error, previews pause
    await chat.show(partial_reply(asked, "one two three", 3))
    assert len(fake.calls_to("card_content")) == 1
    await chat.show(_final(asked, "one two three four"))
    assert fake.shown_in("oc_busy") == ["one two three four"]


async def test_a_card_is_recreated_before_feishus_streaming_window_closes(
    fake: FakeFeishu, client: FeishuClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(feishu_sender, "STREAMING_WINDOW_S", 0.0)  # every card is "nearly 10 minutes old"
    asked = _question(fake, "oc_slow")
    chat = Chat(FeishuSender(client))
    await chat.show(partial_reply(asked, "slow", 1))
    await chat.show(partial_reply(asked, "slow answer", 2))
    await chat.show(_final(asked, "slow answer, finally"))
    assert len(fake.calls_to("card_create")) == 2 and len(fake.calls_to("recall")) == 1
    assert fake.shown_in("oc_slow") == ["slow answer, finally"]


async def test_a_new_owner_continues_the_same_card_with_growing_sequences(
    fake: FakeFeishu, client: FeishuClient
) -> None:
    asked = _question(fake, "oc_handover")
    first = Chat(FeishuSender(client))
    await first.show(partial_reply(asked, "before", 1))
    await first.show(partial_reply(asked, "before the", 2))
    second = Chat(FeishuSender(client))  # a fresh replica: nothing in memory, the state from the changelog
    second.state = first.state
    await second.show(partial_reply(asked, "before the crash", 3))
    await second.show(_final(asked, "before the crash and after"))
    assert fake.shown_in("oc_handover") == ["before the crash and after"]
    assert len(fake.calls_to("card_create")) == 1
    assert all(c["code"] == 0 for c in fake.calls if c["api"].startswith("card"))
