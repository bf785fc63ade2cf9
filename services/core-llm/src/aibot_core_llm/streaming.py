"""The answer so far, published while the model writes it: partial replies, coalesced.

The model streams a token at a time; the renderer needs a growing text a few times a second, not a
record per token. `PartialReplies` keeps only the newest text and publishes it at most every
`interval_s`, and never while the previous one is still being produced: a slow broker just means
fewer, fuller partials. The first one waits `first_after_s` after the first token: an answer that is
complete by then (a command's, a short one from a fast model) goes out whole, without a preview
costing platform calls, while a long one still shows its first words within a fraction of a second.

Partials are disposable. Each carries the whole text so far (not a delta) and, in `meta["stream"]`,
the id of the final reply it leads up to; the final REPLY, produced with the conversation's state
after the model has finished, is what the user is left with and what the history keeps. A crash
mid-stream leaves some partials on the topic and no final: the input is not committed, so it is
handled again (by this replica or the next owner), which streams afresh under the same stream id
and ends with the one final reply.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from aibot_common.envelope import Envelope, Kind, derived_id
from aibot_common.outcome import Outcome, PublishPartial
from aibot_core_llm.handler import reply
from aibot_core_llm.llm import Completion, StreamingChatModel

log = logging.getLogger(__name__)


def stream_id(message: Envelope) -> str:
    """The id of the final reply to `message`, which its partials name as their stream."""
    return derived_id(message.id, "reply")


def partial_reply(message: Envelope, text: str, seq: int) -> Envelope:
    final = reply(message, text)
    return final.model_copy(
        update={
            "kind": Kind.PARTIAL,
            "id": derived_id(message.id, f"partial{seq}"),
            "meta": {**final.meta, "stream": final.id, "seq": str(seq)},
        }
    )


class PartialReplies:
    def __init__(self, message: Envelope, publish: PublishPartial, interval_s: float, first_after_s: float) -> None:
        self._message = message
        self._publish = publish
        self._interval_s = interval_s
        self._first_after_s = first_after_s
        self._latest = ""
        self._published = ""
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.count = 0

    def update(self, text: str) -> None:
        """The model's answer so far (the `OnText` callback): remembered, published soon."""
        if not text.strip():
            return
        self._latest = text
        self._changed.set()
        if self._task is None:
            self._task = asyncio.create_task(self._pump(), name=f"partials {self._message.id}")

    async def _pump(self) -> None:
        await asyncio.sleep(self._first_after_s)
        while True:
            await self._changed.wait()
            self._changed.clear()
            text = self._latest
            if text == self._published:
                continue
            self.count += 1
            await self._publish(partial_reply(self._message, text, self.count))
            self._published = text
            await asyncio.sleep(self._interval_s)

    async def aclose(self) -> None:
        """Stop publishing: the final reply is about to be produced, and no partial may follow it."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None


def mark_streamed(outcome: Outcome, partials: PartialReplies, *, regenerable: bool = False) -> Outcome:
    """Tell the renderer that this reply had previews (`meta["streamed"]`), so it lays the final out
    as the previews were (Feishu: cards) and finishes them rather than starting afresh; and that it
    is the model's answer (`meta["regenerable"]`), which gets a Regenerate button."""
    extra = {"streamed": "1"} if partials.count else {}
    if regenerable:
        extra["regenerable"] = "1"
    if not extra:
        return outcome
    emit = [e.model_copy(update={"meta": {**e.meta, **extra}}) if e.kind is Kind.REPLY else e for e in outcome.emit]
    return dataclasses.replace(outcome, emit=emit)


@asynccontextmanager
async def partial_replies(
    message: Envelope, publish: PublishPartial, interval_s: float, first_after_s: float = 0.0
) -> AsyncIterator[PartialReplies]:
    partials = PartialReplies(message, publish, interval_s, first_after_s)
    try:
        yield partials
    finally:
        await partials.aclose()


class StreamingModel:
    """The `ChatModel` the handler sees: the real model, with every streamed piece fed to the
    partials. The handler stays as it is: it asks for a completion and gets the exact final text."""

    def __init__(self, model: StreamingChatModel, partials: PartialReplies) -> None:
        self.name = model.name
        self._model = model
        self._partials = partials
        self.answered = False  # the model gave the answer (not a command's text, not an apology)

    async def complete(self, messages: list[dict[str, str]]) -> Completion:
        completion = await self._model.complete(messages, on_text=self._partials.update)
        self.answered = True
        return completion
