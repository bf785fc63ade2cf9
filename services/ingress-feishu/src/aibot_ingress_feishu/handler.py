"""Feishu event -> envelope: the one place that reads Feishu's event. Pure functions: no Kafka, no
HTTP; the app publishes what `handle_event` emits.

The event is read with lark-oapi's own model (`P2ImMessageReceiveV1`) and mentions with its channel
layer's node-aligned helpers, so field names and the `@_user_N` placeholder rules are the SDK's.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from lark_oapi.api.im.v1 import EventMessage, P2ImMessageReceiveV1
from lark_oapi.channel.normalize.mentions import extract_mentions, resolve_mentions
from lark_oapi.core.exception import UnmarshalException
from lark_oapi.event.callback.model.p2_card_action_trigger import P2CardActionTrigger

from aibot_common.envelope import (
    AudioPart,
    ChatType,
    Conversation,
    Envelope,
    Kind,
    Part,
    Platform,
    Sender,
    TextPart,
    UnsupportedPart,
    user_message_kind,
)
from aibot_common.outcome import NOTHING, Outcome

MESSAGE_RECEIVED = "im.message.receive_v1"
CARD_ACTION = "card.action.trigger"  # a press of a card button with a callback behaviour
# lark-oapi (1.7.5) defines no "message edited" event among Feishu's IM events (receive, read,
# recalled, reactions), so core-llm's `edits` policy has nothing to apply to here (docs/feishu.md).
CARD_ACTIONS = frozenset({"stop", "regen"})  # the values our cards' buttons carry (feishu_format)


class MalformedEvent(ValueError):
    """A verified event we cannot read: a schema we do not know, or fields of the wrong type."""


@dataclass(frozen=True)
class BotIdentity:
    """How the bot recognises its own @mention in a group: by open_id, else by its display name."""

    open_id: str | None
    name: str | None = None


def event_id(payload: dict[str, Any]) -> str | None:
    """Feishu's id of this delivery's event: the same on every re-send (schema 2.0 header.event_id,
    schema 1.0 uuid)."""
    header = payload.get("header")
    if isinstance(header, dict) and isinstance(header.get("event_id"), str):
        return header["event_id"]
    uuid = payload.get("uuid")
    return uuid if isinstance(uuid, str) else None


def event_type(payload: dict[str, Any]) -> str | None:
    header = payload.get("header")
    if isinstance(header, dict):
        return header.get("event_type")
    event = payload.get("event")
    return event.get("type") if isinstance(event, dict) else None


def handle_event(payload: dict[str, Any], bot: BotIdentity) -> Outcome:
    """What one event becomes: nothing for events we ignore, else one envelope (a voice note as an
    ASR request, anything else as a message for the model). Raises MalformedEvent."""
    envelope = event_to_envelope(payload, bot)
    return NOTHING if envelope is None else Outcome(emit=[envelope])


def is_card_action(payload: dict[str, Any]) -> bool:
    return "schema" in payload and event_type(payload) == CARD_ACTION


def card_action_to_envelope(payload: dict[str, Any]) -> Envelope | None:
    """A press of our Stop or Regenerate button -> the envelope core-llm reads as that control (the
    same as Telegram's callback_query: the button's word as the text, its id in `callback_query_id`).
    None for buttons that are not ours. Raises MalformedEvent."""
    try:
        callback = P2CardActionTrigger(payload)
    except (UnmarshalException, TypeError, AttributeError) as exc:
        raise MalformedEvent(f"unreadable {CARD_ACTION}: {exc}") from None
    data = callback.event
    if callback.header is None or not callback.header.event_id:
        raise MalformedEvent(f"{CARD_ACTION} without header.event_id (nothing to dedupe re-sends by)")
    action = data.action if data else None
    context = data.context if data else None
    value = action.value if action else None
    if not isinstance(value, dict) or value.get("action") not in CARD_ACTIONS:
        return None
    if context is None or not context.open_chat_id:
        raise MalformedEvent(f"{CARD_ACTION} without context.open_chat_id")
    chat_type = ChatType.GROUP if value.get("chat_type") == ChatType.GROUP.value else ChatType.PRIVATE
    open_id = data.operator.open_id if data and data.operator else None
    meta = {"callback_query_id": callback.header.event_id, "card_action": "1"}
    if context.open_message_id:
        meta["message_id"] = context.open_message_id
    return Envelope(
        id=f"fs-{callback.header.event_id}",
        kind=Kind.MESSAGE,
        conversation=Conversation(platform=Platform.FEISHU, chat_id=context.open_chat_id, chat_type=chat_type),
        sender=Sender(id=open_id) if open_id else None,
        parts=[TextPart(text=str(value["action"]))],
        # A regenerated answer replies to the card pressed, as Telegram's replies to its message.
        reply_to_message_id=context.open_message_id or None,
        event_time=_time(callback.header.create_time),
        meta=meta,
    )


def event_to_envelope(payload: dict[str, Any], bot: BotIdentity) -> Envelope | None:
    if is_card_action(payload):
        return card_action_to_envelope(payload)
    if "schema" not in payload or event_type(payload) != MESSAGE_RECEIVED:
        return None  # other events (bot added to a chat, message read...) need no answer
    try:
        event = P2ImMessageReceiveV1(payload)
    except (UnmarshalException, TypeError, AttributeError) as exc:
        raise MalformedEvent(f"unreadable {MESSAGE_RECEIVED}: {exc}") from None
    data = event.event
    message = data.message if data else None
    sender = data.sender if data else None
    if message is None or not message.message_id or not message.chat_id:
        raise MalformedEvent(f"{MESSAGE_RECEIVED} without message_id or chat_id")
    if event.header is None or not event.header.event_id:
        raise MalformedEvent(f"{MESSAGE_RECEIVED} without header.event_id (nothing to dedupe re-sends by)")
    if sender is None or sender.sender_type not in (None, "user"):
        return None  # another app or bot: answering bots invites loops
    chat_type = ChatType.PRIVATE if message.chat_type == "p2p" else ChatType.GROUP

    raw = _content(message)
    text = _text_of(message.message_type, raw)
    bot_open_id = _bot_open_id(message, bot)
    mentions = extract_mentions(message.mentions or [], bot_open_id)
    if chat_type is ChatType.GROUP and not mentions.mentioned_bot:
        return None  # in a group the bot speaks only when spoken to
    if text is not None:
        text = _strip_bot_mentions(text, message, bot_open_id)
        text = resolve_mentions(text, mentions)  # other people's placeholders -> @Name

    parts = _parts(message.message_type or "unknown", raw, text)
    open_id = sender.sender_id.open_id if sender.sender_id else None
    meta = {"message_id": message.message_id, "message_type": message.message_type or "unknown"}
    if message.root_id:
        meta["root_id"] = message.root_id
    return Envelope(
        id=f"fs-{event.header.event_id}",
        kind=user_message_kind(parts),
        conversation=Conversation(platform=Platform.FEISHU, chat_id=message.chat_id, chat_type=chat_type),
        sender=Sender(id=open_id) if open_id else None,
        parts=parts,
        reply_to_message_id=message.message_id,
        event_time=_time(event.header.create_time or message.create_time),
        meta=meta,
    )


def _content(message: EventMessage) -> dict[str, Any]:
    if message.content is not None and not isinstance(message.content, str):
        raise MalformedEvent("message.content is not a string (Feishu sends it as JSON text)")
    try:
        content = json.loads(message.content or "{}")
    except ValueError:
        raise MalformedEvent("message.content is not JSON") from None
    return content if isinstance(content, dict) else {}


def _text_of(message_type: str | None, content: dict[str, Any]) -> str | None:
    if message_type == "text":
        text = content.get("text")
        return text if isinstance(text, str) else ""
    if message_type == "post":
        return flatten_post(content)
    return None


def _parts(message_type: str, content: dict[str, Any], text: str | None) -> list[Part]:
    if message_type == "audio":
        file_key = content.get("file_key")
        if not isinstance(file_key, str) or not file_key:
            raise MalformedEvent("audio message without a file_key")
        duration_ms = content.get("duration")
        duration_s = duration_ms / 1000 if isinstance(duration_ms, int | float) else None  # Feishu counts in ms
        return [AudioPart(file_ref=file_key, duration_s=duration_s)]
    if text is None:
        return [UnsupportedPart(platform_type=message_type)]
    if not text and message_type == "post":
        return [UnsupportedPart(platform_type="post")]  # a post of images only
    return [TextPart(text=text)] if text else []


def _bot_open_id(message: EventMessage, bot: BotIdentity) -> str | None:
    if bot.open_id:
        return bot.open_id
    if bot.name:  # no open_id configured or fetched: recognise the bot by its display name
        for mention in message.mentions or []:
            if mention.name == bot.name and mention.id and mention.id.open_id:
                return mention.id.open_id
    return None


def _strip_bot_mentions(text: str, message: EventMessage, bot_open_id: str | None) -> str:
    """Remove the bot's own `@_user_N` placeholders. (The SDK's strip also folds newlines into spaces,
    which would flatten a multi-line question or a pasted code block.)"""
    if not bot_open_id:
        return text.strip()
    for mention in message.mentions or []:
        if mention.key and mention.id and mention.id.open_id == bot_open_id:
            text = re.sub(re.escape(mention.key) + r"(?!\d)", "", text)
    lines = [re.sub(r"[ \t]{2,}", " ", line).strip() for line in text.split("\n")]
    return "\n".join(lines).strip()


def flatten_post(content: dict[str, Any]) -> str:
    """A rich-text post -> plain text: title, then one line per paragraph; links as [text](url) and
    mentions as their `@_user_N` placeholders, the forms a text message has."""
    document = content
    if "content" not in document:  # the locale-keyed form {"zh_cn": {...}}
        document = next((v for v in content.values() if isinstance(v, dict) and "content" in v), {})
    lines: list[str] = []
    title = document.get("title")
    if isinstance(title, str) and title.strip():
        lines.append(title.strip())
    for paragraph in document.get("content") or []:
        pieces = [_post_element(element) for element in paragraph or [] if isinstance(element, dict)]
        line = "".join(pieces).strip()
        if line:
            lines.append(line)
    return "\n".join(lines)


def _post_element(element: dict[str, Any]) -> str:
    tag = element.get("tag")
    if tag in ("text", "md"):
        return str(element.get("text") or "")
    if tag == "a":
        label, href = element.get("text") or "", element.get("href") or ""
        return f"[{label}]({href})" if href else str(label)
    if tag == "at":
        user_id = str(element.get("user_id") or "")
        return user_id if user_id.startswith("@_") else f"@{element.get('user_name') or user_id}"
    if tag == "code_block":
        language = str(element.get("language") or "").lower()
        return f"\n```{language}\n{element.get('text') or ''}\n```\n"
    if tag == "emotion":
        return f":{element.get('emoji_type') or ''}:"
    return ""  # images, media, dividers: nothing to read


def _time(milliseconds: Any) -> datetime:
    try:
        return datetime.fromtimestamp(int(milliseconds) / 1000, UTC)
    except (TypeError, ValueError, OverflowError, OSError):
        return datetime.now(UTC)
