"""Per-chat send rates, shared by the platform senders (Telegram: 20 a minute in a group; Feishu: 5 a
second per chat), with the least recently used chats forgotten so memory stays bounded."""

from __future__ import annotations

from collections import OrderedDict

from aiolimiter import AsyncLimiter

MAX_CHATS = 10_000


class PerChatLimiter:
    def __init__(self, rate: float, period_s: float, max_chats: int = MAX_CHATS) -> None:
        self._rate = rate
        self._period_s = period_s
        self._max_chats = max_chats
        self._chats: OrderedDict[str, AsyncLimiter] = OrderedDict()

    async def acquire(self, chat_id: str) -> None:
        """Wait until this chat may be sent one more message."""
        await self.limiter(chat_id).acquire()

    def limiter(self, chat_id: str) -> AsyncLimiter:
        """This chat's bucket (for a caller that only wants spare capacity, `has_capacity` first)."""
        limiter = self._chats.get(chat_id)
        if limiter is None:
            limiter = self._chats[chat_id] = AsyncLimiter(self._rate, self._period_s)
            if len(self._chats) > self._max_chats:
                self._chats.popitem(last=False)
        self._chats.move_to_end(chat_id)
        return limiter

    def __len__(self) -> int:
        return len(self._chats)
