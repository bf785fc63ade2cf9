"""Stop and regenerate: the user's controls over an answer.

- **Stop** ("/stop", or the Stop button's callback): while an answer streams, its conversation's
  lane is busy with it, so the stop would wait behind the very answer it is meant to end. The
  runner shows every fetched record to `StopSignals.interrupt` first (`Streams.interrupt`); a stop
  sets the event of the answer in progress in that conversation (the same replica owns the
  conversation's partition, so it is the one streaming), `StoppableModel` cancels the model request
  and the handler gets the text so far, marked as stopped, as the answer, which is what the user
  keeps and the history records. The stop record itself then needs nothing more.
- **Regenerate** (the button on an answer): the conversation's last exchange is taken back and its
  question asked again, as the same request would be.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator

from aibot_common.envelope import Envelope, TextPart
from aibot_core_llm.handler import ConversationState
from aibot_core_llm.llm import Completion, OnText, StreamingChatModel

STOP_DATA = "stop"  # callback data of the Stop button
REGENERATE_DATA = "regen"  # callback data of the Regenerate button
STOPPED_MARK = " … (stopped)"


def _command(envelope: Envelope) -> str:
    text = envelope.text().strip().lower()
    if envelope.meta.get("callback_query_id"):
        return text  # a button's data
    return text.split()[0] if text.startswith("/") else ""


def is_stop(envelope: Envelope) -> bool:
    command = _command(envelope)
    return command == "/stop" or (bool(envelope.meta.get("callback_query_id")) and command == STOP_DATA)


def is_regenerate(envelope: Envelope) -> bool:
    return bool(envelope.meta.get("callback_query_id")) and _command(envelope) == REGENERATE_DATA


class StopSignals:
    """The answers streaming on this replica, by conversation: what a stop sets."""

    def __init__(self) -> None:
        self._running: dict[str, asyncio.Event] = {}

    def interrupt(self, envelope: Envelope) -> None:
        if is_stop(envelope):
            event = self._running.get(envelope.key)
            if event is not None:
                event.set()

    @contextlib.contextmanager
    def answering(self, key: str) -> Iterator[asyncio.Event]:
        event = asyncio.Event()
        self._running[key] = event
        try:
            yield event
        finally:
            if self._running.get(key) is event:
                del self._running[key]


class StoppableModel:
    """The model, cut short when `stop` is set: the request is cancelled and the text so far returned."""

    def __init__(self, model: StreamingChatModel, stop: asyncio.Event) -> None:
        self.name = model.name
        self._model = model
        self._stop = stop

    async def complete(self, messages: list[dict[str, str]], on_text: OnText | None = None) -> Completion:
        so_far = ""

        def seen(text: str) -> None:
            nonlocal so_far
            so_far = text
            if on_text is not None:
                on_text(text)

        call = asyncio.ensure_future(self._model.complete(messages, on_text=seen))
        stopped = asyncio.ensure_future(self._stop.wait())
        try:
            await asyncio.wait({call, stopped}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopped.cancel()
        if call.done():
            return call.result()
        call.cancel()  # closes the HTTP stream: the model stops writing (and billing)
        await asyncio.gather(call, return_exceptions=True)
        return Completion((so_far.rstrip() + STOPPED_MARK).strip())


def regenerate(envelope: Envelope, state: ConversationState) -> tuple[Envelope, ConversationState] | None:
    """The last question again, with its answer taken out of the history; None when there is none."""
    turns = list(state.turns)
    if len(turns) < 2 or turns[-1].role != "assistant" or turns[-2].role != "user":
        return None
    question = turns[-2].content
    asked = envelope.model_copy(update={"parts": [TextPart(text=question)]})
    return asked, state.model_copy(update={"turns": turns[:-2]})
