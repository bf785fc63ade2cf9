"""core-llm's handler with a scripted model: history, commands, dedupe, failures."""

from __future__ import annotations

from aibot_common.envelope import AudioPart, Conversation, Envelope, Kind, Origin, Platform, TextPart
from aibot_common.settings import CoreSettings
from aibot_core_llm.handler import ConversationState, Turn, handle, trim_history
from aibot_core_llm.llm import Completion, LLMError


class ScriptedModel:
    name = "scripted"

    def __init__(self, *answers: str | LLMError) -> None:
        self.answers = list(answers)
        self.calls: list[list[dict[str, str]]] = []

    async def complete(self, messages: list[dict[str, str]]) -> Completion:
        self.calls.append(messages)
        answer = self.answers.pop(0) if self.answers else "ok"
        if isinstance(answer, LLMError):
            raise answer
        return Completion(answer)


SETTINGS = CoreSettings(system_prompt="be brief", llm_attempts=2)


def message(text: str, n: int = 1, **changes: object) -> Envelope:
    data = {
        "id": f"tg-1-{n}",
        "kind": Kind.MESSAGE,
        "conversation": Conversation(platform=Platform.TELEGRAM, chat_id="7"),
        "parts": [TextPart(text=text)],
        "reply_to_message_id": str(n),
    }
    data.update(changes)
    return Envelope(**data)


async def test_an_answer_becomes_a_reply_and_history() -> None:
    model = ScriptedModel("Paris.")
    outcome = await handle(message("capital of France?"), ConversationState(), model, SETTINGS)
    (reply,) = outcome.emit
    assert reply.kind is Kind.REPLY and reply.text() == "Paris."
    assert reply.reply_to_message_id == "1" and reply.causation_id == "tg-1-1"
    assert model.calls[0] == [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "capital of France?"},
    ]
    assert [t.content for t in outcome.state.turns] == ["capital of France?", "Paris."]


async def test_history_goes_to_the_model_in_order() -> None:
    model = ScriptedModel("one", "two")
    first = await handle(message("a", 1), ConversationState(), model, SETTINGS)
    await handle(message("b", 2), first.state, model, SETTINGS)
    assert [m["content"] for m in model.calls[1]] == ["be brief", "a", "one", "b"]


async def test_a_redelivered_message_is_answered_once_the_same_way() -> None:
    model = ScriptedModel("first answer")
    first = await handle(message("hi"), ConversationState(), model, SETTINGS)
    again = await handle(message("hi"), first.state, model, SETTINGS)
    assert len(model.calls) == 1
    assert again.state is None
    assert [r.id for r in again.emit] == [r.id for r in first.emit]
    assert again.emit[0].text() == "first answer"


async def test_reset_forgets_history_but_not_dedupe() -> None:
    model = ScriptedModel("x")
    first = await handle(message("remember me", 1), ConversationState(), model, SETTINGS)
    reset = await handle(message("/reset", 2), first.state, model, SETTINGS)
    assert reset.state.turns == [] and "forgotten" in reset.emit[0].text()
    assert reset.state.seen("tg-1-1")


async def test_help_and_start_do_not_call_the_model() -> None:
    model = ScriptedModel()
    for command in ("/start", "/help"):
        outcome = await handle(message(command), ConversationState(), model, SETTINGS)
        assert "/reset" in outcome.emit[0].text()
    assert model.calls == []


async def test_retryable_model_errors_are_retried_then_explained() -> None:
    model = ScriptedModel(LLMError("model endpoint answered 503: busy", retryable=True), "recovered")
    outcome = await handle(message("hello"), ConversationState(), model, SETTINGS)
    assert outcome.emit[0].text() == "recovered"

    failing = ScriptedModel(*[LLMError("model timed out after 1s", retryable=True)] * 2)
    outcome = await handle(message("hello", 2), ConversationState(), failing, SETTINGS)
    assert outcome.emit[0].text().startswith("Sorry, I could not get an answer")
    assert "model timed out" in outcome.emit[0].text()
    assert outcome.state.turns == []  # the failed exchange is not history


async def test_permanent_model_errors_are_not_retried() -> None:
    model = ScriptedModel(LLMError("model endpoint answered 401: bad key", retryable=False))
    outcome = await handle(message("hello"), ConversationState(), model, SETTINGS)
    assert len(model.calls) == 1
    assert "Sorry" in outcome.emit[0].text()


async def test_unsupported_content_gets_a_polite_reply() -> None:
    voice = message("", parts=[AudioPart(file_ref="f")])
    outcome = await handle(voice, ConversationState(), ScriptedModel(), SETTINGS)
    assert "voice messages" in outcome.emit[0].text()


async def test_voice_replies_carry_the_transcript() -> None:
    heard = message("what time is it", origin=Origin.VOICE)
    outcome = await handle(heard, ConversationState(), ScriptedModel("noon"), SETTINGS)
    assert outcome.emit[0].meta["transcript"] == "what time is it"


def test_history_is_bounded_by_turns_and_tokens() -> None:
    turns = [
        Turn(role="user" if i % 2 == 0 else "assistant", content=f"t{i} " + "x" * 300, source_id=str(i // 2))
        for i in range(100)
    ]
    kept = trim_history(turns, max_turns=10, max_tokens=100_000)
    assert len(kept) == 20 and kept[-1] is turns[-1] and kept[0].role == "user"
    kept = trim_history(turns, max_turns=50, max_tokens=500)
    assert 0 < len(kept) < 10 and kept[0].role == "user"


async def test_the_answers_kept_for_redeliveries_are_bounded_in_bytes() -> None:
    from aibot_core_llm.handler import REMEMBERED_REPLY_BYTES

    long_answer = "x" * (REMEMBERED_REPLY_BYTES // 3)
    model, state = ScriptedModel(*[long_answer] * 6), ConversationState()
    for n in range(6):
        state = (await handle(message(f"question {n}", n), state, model, CoreSettings())).state
    kept = sum(len(t.encode()) for t in state.last_replies.values())
    assert kept <= REMEMBERED_REPLY_BYTES and len(state.last_replies) >= 1
    assert message("question 5", 5).id in state.last_replies  # the newest answer is always kept
