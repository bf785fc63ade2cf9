"""Feishu's Stop and Regenerate card buttons: on the cards, their `card.action.trigger` callback
verified like an event, read as the controls core-llm understands, and answered with a toast."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from aibot_common.envelope import ChatType, Conversation, Envelope, Kind, Platform, TextPart
from aibot_common.settings import RendererSettings
from aibot_core_llm.control import is_regenerate, is_stop
from aibot_fakes.feishu import FakeFeishu
from aibot_ingress_feishu.app import card_action_answer
from aibot_ingress_feishu.handler import BotIdentity, MalformedEvent, event_to_envelope
from aibot_ingress_feishu.security import Credentials, Refused, open_callback
from aibot_renderer.feishu_format import format_for_feishu, format_preview_for_feishu

BOT = BotIdentity(open_id="ou_bot")


def _reply(text: str, *, chat_type: ChatType = ChatType.GROUP, **meta: str) -> Envelope:
    return Envelope(
        id="r1",
        kind=Kind.REPLY,
        conversation=Conversation(platform=Platform.FEISHU, chat_id="oc_1", chat_type=chat_type),
        parts=[TextPart(text=text)],
        reply_to_message_id="om_q",
        meta=dict(meta),
    )


def _buttons(rendered: str) -> list[dict[str, Any]]:
    elements = json.loads(rendered)["body"]["elements"]
    return [b["value"] for e in elements if e["tag"] == "button" for b in e["behaviors"] if b["type"] == "callback"]


def _press(action: Any, *, chat_type: str = "group", event_id: str = "ev_press") -> dict[str, Any]:
    return {
        "schema": "2.0",
        "header": {"event_id": event_id, "event_type": "card.action.trigger", "create_time": "1700000000000"},
        "event": {
            "operator": {"open_id": "ou_user"},
            "action": {"tag": "button", "value": {"action": action, "chat_type": chat_type}},
            "context": {"open_message_id": "om_card", "open_chat_id": "oc_1"},
        },
    }


def test_the_streaming_card_has_stop_and_the_final_answer_regenerate() -> None:
    (preview,) = format_preview_for_feishu(_reply("so far"), RendererSettings())
    assert _buttons(preview.parts[0].rendered or "") == [{"action": "stop", "chat_type": "group"}]
    (final,) = format_for_feishu(_reply("done", streamed="1", regenerable="1"), RendererSettings())
    assert _buttons(final.parts[0].rendered or "") == [{"action": "regen", "chat_type": "group"}]
    (not_the_model,) = format_for_feishu(_reply("a command's answer", streamed="1"), RendererSettings())
    assert _buttons(not_the_model.parts[0].rendered or "") == []


def test_only_the_last_card_of_a_long_answer_has_the_button() -> None:
    words = " ".join(f"word{n:05d}" for n in range(6000))  # over one card's 30 KB
    finals = format_for_feishu(_reply(words, streamed="1", regenerable="1"), RendererSettings())
    assert len(finals) >= 2
    assert [len(_buttons(f.parts[0].rendered or "")) for f in finals] == [0] * (len(finals) - 1) + [1]


def test_a_press_becomes_the_control_core_llm_reads() -> None:
    stop = event_to_envelope(_press("stop"), BOT)
    assert stop is not None and is_stop(stop) and not is_regenerate(stop)
    assert stop.conversation.chat_type is ChatType.GROUP and stop.key == "feishu:oc_1"
    assert stop.id == "fs-ev_press" and stop.sender is not None and stop.sender.id == "ou_user"
    regen = event_to_envelope(_press("regen", chat_type="private", event_id="ev2"), BOT)
    assert regen is not None and is_regenerate(regen) and not is_stop(regen)
    assert regen.conversation.chat_type is ChatType.PRIVATE and regen.reply_to_message_id == "om_card"
    # A plain message saying "stop" is no button press (only /stop is).
    assert event_to_envelope(_press("something else"), BOT) is None


def test_a_press_without_its_chat_is_malformed() -> None:
    payload = _press("stop")
    del payload["event"]["context"]["open_chat_id"]
    with pytest.raises(MalformedEvent):
        event_to_envelope(payload, BOT)


def test_the_answer_is_a_toast_and_says_when_nothing_was_delivered() -> None:
    assert card_action_answer(_press("stop"), "accepted") == {"toast": {"type": "info", "content": "Stopping…"}}
    assert card_action_answer(_press("regen"), "duplicate")["toast"]["content"] == "Regenerating…"
    assert card_action_answer(_press("regen"), "unavailable")["toast"]["type"] == "error"
    assert card_action_answer(_press("other"), "ignored") == {}


@pytest.fixture
async def fake() -> AsyncIterator[FakeFeishu]:
    fake = FakeFeishu()
    await fake.start()
    try:
        yield fake
    finally:
        await fake.stop()


async def test_the_fakes_press_is_signed_and_encrypted_and_opens_like_an_event(fake: FakeFeishu) -> None:
    """What the fake POSTs passes the same checks as an event (signature and window before decrypt,
    then the token), and a tampered or stale press does not."""
    seen: list[tuple[bytes, dict[str, str]]] = []

    async def receiver(request: httpx.Request) -> httpx.Response:
        seen.append((request.content, dict(request.headers)))
        return httpx.Response(200, json={"toast": {"type": "info", "content": "ok"}})

    card = {"schema": "2.0", "body": {"elements": [{"tag": "markdown", "content": "hi"}]}}
    fake.sent.append({"message_id": "om_card", "chat_id": "oc_1", "content": card, "card_id": None})
    fake.event_url = "http://ingress.test/feishu/events"
    started = fake._client  # the fake's own client, put back for its stop()
    fake._client = httpx.AsyncClient(transport=httpx.MockTransport(receiver))
    with pytest.raises(ValueError, match="no button"):
        await fake.press_card_button("om_card", "stop")
    card["body"]["elements"].append(
        {"tag": "button", "behaviors": [{"type": "callback", "value": {"action": "stop", "chat_type": "p2p"}}]}
    )
    assert await fake.press_card_button("om_card", "stop") == {"toast": {"type": "info", "content": "ok"}}
    body, headers = seen[-1]
    creds = Credentials(fake.verification_token, fake.encrypt_key, 300)
    opened = open_callback(body, headers, creds)
    assert opened.payload["header"]["event_type"] == "card.action.trigger"
    assert opened.payload["event"]["context"]["open_message_id"] == "om_card"
    with pytest.raises(Refused) as tampered:
        open_callback(body.replace(b'"encrypt"', b'"encrypt" '), headers, creds)
    assert tampered.value.status == 401
    with pytest.raises(Refused) as stale:
        open_callback(body, headers, creds, now=int(headers["x-lark-request-timestamp"]) + 301)
    assert stale.value.status == 401
    await fake._client.aclose()
    fake._client = started


async def test_only_the_latest_answers_card_offers_regenerate(fake: FakeFeishu) -> None:
    from pydantic import SecretStr

    from aibot_common.platforms.feishu import FeishuClient
    from aibot_common.settings import FeishuConfig
    from aibot_core_llm.streaming import partial_reply
    from aibot_renderer.feishu_sender import FeishuSender
    from tests.unit.test_feishu_streaming import Chat, _final, _question

    config = FeishuConfig(enabled=True, app_id=fake.app_id, app_secret=SecretStr(fake.app_secret), domain=fake.url)
    async with FeishuClient(config) as client:
        chat = Chat(FeishuSender(client))
        cards = []
        for n in range(2):
            asked = _question(fake, "oc_regen").model_copy(update={"id": f"fs-q{n}"})
            await chat.show(partial_reply(asked, f"answer {n} so", 1))
            final = _final(asked, f"answer {n} so far, done")
            await chat.show(final.model_copy(update={"meta": {**final.meta, "regenerable": "1"}}))
            cards.append(fake.sent_to("oc_regen")[-1])
    first, second = (fake.cardkit.get(c["card_id"]).card for c in cards)
    assert _buttons(json.dumps(second)) == [{"action": "regen", "chat_type": "private"}]
    assert _buttons(json.dumps(first)) == [], "the earlier answer no longer offers Regenerate"
    assert fake.shown_in("oc_regen") == ["answer 0 so far, done", "answer 1 so far, done"]
    with pytest.raises(ValueError, match="no button"):
        await fake.press_card_button(cards[0]["message_id"], "regen")
