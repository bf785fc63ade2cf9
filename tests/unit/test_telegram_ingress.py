"""Telegram updates -> envelopes, parsed by python-telegram-bot as the real ingress does."""

from __future__ import annotations

from telegram import Update

from aibot_common.envelope import AudioPart, ChatType, Kind, UnsupportedPart
from aibot_common.topics import ASR_REQUESTS, INBOUND, route
from aibot_ingress_telegram.handler import BotIdentity, handle_update, update_to_envelope

BOT = BotIdentity(id="123456", username="aibot_test_bot")
ALL = {"message", "edited_message", "callback_query"}


def _update(update_id: int = 10, chat_type: str = "private", **message: object) -> Update:
    base = {
        "message_id": 5,
        "date": 1_700_000_000,
        "chat": {"id": 77, "type": chat_type},
        "from": {"id": 9, "is_bot": False, "first_name": "Ann"},
    }
    base.update(message)
    return Update.de_json({"update_id": update_id, "message": base}, None)


def test_text_message_becomes_an_inbound_envelope() -> None:
    (emitted,) = handle_update(_update(text="hello"), BOT, ALL).emit
    assert route(emitted) is INBOUND and emitted.key == "telegram:77" and emitted.kind is Kind.MESSAGE
    envelope = update_to_envelope(_update(text="hello"), BOT, ALL)
    assert envelope.id == "tg-123456-10"
    assert envelope.text() == "hello" and envelope.reply_to_message_id == "5"
    assert envelope.sender.display_name == "Ann"


def test_the_same_update_gets_the_same_id_so_retries_dedupe() -> None:
    assert update_to_envelope(_update(text="a"), BOT, ALL).id == update_to_envelope(_update(text="a"), BOT, ALL).id


def test_voice_goes_to_the_asr_topic() -> None:
    voice = {"file_id": "F1", "file_unique_id": "U1", "duration": 3, "mime_type": "audio/ogg", "file_size": 1234}
    (emitted,) = handle_update(_update(voice=voice), BOT, ALL).emit
    assert emitted.kind is Kind.ASR_REQUEST and route(emitted) is ASR_REQUESTS
    (part,) = update_to_envelope(_update(voice=voice), BOT, ALL).parts
    assert isinstance(part, AudioPart) and part.file_ref == "F1" and part.duration_s == 3


def test_stickers_are_marked_unsupported_not_dropped() -> None:
    sticker = {
        "file_id": "S",
        "file_unique_id": "SU",
        "width": 1,
        "height": 1,
        "is_animated": False,
        "is_video": False,
        "type": "regular",
    }
    (part,) = update_to_envelope(_update(sticker=sticker), BOT, ALL).parts
    assert isinstance(part, UnsupportedPart) and part.platform_type == "sticker"


def test_groups_answer_mentions_commands_and_replies_only() -> None:
    assert update_to_envelope(_update(chat_type="group", text="chatting among ourselves"), BOT, ALL) is None
    mentioned = update_to_envelope(_update(chat_type="supergroup", text="@aibot_test_bot what is 2+2?"), BOT, ALL)
    assert mentioned.text() == "what is 2+2?" and mentioned.conversation.chat_type is ChatType.GROUP
    command = update_to_envelope(_update(chat_type="group", text="/help@aibot_test_bot"), BOT, ALL)
    assert command.text() == "/help"
    other_bot = update_to_envelope(_update(chat_type="group", text="/help@other_bot"), BOT, ALL)
    assert other_bot is None
    reply = {
        "message_id": 4,
        "date": 1_700_000_000,
        "chat": {"id": 77, "type": "group"},
        "from": {"id": 123456, "is_bot": True, "first_name": "Bot"},
        "text": "earlier answer",
    }
    assert update_to_envelope(_update(chat_type="group", text="and then?", reply_to_message=reply), BOT, ALL)


def test_update_kinds_not_allowed_are_ignored() -> None:
    assert handle_update(_update(text="x"), BOT, {"callback_query"}).emit == ()


def test_callback_query_becomes_a_message_with_its_data() -> None:
    update = Update.de_json(
        {
            "update_id": 11,
            "callback_query": {
                "id": "cb1",
                "from": {"id": 9, "is_bot": False, "first_name": "Ann"},
                "chat_instance": "ci",
                "data": "yes",
                "message": {
                    "message_id": 8,
                    "date": 1_700_000_000,
                    "chat": {"id": 77, "type": "private"},
                    "text": "ok?",
                },
            },
        },
        None,
    )
    envelope = update_to_envelope(update, BOT, ALL)
    assert envelope.text() == "yes" and envelope.meta["callback_query_id"] == "cb1"


def _press(update_id: int, data: str) -> Update:
    return Update.de_json(
        {
            "update_id": update_id,
            "callback_query": {
                "id": f"cb{update_id}",
                "from": {"id": 9, "is_bot": False, "first_name": "Ann"},
                "chat_instance": "ci",
                "data": data,
                "message": {"message_id": 8, "date": 1_700_000_000, "chat": {"id": -77, "type": "group"}, "text": "…"},
            },
        },
        None,
    )


async def test_every_button_press_is_answered_once_by_the_ingress_with_a_toast() -> None:
    """Stop included: the client's spinner stops at once, whatever core-llm then does with the press."""
    import asyncio

    from pydantic import SecretStr

    from aibot_common.settings import Settings, TelegramConfig
    from aibot_ingress_telegram.app import Ingress
    from tests.unit.ingress_apps import StubBot, StubProducer

    bot, producer = StubBot(), StubProducer()
    settings = Settings(telegram=TelegramConfig(bot_token=SecretStr("123456:unit-token")))
    ingress = Ingress(settings, producer, bot)  # type: ignore[arg-type]
    ingress.identity = BOT
    for update_id, data in ((21, "stop"), (22, "regen"), (23, "something else")):
        assert await ingress.publish(_press(update_id, data)) == 1
    for _ in range(50):
        if len(bot.answered) == 3:
            break
        await asyncio.sleep(0.01)
    assert bot.answered == [("cb21", "Stopping…"), ("cb22", "Regenerating…"), ("cb23", None)]
    assert len(producer.records) == 3
