"""The assistant's markdown -> Feishu messages, each under Feishu's size limits.

A reply without formatting goes as a `text` message; one with markdown (code, lists, links, emphasis,
headings, quotes) as a message card (schema 2.0) whose `markdown` element renders it, and so does a
voice answer, whose transcript is quoted in its own element above the answer. Feishu limits the
request body (text 150 KB, card 30 KB), in which the content is a JSON string inside JSON, so that is
what is measured, in bytes.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aibot_common.envelope import Envelope, Kind, Origin, TextPart
from aibot_common.settings import RendererSettings
from aibot_renderer.splitting import split_points

TEXT_LIMIT_BYTES = 150 * 1024
CARD_LIMIT_BYTES = 30 * 1024
# Room for the rest of the request body (msg_type, receive_id, uuid) and for closing and reopening a
# code fence cut by a split.
HEADROOM_BYTES = 1024

_FORMATTING = re.compile(
    r"```|`[^`\n]+`"  # code
    r"|^[ \t]{0,3}(?:[-*+]|\d+[.)])[ \t]"  # list items
    r"|\[[^\]\n]+\]\([^)\s]+\)"  # links
    r"|\*\*[^*\n]+\*\*|__[^_\n]+__|~~[^~\n]+~~"  # bold, strikethrough
    r"|^[ \t]{0,3}#{1,6}[ \t]|^[ \t]{0,3}>",  # headings, quotes
    re.MULTILINE,
)
_AT_TAG = re.compile(r"<(/?at)\b", re.IGNORECASE)
_FENCE = re.compile(r"^[ \t]{0,3}```(.*)$", re.MULTILINE)
MSG_TYPES = {"plain": "text", "feishu_card": "interactive", "feishu_post": "post"}


@dataclass(frozen=True)
class FeishuMessage:
    source: str  # the markdown this message shows (also the plain-text fallback)
    format: str  # "plain" (a text message) or "feishu_card"
    content: str  # the `content` JSON string Feishu's send/reply API takes


def has_formatting(markdown: str) -> bool:
    return _FORMATTING.search(markdown) is not None


def defuse_mentions(text: str) -> str:
    """Feishu turns `<at user_id="all">` in a text or card into a real @mention, so a model's output
    could ping a whole group. A zero-width space after `<` keeps the words and drops the ping."""
    return _AT_TAG.sub("<\u200b\\1", text)


# Inline code (a run of backticks, its content, the same run) and fenced code blocks: left as they are.
_CODE = re.compile(
    r"^[ \t]{0,3}(`{3,}|~{3,})[^\n]*\n.*?(?:^[ \t]{0,3}\1[ \t]*$|\Z)|(`+)(?!`).+?(?<!`)\2(?!`)",
    re.MULTILINE | re.DOTALL,
)


def literal_html(markdown: str) -> str:
    """Card markdown is CommonMark with some HTML (`<font>`, `<at>`, `<a>`...): a model's `List<String>`,
    `<b>` or `a < b > c` would be read as tags and lost, and `&amp;` decoded. Outside code, `<` and
    `&` become the character references CommonMark turns back into exactly those characters (the
    Telegram side swaps them for stand-ins, the same idea); code spans and blocks show their text
    literally already, so they are left alone."""
    out: list[str] = []
    last = 0
    for match in _CODE.finditer(markdown):
        out.append(_escape(markdown[last : match.start()]))
        out.append(match.group(0))
        last = match.end()
    out.append(_escape(markdown[last:]))
    return "".join(out)


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;")


def text_content(text: str) -> str:
    # Single newlines become blank lines, as the first version did, so lines stay apart in the client.
    spaced = re.sub(r"(?<!\n)\n(?!\n)", "\n\n", text)
    return json.dumps({"text": spaced}, ensure_ascii=False)


ANSWER_ELEMENT = "answer"  # the element id a streaming card's text is updated through
# What a card button's callback carries (`action.value`): the same words as Telegram's callback
# data, which is what core-llm's control module reads. The chat type rides along because Feishu's
# card.action.trigger callback does not say whether the chat is a group (core-llm's policy asks).
STOP_ACTION = "stop"
REGENERATE_ACTION = "regen"
_BUTTON_LABELS = {STOP_ACTION: "⏹ Stop", REGENERATE_ACTION: "🔄 Regenerate"}


def button_element_id(action: str) -> str:
    """The button's element id: what the sender deletes it by (CardKit: a letter, then [a-z0-9_])."""
    return f"{action}_button"


def button(action: str, chat_type: str) -> dict[str, Any]:
    """A card JSON 2.0 button whose press Feishu reports as a `card.action.trigger` callback."""
    return {
        "tag": "button",
        "element_id": button_element_id(action),
        "text": {"tag": "plain_text", "content": _BUTTON_LABELS[action]},
        "type": "default",
        "size": "small",
        "behaviors": [{"type": "callback", "value": {"action": action, "chat_type": chat_type}}],
    }


def card_content(
    markdown: str,
    transcript: str | None = None,
    *,
    streaming: bool = False,
    buttons: list[dict[str, Any]] | None = None,
) -> str:
    elements: list[dict[str, Any]] = []
    if transcript:
        elements.append({"tag": "markdown", "content": f"<font color='grey'>🎤 {_escape(transcript)}</font>"})
        elements.append({"tag": "hr"})
    elements.append({"tag": "markdown", "content": literal_html(markdown), "element_id": ANSWER_ELEMENT})
    elements.extend(buttons or [])
    card: dict[str, Any] = {"schema": "2.0", "body": {"elements": elements}}
    if streaming:
        # Feishu animates the difference between two texts; the summary is the chat list's preview.
        card["config"] = {"streaming_mode": True, "summary": {"content": "…"}}
    return json.dumps(card, ensure_ascii=False)


def body_bytes(content: str) -> int:
    """How much a content string adds to the request body: JSON-escaped once more, UTF-8."""
    return len(json.dumps(content, ensure_ascii=False).encode())


def render(
    markdown: str,
    transcript: str | None = None,
    *,
    as_cards: bool = False,
    last_buttons: list[dict[str, Any]] | None = None,
) -> list[FeishuMessage]:
    """Markdown -> one message, or several when it is too long for one. `as_cards`: always cards
    (split at the card limit), as a streamed answer is shown, so its final parts match its cards.
    `last_buttons` go on the last card (a text message has none); the headroom leaves room for them."""
    markdown = defuse_mentions(markdown.strip())
    transcript = defuse_mentions(" ".join(transcript.split())) if transcript else None
    if not markdown:
        return []
    if transcript is None and not as_cards and not has_formatting(markdown):
        make: Callable[[str], str] = text_content
        limit, form = TEXT_LIMIT_BYTES, "plain"
    else:
        make, limit, form = card_content, CARD_LIMIT_BYTES, "feishu_card"
    budget = limit - HEADROOM_BYTES - (body_bytes(card_content("", transcript)) if transcript else 0)
    chunks = [markdown[start:end] for start, end in split_points(markdown, budget, lambda s: body_bytes(make(s)))]
    chunks = _balance_fences(chunks)
    messages = []
    for index, chunk in enumerate(chunks):
        extra = last_buttons if index == len(chunks) - 1 else None
        heard = transcript if index == 0 else None
        content = card_content(chunk, heard, buttons=extra) if form == "feishu_card" else make(chunk)
        messages.append(FeishuMessage(source=chunk, format=form, content=content))
    return messages


def _balance_fences(chunks: list[str]) -> list[str]:
    """A split inside a fenced code block: close the fence in one part, reopen it in the next."""
    balanced: list[str] = []
    reopen = ""
    for chunk in chunks:
        chunk = reopen + chunk
        opening: str | None = None
        for match in _FENCE.finditer(chunk):
            opening = None if opening is not None else match.group(0).strip()
        if opening is not None:
            chunk += "\n```"
            reopen = opening + "\n"
        else:
            reopen = ""
        balanced.append(chunk)
    return balanced


def _transcript(reply: Envelope, settings: RendererSettings) -> str | None:
    transcript = reply.meta.get("transcript")
    show = reply.origin is Origin.VOICE and bool(transcript) and settings.show_transcript
    return transcript if show else None


def format_preview_for_feishu(partial: Envelope, settings: RendererSettings) -> list[Envelope]:
    """A partial answer -> one OUTBOUND preview: every card it would fill now (markdown, and the
    streaming card entity to create for it), for the sender to create or update."""
    transcript = _transcript(partial, settings)
    messages = render(partial.text(), transcript, as_cards=True)
    heard = defuse_mentions(" ".join(transcript.split())) if transcript else None
    chat_type = partial.conversation.chat_type.value
    if not messages:
        return []
    parts = [
        TextPart(
            text=m.source,
            format="feishu_card",
            # Stop on the card the answer grows in (the last one); it goes when the final replaces it.
            rendered=card_content(
                m.source,
                heard if i == 0 else None,
                streaming=True,
                buttons=[button(STOP_ACTION, chat_type)] if i == len(messages) - 1 else None,
            ),
        )
        for i, m in enumerate(messages)
    ]
    return [partial.derive(kind=Kind.OUTBOUND, suffix="fs-preview", parts=parts, meta={**partial.meta, "preview": "1"})]


def format_for_feishu(reply: Envelope, settings: RendererSettings) -> list[Envelope]:
    # Regenerate on the model's answer (core-llm says which); a new answer's card has its own.
    regenerable = reply.meta.get("regenerable") == "1"
    buttons = [button(REGENERATE_ACTION, reply.conversation.chat_type.value)] if regenerable else None
    messages = render(
        reply.text(),
        _transcript(reply, settings),
        as_cards=reply.meta.get("streamed") == "1",
        last_buttons=buttons,
    )
    return [
        reply.derive(
            kind=Kind.OUTBOUND,
            suffix=f"fs-part{index}",
            parts=[TextPart(text=message.source, format=message.format, rendered=message.content)],
            # Only the first part answers the user's message; the rest follow it in the chat.
            reply_to_message_id=reply.reply_to_message_id if index == 0 else None,
            meta={**reply.meta, "part": f"{index + 1}/{len(messages)}", "stream": reply.id},
        )
        for index, message in enumerate(messages)
    ]
