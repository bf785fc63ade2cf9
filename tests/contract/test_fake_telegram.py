"""The fake Telegram Bot API speaks the protocol python-telegram-bot speaks to api.telegram.org.

Every test drives the fake with the real `telegram.Bot` (or plain HTTP where the Bot would hide the
wire format), so a product that works against the fake needs only a base-URL change for Telegram.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request, Response
from telegram import (
    Bot,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    MessageEntity,
    ReplyParameters,
)
from telegram.constants import ParseMode
from telegram.error import BadRequest, Conflict, InvalidToken, RetryAfter
from telegram.helpers import escape_markdown

from aibot_fakes.server import BackgroundServer
from aibot_fakes.telegram import FakeTelegram

TOKEN = "123456:TEST-TOKEN"


@pytest.fixture
async def fake() -> AsyncIterator[FakeTelegram]:
    server = FakeTelegram(TOKEN)
    await server.start()
    yield server
    await server.stop()


def make_bot(fake: FakeTelegram, token: str = TOKEN) -> Bot:
    return Bot(token, base_url=f"{fake.url}/bot", base_file_url=f"{fake.url}/file/bot")


@pytest.fixture
async def bot(fake: FakeTelegram) -> AsyncIterator[Bot]:
    async with make_bot(fake) as client:  # initialize() calls getMe
        yield client


class Receiver:
    """A tiny webhook endpoint that answers with the statuses it is told to, then 200."""

    def __init__(self, statuses: list[int]) -> None:
        self.statuses = statuses
        self.answer: dict[str, Any] | None = None  # a JSON body for the 2xx answers
        self.received: list[tuple[dict[str, Any], str | None]] = []
        self.times: list[float] = []
        self.app = FastAPI()
        self.app.post("/hook")(self.hook)
        self.server = BackgroundServer(self.app)

    async def hook(self, request: Request) -> Response:
        self.received.append((await request.json(), request.headers.get("x-telegram-bot-api-secret-token")))
        self.times.append(time.monotonic())
        if self.statuses:
            return Response(status_code=self.statuses.pop(0))
        if self.answer is not None:
            return Response(json.dumps(self.answer), media_type="application/json")
        return Response(status_code=200)


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    hook = Receiver([500])
    await hook.server.start()
    yield hook
    await hook.server.stop()


async def test_get_me_describes_the_bot(bot: Bot) -> None:
    me = await bot.get_me()
    assert me.id == 123456
    assert me.is_bot
    assert me.username == "aibot_test_bot"


async def test_wrong_token_is_unauthorized(fake: FakeTelegram) -> None:
    with pytest.raises(InvalidToken):
        async with make_bot(fake, "123456:WRONG"):
            pass


async def test_send_message_with_entities(fake: FakeTelegram, bot: Bot) -> None:
    entities = [MessageEntity(MessageEntity.BOLD, 0, 5)]
    message = await bot.send_message(42, "Hello world", entities=entities)
    assert message.text == "Hello world"
    assert message.entities == (MessageEntity(MessageEntity.BOLD, 0, 5),)
    assert message.from_user is not None and message.from_user.is_bot
    assert message.chat.id == 42 and message.chat.type == "private"
    [sent] = fake.sent_to(42)
    assert sent["method"] == "sendMessage"
    assert sent["text"] == "Hello world"
    assert sent["entities"] == [{"type": "bold", "offset": 0, "length": 5}]
    assert sent["message_id"] == message.message_id


async def test_markdown_v2_is_parsed_into_entities(fake: FakeTelegram, bot: Bot) -> None:
    message = await bot.send_message(42, "*Bold* and `a.b` end\\.", parse_mode=ParseMode.MARKDOWN_V2)
    assert message.text == "Bold and a.b end."
    assert [(e.type, e.offset, e.length) for e in message.entities] == [("bold", 0, 4), ("code", 9, 3)]
    assert fake.sent[-1]["parse_mode"] == "MarkdownV2"


async def test_markdown_v2_with_an_unescaped_reserved_character_is_refused(fake: FakeTelegram, bot: Bot) -> None:
    with pytest.raises(BadRequest, match=r"(?i)Can't parse entities: character '\.' is reserved"):
        await bot.send_message(42, "Version 1.2 is out", parse_mode=ParseMode.MARKDOWN_V2)
    assert fake.sent == []
    with pytest.raises(BadRequest, match=r"(?i)can't find end of bold entity"):
        await bot.send_message(42, "*never closed", parse_mode=ParseMode.MARKDOWN_V2)


async def test_escape_markdown_round_trips(bot: Bot) -> None:
    text = "Reserved: _*[]()~`>#+-=|{}.! and a \\ backslash"
    message = await bot.send_message(42, escape_markdown(text, version=2), parse_mode=ParseMode.MARKDOWN_V2)
    assert message.text == text and message.entities == ()
    code = "x = a[1] * 2.0  # `tick` \\"
    as_code = f"`{escape_markdown(code, version=2, entity_type='code')}`"
    message = await bot.send_message(42, as_code, parse_mode=ParseMode.MARKDOWN_V2)
    assert message.text == code and message.entities[0].type == "code"


async def test_html_parse_mode(bot: Bot) -> None:
    message = await bot.send_message(42, "<b>hi</b> &lt;there&gt;", parse_mode=ParseMode.HTML)
    assert message.text == "hi <there>"
    assert message.entities[0].type == "bold"
    with pytest.raises(BadRequest, match=r"(?i)Unsupported start tag"):
        await bot.send_message(42, "<div>no</div>", parse_mode=ParseMode.HTML)


async def test_text_length_is_counted_in_utf16_after_parsing(bot: Bot) -> None:
    await bot.send_message(42, "x" * 4096)
    with pytest.raises(BadRequest, match=r"(?i)Message is too long"):
        await bot.send_message(42, "x" * 4097)
    await bot.send_message(42, "😀" * 2048)  # 2 UTF-16 units each
    with pytest.raises(BadRequest, match=r"(?i)Message is too long"):
        await bot.send_message(42, "😀" * 2049)
    # Markup does not count: 4096 characters of text inside bold markers fit.
    await bot.send_message(42, "*" + "x" * 4096 + "*", parse_mode=ParseMode.MARKDOWN_V2)
    with pytest.raises(BadRequest, match=r"(?i)Message text is empty"):
        await bot.send_message(42, "   ")


async def test_replies_with_reply_parameters_and_legacy_reply_to(fake: FakeTelegram, bot: Bot) -> None:
    update = fake.user_sends_text(42, "question")
    asked = update["message"]["message_id"]
    reply = await bot.send_message(42, "answer", reply_parameters=ReplyParameters(asked))
    assert reply.reply_to_message is not None and reply.reply_to_message.text == "question"
    assert reply.message_id == asked + 1  # one message-id sequence per chat, the bot's messages included
    assert fake.sent[-1]["reply_to_message_id"] == asked

    async with httpx.AsyncClient() as client:  # an older client's form, as raw JSON
        answer = await client.post(
            f"{fake.url}/bot{TOKEN}/sendMessage", json={"chat_id": 42, "text": "again", "reply_to_message_id": asked}
        )
    assert answer.status_code == 200
    assert answer.json()["result"]["reply_to_message"]["message_id"] == asked
    assert fake.sent[-1]["reply_to_message_id"] == asked

    with pytest.raises(BadRequest, match=r"(?i)Message to be replied not found"):
        await bot.send_message(42, "lost", reply_parameters=ReplyParameters(999))
    sent = await bot.send_message(42, "ok", reply_parameters=ReplyParameters(999, allow_sending_without_reply=True))
    assert sent.reply_to_message is None


async def test_raw_http_answers_like_the_bot_api(fake: FakeTelegram) -> None:
    async with httpx.AsyncClient(base_url=f"{fake.url}/bot{TOKEN}") as client:
        unknown = await client.post("/sendTeleport", json={})
        assert unknown.status_code == 404
        assert unknown.json() == {"ok": False, "error_code": 404, "description": "Not Found"}
        by_query = await client.get("/SENDMESSAGE", params={"chat_id": "5", "text": "via query"})
        assert by_query.json()["result"]["text"] == "via query"  # method names are case-insensitive
        missing = await client.post("/sendMessage", json={"text": "no chat"})
        assert missing.status_code == 400 and missing.json()["description"] == "Bad Request: chat_id is empty"
        bad_markup = await client.post("/sendMessage", data={"chat_id": "5", "text": "x", "reply_markup": "{nope"})
        assert bad_markup.status_code == 400
    assert [call["method"] for call in fake.calls] == ["sendMessage"] * 3


async def test_injected_flood_error_carries_retry_after(fake: FakeTelegram, bot: Bot) -> None:
    fake.fail_next("sendMessage", error_code=429, description="Too Many Requests: retry after 5", retry_after=5)
    with pytest.raises(RetryAfter, match="Retry in 5"):
        await bot.send_message(42, "hello")
    assert (await bot.send_message(42, "hello")).text == "hello"
    assert [call["method"] for call in fake.calls if call["method"] == "sendMessage"] == ["sendMessage"] * 2
    assert fake.calls[-2]["error"]["parameters"] == {"retry_after": 5}


async def test_a_failure_window_fails_every_call_until_it_ends(fake: FakeTelegram, bot: Bot) -> None:
    fake.fail_for(["sendMessage"], 0.5, error_code=429, description="Too Many Requests: retry after 1", retry_after=1)
    for _ in range(3):  # not a count: every call in the window
        with pytest.raises(RetryAfter, match="Retry in 1"):
            await bot.send_message(42, "hello")
    assert (await bot.send_chat_action(42, "typing")) is True  # other methods are untouched
    await asyncio.sleep(0.6)
    assert (await bot.send_message(42, "hello")).text == "hello"


async def test_a_429_carries_the_retry_after_header(fake: FakeTelegram) -> None:
    fake.fail_next("sendMessage", error_code=429, description="Too Many Requests: retry after 5", retry_after=5)
    async with httpx.AsyncClient() as http:
        answer = await http.post(f"{fake.url}/bot{fake.token}/sendMessage", json={"chat_id": 42, "text": "x"})
    assert answer.status_code == 429 and answer.headers["Retry-After"] == "5"


async def test_edit_message_text(fake: FakeTelegram, bot: Bot) -> None:
    message = await bot.send_message(42, "draft")
    edited = await bot.edit_message_text("final", chat_id=42, message_id=message.message_id)
    assert isinstance(edited, type(message)) and edited.text == "final" and edited.edit_date is not None
    with pytest.raises(BadRequest, match=r"(?i)Message is not modified"):
        await bot.edit_message_text("final", chat_id=42, message_id=message.message_id)
    with pytest.raises(BadRequest, match=r"(?i)Message to edit not found"):
        await bot.edit_message_text("x", chat_id=42, message_id=777)
    assert [item["method"] for item in fake.sent] == ["sendMessage", "editMessageText"]


async def test_buttons_callback_answers_and_chat_actions(fake: FakeTelegram, bot: Bot) -> None:
    keyboard = InlineKeyboardMarkup([[InlineKeyboardButton("Retry", callback_data="retry:1")]])
    message = await bot.send_message(42, "pick", reply_markup=keyboard)
    update = fake.user_presses_button(42, message.message_id, "retry:1")
    query = update["callback_query"]
    assert query["message"]["message_id"] == message.message_id and query["data"] == "retry:1"
    assert await bot.answer_callback_query(query["id"])
    with pytest.raises(BadRequest, match=r"(?i)Query is too old"):
        await bot.answer_callback_query(query["id"])
    with pytest.raises(ValueError, match="no button"):
        fake.user_presses_button(42, message.message_id, "other")
    fake.user_presses_button(42, 555, "gone")  # a message the bot cannot see any more
    [*_, pressed, inaccessible] = await bot.get_updates()
    assert pressed.callback_query is not None and pressed.callback_query.data == "retry:1"
    gone = inaccessible.callback_query.message if inaccessible.callback_query else None
    assert gone is not None and not gone.is_accessible  # date 0, as Telegram sends it
    assert await bot.send_chat_action(42, "typing")
    with pytest.raises(BadRequest, match=r"(?i)Wrong parameter action"):
        await bot.send_chat_action(42, "dancing")


async def test_get_updates_long_polls_and_confirms_by_offset(fake: FakeTelegram, bot: Bot) -> None:
    first = fake.user_sends_text(7, "/start hi")
    updates = await bot.get_updates(timeout=0)
    assert [u.update_id for u in updates] == [first["update_id"]]
    message = updates[0].message
    assert message is not None and message.text == "/start hi" and message.chat.type == "private"
    assert message.from_user is not None and not message.from_user.is_bot
    assert message.entities[0].type == "bot_command"

    poll = asyncio.create_task(bot.get_updates(offset=first["update_id"] + 1, timeout=5))
    await asyncio.sleep(0.2)
    assert not poll.done()  # nothing new: the request is held open
    second = fake.user_sends_text(7, "more")
    updates = await asyncio.wait_for(poll, 2)
    assert [u.update_id for u in updates] == [second["update_id"]]
    assert second["update_id"] > first["update_id"]
    assert second["message"]["message_id"] > first["message"]["message_id"]


async def test_a_second_poller_ends_the_first_with_conflict(fake: FakeTelegram, bot: Bot) -> None:
    first = asyncio.create_task(bot.get_updates(timeout=5))
    await asyncio.sleep(0.2)
    async with make_bot(fake) as other:
        second = asyncio.create_task(other.get_updates(timeout=0))
        with pytest.raises(Conflict, match=r"(?i)terminated by other getUpdates request"):
            await asyncio.wait_for(first, 2)
        assert await second == ()


async def test_get_updates_conflicts_with_a_webhook(bot: Bot, receiver: Receiver) -> None:
    await bot.set_webhook(f"{receiver.server.url}/hook")
    with pytest.raises(Conflict, match=r"(?i)webhook is active"):
        await bot.get_updates()
    await bot.delete_webhook()
    assert await bot.get_updates() == ()


async def test_webhook_delivery_with_secret_and_redelivery(fake: FakeTelegram, bot: Bot, receiver: Receiver) -> None:
    assert await bot.set_webhook(f"{receiver.server.url}/hook", secret_token="s3cret_-X", max_connections=5)
    assert fake.webhook is not None and fake.webhook["secret_token"] == "s3cret_-X"
    update = fake.user_sends_text(42, "hello hook")
    assert fake.deliveries_pending() == 1
    for _ in range(100):
        if len(receiver.received) >= 2 and fake.deliveries_pending() == 0:
            break
        await asyncio.sleep(0.05)
    # The first answer was a 500, so Telegram delivered the same update again.
    assert [body for body, _ in receiver.received] == [update, update]
    assert {secret for _, secret in receiver.received} == {"s3cret_-X"}
    assert receiver.times[1] - receiver.times[0] >= 0.19  # a backoff, not a hot loop
    info = await bot.get_webhook_info()
    assert info.url == f"{receiver.server.url}/hook"
    assert info.pending_update_count == 0
    assert info.last_error_message == "Wrong response from the webhook: 500 Internal Server Error"


async def test_a_method_in_the_webhook_answer_is_performed(fake: FakeTelegram, bot: Bot, receiver: Receiver) -> None:
    receiver.statuses.clear()
    receiver.answer = {"method": "sendMessage", "chat_id": 42, "text": "answered inline"}
    await bot.set_webhook(f"{receiver.server.url}/hook")
    fake.user_sends_text(42, "hi")
    [sent] = await fake.wait_for_sent(1, chat_id=42, timeout=5)
    assert sent["text"] == "answered inline"


async def test_deliver_raw_posts_bytes_once(fake: FakeTelegram, bot: Bot, receiver: Receiver) -> None:
    receiver.statuses.clear()
    await bot.set_webhook(f"{receiver.server.url}/hook")
    answer = await fake.deliver_raw(json.dumps({"update_id": 1}).encode(), secret_token="abc")
    assert answer.status_code == 200
    assert receiver.received == [({"update_id": 1}, "abc")]


async def test_voice_file_download(fake: FakeTelegram, bot: Bot) -> None:
    audio = b"OggS" + bytes(range(256)) * 4
    sent = fake.user_sends_voice(42, audio, duration=3)
    assert sent["message"]["voice"]["duration"] == 3
    [update] = await bot.get_updates()
    voice = update.message.voice if update.message else None
    assert voice is not None and voice.mime_type == "audio/ogg" and voice.file_size == len(audio)
    file = await voice.get_file()
    assert file.file_path is not None
    assert bytes(await file.download_as_bytearray()) == audio
    with pytest.raises(BadRequest, match=r"(?i)Invalid file_id"):
        await bot.get_file("nope")


async def test_user_edits_arrive_as_edited_message(fake: FakeTelegram, bot: Bot) -> None:
    sent = fake.user_sends_text(-1001, "typo", chat_type="supergroup", user_id=5)
    fake.user_edits_text(-1001, sent["message"]["message_id"], "fixed")
    first, edit = await bot.get_updates()
    assert first.message is not None and first.message.chat.type == "supergroup"
    assert first.message.from_user is not None and first.message.from_user.id == 5
    assert edit.edited_message is not None and edit.edited_message.text == "fixed"
    assert edit.edited_message.message_id == sent["message"]["message_id"]


async def test_wait_for_sent_times_out_with_what_was_sent(fake: FakeTelegram, bot: Bot) -> None:
    await bot.send_message(42, "only one")
    assert len(await fake.wait_for_sent(1, chat_id=42, timeout=1)) == 1
    with pytest.raises(TimeoutError, match="only one"):
        await fake.wait_for_sent(2, chat_id=42, timeout=0.2)


async def test_http_control_endpoints(fake: FakeTelegram, bot: Bot) -> None:
    async with httpx.AsyncClient(base_url=fake.url) as client:
        created = await client.post("/_fake/users/99/messages", json={"text": "from the terminal"})
        assert created.status_code == 200
        update = created.json()
        assert update["message"]["text"] == "from the terminal"
        [polled] = await bot.get_updates()
        assert polled.update_id == update["update_id"]

        waiting = asyncio.create_task(client.get("/_fake/sent", params={"chat_id": 99, "timeout": 5}))
        await asyncio.sleep(0.1)
        await bot.send_message(99, "reply one")
        first = (await waiting).json()
        assert [item["text"] for item in first] == ["reply one"]
        await bot.send_message(99, "reply two")
        later = await client.get("/_fake/sent", params={"chat_id": 99, "after_index": first[-1]["index"]})
        assert [item["text"] for item in later.json()] == ["reply two"]
        calls = (await client.get("/_fake/calls", params={"method": "sendMessage"})).json()
        assert [call["params"]["text"] for call in calls] == ["reply one", "reply two"]
        refused = await client.post("/_fake/users/-5/messages", json={"text": "x"})
        assert refused.status_code == 400  # a private chat needs a positive id


async def test_runs_as_a_process_and_prints_ready() -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "aibot_fakes", "telegram", "--port", "0", "--token", "42:PROCESS"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = await asyncio.wait_for(asyncio.to_thread(process.stdout.readline), 20)
        assert line.startswith("ready http://127.0.0.1:")
        url = line.split()[1]
        async with httpx.AsyncClient(base_url=url) as client:
            await client.post("/_fake/users/8/messages", json={"text": "over http"})
            updates = (await client.get("/bot42:PROCESS/getUpdates")).json()["result"]
            assert updates[0]["message"]["text"] == "over http"
            await client.post("/bot42:PROCESS/sendMessage", data={"chat_id": "8", "text": "back"})
            assert [item["text"] for item in (await client.get("/_fake/sent")).json()] == ["back"]
    finally:
        process.terminate()
        assert process.wait(timeout=10) == 0
        if process.stdout is not None:
            process.stdout.close()
