"""Edited messages: answered again or left alone, per the `edits` settings, from the times Telegram
gives (the original's `date`, the edit's `edit_date`) as the ingress passes them on."""

from __future__ import annotations

from telegram import Update

from aibot_common.settings import EditSettings
from aibot_core_llm.edits import answers_edit
from aibot_ingress_telegram.handler import BotIdentity, update_to_envelope

BOT = BotIdentity(id="123456", username="aibot_test_bot")
ALL = {"message", "edited_message", "callback_query"}
SENT = 1_700_000_000


def _edit(after_s: int):  # type: ignore[no-untyped-def]
    message = {
        "message_id": 5,
        "date": SENT,
        "edit_date": SENT + after_s,
        "chat": {"id": 77, "type": "private"},
        "from": {"id": 9, "is_bot": False, "first_name": "Ann"},
        "text": "what is 2+3?",
    }
    envelope = update_to_envelope(Update.de_json({"update_id": 11, "edited_message": message}, None), BOT, ALL)
    assert envelope is not None and envelope.meta["edited"] == "true"
    return envelope


def test_by_default_a_quick_edit_is_answered_and_a_late_one_is_not() -> None:
    settings = EditSettings()
    assert answers_edit(_edit(10), settings)
    assert answers_edit(_edit(60), settings)
    assert not answers_edit(_edit(3600), settings)


def test_the_modes_reanswer_and_ignore_do_what_they_say() -> None:
    assert answers_edit(_edit(3600), EditSettings(mode="reanswer"))
    assert not answers_edit(_edit(1), EditSettings(mode="ignore"))


def test_a_message_that_was_not_edited_is_always_answered() -> None:
    message = {"message_id": 6, "date": SENT, "chat": {"id": 77, "type": "private"}, "text": "hi"}
    envelope = update_to_envelope(Update.de_json({"update_id": 12, "message": message}, None), BOT, ALL)
    assert envelope is not None and answers_edit(envelope, EditSettings(mode="ignore"))
