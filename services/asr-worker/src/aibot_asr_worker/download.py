"""Fetching a voice note's bytes from its platform, bounded in size and time.

Each platform's own client does the talking (python-telegram-bot, configured with the same base
URL as every other service; the shared Feishu client with its tenant token); this module turns
their answers into three outcomes the handler understands: the bytes, "too big" (a polite limit
reply), or "unavailable" (the file is gone or refused: a polite reply and a dead letter). Anything
transient is `Retryable` for the runner.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Protocol

from telegram import Bot
from telegram.error import BadRequest, Forbidden, InvalidToken, RetryAfter, TelegramError

from aibot_common import telemetry
from aibot_common.envelope import AudioPart, Envelope
from aibot_common.errors import Retryable

if TYPE_CHECKING:  # lark-oapi takes seconds of CPU to import: only a Feishu deployment pays for it
    from aibot_common.platforms.feishu import FeishuClient


@dataclass(frozen=True)
class Download:
    data: bytes
    content_type: str | None = None  # as the server labelled it; checked, never trusted to say "audio"


class AudioTooBig(Exception):
    def __init__(self, size: int | None, limit: int) -> None:
        super().__init__(f"the audio is {size if size is not None else 'over'} bytes; the limit is {limit}")
        self.size = size
        self.limit = limit


class AudioUnavailable(Exception):
    """The platform will not give us this file (unknown id, expired, refused): retrying will not help."""


class AudioFetcher(Protocol):
    async def fetch(self, request: Envelope, part: AudioPart) -> Download: ...


class TelegramAudio:
    """getFile, then the file download, through python-telegram-bot."""

    def __init__(self, bot: Bot, *, max_bytes: int, timeout_s: float) -> None:
        self._bot = bot
        self._max_bytes = max_bytes
        self._timeout_s = timeout_s

    async def fetch(self, request: Envelope, part: AudioPart) -> Download:
        try:
            async with asyncio.timeout(self._timeout_s):
                file = await self._bot.get_file(part.file_ref)
                self._count("getFile", "200")
                if file.file_size is not None and file.file_size > self._max_bytes:
                    raise AudioTooBig(file.file_size, self._max_bytes)
                # python-telegram-bot reads the whole body; the size was checked above from getFile,
                # and Telegram's servers refuse getFile for files over 20 MB in the first place.
                data = bytes(await file.download_as_bytearray())
        except TimeoutError:
            raise Retryable(f"downloading the voice note took over {self._timeout_s:g} s") from None
        except RetryAfter as exc:
            self._count("getFile", "429")
            raise Retryable("telegram rate limit on getFile", retry_after=_seconds(exc.retry_after)) from exc
        except BadRequest as exc:  # before NetworkError, its base class
            self._count("getFile", "400")
            if "too big" in exc.message.lower():
                raise AudioTooBig(part.size_bytes, self._max_bytes) from exc
            raise AudioUnavailable(f"telegram refused the file: {exc.message}") from exc
        except (Forbidden, InvalidToken) as exc:
            self._count("getFile", "401")
            # A configuration problem, not this file's: retry, and dead-letter only if it persists.
            raise Retryable(f"telegram refused the bot: {exc.message}") from exc
        except TelegramError as exc:  # NetworkError, TimedOut, 5xx
            self._count("getFile", "error")
            raise Retryable(f"telegram download failed: {exc.message}") from exc
        if len(data) > self._max_bytes:
            raise AudioTooBig(len(data), self._max_bytes)
        return Download(data)

    @staticmethod
    def _count(method: str, code: str) -> None:
        telemetry.PLATFORM_API_CALLS.labels(platform="telegram", method=method, code=code).inc()


class FeishuAudio:
    """The message-resource download (`type=file`), streamed by the shared client and cut off at the bound."""

    def __init__(self, client: FeishuClient, *, max_bytes: int, timeout_s: float) -> None:
        self._client = client
        self._max_bytes = max_bytes
        self._timeout_s = timeout_s

    async def fetch(self, request: Envelope, part: AudioPart) -> Download:
        from aibot_common.platforms.feishu import FeishuRejected

        # A resource is addressed by the message that carries it, which ingress-feishu keeps in meta.
        message_id = request.meta.get("message_id") or request.reply_to_message_id
        if not message_id:
            raise AudioUnavailable("the request names no feishu message_id to download the audio from")
        try:
            async with asyncio.timeout(self._timeout_s):
                resource = await self._client.download_message_resource(
                    message_id, part.file_ref, resource_type="file", max_bytes=self._max_bytes
                )
        except TimeoutError:
            raise Retryable(f"downloading the voice note took over {self._timeout_s:g} s") from None
        except FeishuRejected as exc:  # FeishuRetryable is Retryable already: left to the runner
            if exc.code is None and exc.http_status is None:
                # Not Feishu's answer (that always has an HTTP status): the client's own size bound.
                raise AudioTooBig(None, self._max_bytes) from exc
            raise AudioUnavailable(str(exc)) from exc
        return Download(resource.content, resource.content_type)


def _seconds(retry_after: int | float | timedelta) -> float:
    return retry_after.total_seconds() if isinstance(retry_after, timedelta) else float(retry_after)
