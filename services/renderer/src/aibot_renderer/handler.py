"""The renderer's two handlers, as plain functions (the runner routes and produces their outcomes).

1. The response processor: a reply (markdown) -> the platform-ready messages it becomes
   (`telegram_format`, `feishu_format`), each an OUTBOUND envelope for its platform's sender.
2. The sender: one platform-ready message -> the platform API, at most once per message id (the
   ids delivered to a chat are the sender's state, in a changelog table).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

from aibot_common import telemetry
from aibot_common.envelope import Envelope, Kind, Platform
from aibot_common.outcome import NOTHING, Outcome
from aibot_common.settings import RendererSettings
from aibot_renderer.feishu_format import format_for_feishu, format_preview_for_feishu
from aibot_renderer.streams import SenderState, StreamProgress
from aibot_renderer.telegram_format import format_for_telegram, format_preview_for_telegram

Formatter = Callable[[Envelope, RendererSettings], list[Envelope]]

FORMATTERS: dict[Platform, Formatter] = {Platform.TELEGRAM: format_for_telegram, Platform.FEISHU: format_for_feishu}
# Partial answers become one preview message per platform that can show them; others wait for the final.
PREVIEW_FORMATTERS: dict[Platform, Formatter] = {
    Platform.TELEGRAM: format_preview_for_telegram,
    Platform.FEISHU: format_preview_for_feishu,
}


class PlatformSender(Protocol):
    async def send(self, message: Envelope) -> None:
        """Deliver one message. Raises errors.Retryable (try later) or errors.InvalidMessage (never)."""


@runtime_checkable
class StreamingSender(Protocol):
    """A sender that can also show an answer while it is being written."""

    async def send(self, message: Envelope) -> None: ...

    async def preview(self, message: Envelope, progress: StreamProgress | None) -> StreamProgress | None:
        """Show a preview (all of the answer so far, in parts), if the platform's limits leave room for
        it now; never raises for a preview that could not be shown (the next one, or the final, will).
        Returns what is now shown, or None when nothing is."""

    async def send_part(self, message: Envelope, progress: StreamProgress) -> StreamProgress:
        """Deliver one part of the final answer over what the previews showed (edit in place, or send).
        Raises like `send`."""


def format_reply(reply: Envelope, settings: RendererSettings) -> list[Envelope]:
    formatter = FORMATTERS.get(reply.conversation.platform)
    if formatter is None:
        raise ValueError(f"no formatter for platform {reply.conversation.platform}")
    return formatter(reply, settings)


def process_reply(reply: Envelope, settings: RendererSettings) -> Outcome:
    if reply.kind is Kind.PARTIAL:
        preview = PREVIEW_FORMATTERS.get(reply.conversation.platform)
        return Outcome(emit=preview(reply, settings)) if preview is not None else NOTHING
    return Outcome(emit=format_reply(reply, settings))


def is_last_part(message: Envelope) -> bool:
    index, _, total = message.meta.get("part", "1/1").partition("/")
    return index == total


async def deliver(message: Envelope, stored: Any, sender: PlatformSender) -> Outcome:
    """Send one message unless this chat's delivered ids already hold it; what was sent (and what
    streams show) is the new state. A preview of an answer whose final is out is dropped: replayed
    after a crash, it would otherwise put a half answer back over the whole one."""
    state = SenderState.of(stored)
    stream = message.meta.get("stream")
    if message.meta.get("preview"):
        if stream is None or state.finished(stream) or not isinstance(sender, StreamingSender):
            return NOTHING
        progress = state.streams.get(stream)
        shown = await sender.preview(message, progress)
        if shown is None or shown == progress:
            return NOTHING
        return Outcome(state=state.with_progress(stream, shown))
    if message.id in state.delivered:
        return NOTHING  # delivered before a restart or rebalance: do not send it twice
    progress = state.streams.get(stream) if stream is not None else None
    platform = message.conversation.platform.value
    with telemetry.span(f"{platform} send"):
        if progress is not None and isinstance(sender, StreamingSender):
            progress = await sender.send_part(message, progress)
        else:
            await sender.send(message)
    if not is_last_part(message):
        state = state.with_delivered(message.id)
        return Outcome(state=state.with_progress(stream, progress) if stream and progress else state)
    telemetry.END_TO_END_SECONDS.labels(platform=platform, origin=message.origin.value).observe(
        time.time() - message.event_time.timestamp()
    )
    ids = [message.id, stream] if stream is not None else [message.id]
    return Outcome(state=state.with_delivered(*ids, end_stream=stream))
