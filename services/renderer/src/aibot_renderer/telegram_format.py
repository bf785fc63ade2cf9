"""The assistant's markdown -> Telegram messages (text + entities), each within 4096 UTF-16 units:
the one place for "reply -> Telegram message" (the sender then only delivers it).

Sending entities instead of a MarkdownV2 string means nothing has to be escaped, so a reply can
never be rejected with "can't parse entities"; telegramify-markdown does the markdown conversion.
"""

from __future__ import annotations

from dataclasses import dataclass

import telegramify_markdown
from telegram.constants import MessageLimit

from aibot_common.envelope import Envelope, Kind, Origin, TextPart
from aibot_common.settings import RendererSettings
from aibot_renderer.splitting import split_points, utf16_len

MAX_TEXT = MessageLimit.MAX_TEXT_LENGTH  # 4096


@dataclass(frozen=True)
class TelegramText:
    text: str
    entities: list[dict]


# The markdown parser reads `<...>` as inline HTML and `&...;` as character references and drops or
# decodes them, so `List<String>` lost `<String>` on its way to the user. Telegram entities need no
# HTML at all: these two characters are swapped for private-use stand-ins (one UTF-16 unit each, as
# the originals are, so entity offsets stay right) and swapped back in the converted text.
_LITERAL = {"<": "\ue000", "&": "\ue001"}


def markdown_to_telegram(markdown: str) -> TelegramText:
    literal = {char: stand_in for char, stand_in in _LITERAL.items() if stand_in not in markdown}
    for char, stand_in in literal.items():
        markdown = markdown.replace(char, stand_in)
    text, entities = telegramify_markdown.convert(markdown)
    for char, stand_in in literal.items():
        text = text.replace(stand_in, char)
    return TelegramText(text=text.rstrip("\n"), entities=[e.to_dict() for e in entities])


def with_transcript(transcript: str, answer: TelegramText) -> TelegramText:
    """Quote what was heard above the answer, as a blockquote entity (no escaping needed)."""
    head = f"🎤 {transcript.strip()}"
    shift = utf16_len(head) + 2
    entities = [{"type": "blockquote", "offset": 0, "length": utf16_len(head)}]
    entities += [{**e, "offset": e["offset"] + shift} for e in answer.entities]
    return TelegramText(text=f"{head}\n\n{answer.text}", entities=entities)


def split_message(message: TelegramText, limit: int = MAX_TEXT) -> list[TelegramText]:
    """Split on paragraph/line/sentence boundaries; entities are clipped to each part."""
    if not message.text.strip():
        return []
    parts = []
    for start, end in split_points(message.text, limit):
        u_start = utf16_len(message.text[:start])
        u_end = u_start + utf16_len(message.text[start:end])
        clipped = []
        for entity in message.entities:
            e_start, e_end = entity["offset"], entity["offset"] + entity["length"]
            lo, hi = max(e_start, u_start), min(e_end, u_end)
            if hi > lo:
                clipped.append({**entity, "offset": lo - u_start, "length": hi - lo})
        parts.append(TelegramText(text=message.text[start:end], entities=clipped))
    return parts


def _chunks(reply: Envelope, settings: RendererSettings) -> list[TelegramText]:
    message = markdown_to_telegram(reply.text())
    transcript = reply.meta.get("transcript")
    if reply.origin is Origin.VOICE and transcript and settings.show_transcript:
        message = with_transcript(transcript, message)
    return split_message(message)


def format_preview_for_telegram(partial: Envelope, settings: RendererSettings) -> list[Envelope]:
    """A partial answer -> one OUTBOUND preview holding all of it, as the messages it would be now
    (one part each), so the sender can show the latest text in a draft or edit each message."""
    chunks = _chunks(partial, settings)
    if not chunks:
        return []
    return [
        partial.derive(
            kind=Kind.OUTBOUND,
            suffix="tg-preview",
            parts=[TextPart(text=c.text, format="telegram_entities", entities=c.entities) for c in chunks],
            meta={**partial.meta, "preview": "1"},
        )
    ]


def format_for_telegram(reply: Envelope, settings: RendererSettings) -> list[Envelope]:
    """A reply -> the OUTBOUND envelopes of its Telegram messages, in order."""
    chunks = _chunks(reply, settings)
    return [
        reply.derive(
            kind=Kind.OUTBOUND,
            suffix=f"tg-part{index}",
            parts=[TextPart(text=chunk.text, format="telegram_entities", entities=chunk.entities)],
            # Only the first part answers the user's message; the rest follow it.
            reply_to_message_id=reply.reply_to_message_id if index == 0 else None,
            # "stream": the sender finishes what the previews of this answer (named by its id) showed.
            meta={**reply.meta, "part": f"{index + 1}/{len(chunks)}", "stream": reply.id},
        )
        for index, chunk in enumerate(chunks)
    ]
