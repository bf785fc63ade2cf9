"""Delivering Feishu messages: a reply to the user's message, within Feishu's rate limits, at most once.

Each message carries Feishu's `uuid` idempotency key, derived from the outbound envelope id: when a
send timed out on our side but reached Feishu, the runner's retry is dropped by Feishu itself (within
an hour); after that the renderer's delivered-ids record still guards it.
"""

from __future__ import annotations

import hashlib
import logging

from aiolimiter import AsyncLimiter

from aibot_common.envelope import Envelope, TextPart
from aibot_common.errors import InvalidMessage
from aibot_common.platforms.feishu import FeishuClient, FeishuRejected
from aibot_renderer.feishu_format import MSG_TYPES, defuse_mentions, text_content
from aibot_renderer.limits import PerChatLimiter

log = logging.getLogger(__name__)

# Feishu: 5 messages a second per user or group (shared by every bot there), 50 a second per API.
PER_CHAT_PER_SECOND = 5.0
OVERALL_PER_SECOND = 50.0
# Content Feishu could not render (malformed card or post): the words are sent as plain text instead.
FORMAT_CODES = frozenset({230001, 230099})
MAX_UUID = 50


def idempotency_key(envelope_id: str) -> str:
    if len(envelope_id) <= MAX_UUID:
        return envelope_id
    return hashlib.sha256(envelope_id.encode()).hexdigest()[:32]


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
