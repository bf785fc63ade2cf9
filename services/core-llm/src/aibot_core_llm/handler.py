"""core-llm's handler: one user message + the conversation's state -> the reply + the new state.

No Kafka and no HTTP here: the model is passed in, and the runner routes and produces the outcome.
"""

from __future__ import annotations

import logging

from pydantic import BaseModel, Field
from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, wait_exponential

from aibot_common.envelope import AudioPart, Envelope, FilePart, ImagePart, Kind, Origin, TextPart, UnsupportedPart
from aibot_common.outcome import Outcome
from aibot_common.settings import CoreSettings
from aibot_core_llm.llm import ChatModel, Completion, LLMError

log = logging.getLogger(__name__)

RECENT_IDS = 200  # ids remembered for dedupe beyond what the history keeps
# The answers kept for re-deliveries, in bytes: long answers would otherwise make a conversation's
# state (memory on every replica that holds it, and its changelog record) grow with max_tokens.
REMEMBERED_REPLY_BYTES = 32 * 1024

HELP_TEXT = (
    "I am an AI assistant. Send me a message and I will answer; voice notes work too.\n\n"
    "Commands:\n"
    "/help - this text\n"
    "/reset - forget our conversation and start afresh\n"
    "/forget - erase our conversation and everything kept about it"
)
WELCOME_TEXT = "Hello! I am an AI assistant. Ask me anything.\n\n" + HELP_TEXT.split("\n\n", 1)[1]
RESET_TEXT = "Done: I have forgotten our conversation. What shall we talk about?"
MODEL_FAILED_TEXT = (
    "Sorry, I could not get an answer from the language model just now ({reason}). Please try again in a moment."
)
UNSUPPORTED_TEXT = "Sorry, I can't handle {what} yet. Please send text or a voice note."
EMPTY_TEXT = "I received an empty message. Please send some text."


class Turn(BaseModel):
    role: str  # "user" | "assistant"
    content: str
    source_id: str  # the envelope id of the user message this turn belongs to


class ConversationState(BaseModel):
    turns: list[Turn] = Field(default_factory=list)
    recent_ids: list[str] = Field(default_factory=list)
    # The last replies by source id, so a re-delivered message re-emits the same answer.
    last_replies: dict[str, str] = Field(default_factory=dict)

    def seen(self, envelope_id: str) -> bool:
        return envelope_id in self.recent_ids


def estimate_tokens(text: str) -> int:
    """A model-agnostic estimate: about 4 bytes a token for Latin text, 1 a character for CJK."""
    return len(text.encode()) // 3 + 1


def trim_history(turns: list[Turn], max_turns: int, max_tokens: int) -> list[Turn]:
    """Keep the newest turns within both bounds, whole user/assistant pairs where possible."""
    kept: list[Turn] = []
    budget = max_tokens
    for turn in reversed(turns[-max_turns * 2 :]):
        cost = estimate_tokens(turn.content)
        if cost > budget:
            break
        budget -= cost
        kept.append(turn)
    kept.reverse()
    while kept and kept[0].role != "user":
        kept.pop(0)
    return kept


def reply(envelope: Envelope, text: str, **meta: str) -> Envelope:
    extra_meta = dict(envelope.meta)
    if envelope.origin is Origin.VOICE:
        extra_meta["transcript"] = envelope.text()
    extra_meta.update(meta)
    return envelope.derive(
        kind=Kind.REPLY,
        suffix="reply",
        parts=[TextPart(text=text, format="markdown")],
        meta=extra_meta,
    )


async def handle(envelope: Envelope, state: ConversationState, model: ChatModel, settings: CoreSettings) -> Outcome:
    if state.seen(envelope.id):
        # A re-delivery (platform retry, or our own restart before the commit): answer the same way
        # again if we still have the answer; downstream dedupes by the reply's derived id.
        previous = state.last_replies.get(envelope.id)
        return Outcome(emit=[reply(envelope, previous)] if previous else [])

    text = envelope.text().strip()
    command = text.split()[0].lower() if text.startswith("/") else None
    if command in ("/start", "/help"):
        return _answer(envelope, state, WELCOME_TEXT if command == "/start" else HELP_TEXT)
    if command == "/reset":
        return _answer(envelope, ConversationState(recent_ids=state.recent_ids), RESET_TEXT)

    if not text:
        kinds = [p for p in envelope.parts if not isinstance(p, TextPart)]
        if kinds:
            return _answer(envelope, state, UNSUPPORTED_TEXT.format(what=_describe(kinds[0])))
        return _answer(envelope, state, EMPTY_TEXT)

    history = trim_history(state.turns, settings.history_max_turns, settings.history_max_tokens)
    messages = [{"role": "system", "content": settings.system_prompt}]
    messages += [{"role": t.role, "content": t.content} for t in history]
    messages.append({"role": "user", "content": text})

    try:
        completion = await _complete_with_retries(model, messages, settings.llm_attempts)
    except LLMError as exc:
        log.error("model %s failed for %s: %s", model.name, envelope.id, exc)
        # The user hears about it; the message is not added to the history, so a retry is clean.
        return _answer(envelope, state, MODEL_FAILED_TEXT.format(reason=_short(exc)))

    turns = [
        *history,
        Turn(role="user", content=text, source_id=envelope.id),
        Turn(role="assistant", content=completion.text, source_id=envelope.id),
    ]
    new_state = ConversationState(
        turns=trim_history(turns, settings.history_max_turns, settings.history_max_tokens),
        recent_ids=state.recent_ids,
        last_replies=state.last_replies,
    )
    return _answer(envelope, new_state, completion.text)


def _answer(envelope: Envelope, state: ConversationState, text: str) -> Outcome:
    """Reply, and remember the message id (and the answer) so a re-delivery is not answered twice."""
    recent = [*state.recent_ids, envelope.id][-RECENT_IDS:]
    last = {k: v for k, v in state.last_replies.items() if k in recent[-20:]}
    last[envelope.id] = text
    last = _within_bytes(last, REMEMBERED_REPLY_BYTES)
    new_state = state.model_copy(update={"recent_ids": recent, "last_replies": last})
    return Outcome(emit=[reply(envelope, text)], state=new_state)


def _within_bytes(replies: dict[str, str], budget: int) -> dict[str, str]:
    """The newest answers whose UTF-8 size fits the budget; the newest one always (its re-delivery
    is the likely one)."""
    kept: dict[str, str] = {}
    for message_id, text in reversed(replies.items()):
        size = len(text.encode())
        if kept and size > budget:
            break
        kept[message_id] = text
        budget -= size
    return dict(reversed(kept.items()))


async def _complete_with_retries(model: ChatModel, messages: list[dict[str, str]], attempts: int) -> Completion:
    async for attempt in AsyncRetrying(
        stop=stop_after_attempt(attempts),
        wait=wait_exponential(multiplier=0.5, max=8),
        retry=retry_if_exception(lambda e: isinstance(e, LLMError) and e.retryable),
        reraise=True,
    ):
        with attempt:
            return await model.complete(messages)
    raise AssertionError("unreachable: tenacity either returns or re-raises")


def _describe(part: object) -> str:
    if isinstance(part, AudioPart):
        return "voice messages"
    if isinstance(part, ImagePart):
        return "images"
    if isinstance(part, FilePart):
        return "files"
    if isinstance(part, UnsupportedPart):
        return f"{part.platform_type} messages"
    return "this kind of message"


def _short(exc: LLMError) -> str:
    return str(exc).split(":", 1)[0]
