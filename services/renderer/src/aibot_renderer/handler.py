"""The renderer's two steps, as plain functions.

1. The response processor: a reply (markdown) -> the platform-ready messages it becomes.
2. The sender: one platform-ready message -> the platform API, at most once per message id.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from aibot_common.envelope import Envelope, Kind, Origin, Platform, TextPart
from aibot_common.settings import RendererSettings
from aibot_renderer.feishu_format import format_for_feishu
from aibot_renderer.telegram_format import markdown_to_telegram, split_message, with_transcript

Formatter = Callable[[Envelope, RendererSettings], list[Envelope]]


class PlatformSender(Protocol):
    async def send(self, message: Envelope) -> None:
        """Deliver one message. Raises runner.Retryable (try later) or runner.InvalidMessage (never)."""


def format_for_telegram(reply: Envelope, settings: RendererSettings) -> list[Envelope]:
    message = markdown_to_telegram(reply.text())
    transcript = reply.meta.get("transcript")
    if reply.origin is Origin.VOICE and transcript and settings.show_transcript:
        message = with_transcript(transcript, message)
    chunks = split_message(message)
    return [
        reply.derive(
            kind=Kind.OUTBOUND,
            suffix=f"tg-part{index}",
            parts=[TextPart(text=chunk.text, format="telegram_entities", entities=chunk.entities)],
            # Only the first part answers the user's message; the rest follow it.
            reply_to_message_id=reply.reply_to_message_id if index == 0 else None,
            meta={**reply.meta, "part": f"{index + 1}/{len(chunks)}"},
        )
        for index, chunk in enumerate(chunks)
    ]


FORMATTERS: dict[Platform, Formatter] = {Platform.TELEGRAM: format_for_telegram, Platform.FEISHU: format_for_feishu}


def format_reply(reply: Envelope, settings: RendererSettings) -> list[Envelope]:
    formatter = FORMATTERS.get(reply.conversation.platform)
    if formatter is None:
        raise ValueError(f"no formatter for platform {reply.conversation.platform}")
    return formatter(reply, settings)


def is_last_part(message: Envelope) -> bool:
    index, _, total = message.meta.get("part", "1/1").partition("/")
    return index == total
