"""Telegram's flood control, as the fake enforces it when asked to (`FakeTelegram(flood_limits=...)`).

Telegram documents the limits only as "about 1 message a second per chat, 20 a minute per group,
30 a second overall" and answers a bot over them with 429 "Too Many Requests: retry after N" and
`parameters.retry_after`. The fake counts each as a token bucket (a short burst allowed, the rate
on average) over every method that puts text in a chat — sendMessage, editMessageText and
sendMessageDraft — whichever bot replica calls it, which is what makes it a test of limits
counted across replicas.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

from aibot_fakes.telegram_params import ApiError

LIMITED_METHODS = frozenset({"sendmessage", "editmessagetext", "editmessagereplymarkup", "sendmessagedraft"})


@dataclass
class _Bucket:
    capacity: float
    per_second: float
    level: float = 0.0
    at: float = field(default_factory=time.monotonic)

    def wait_for_room(self, now: float) -> float:
        """Seconds until one more call fits (0: it fits now)."""
        self.level = max(0.0, self.level - (now - self.at) * self.per_second)
        self.at = now
        return 0.0 if self.level + 1 <= self.capacity else (self.level + 1 - self.capacity) / self.per_second


@dataclass(frozen=True)
class FloodLimits:
    chat_per_second: float = 1.0
    chat_burst: float = 3.0
    group_per_minute: float = 20.0
    overall_per_second: float = 30.0


class FloodControl:
    def __init__(self, limits: FloodLimits) -> None:
        self.limits = limits
        self._overall = _Bucket(limits.overall_per_second, limits.overall_per_second)
        self._chats: dict[int, _Bucket] = {}
        self._groups: dict[int, _Bucket] = {}
        self.refused = 0

    def check(self, chat_id: int, is_group: bool) -> None:
        """Count one call to this chat, or raise the 429 Telegram would answer."""
        now = time.monotonic()
        limits = self.limits
        buckets = [
            self._overall,
            self._chats.setdefault(chat_id, _Bucket(limits.chat_burst, limits.chat_per_second)),
        ]
        if is_group:
            buckets.append(
                self._groups.setdefault(chat_id, _Bucket(limits.group_per_minute, limits.group_per_minute / 60))
            )
        wait = max(bucket.wait_for_room(now) for bucket in buckets)
        if wait > 0:
            self.refused += 1
            seconds = max(1, math.ceil(wait))
            raise ApiError(429, f"Too Many Requests: retry after {seconds}", {"retry_after": seconds})
        for bucket in buckets:
            bucket.level += 1
