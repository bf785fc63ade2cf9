"""The assistant's markdown -> Feishu text messages or cards, within Feishu's byte limits."""

from __future__ import annotations

import json

from aibot_common.envelope import ChatType, Conversation, Envelope, Kind, Origin, Platform, TextPart
from aibot_common.settings import RendererSettings
from aibot_renderer.feishu_format import (
    CARD_LIMIT_BYTES,
    TEXT_LIMIT_BYTES,
    body_bytes,
    format_for_feishu,
    has_formatting,
    render,
)
from aibot_renderer.handler import FORMATTERS, format_reply


def _reply(text: str, *, origin: Origin = Origin.TEXT, transcript: str | None = None) -> Envelope:
    return Envelope(
        id="reply-abc",
        kind=Kind.REPLY,
        conversation=Conversation(platform=Platform.FEISHU, chat_id="oc_1", chat_type=ChatType.GROUP),
        origin=origin,
        parts=[TextPart(text=text, format="markdown")],
        reply_to_message_id="om_user",
        meta={"message_id": "om_user", **({"transcript": transcript} if transcript else {})},
    )


def _card_markdown(content: str) -> list[str]:
    return [e["content"] for e in json.loads(content)["body"]["elements"] if e["tag"] == "markdown"]


def test_plain_replies_are_text_messages_with_lines_spaced_apart() -> None:
    (message,) = render("Hello there.\nSecond line.\n\nNew paragraph.")
    assert message.format == "plain"
    assert json.loads(message.content) == {"text": "Hello there.\n\nSecond line.\n\nNew paragraph."}


def test_markdown_replies_are_v2_cards_with_a_markdown_element() -> None:
    for markdown in (
        "Use `pip install x`",
        "- one\n- two",
        "1. first",
        "see [docs](https://x.y/z)",
        "**bold** claim",
        "# Title",
        "> quoted",
        "```py\nprint(1)\n```",
    ):
        assert has_formatting(markdown), markdown
        (message,) = render(markdown)
        card = json.loads(message.content)
        assert message.format == "feishu_card" and card["schema"] == "2.0"
        assert _card_markdown(message.content) == [markdown]
    assert not has_formatting("Prices rose 5 * 3 times; a-b is fine. 2024-01-01")


def test_a_model_cannot_ping_a_whole_group() -> None:
    (message,) = render('Hi <at user_id="all">everyone</at>')
    assert "<at" not in json.loads(message.content)["text"]
    assert "everyone" in json.loads(message.content)["text"]


def test_long_plain_text_splits_under_150_kb_measured_in_bytes() -> None:
    paragraphs = [f"第{i}段：" + "这是一个很长的句子。" * 200 for i in range(40)]  # CJK: 3 bytes a character
    text = "\n\n".join(paragraphs)
    messages = render(text)
    assert len(messages) > 1
    assert all(m.format == "plain" and body_bytes(m.content) <= TEXT_LIMIT_BYTES for m in messages)
    joined = "\n\n".join(json.loads(m.content)["text"] for m in messages)
    assert joined.replace("\n", "") == text.replace("\n", "")


def test_long_cards_split_under_30_kb_and_code_fences_stay_closed() -> None:
    code = "\n".join(f"print('line {i}')  # {'x' * 40}" for i in range(1200))
    markdown = f"Here is the script:\n\n```python\n{code}\n```\n\nThat is **all**."
    messages = render(markdown)
    assert len(messages) >= 2
    for message in messages:
        assert message.format == "feishu_card" and body_bytes(message.content) <= CARD_LIMIT_BYTES
        (content,) = _card_markdown(message.content)
        fences = [line for line in content.split("\n") if line.startswith("```")]
        assert len(fences) % 2 == 0, content[-200:]
    assert _card_markdown(messages[1].content)[0].startswith("```python\n")


def test_a_voice_answer_quotes_the_transcript_above_it_once() -> None:
    reply = _reply("It is noon.", origin=Origin.VOICE, transcript="what time is it")
    (message,) = format_for_feishu(reply, RendererSettings())
    (part,) = message.parts
    assert part.format == "feishu_card"
    elements = json.loads(part.rendered)["body"]["elements"]
    assert "🎤 what time is it" in elements[0]["content"] and elements[-1]["content"] == "It is noon."
    (hidden,) = format_for_feishu(reply, RendererSettings(show_transcript=False))
    assert hidden.parts[0].format == "plain"


def test_outbound_envelopes_answer_the_users_message_with_the_first_part_only() -> None:
    long_reply = "\n\n".join("word " * 6000 for _ in range(6))  # ~180 KB of plain text
    messages = format_reply(_reply(long_reply), RendererSettings())
    assert len(messages) >= 2
    assert messages[0].reply_to_message_id == "om_user"
    assert all(m.reply_to_message_id is None for m in messages[1:])
    assert [m.meta["part"] for m in messages] == [f"{i + 1}/{len(messages)}" for i in range(len(messages))]
    assert all(m.kind is Kind.OUTBOUND and m.causation_id == "reply-abc" for m in messages)
    again = format_reply(_reply(long_reply), RendererSettings())
    assert [m.id for m in messages] == [m.id for m in again]  # re-formatting gives the same ids: dedupe works
    assert FORMATTERS[Platform.FEISHU] is format_for_feishu


def test_an_empty_reply_sends_nothing() -> None:
    assert render("   \n ") == []
