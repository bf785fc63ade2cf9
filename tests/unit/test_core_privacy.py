"""core-llm's privacy guard: personal data never reaches the model or the stored history, and the
user still reads their own data in the answer."""

from __future__ import annotations

import json

from aibot_common.outcome import Handler, Streams
from aibot_common.settings import PrivacySettings, Settings
from aibot_core_llm.app import make_handler
from aibot_core_llm.handler import ConversationState
from aibot_core_llm.privacy import guard
from tests.unit.access_helpers import open_gate
from tests.unit.test_core_handler import ScriptedModel, message

PHONE, CARD, KEY = "138-1234-5678", "4111 1111 1111 1111", "sk-proj-AbC123dEf456GhI789jKl0"


class EchoModel(ScriptedModel):
    """Answers by quoting the user's last message, as a model asked to repeat it would."""

    async def complete(self, messages: list[dict[str, str]]):  # type: ignore[override]
        self.answers = [f"You said: {messages[-1]['content']}"]
        return await super().complete(messages)


def core_handler(model: ScriptedModel, settings: Settings) -> Handler | Streams:
    """core-llm's stage handler as its app composes it: the privacy guard in front of the access gate."""
    gate = open_gate(settings, {"m": model})
    return guard(make_handler(gate, model, settings), settings.privacy, gate.may_forget)


def _handler(model: ScriptedModel, **privacy: object) -> Handler:
    return core_handler(model, Settings(privacy=PrivacySettings(**privacy)))


async def test_the_model_and_the_history_see_placeholders_the_user_sees_the_values() -> None:
    model = EchoModel()
    handle = _handler(model, placeholder_key="unit-key")
    text = f"my phone is {PHONE}, card {CARD}, key {KEY}"
    outcome = await handle(message(text), None)
    sent = json.dumps(model.calls)
    for value in (PHONE, CARD, KEY, "1234"):
        assert value not in sent, f"{value} reached the model"
    stored = json.dumps(outcome.state_value())
    for value in (PHONE, CARD, KEY):
        assert value not in stored, f"{value} is in the stored history"
    assert "[PHONE_" in stored and "[CARD_" in stored and "[KEY_" in stored
    (answer,) = outcome.emit
    assert answer.text() == f"You said: {text}"


async def test_the_same_value_keeps_its_placeholder_across_turns() -> None:
    model = EchoModel()
    handle = _handler(model)
    first = await handle(message(f"call {PHONE}", 1), None)
    await handle(message("call 13812345678 again", 2), first.state_value())
    placeholders = [m["content"].split()[1] for m in (model.calls[0][-1], model.calls[1][-1])]
    assert placeholders[0] == placeholders[1] and placeholders[0].startswith("[PHONE_")


async def test_a_redelivery_is_answered_with_the_values_again() -> None:
    model = EchoModel()
    handle = _handler(model)
    first = await handle(message("mail ada@example.com"), None)
    again = await handle(message("mail ada@example.com"), first.state_value())
    assert len(model.calls) == 1  # the stored answer, not a second call
    assert again.emit[0].text() == "You said: mail ada@example.com"


async def test_refuse_mode_neither_calls_the_model_nor_stores_anything() -> None:
    model = EchoModel()
    handle = _handler(model, mode="refuse")
    outcome = await handle(message("我的身份证是11010519491231002X"), None)
    assert model.calls == [] and outcome.state is None
    assert "id_card" in outcome.emit[0].text()
    ordinary = await handle(message("no personal data here, order 6222021234567890"), None)
    assert len(model.calls) == 1 and ordinary.emit[0].text().startswith("You said:")


async def test_off_mode_sends_the_message_as_it_is() -> None:
    model = EchoModel()
    await _handler(model, mode="off")(message(f"call {PHONE}"), None)
    assert PHONE in model.calls[0][-1]["content"]


async def test_masking_is_on_by_default() -> None:
    assert Settings().privacy.mode == "mask"
    model = EchoModel()
    settings = Settings()
    await core_handler(model, settings)(message(f"call {PHONE}"), ConversationState())
    assert PHONE not in model.calls[0][-1]["content"]


async def test_forget_in_a_group_needs_a_role_bound_there_as_reset_does() -> None:
    from aibot_common.state import TOMBSTONE
    from tests.unit.access_helpers import text

    bound = Settings.model_validate({"access": {"bindings": [{"subject": "telegram:1", "role": "admin"}]}})
    handle = core_handler(EchoModel(), bound)
    stranger = await handle(text("/forget", user="99", chat="-100", group=True), ConversationState().model_dump())
    assert stranger.state is None  # the group's history is untouched
    assert [e.text() for e in stranger.emit] == ["Only a user with a role bound in this group can erase its history."]
    admin = await handle(text("/forget", user="1", chat="-100", group=True), ConversationState().model_dump())
    assert admin.state is TOMBSTONE
    own = await handle(text("/forget", user="99"), ConversationState().model_dump())  # a private chat is theirs
    assert own.state is TOMBSTONE


async def test_a_streaming_handlers_partials_are_restored_before_they_are_published() -> None:
    from aibot_common.envelope import Kind
    from aibot_common.outcome import Outcome, Streams

    published = []
    seen_by_model = []

    async def streaming(envelope, stored, publish):  # type: ignore[no-untyped-def]
        seen_by_model.append(envelope.text())
        partial = envelope.derive(kind=Kind.PARTIAL, suffix="partial1", parts=envelope.parts)
        await publish(partial)
        return Outcome(emit=[envelope.derive(kind=Kind.REPLY, suffix="reply", parts=envelope.parts)])

    async def collect(envelope):  # type: ignore[no-untyped-def]
        published.append(envelope)

    guarded = guard(Streams(streaming), PrivacySettings(placeholder_key="unit-key"))
    assert isinstance(guarded, Streams)
    outcome = await guarded.handler(message(f"call {PHONE}"), None, collect)
    assert PHONE not in seen_by_model[0]
    assert published[0].text() == f"call {PHONE}" and outcome.emit[0].text() == f"call {PHONE}"
