"""The renderer's two handlers, as plain functions (the runner routes and produces their outcomes).

1. The response processor: a reply (markdown) -> the platform-ready messages it becomes
   (`telegram_format`, `feishu_format`), each an OUTBOUND envelope for its platform's sender.
2. The sender: one platform-ready message -> the platform API, at most once per message id (the
   ids delivered to a chat are the sender's state, in a changelog table).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Protocol

from aibot_common import telemetry
from aibot_common.envelope import Envelope, Kind, Platform
from aibot_common.outcome import NOTHING, Outcome
from aibot_common.settings import RendererSettings
from aibot_renderer.feishu_format import format_for_feishu
from aibot_renderer.telegram_format import format_for_telegram

Formatter = Callable[[Envelope, RendererSettings], list[Envelope]]

FORMATTERS: dict[Platform, Formatter] = {Platform.TELEGRAM: format_for_telegram, Platform.FEISHU: format_for_feishu}
DELIVERED_IDS_KEPT = 500


class PlatformSender(Protocol):
    async def send(self, message: Envelope) -> None:
        """Deliver one message. Raises errors.Retryable (try later) or errors.InvalidMessage (never)."""


def format_reply(reply: Envelope, settings: RendererSettings) -> list[Envelope]:
    formatter = FORMATTERS.get(reply.conversation.platform)
    if formatter is None:
        raise ValueError(f"no formatter for platform {reply.conversation.platform}")
    return formatter(reply, settings)


def process_reply(reply: Envelope, settings: RendererSettings) -> Outcome:
    if reply.kind is Kind.PARTIAL:
        return NOTHING  # no platform previews partial answers yet: the final reply says it all
    return Outcome(emit=format_reply(reply, settings))


def is_last_part(message: Envelope) -> bool:
    index, _, total = message.meta.get("part", "1/1").partition("/")
    return index == total


async def deliver(message: Envelope, delivered: list[str] | None, sender: PlatformSender) -> Outcome:
    """Send one message unless this chat's delivered ids already hold it; the new ids are the state."""
    sent_ids = delivered or []
    if message.id in sent_ids:
        return NOTHING  # delivered before a restart or rebalance: do not send it twice
    platform = message.conversation.platform.value
    with telemetry.span(f"{platform} send"):
        await sender.send(message)
    if is_last_part(message):
        telemetry.END_TO_END_SECONDS.labels(platform=platform, origin=message.origin.value).observe(
            time.time() - message.event_time.timestamp()
        )
    return Outcome(state=[*sent_ids, message.id][-DELIVERED_IDS_KEPT:])
