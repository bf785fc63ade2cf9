"""An in-memory access store and message builders for the access tests (no broker needed)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from aibot_common.access import AccessState, Change
from aibot_common.envelope import ChatType, Conversation, Envelope, Kind, Platform, Sender, TextPart
from aibot_common.settings import AccessSettings, KafkaSettings, Settings

if TYPE_CHECKING:
    from aibot_core_llm.access_gate import AccessGate


class MemoryStore:
    """What AccessStore does once the broker acknowledged: apply the change's records (and audit)."""

    def __init__(self, settings: AccessSettings | None = None) -> None:
        self.state = AccessState(seed=settings or AccessSettings())
        self.changes: list[Change] = []

    async def write(self, change: Change) -> None:
        self.changes.append(change)
        for key, value in change.all_records(time.time()):
            self.state.apply(key, value)


_counter = iter(range(1, 1_000_000))


def text(
    body: str,
    *,
    user: str | None = "42",
    chat: str | None = None,
    group: bool = False,
    platform: Platform = Platform.TELEGRAM,
    id: str | None = None,
) -> Envelope:
    n = next(_counter)
    return Envelope(
        id=id or f"tg-{n}",
        kind=Kind.MESSAGE,
        conversation=Conversation(
            platform=platform, chat_id=chat or user or "0", chat_type=ChatType.GROUP if group else ChatType.PRIVATE
        ),
        sender=Sender(id=user) if user else None,
        parts=[TextPart(text=body)],
    )


def open_gate(settings: Settings, models: dict[str, Any]) -> AccessGate:
    """The access gate as core-llm builds it, over an in-memory store: the settings' access block
    (open to everyone without one), the first model the configured one."""
    from aibot_core_llm.access_gate import AccessGate
    from aibot_core_llm.quota import UsageCounter

    usage = UsageCounter(KafkaSettings(), None, "test")
    return AccessGate(MemoryStore(settings.access), usage, models, next(iter(models)), settings.core, settings.access)
