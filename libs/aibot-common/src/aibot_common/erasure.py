"""Erasing what ai-bot keeps about a conversation: `/forget` from the user in the chat, or an
operator's erasure request (`ai-bot forget <platform>:<chat_id>`), an envelope on the inbound topic
keyed by that conversation, so it reaches the one core-llm replica that owns its state, which writes
a tombstone to the conversation changelog (compaction then drops every earlier record of it, and
every replica that restores the table afterwards finds nothing).

Only holders of Kafka credentials can produce to the inbound topic; the ingresses never copy
anything the user controls into `meta`, so a user cannot forge an erasure of someone else's chat.
"""

from __future__ import annotations

import uuid

from aibot_common.envelope import Conversation, Envelope, Kind, Platform

ERASE_META = "erase"  # meta key of an operator's erasure request; its value says who asked
FORGET_COMMAND = "/forget"


def erasure_request(conversation: str, requested_by: str = "admin") -> Envelope:
    """The envelope that erases a conversation (`telegram:<chat_id>` / `feishu:<chat_id>`)."""
    platform, _, chat_id = conversation.partition(":")
    if not chat_id or platform not in {p.value for p in Platform}:
        raise ValueError(f"{conversation!r} is not <platform>:<chat_id> (platform one of telegram, feishu)")
    return Envelope(
        id=f"erase-{uuid.uuid4()}",
        kind=Kind.MESSAGE,
        conversation=Conversation(platform=Platform(platform), chat_id=chat_id),
        meta={ERASE_META: requested_by},
    )


def is_erasure_request(envelope: Envelope) -> bool:
    return ERASE_META in envelope.meta
