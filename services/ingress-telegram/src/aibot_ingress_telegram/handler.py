"""Telegram update -> envelope: the one place that reads Telegram's update. Pure functions: no Kafka,
no HTTP; the app publishes what `handle_update` emits."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime

from telegram import Message, Update

from aibot_common.envelope import (
    AudioPart,
    ChatType,
    Conversation,
    Envelope,
    FilePart,
    ImagePart,
    Kind,
    Part,
    Platform,
    Sender,
    TextPart,
    UnsupportedPart,
    user_message_kind,
)
from aibot_common.outcome import NOTHING, Outcome


@dataclass(frozen=True)
class BotIdentity:
    id: str
    username: str


def handle_update(update: Update, bot: BotIdentity, allowed: set[str]) -> Outcome:
    """What one update becomes: nothing for kinds we ignore, else one envelope (a voice note as an
    ASR request, anything else as a message for the model)."""
    envelope = update_to_envelope(update, bot, allowed)
    return NOTHING if envelope is None else Outcome(emit=[envelope])


def update_to_envelope(update: Update, bot: BotIdentity, allowed: set[str]) -> Envelope | None:
    envelope_id = f"tg-{bot.id}-{update.update_id}"
    if update.message and "message" in allowed:
        return _from_message(envelope_id, update.message, bot, edited=False)
    if update.edited_message and "edited_message" in allowed:
        return _from_message(envelope_id, update.edited_message, bot, edited=True)
    if update.callback_query and "callback_query" in allowed:
        query = update.callback_query
        message = query.message
        if message is None or not query.data:
            return None
        chat = message.chat
        conversation = Conversation(platform=Platform.TELEGRAM, chat_id=str(chat.id), chat_type=_chat_type(chat.type))
        return Envelope(
            id=envelope_id,
            kind=Kind.MESSAGE,
            conversation=conversation,
            sender=Sender(id=str(query.from_user.id), display_name=query.from_user.full_name),
            parts=[TextPart(text=query.data)],
            reply_to_message_id=str(message.message_id) if message.date.timestamp() > 0 else None,
            meta={"callback_query_id": query.id},
        )
    return None


def _from_message(envelope_id: str, message: Message, bot: BotIdentity, *, edited: bool) -> Envelope | None:
    chat_type = _chat_type(message.chat.type)
    text = message.text or message.caption or ""
    if chat_type is ChatType.GROUP:
        addressed, text = _addressed_in_group(message, text, bot)
        if not addressed:
            return None
    text = _normalize_command(text, bot.username)
    parts: list[Part] = []
    audio = message.voice or message.audio
    if audio:
        raw = audio.to_dict()  # the wire value: duration in seconds (the attribute is turning into a timedelta)
        parts.append(
            AudioPart(
                file_ref=audio.file_id,
                duration_s=float(raw.get("duration") or 0),
                size_bytes=audio.file_size,
                mime_type=audio.mime_type,
            )
        )
    elif message.photo:
        parts.append(ImagePart(file_ref=message.photo[-1].file_id))
    elif message.document:
        parts.append(FilePart(file_ref=message.document.file_id, name=message.document.file_name))
    elif not text:
        parts.append(UnsupportedPart(platform_type=_message_kind(message)))
    if text:
        parts.insert(0, TextPart(text=text))
    sender = message.from_user
    meta = {"message_id": str(message.message_id)}
    if edited:
        meta["edited"] = "true"
        if message.date:  # when the original was sent: core-llm's edit window counts from it
            meta["sent_at"] = message.date.isoformat()
    return Envelope(
        id=envelope_id,
        kind=user_message_kind(parts),
        conversation=Conversation(platform=Platform.TELEGRAM, chat_id=str(message.chat.id), chat_type=chat_type),
        sender=Sender(id=str(sender.id), display_name=sender.full_name) if sender else None,
        parts=parts,
        reply_to_message_id=str(message.message_id),
        event_time=(message.edit_date or message.date or datetime.now(UTC)),
        meta=meta,
    )


def _chat_type(telegram_type: str) -> ChatType:
    return ChatType.PRIVATE if telegram_type == "private" else ChatType.GROUP


def _addressed_in_group(message: Message, text: str, bot: BotIdentity) -> tuple[bool, str]:
    """In a group the bot answers a command, an @mention of it, or a reply to one of its messages."""
    mention = f"@{bot.username}"
    if bot.username and re.search(re.escape(mention), text, re.IGNORECASE):
        cleaned = re.sub(re.escape(mention), "", text, flags=re.IGNORECASE)
        return True, " ".join(cleaned.split())
    if text.startswith("/"):
        command = text.split()[0]
        target = command.split("@", 1)[1] if "@" in command else None
        return target is None or target.lower() == bot.username.lower(), text
    replied = message.reply_to_message
    if replied and replied.from_user and str(replied.from_user.id) == bot.id:
        return True, text
    return False, text


def _normalize_command(text: str, username: str) -> str:
    """`/help@my_bot args` -> `/help args`, the form core-llm understands."""
    if text.startswith("/") and username:
        head, _, rest = text.partition(" ")
        head = re.sub(f"@{re.escape(username)}$", "", head, flags=re.IGNORECASE)
        return f"{head} {rest}".strip()
    return text


def _message_kind(message: Message) -> str:
    for kind in ("sticker", "video", "video_note", "animation", "location", "contact", "poll", "dice", "venue"):
        if getattr(message, kind, None):
            return kind
    return "unknown"
