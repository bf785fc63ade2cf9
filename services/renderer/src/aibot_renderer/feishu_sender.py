"""Delivering Feishu messages: a reply to the user's message, within Feishu's rate limits, at most once.

Each message carries Feishu's `uuid` idempotency key, derived from the outbound envelope id: when a
send timed out on our side but reached Feishu, the runner's retry is dropped by Feishu itself (within
an hour); after that the renderer's delivered-ids record still guards it.

Answers being written are shown in CardKit streaming cards, one card per part of the answer (a
part is what fits the 30 KB card limit, so an answer that outgrows a card continues in the next).
Each preview sets the card's markdown element to the whole text so far, with a `sequence` that
grows with time (milliseconds since the card was made, so a replica taking a chat over continues
the count without having to know the last one); at most 10 updates a second per card, previews
that would go over are skipped. A card is re-created shortly before Feishu closes its streaming
window (10 minutes). The final part replaces the card with the whole text, streaming mode off. On
frequency errors (230020, 200850, 429) previews pause; on 300309 (streaming closed) the card is
re-created; without the CardKit permission, previews stop and the final goes as a plain message.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections import OrderedDict

from aiolimiter import AsyncLimiter

from aibot_common.envelope import Envelope, TextPart
from aibot_common.errors import InvalidMessage
from aibot_common.platforms.feishu import (
    CARD_SEQUENCE_CODES,
    CARD_STREAMING_CLOSED_CODES,
    PERMISSION_CODES,
    FeishuClient,
    FeishuRejected,
    FeishuRetryable,
)
from aibot_renderer.feishu_format import (
    ANSWER_ELEMENT,
    MSG_TYPES,
    REGENERATE_ACTION,
    button_element_id,
    card_content,
    defuse_mentions,
    literal_html,
    text_content,
)
from aibot_renderer.limits import PerChatLimiter
from aibot_renderer.streams import CardShown, StreamProgress

log = logging.getLogger(__name__)

# Feishu: 5 messages a second per user or group (shared by every bot there), 50 a second per API.
PER_CHAT_PER_SECOND = 5.0
OVERALL_PER_SECOND = 50.0
# Content Feishu could not render (malformed card or post): the words are sent as plain text instead.
FORMAT_CODES = frozenset({230001, 230099})
MAX_UUID = 50
CARD_UPDATES_PER_SECOND = 10.0  # CardKit, per card
CARD_CONTENT_PER_SECOND = 50.0  # CardKit element-content updates, per app (split between replicas)
STREAMING_WINDOW_S = 540.0  # re-create a card a minute before Feishu's 10-minute window closes
CARDKIT_RETRY_S = 600.0  # after a permission error, how long to send plain messages before trying again
CARDS_KEPT = 10_000


def idempotency_key(envelope_id: str) -> str:
    if len(envelope_id) <= MAX_UUID:
        return envelope_id
    return hashlib.sha256(envelope_id.encode()).hexdigest()[:32]


def _is_last_part(message: Envelope) -> bool:
    index, _, total = message.meta.get("part", "1/1").partition("/")
    return index == total


class FeishuSender:
    def __init__(
        self,
        client: FeishuClient,
        *,
        per_chat_per_second: float = PER_CHAT_PER_SECOND,
        overall_per_second: float = OVERALL_PER_SECOND,
    ) -> None:
        self._client = client
        self._overall = AsyncLimiter(overall_per_second, 1)
        self._chats = PerChatLimiter(per_chat_per_second, 1)
        self._card_rate = CARD_CONTENT_PER_SECOND
        self._card_updates = AsyncLimiter(CARD_CONTENT_PER_SECOND, 1)
        self._cards = PerChatLimiter(CARD_UPDATES_PER_SECOND, 1)  # keyed by card id
        self._cardkit_off_until = 0.0
        self._quiet_until: dict[str, float] = {}  # chat -> when previews may resume after a frequency error
        self._shown: OrderedDict[str, str] = OrderedDict()  # card id -> digest of the text it shows
        self._sequence: dict[str, int] = {}  # card id -> the last sequence used by this replica
        # Chat -> the card showing its Regenerate button. Regenerate takes back the chat's last
        # exchange, so only the latest answer may offer it. In memory: after a takeover the first new
        # answer cannot take the old button away (a press on it then regenerates the latest answer).
        self._regenerate_on: OrderedDict[str, CardShown] = OrderedDict()

    def set_share(self, share: float) -> None:
        """This replica's share of the outbound partitions: its share of the app-wide CardKit rate."""
        self._card_updates = AsyncLimiter(max(1.0, self._card_rate * share), 1)

    async def send(self, message: Envelope) -> None:
        part = next((p for p in message.parts if isinstance(p, TextPart) and p.rendered), None)
        if part is None:
            raise InvalidMessage("outbound feishu message without rendered content")
        msg_type = MSG_TYPES.get(part.format)
        if msg_type is None:
            raise InvalidMessage(f"outbound feishu message of unknown format {part.format!r}")
        uuid = idempotency_key(message.id)
        try:
            await self._deliver(message, msg_type, part.rendered or "", uuid)
        except FeishuRejected as exc:
            if msg_type == "text" or exc.code not in FORMAT_CODES:
                raise
            # The words matter more than the formatting: say them as plain text.
            log.warning("feishu refused the %s content (code %s); sending plain text instead", msg_type, exc.code)
            await self._deliver(message, "text", text_content(defuse_mentions(part.text)), f"{uuid[:45]}-text")
        if message.meta.get("regenerable") == "1" and _is_last_part(message):
            # An answer that came whole (not streamed) offers Regenerate now: the older card stops.
            await self._move_regenerate(message.conversation.chat_id, None)

    async def _deliver(self, message: Envelope, msg_type: str, content: str, uuid: str) -> None:
        chat_id = message.conversation.chat_id
        await self._chats.acquire(chat_id)
        await self._overall.acquire()
        if message.reply_to_message_id:
            try:
                await self._client.reply_message(message.reply_to_message_id, msg_type, content, uuid=uuid)
                return
            except FeishuRejected as exc:
                if not exc.reply_target_gone:
                    raise
                log.info("the message to answer is gone (code %s); sending to the chat instead", exc.code)
        await self._client.send_message("chat_id", chat_id, msg_type, content, uuid=uuid)

    # ------------------------------------------------------------ streaming cards

    async def preview(self, message: Envelope, progress: StreamProgress | None) -> StreamProgress | None:
        parts = [p for p in message.parts if isinstance(p, TextPart) and p.rendered and p.text.strip()]
        chat_id = message.conversation.chat_id
        if not parts or self._quiet_until.get(chat_id, 0.0) > time.monotonic():
            return progress
        if progress is None:
            if self._cardkit_off_until > time.monotonic():
                return StreamProgress(mode="plain")
            progress = StreamProgress(mode="card")
        if progress.mode != "card":
            return progress
        cards = list(progress.cards)
        try:
            for index, part in enumerate(parts):
                if index >= len(cards):
                    cards.append(await self._new_card(message, part, first=index == 0))
                    continue
                card = cards[index]
                if self._shown.get(card.card_id) == _digest(part.text):
                    continue
                if card.streaming_closed or time.time() - card.created_at > STREAMING_WINDOW_S:
                    cards[index] = await self._recreate(message, card, part, first=index == 0)
                    continue
                if not (self._cards.limiter(card.card_id).has_capacity() and self._card_updates.has_capacity()):
                    continue  # this card's 10 updates a second are spent: the next preview shows more
                await self._cards.acquire(card.card_id)
                await self._card_updates.acquire()
                try:
                    await self._stream_text(card, part.text)
                except FeishuRejected as exc:
                    if exc.code not in CARD_STREAMING_CLOSED_CODES:
                        raise
                    # Feishu closed the card's streaming window early: the next preview re-creates it.
                    cards[index] = card.model_copy(update={"streaming_closed": True})
        except FeishuRejected as exc:
            if exc.code in PERMISSION_CODES:
                log.warning("no CardKit permission (code %s): answers go as plain messages", exc.code)
                self._cardkit_off_until = time.monotonic() + CARDKIT_RETRY_S
                return progress.model_copy(update={"mode": "card" if cards else "plain", "cards": cards})
            log.info("streaming card not updated in chat %s: %s", chat_id, exc)
        except FeishuRetryable as exc:
            self._quiet_until[chat_id] = time.monotonic() + (exc.retry_after or 1.0)
            log.info("streaming card update throttled in chat %s: %s", chat_id, exc)
        return progress.model_copy(update={"cards": cards})

    async def send_part(self, message: Envelope, progress: StreamProgress) -> StreamProgress:
        """The final part: its card replaced by the whole text with streaming off (or sent as usual)."""
        index, _, total_text = message.meta.get("part", "1/1").partition("/")
        index, total = int(index) - 1, int(total_text)
        cards = list(progress.cards)
        part = next((p for p in message.parts if isinstance(p, TextPart) and p.rendered), None)
        if part is None:
            raise InvalidMessage("outbound feishu message without rendered content")
        if progress.mode == "card" and index < len(cards):
            card = cards[index]
            final = part.rendered if part.format == "feishu_card" else card_content(part.text)
            try:
                await self._cards.acquire(card.card_id)
                await self._client.replace_card(card.card_id, final or "", self._next_sequence(card))
                self._shown[card.card_id] = _digest(part.text)
                if index == total - 1 and message.meta.get("regenerable") == "1" and part.format == "feishu_card":
                    await self._move_regenerate(message.conversation.chat_id, card)
            except FeishuRejected as exc:
                # The card cannot take it (too big, malformed, no permission any more): the words go as
                # a message and the card is withdrawn. A frequency error (Retryable) is retried instead.
                log.warning("card %s not finished (code %s); sending the part as a message", card.card_id, exc.code)
                await self.send(message)
                await self._recall(card.message_id)
        else:
            await self.send(message)
        if index == total - 1:
            for extra in cards[total:]:
                await self._recall(extra.message_id)
            cards = cards[:total]
        return progress.model_copy(update={"cards": cards})

    async def _move_regenerate(self, chat_id: str, card: CardShown | None) -> None:
        """This card (or a card message sent whole, None: not a card entity, so its own button cannot
        be taken off later) now offers Regenerate: the chat's previous answer's card stops offering
        it (best effort: a failure leaves an extra button, never a lost answer)."""
        previous = self._regenerate_on.pop(chat_id, None)
        if card is not None:
            self._regenerate_on[chat_id] = card
        while len(self._regenerate_on) > CARDS_KEPT:
            self._regenerate_on.popitem(last=False)
        if previous is None or (card is not None and previous.card_id == card.card_id):
            return
        try:
            await self._cards.acquire(previous.card_id)
            await self._card_updates.acquire()
            element = button_element_id(REGENERATE_ACTION)
            await self._client.delete_card_element(previous.card_id, element, self._next_sequence(previous))
        except (FeishuRejected, FeishuRetryable) as exc:
            log.info("Regenerate not taken off card %s in chat %s: %s", previous.card_id, chat_id, exc)

    async def _new_card(self, message: Envelope, part: TextPart, *, first: bool) -> CardShown:
        card_id = await self._client.create_card(part.rendered or "")
        created = time.time()
        content = json.dumps({"type": "card", "data": {"card_id": card_id}})
        chat_id = message.conversation.chat_id
        await self._chats.acquire(chat_id)
        await self._overall.acquire()
        # No uuid: a repeat after a crash must show this new card, not Feishu's memory of the old one.
        message_id = ""
        if first and message.reply_to_message_id:
            try:
                message_id = await self._client.reply_message(message.reply_to_message_id, "interactive", content)
            except FeishuRejected as exc:
                if not exc.reply_target_gone:
                    raise
        if not message_id:
            message_id = await self._client.send_message("chat_id", chat_id, "interactive", content)
        self._remember(card_id, part.text)
        return CardShown(card_id=card_id, message_id=message_id, created_at=created)

    async def _recreate(self, message: Envelope, old: CardShown, part: TextPart, *, first: bool) -> CardShown:
        """Before Feishu closes the card's streaming window: a fresh card in its place."""
        new = await self._new_card(message, part, first=first)
        await self._recall(old.message_id)
        return new

    async def _stream_text(self, card: CardShown, text: str) -> None:
        content = literal_html(text)  # as card_content writes it: what looks like HTML stays text
        try:
            await self._client.stream_card_content(card.card_id, ANSWER_ELEMENT, content, self._next_sequence(card))
        except FeishuRejected as exc:
            if exc.code not in CARD_SEQUENCE_CODES:
                raise
            # Another replica numbered past our clock: jump ahead once, and stay ahead.
            self._sequence[card.card_id] = self._next_sequence(card) + 60_000
            await self._client.stream_card_content(card.card_id, ANSWER_ELEMENT, content, self._next_sequence(card))
        self._remember(card.card_id, text)

    def _next_sequence(self, card: CardShown) -> int:
        sequence = max(self._sequence.get(card.card_id, 0) + 1, int((time.time() - card.created_at) * 1000) + 1)
        self._sequence[card.card_id] = sequence
        return sequence

    async def _recall(self, message_id: str) -> None:
        try:
            await self._client.recall_message(message_id)
        except (FeishuRejected, FeishuRetryable) as exc:
            log.info("could not recall superseded card message %s: %s", message_id, exc)

    def _remember(self, card_id: str, text: str) -> None:
        self._shown[card_id] = _digest(text)
        self._shown.move_to_end(card_id)
        while len(self._shown) > CARDS_KEPT:
            self._shown.popitem(last=False)
        while len(self._sequence) > CARDS_KEPT:
            self._sequence.pop(next(iter(self._sequence)))


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]
