"""Streamed answers on Telegram against the fake Bot API: drafts in private chats, one edited
message in groups, past 4096 characters a new message, flood limits, and a new owner continuing."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from pydantic import SecretStr
from telegram import Bot

from aibot_common.envelope import ChatType, Conversation, Envelope, Kind, Platform, TextPart
from aibot_common.errors import Retryable
from aibot_common.platforms.telegram import make_bot
from aibot_common.settings import RendererSettings, TelegramConfig
from aibot_core_llm.handler import reply
from aibot_core_llm.streaming import partial_reply
from aibot_fakes.telegram import FakeTelegram
from aibot_fakes.telegram_flood import FloodControl, FloodLimits
from aibot_renderer.handler import deliver, process_reply
from aibot_renderer.streams import SenderState
from aibot_renderer.telegram_sender import TelegramSender

SETTINGS = RendererSettings()
PRIVATE, GROUP = 501, -502


@pytest.fixture
async def fake() -> AsyncIterator[FakeTelegram]:
    server = FakeTelegram()
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def bot(fake: FakeTelegram) -> AsyncIterator[Bot]:
    config = TelegramConfig(bot_token=SecretStr(fake.token), api_base_url=fake.url)
    async with make_bot(config) as client:
        yield client


def _sender(bot: Bot, **config: Any) -> TelegramSender:
    return TelegramSender(bot, TelegramConfig(bot_token=SecretStr("1:x"), **config))


def _question(fake: FakeTelegram, chat: int, n: int = 1) -> Envelope:
    chat_type = ChatType.GROUP if chat < 0 else ChatType.PRIVATE
    asked = fake.user_sends_text(chat, "question", chat_type="group" if chat < 0 else "private")["message"]
    return Envelope(
        id=f"tg-{chat}-{n}",
        kind=Kind.MESSAGE,
        conversation=Conversation(platform=Platform.TELEGRAM, chat_id=str(chat), chat_type=chat_type),
        parts=[TextPart(text="question")],
        reply_to_message_id=str(asked["message_id"]),
    )


class Chat:
    """The renderer's two stages for one chat, with the sender's state as the changelog keeps it."""

    def __init__(self, sender: TelegramSender) -> None:
        self.sender = sender
        self.state: Any = None

    async def show(self, envelope: Envelope) -> None:
        for outbound in process_reply(envelope, SETTINGS).emit:
            outcome = await deliver(outbound, self.state, self.sender)
            if outcome.state is not None:
                self.state = outcome.state_value()


def _growing(text: str, steps: int) -> list[str]:
    return [text[: len(text) * (i + 1) // steps] for i in range(steps)]


async def test_a_private_chat_previews_in_a_draft_and_gets_one_message(fake: FakeTelegram, bot: Bot) -> None:
    asked = _question(fake, PRIVATE)
    answer = "The answer, **written** a few words at a time, until it is all there."
    chat = Chat(_sender(bot, chat_messages_per_second=100))  # budgets are another test's subject
    for seq, text in enumerate(_growing(answer, 3), start=1):
        await chat.show(partial_reply(asked, text, seq))
    assert [d["plain_text"] for d in fake.drafts] == [t.replace("**", "") for t in _growing(answer, 3)]
    assert len({d["draft_id"] for d in fake.drafts}) == 1, "one draft per answer"
    await chat.show(reply(asked, answer))
    assert fake.shown_in(PRIVATE) == [answer.replace("**", "")]
    assert fake.live_drafts(PRIVATE) == [], "the message finished the draft"
    # A preview replayed after the final (a renderer restart before its commit) shows nothing.
    await chat.show(partial_reply(asked, answer[:10], 1))
    assert len(fake.drafts) == 3 and fake.live_drafts(PRIVATE) == []


async def test_a_group_sees_one_message_edited_until_it_holds_the_whole_answer(fake: FakeTelegram, bot: Bot) -> None:
    asked = _question(fake, GROUP)
    answer = "Group answer that grows and grows until it is finished."
    chat = Chat(_sender(bot, chat_messages_per_second=100))
    for seq, text in enumerate(_growing(answer, 3), start=1):
        await chat.show(partial_reply(asked, text, seq))
    await chat.show(partial_reply(asked, answer, 4))  # the same text again: no call, no error
    await chat.show(reply(asked, answer))
    methods = [m["method"] for m in fake.sent_to(GROUP)]
    # The final edit has the same text as the last preview, and takes its Stop button away.
    assert methods == ["sendMessage", "editMessageText", "editMessageText", "editMessageText"], methods
    assert fake.sent_to(GROUP)[-1]["reply_markup"] is None
    assert fake.shown_in(GROUP) == [answer]
    assert fake.drafts == []
    assert fake.sent_to(GROUP)[0]["reply_to_message_id"] == int(asked.reply_to_message_id or 0)


async def test_past_4096_characters_the_answer_continues_in_a_new_message_with_nothing_dropped(
    fake: FakeTelegram, bot: Bot
) -> None:
    asked = _question(fake, GROUP)
    paragraphs = [f"Paragraph {n}: " + " ".join(f"w{n}x{i}" for i in range(120)) for n in range(12)]
    answer = "\n\n".join(paragraphs)
    assert len(answer) > 2 * 4096
    chat = Chat(_sender(bot, group_messages_per_minute=1000, chat_messages_per_second=1000))
    for seq, text in enumerate(_growing(answer, 6), start=1):
        await chat.show(partial_reply(asked, text, seq))
    await chat.show(reply(asked, answer))
    shown = fake.shown_in(GROUP)
    assert len(shown) >= 3 and all(len(m) <= 4096 for m in shown)
    assert "\n\n".join(shown).split() == answer.split(), "every word, in order, once"
    assert SenderState.of(chat.state).streams == {}, "a finished stream is forgotten"


async def test_where_drafts_are_refused_the_preview_is_an_edited_message(fake: FakeTelegram, bot: Bot) -> None:
    asked = _question(fake, PRIVATE)
    fake.fail_next("sendMessageDraft", error_code=400, description="Bad Request: TEXTDRAFT_PEER_INVALID")
    chat = Chat(_sender(bot))
    await chat.show(partial_reply(asked, "Half of", 1))
    await chat.show(reply(asked, "Half of it, then all of it."))
    assert [m["method"] for m in fake.sent_to(PRIVATE)] == ["sendMessage", "editMessageText"]
    assert fake.shown_in(PRIVATE) == ["Half of it, then all of it."]


async def test_a_new_owner_after_a_crash_edits_the_same_message(fake: FakeTelegram, bot: Bot) -> None:
    asked = _question(fake, GROUP)
    first = Chat(_sender(bot))
    await first.show(partial_reply(asked, "Before the crash", 1))
    # Another replica takes the partition over: a fresh sender, the state from the changelog, and
    # the records since the last commit once more.
    second = Chat(_sender(bot))
    second.state = first.state
    await second.show(partial_reply(asked, "Before the crash", 1))
    await second.show(partial_reply(asked, "Before the crash and after", 2))
    await second.show(reply(asked, "Before the crash and after it, complete."))
    assert fake.shown_in(GROUP) == ["Before the crash and after it, complete."]
    assert [m["method"] for m in fake.sent_to(GROUP)].count("sendMessage") == 1


async def test_previews_use_only_spare_budget_and_stay_within_telegrams_limits(fake: FakeTelegram, bot: Bot) -> None:
    fake.flood = FloodControl(FloodLimits())  # 1/s per chat (a burst of 3), 20/min per group, 30/s
    asked, group_asked = _question(fake, PRIVATE), _question(fake, GROUP)
    private, group = Chat(_sender(bot)), Chat(_sender(bot))
    answer = "word " * 100
    for seq, text in enumerate(_growing(answer, 10), start=1):  # ten partials at once: far over 1/s
        await private.show(partial_reply(asked, text, seq))
        await group.show(partial_reply(group_asked, text, seq))
    assert 1 <= len(fake.drafts) <= 2 and 1 <= len(fake.sent_to(GROUP)) <= 2, "the rest were skipped"
    await private.show(reply(asked, answer))  # a final waits for the budget instead of skipping
    await group.show(reply(group_asked, answer))
    assert fake.shown_in(PRIVATE) == fake.shown_in(GROUP) == [answer.strip()]
    assert fake.flood.refused == 0


async def test_a_429_skips_previews_for_its_retry_after_and_makes_the_final_retryable(
    fake: FakeTelegram, bot: Bot
) -> None:
    asked = _question(fake, PRIVATE)
    chat = Chat(_sender(bot, chat_messages_per_second=100))
    fake.fail_next("sendMessageDraft", error_code=429, description="Too Many Requests: retry after 5", retry_after=5)
    await chat.show(partial_reply(asked, "one", 1))  # no error: the next preview or the final shows it
    await chat.show(partial_reply(asked, "one two", 2))
    assert fake.drafts == [], "quiet while Telegram asked for quiet"
    fake.fail_next("sendMessage", error_code=429, description="Too Many Requests: retry after 3", retry_after=3)
    with pytest.raises(Retryable) as caught:
        await chat.show(reply(asked, "one two three"))
    assert caught.value.retry_after == 3
    await chat.show(reply(asked, "one two three"))  # the runner's retry
    assert fake.shown_in(PRIVATE) == ["one two three"]


async def test_a_preview_offers_stop_and_the_models_answer_offers_regenerate(fake: FakeTelegram, bot: Bot) -> None:
    asked = _question(fake, GROUP)
    chat = Chat(_sender(bot, chat_messages_per_second=100))
    await chat.show(partial_reply(asked, "Thinking about", 1))
    (preview,) = fake.sent_to(GROUP)
    assert preview["reply_markup"]["inline_keyboard"][0][0]["callback_data"] == "stop"
    final = reply(asked, "Thinking about it: done.")
    await chat.show(final.model_copy(update={"meta": {**final.meta, "regenerable": "1"}}))
    last = fake.sent_to(GROUP)[-1]
    assert last["method"] == "editMessageText" and last["message_id"] == preview["message_id"]
    assert last["reply_markup"]["inline_keyboard"][0][0]["callback_data"] == "regen"
    # Pressing it: the regenerated answer is the latest now, so only it offers Regenerate.
    pressed = fake.user_presses_button(GROUP, last["message_id"], "regen")["callback_query"]
    again = reply(asked, "Done again.").model_copy(
        update={"id": "reply-2", "meta": {"callback_query_id": pressed["id"], "regenerable": "1"}}
    )
    await chat.show(again)
    newest = next(m for m in fake.sent_to(GROUP) if m["method"] == "sendMessage" and m["text"] == "Done again.")
    assert newest["reply_markup"]["inline_keyboard"][0][0]["callback_data"] == "regen"
    taken_off = fake.markup_edits[-1]
    assert taken_off["method"] == "editMessageReplyMarkup" and taken_off["message_id"] == preview["message_id"]
    with pytest.raises(ValueError, match="no button"):
        fake.user_presses_button(GROUP, preview["message_id"], "regen")
    fake.user_presses_button(GROUP, newest["message_id"], "regen")
    # The ingress answers every press (Telegram takes one answer per query); the renderer does not.
    assert fake.callback_answers == []


def test_the_bots_overall_limit_is_split_between_replicas_by_their_share_of_partitions(bot: Bot) -> None:
    from aiokafka import TopicPartition

    from aibot_common.runner import StageRunner
    from aibot_common.topics import OUTBOUND_TELEGRAM

    class _Consumer:
        def partitions_for_topic(self, topic: str) -> set[int]:
            return set(range(12))

    sender = _sender(bot)  # 30 messages a second for the whole bot
    runner = StageRunner(
        stage="sender-telegram",
        consumer=_Consumer(),  # type: ignore[arg-type]
        producer=None,  # type: ignore[arg-type]
        topics=[OUTBOUND_TELEGRAM.name],
        group_id="g",
        handler=lambda e, s: None,  # type: ignore[arg-type, return-value]
        on_assignment=sender.set_share,
    )
    runner._assigned = {TopicPartition(OUTBOUND_TELEGRAM.name, p) for p in range(4)}
    runner._report_share()  # what a rebalance does: this replica holds 4 of the 12 partitions
    assert sender._overall.max_rate == 10.0
    runner._assigned = set()
    runner._report_share()
    assert sender._overall.max_rate == 1.0, "never zero: a replica between assignments can still finish"
