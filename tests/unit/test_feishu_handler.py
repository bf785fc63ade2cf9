"""Feishu events -> envelopes: what reaches which topic, and what is ignored."""

from __future__ import annotations

import json
from typing import Any

import pytest

from aibot_common.envelope import AudioPart, ChatType, Kind, Platform, TextPart, UnsupportedPart
from aibot_common.topics import ASR_REQUESTS, INBOUND, route
from aibot_ingress_feishu.handler import (
    BotIdentity,
    MalformedEvent,
    event_to_envelope,
    flatten_post,
    handle_event,
)

BOT = BotIdentity(open_id="ou_bot", name="AI Bot")
BOT_MENTION = {"key": "@_user_1", "id": {"open_id": "ou_bot"}, "name": "AI Bot"}


def _event(
    message_type: str = "text",
    content: Any = None,
    *,
    chat_type: str = "p2p",
    mentions: list[dict] | None = None,
    sender_type: str = "user",
    event_id: str = "ev1",
) -> dict:
    content = {"text": "hello"} if content is None else content
    return {
        "schema": "2.0",
        "header": {
            "event_id": event_id,
            "event_type": "im.message.receive_v1",
            "create_time": "1700000000123",
            "token": "t",
            "app_id": "cli_x",
            "tenant_key": "tk",
        },
        "event": {
            "sender": {
                "sender_id": {"open_id": "ou_alice", "union_id": "on_a", "user_id": "a"},
                "sender_type": sender_type,
            },
            "message": {
                "message_id": "om_42",
                "root_id": "",
                "parent_id": "",
                "create_time": "1700000000000",
                "chat_id": "oc_chat",
                "chat_type": chat_type,
                "message_type": message_type,
                "content": json.dumps(content),
                "mentions": mentions or [],
            },
        },
    }


def test_a_private_text_becomes_an_inbound_envelope_named_after_the_event() -> None:
    (emitted,) = handle_event(_event(), BOT).emit
    assert route(emitted) is INBOUND and emitted.key == "feishu:oc_chat" and emitted.kind is Kind.MESSAGE
    envelope = event_to_envelope(_event(), BOT)
    assert envelope.id == "fs-ev1"
    assert envelope.conversation.platform is Platform.FEISHU
    assert envelope.conversation.chat_type is ChatType.PRIVATE
    assert envelope.text() == "hello" and envelope.reply_to_message_id == "om_42"
    assert envelope.sender.id == "ou_alice"
    assert envelope.meta["message_id"] == "om_42"
    assert envelope.event_time.timestamp() == pytest.approx(1_700_000_000.123)


def test_a_resent_event_gets_the_same_id_so_every_stage_can_drop_the_repeat() -> None:
    assert event_to_envelope(_event(), BOT).id == event_to_envelope(_event(), BOT).id
    assert event_to_envelope(_event(event_id="ev2"), BOT).id == "fs-ev2"


def test_groups_are_answered_only_when_the_bot_is_mentioned() -> None:
    assert event_to_envelope(_event(chat_type="group"), BOT) is None
    someone_else = {"key": "@_user_1", "id": {"open_id": "ou_bob"}, "name": "Bob"}
    talk = _event(content={"text": "@_user_1 lunch?"}, chat_type="group", mentions=[someone_else])
    assert event_to_envelope(talk, BOT) is None
    asked = _event(content={"text": "@_user_1 what is 2+2?"}, chat_type="group", mentions=[BOT_MENTION])
    envelope = event_to_envelope(asked, BOT)
    assert envelope.text() == "what is 2+2?"
    assert envelope.conversation.chat_type is ChatType.GROUP and envelope.conversation.chat_id == "oc_chat"


def test_other_mentions_become_names_and_lines_are_kept() -> None:
    bob = {"key": "@_user_2", "id": {"open_id": "ou_bob"}, "name": "Bob"}
    text = "@_user_1 please greet @_user_2\n\n  and then   this:\n```\ncode\n```"
    envelope = event_to_envelope(_event(content={"text": text}, chat_type="group", mentions=[BOT_MENTION, bob]), BOT)
    assert envelope.text() == "please greet @Bob\n\nand then this:\n```\ncode\n```"


def test_without_an_open_id_the_bot_is_recognised_by_name() -> None:
    by_name = BotIdentity(open_id=None, name="AI Bot")
    asked = _event(content={"text": "@_user_1 hi"}, chat_type="group", mentions=[BOT_MENTION])
    assert event_to_envelope(asked, by_name).text() == "hi"
    assert event_to_envelope(asked, BotIdentity(open_id=None, name="Other")) is None


def test_post_is_flattened_to_text() -> None:
    post = {
        "title": "Plan",
        "content": [
            [
                {"tag": "at", "user_id": "@_user_1", "user_name": "AI Bot"},
                {"tag": "text", "text": " see "},
                {"tag": "a", "text": "docs", "href": "https://example.com/d"},
            ],
            [{"tag": "img", "image_key": "img_1"}],
            [{"tag": "text", "text": "bold", "style": ["bold"]}, {"tag": "emotion", "emoji_type": "SMILE"}],
            [{"tag": "code_block", "language": "PYTHON", "text": "print(1)"}],
        ],
    }
    envelope = event_to_envelope(_event("post", post, chat_type="group", mentions=[BOT_MENTION]), BOT)
    assert envelope.text() == "Plan\nsee [docs](https://example.com/d)\nbold:SMILE:\n```python\nprint(1)\n```"
    assert flatten_post({"zh_cn": {"title": "", "content": [[{"tag": "text", "text": "localized"}]]}}) == "localized"


def test_a_post_of_images_only_is_unsupported_not_empty() -> None:
    (part,) = event_to_envelope(_event("post", {"title": "", "content": [[{"tag": "img"}]]}), BOT).parts
    assert isinstance(part, UnsupportedPart) and part.platform_type == "post"


def test_audio_goes_to_the_asr_topic_with_what_the_worker_needs_to_download_it() -> None:
    event = _event("audio", {"file_key": "file_v3_abc", "duration": 2500})
    (emitted,) = handle_event(event, BOT).emit
    assert emitted.kind is Kind.ASR_REQUEST and route(emitted) is ASR_REQUESTS
    envelope = event_to_envelope(event, BOT)
    (part,) = envelope.parts
    assert isinstance(part, AudioPart) and part.file_ref == "file_v3_abc"
    assert part.duration_s == 2.5  # Feishu counts milliseconds
    assert envelope.meta["message_id"] == "om_42" and envelope.reply_to_message_id == "om_42"


@pytest.mark.parametrize("message_type", ["image", "file", "sticker", "media", "share_chat"])
def test_other_kinds_are_marked_unsupported_for_a_polite_answer(message_type: str) -> None:
    (emitted,) = handle_event(_event(message_type, {"image_key": "img_1"}), BOT).emit
    assert route(emitted) is INBOUND
    (part,) = event_to_envelope(_event(message_type, {"image_key": "img_1"}), BOT).parts
    assert isinstance(part, UnsupportedPart) and part.platform_type == message_type


def test_a_mention_alone_is_an_empty_message() -> None:
    envelope = event_to_envelope(_event(content={"text": "@_user_1"}, chat_type="group", mentions=[BOT_MENTION]), BOT)
    assert envelope.parts == [] and envelope.text() == ""


def test_ignored_events() -> None:
    assert event_to_envelope(_event(sender_type="app"), BOT) is None  # another bot
    other = _event()
    other["header"]["event_type"] = "im.chat.member.bot.added_v1"
    assert handle_event(other, BOT).emit == ()
    schema1 = {"uuid": "u", "token": "t", "type": "event_callback", "event": {"type": "message", "text": "hi"}}
    assert event_to_envelope(schema1, BOT) is None


def test_malformed_events_are_reported_not_guessed() -> None:
    broken = _event()
    broken["event"]["message"]["content"] = "{not json"
    with pytest.raises(MalformedEvent):
        event_to_envelope(broken, BOT)
    with pytest.raises(MalformedEvent):
        event_to_envelope(_event("audio", {"duration": 1}), BOT)
    no_chat = _event()
    del no_chat["event"]["message"]["chat_id"]
    with pytest.raises(MalformedEvent):
        event_to_envelope(no_chat, BOT)
    no_id = _event()
    del no_id["header"]["event_id"]
    with pytest.raises(MalformedEvent, match="event_id"):
        event_to_envelope(no_id, BOT)
    wrong_type = _event()
    wrong_type["event"]["message"]["mentions"] = "everyone"
    with pytest.raises(MalformedEvent):
        event_to_envelope(wrong_type, BOT)


def test_text_parts_are_plain_user_text() -> None:
    (part,) = event_to_envelope(_event(), BOT).parts
    assert isinstance(part, TextPart) and part.format == "plain"
