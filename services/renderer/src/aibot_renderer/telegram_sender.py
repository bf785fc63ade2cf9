"""Delivering Telegram messages: flood limits, retries, which errors are permanent, and answers shown
while they are written (a draft in private chats, edited messages in groups).

Flood limits, across every renderer replica (Telegram: 1 message a second per chat, 20 a minute per
group, 30 a second per bot):

- per chat and per group: a chat's outbound records live on one partition, and one replica at a
  time owns a partition, so the owner's own per-chat budget is the cluster's (a handover after a
  rebalance starts the new owner with a fresh budget: at most one extra burst per chat);
- overall: each replica may use the share of the bot's 30/s that matches its share of the
  outbound partitions (`set_share`, told by the runner after every rebalance), so the shares add up
  to the bot's limit however many replicas run, with no coordination traffic; the price is that
  a replica whose chats are quiet cannot lend its share to a busy one.

Previews only use spare capacity (a reserve stays for final answers) and never wait for it: one
that does not fit is skipped, as is every preview for a while after a 429, because the next preview
or the final shows the same text and more.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from aiolimiter import AsyncLimiter
from opentelemetry.trace import SpanKind
from telegram import Bot, InlineKeyboardButton, InlineKeyboardMarkup, Message, MessageEntity, ReplyParameters
from telegram.error import BadRequest, ChatMigrated, Forbidden, InvalidToken, NetworkError, RetryAfter, TelegramError

from aibot_common import telemetry
from aibot_common.envelope import ChatType, Envelope, TextPart
from aibot_common.errors import InvalidMessage, Retryable, Unavailable
from aibot_common.platforms.telegram import POOL_SIZE
from aibot_common.settings import TelegramConfig
from aibot_renderer.limits import PerChatLimiter
from aibot_renderer.streams import StreamProgress

log = logging.getLogger(__name__)
PLATFORM = "telegram"
T = TypeVar("T")

CHAT_BURST_S = 3.0  # the per-chat budget is an average over this long: a 3-part answer goes at once
PREVIEW_RESERVE = 0.25  # of each budget, kept for final answers: previews only take what is spare
SHOWN_KEPT = 10_000
# Buttons (their callback data is what core-llm's control module reads): Stop on a preview being
# edited, Regenerate on the last message of a model's answer. A draft can carry no buttons; there
# the user types /stop.
STOP_BUTTON = InlineKeyboardMarkup([[InlineKeyboardButton("⏹ Stop", callback_data="stop")]])
REGENERATE_BUTTON = InlineKeyboardMarkup([[InlineKeyboardButton("🔄 Regenerate", callback_data="regen")]])


def draft_id(stream: str) -> int:
    """A non-zero 31-bit id per answer, the same on every replica (a new owner updates the same draft)."""
    return int.from_bytes(hashlib.sha256(stream.encode()).digest()[:4], "big") % (2**31 - 1) + 1


def is_not_modified(exc: BadRequest) -> bool:
    return "message is not modified" in str(exc).lower()


def _retry_seconds(exc: RetryAfter) -> float:
    retry_after = exc.retry_after
    return retry_after.total_seconds() if hasattr(retry_after, "total_seconds") else float(retry_after)


class TelegramSender:
    def __init__(self, bot: Bot, config: TelegramConfig, *, drafts: bool = True) -> None:
        self._bot = bot
        self._rate = config.messages_per_second
        self._overall = AsyncLimiter(config.messages_per_second, 1)
        self._groups = PerChatLimiter(config.group_messages_per_minute, 60)
        self._chats = PerChatLimiter(config.chat_messages_per_second * CHAT_BURST_S, CHAT_BURST_S)
        self._drafts = drafts
        # At most one request per pooled connection: a long queue inside httpcore's pool is scanned on
        # every assignment, which made connection bookkeeping most of the renderer's CPU under load.
        self._connections = asyncio.Semaphore(POOL_SIZE)
        self._quiet_until: dict[str, float] = {}  # chat -> when previews may resume after a 429
        # What each message shows (a digest), so an unchanged part is not edited again. In memory
        # only: a new owner edits once more and Telegram answers "not modified", which is success.
        self._shown: OrderedDict[tuple[str, int], str] = OrderedDict()
        # Chat -> the message showing its Regenerate button. Regenerate takes back the chat's last
        # exchange, so only the latest answer may offer it. In memory: after a takeover the first new
        # answer cannot take the old button away (a press on it then regenerates the latest answer).
        self._regenerate_on: OrderedDict[str, int] = OrderedDict()

    def set_share(self, share: float) -> None:
        """This replica's share of the outbound partitions: its share of the bot's overall limit."""
        self._overall = AsyncLimiter(max(1.0, self._rate * share), 1)

    # ------------------------------------------------------------ final messages

    async def send(self, message: Envelope) -> None:
        await self._send_new(message, _text_part(message))

    async def send_part(self, message: Envelope, progress: StreamProgress) -> StreamProgress:
        """One part of the final answer: edits the message its preview showed, or sends a new one."""
        part = _text_part(message)
        index, total = _part_index(message)
        ids = list(progress.message_ids)
        if progress.mode == "edit" and index < len(ids):
            if not await self._edit_final(message, ids[index], part):
                ids[index] = await self._send_new(message, part)
        else:
            new_id = await self._send_new(message, part)
            if progress.mode == "edit":
                ids.append(new_id)
        if index == total - 1:
            # The final split can come out shorter than a preview's: remove what it no longer needs.
            for extra in ids[total:]:
                await self._delete(message.conversation.chat_id, extra)
            ids = ids[:total]
        return progress.model_copy(update={"message_ids": ids})

    async def _send_new(self, message: Envelope, part: TextPart) -> int:
        chat_id = message.conversation.chat_id
        await self._acquire(message)
        entities = _entities(part)
        # Only the answer's first message replies to the user's; parts after it follow it.
        reply = (
            ReplyParameters(message_id=int(message.reply_to_message_id), allow_sending_without_reply=True)
            if message.reply_to_message_id
            else None
        )
        markup, buttons = _final_buttons(message)
        try:
            sent = await self._final(
                "sendMessage", chat_id, lambda c: self._send_message(c, part.text, entities, reply, markup)
            )
        except BadRequest as exc:
            if "entit" in str(exc).lower() and entities:
                # Formatting rejected: the words still matter more than the bold. Send them plain.
                log.warning("telegram rejected entities, sending plain text: %s", exc)
                sent = await self._final(
                    "sendMessage", chat_id, lambda c: self._send_message(c, part.text, [], reply, markup)
                )
            else:
                raise
        self._remember(chat_id, sent.message_id, part, buttons)
        if buttons:
            await self._move_regenerate(message, sent.message_id)
        return sent.message_id

    async def _edit_final(self, message: Envelope, message_id: int, part: TextPart) -> bool:
        """Edit a preview into its final text; False when that message cannot be edited any more."""
        chat_id = message.conversation.chat_id
        markup, buttons = _final_buttons(message)
        if self._shown.get((chat_id, message_id)) == _digest(part, buttons):
            return True
        await self._acquire(message)
        entities = _entities(part)
        try:
            await self._final(
                "editMessageText", chat_id, lambda c: self._edit(c, message_id, part.text, entities, markup)
            )
        except InvalidMessage as exc:
            # Deleted by someone, or too old to edit: the answer goes in a new message instead.
            log.info("preview message %s cannot be edited (%s); sending the part anew", message_id, exc)
            return False
        except BadRequest as exc:  # rejected entities (re-raised by _final): the words, plain
            log.warning("telegram rejected entities in an edit, editing as plain text: %s", exc)
            await self._final("editMessageText", chat_id, lambda c: self._edit(c, message_id, part.text, [], markup))
        self._remember(chat_id, message_id, part, buttons)
        if buttons:
            await self._move_regenerate(message, message_id)
        return True

    async def _acquire(self, message: Envelope) -> None:
        chat_id = message.conversation.chat_id
        await self._chats.acquire(chat_id)
        if message.conversation.chat_type is ChatType.GROUP:
            await self._groups.acquire(chat_id)
        await self._overall.acquire()

    async def _final(self, method: str, chat_id: str, call: Callable[[str], Awaitable[T]]) -> T:
        """A call whose failure the runner must know about: Telegram's errors as Retryable / InvalidMessage."""
        try:
            return await self._api(method, call(chat_id))
        except RetryAfter as exc:
            seconds = _retry_seconds(exc)
            raise Retryable(f"telegram flood control: retry in {seconds}s", retry_after=seconds) from exc
        except ChatMigrated as exc:
            log.info("chat %s migrated to %s; sending there", chat_id, exc.new_chat_id)
            return await self._final(method, str(exc.new_chat_id), call)
        except BadRequest as exc:
            if "entit" in str(exc).lower():
                raise
            raise InvalidMessage(f"telegram rejected the message (400): {exc}") from exc
        except (Forbidden, InvalidToken) as exc:
            raise InvalidMessage(f"telegram refused delivery: {exc}") from exc
        except NetworkError as exc:  # timeouts, connection errors and 5xx
            raise Unavailable(f"telegram unavailable: {exc}") from exc
        except TelegramError as exc:
            raise InvalidMessage(f"telegram error: {exc}") from exc

    # ------------------------------------------------------------ previews

    async def preview(self, message: Envelope, progress: StreamProgress | None) -> StreamProgress | None:
        parts = [p for p in message.parts if isinstance(p, TextPart) and p.text.strip()]
        if not parts:
            return progress
        conversation = message.conversation
        shown = progress
        if progress is None:
            private = conversation.chat_type is ChatType.PRIVATE
            progress = StreamProgress(mode="draft" if self._drafts and private else "edit")
        if progress.mode == "draft":
            if not await self._spare(message, first=shown is None):
                return shown
            try:
                await self._draft(conversation.chat_id, draft_id(message.meta["stream"]), parts[-1])
                return progress
            except BadRequest as exc:
                # No drafts here (an older Bot API server, a chat that is not private): edit instead.
                log.info("sendMessageDraft refused (%s); previewing by editing a message", exc)
                progress = StreamProgress(mode="edit")
            except TelegramError as exc:
                self._preview_failed(conversation.chat_id, exc)
                return shown
        return await self._preview_edits(message, parts, progress)

    async def _preview_edits(
        self, message: Envelope, parts: list[TextPart], progress: StreamProgress
    ) -> StreamProgress:
        """Each part of the answer so far in its own message: edit those that changed, send new ones."""
        chat_id = message.conversation.chat_id
        ids = list(progress.message_ids)
        try:
            for index, part in enumerate(parts):
                if index < len(ids) and self._shown.get((chat_id, ids[index])) == _digest(part, "stop"):
                    continue
                if not await self._spare(message, first=not ids):
                    break
                entities = _entities(part)
                if index < len(ids):
                    edit = self._edit(chat_id, ids[index], part.text, entities, STOP_BUTTON)
                    await self._api("editMessageText", edit)
                    self._remember(chat_id, ids[index], part, "stop")
                    continue
                reply = (
                    ReplyParameters(message_id=int(message.reply_to_message_id), allow_sending_without_reply=True)
                    if index == 0 and message.reply_to_message_id
                    else None
                )
                send = self._send_message(chat_id, part.text, entities, reply, STOP_BUTTON)
                sent = await self._api("sendMessage", send)
                ids.append(sent.message_id)
                self._remember(chat_id, sent.message_id, part, "stop")
        except TelegramError as exc:
            self._preview_failed(chat_id, exc)
        # What was sent before a failure is in the progress, or the final would leave it orphaned.
        return progress.model_copy(update={"message_ids": ids})

    def _preview_failed(self, chat_id: str, exc: TelegramError) -> None:
        if isinstance(exc, RetryAfter):
            self._quiet_until[chat_id] = time.monotonic() + _retry_seconds(exc)
        log.info("preview not shown in chat %s: %s", chat_id, exc)

    async def _spare(self, message: Envelope, *, first: bool = False) -> bool:
        """Take one unit of every budget this chat uses, if each has some to spare beyond the reserve.
        An answer's first preview may use the reserve too: the first words are what the user waits
        for, and the final of an answer already showing can wait its turn."""
        chat_id = message.conversation.chat_id
        if self._quiet_until.get(chat_id, 0.0) > time.monotonic():
            return False
        self._quiet_until.pop(chat_id, None)
        limiters = [self._chats.limiter(chat_id), self._overall]
        if message.conversation.chat_type is ChatType.GROUP:
            limiters.append(self._groups.limiter(chat_id))
        reserve = 0.0 if first else PREVIEW_RESERVE
        if not all(lim.has_capacity(min(lim.max_rate, 1 + lim.max_rate * reserve)) for lim in limiters):
            return False
        for limiter in limiters:
            await limiter.acquire()  # returns at once: there is capacity, checked just above
        return True

    # ------------------------------------------------------------ API calls

    async def _send_message(
        self,
        chat_id: str,
        text: str,
        entities: list[MessageEntity],
        reply: ReplyParameters | None,
        markup: InlineKeyboardMarkup | None = None,
    ) -> Message:
        return await self._bot.send_message(
            chat_id=chat_id, text=text, entities=entities or None, reply_parameters=reply, reply_markup=markup
        )

    async def _edit(
        self,
        chat_id: str,
        message_id: int,
        text: str,
        entities: list[MessageEntity],
        markup: InlineKeyboardMarkup | None = None,
    ) -> Any:
        try:
            return await self._bot.edit_message_text(
                text=text, chat_id=chat_id, message_id=message_id, entities=entities or None, reply_markup=markup
            )
        except BadRequest as exc:
            if is_not_modified(exc):
                return None  # it already shows exactly this: the edit's purpose is met
            raise

    async def _draft(self, chat_id: str, draft: int, part: TextPart) -> None:
        await self._api(
            "sendMessageDraft",
            self._bot.send_message_draft(
                chat_id=int(chat_id), draft_id=draft, text=part.text, entities=_entities(part) or None
            ),
        )

    async def _delete(self, chat_id: str, message_id: int) -> None:
        try:
            await self._api("deleteMessage", self._bot.delete_message(chat_id=chat_id, message_id=message_id))
        except TelegramError as exc:
            log.info("could not delete surplus preview message %s: %s", message_id, exc)

    async def _api(self, method: str, call: Awaitable[T]) -> T:
        """One Bot API call: a CLIENT span, a pooled connection, and its outcome counted."""
        try:
            with telemetry.span(f"telegram {method}", kind=SpanKind.CLIENT, **{"rpc.method": method}):
                async with self._connections:
                    result = await call
        except TelegramError as exc:
            telemetry.PLATFORM_API_CALLS.labels(platform=PLATFORM, method=method, code=_code(exc)).inc()
            raise
        telemetry.PLATFORM_API_CALLS.labels(platform=PLATFORM, method=method, code="200").inc()
        return result

    async def _move_regenerate(self, message: Envelope, message_id: int) -> None:
        """This message now offers Regenerate: the chat's previous answer stops offering it (best
        effort: a failure leaves an extra button, never a lost answer)."""
        chat_id = message.conversation.chat_id
        previous = self._regenerate_on.get(chat_id)
        self._regenerate_on[chat_id] = message_id
        self._regenerate_on.move_to_end(chat_id)
        while len(self._regenerate_on) > SHOWN_KEPT:
            self._regenerate_on.popitem(last=False)
        if previous is None or previous == message_id:
            return
        self._shown.pop((chat_id, previous), None)  # what it shows changed: a later edit must not be skipped
        await self._acquire(message)
        try:
            await self._api(
                "editMessageReplyMarkup",
                self._bot.edit_message_reply_markup(chat_id=chat_id, message_id=previous, reply_markup=None),
            )
        except TelegramError as exc:
            if not (isinstance(exc, BadRequest) and is_not_modified(exc)):
                log.info("Regenerate not taken off message %s in chat %s: %s", previous, chat_id, exc)

    def _remember(self, chat_id: str, message_id: int, part: TextPart, buttons: str = "") -> None:
        self._shown[(chat_id, message_id)] = _digest(part, buttons)
        self._shown.move_to_end((chat_id, message_id))
        while len(self._shown) > SHOWN_KEPT:
            self._shown.popitem(last=False)


def _text_part(message: Envelope) -> TextPart:
    part = next((p for p in message.parts if isinstance(p, TextPart)), None)
    if part is None or not part.text.strip():
        raise InvalidMessage("outbound telegram message without text")
    return part


def _entities(part: TextPart) -> list[MessageEntity]:
    return [MessageEntity.de_json(e, None) for e in part.entities or ()]


def _digest(part: TextPart, buttons: str = "") -> str:
    shown = [part.text, part.entities or [], buttons]
    return hashlib.sha256(json.dumps(shown, sort_keys=True).encode()).hexdigest()[:16]


def _final_buttons(message: Envelope) -> tuple[InlineKeyboardMarkup | None, str]:
    """Regenerate on the last message of the model's answer; nothing elsewhere (an edit without
    markup also takes a preview's Stop away)."""
    index, total = _part_index(message)
    if index == total - 1 and message.meta.get("regenerable") == "1":
        return REGENERATE_BUTTON, "regen"
    return None, ""


def _part_index(message: Envelope) -> tuple[int, int]:
    index, _, total = message.meta.get("part", "1/1").partition("/")
    return int(index) - 1, int(total)


def _code(exc: TelegramError) -> str:
    if isinstance(exc, RetryAfter):
        return "429"
    if isinstance(exc, BadRequest | ChatMigrated):
        return "400"
    if isinstance(exc, Forbidden):
        return "403"
    if isinstance(exc, InvalidToken):
        return "401"
    if isinstance(exc, NetworkError):
        return "5xx"
    return "error"
