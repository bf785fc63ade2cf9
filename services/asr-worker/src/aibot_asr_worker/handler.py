"""asr-worker's handler: one voice-note request -> the transcript as a user message, or a polite reply.

No Kafka and no HTTP here: the platform clients and the transcriber are passed in, and the runner
routes and produces the outcome. Outcomes:

- the words heard -> a text MESSAGE of origin VOICE for core-llm, derived from the request (same
  conversation, reply threading and meta), so a re-delivery produces the same id;
- too long or too big -> a REPLY that says the limit (nothing is wrong with the record itself);
- empty, corrupt, not audio, or the model failed on it -> a REPLY saying so, and `dead_letter` set,
  so the request is also kept in dead letters with the reason;
- a transient platform failure -> `Retryable`, raised for the runner's backoff.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass

from aibot_asr_worker.audio import AudioTooLong, UnreadableAudio, decode, duration_s, sniff
from aibot_asr_worker.download import AudioFetcher, AudioTooBig, AudioUnavailable
from aibot_asr_worker.transcriber import Transcriber, TranscriptionFailed, TranscriptionTimeout
from aibot_common import telemetry
from aibot_common.envelope import AudioPart, Envelope, Kind, Origin, Platform, TextPart
from aibot_common.errors import InvalidMessage
from aibot_common.outcome import Outcome
from aibot_common.settings import AsrSettings

log = logging.getLogger(__name__)

UNREADABLE_TEXT = "Sorry, I could not understand the audio. Please try recording it again, or type your message."
NO_SPEECH_TEXT = "Sorry, I could not understand the audio: I heard no words in it. Please try again, or type it."
TOO_SLOW_TEXT = "Sorry, transcribing your voice message took too long. Please try a shorter one, or type it."
TOO_LONG_TEXT = "Sorry, your voice message is too long: I can transcribe up to {limit}. Please send a shorter one."
TOO_BIG_TEXT = "Sorry, that audio file is too big: I can take up to {limit}. Please send a shorter voice message."


@dataclass(frozen=True)
class AsrDeps:
    fetchers: Mapping[Platform, AudioFetcher]
    transcriber: Transcriber
    settings: AsrSettings


async def handle(request: Envelope, deps: AsrDeps) -> Outcome:
    part = next((p for p in request.parts if isinstance(p, AudioPart)), None)
    if part is None:
        raise InvalidMessage("an ASR request without an audio part")  # a producer's bug: nobody to answer
    limits = deps.settings
    # What the platform declares is checked first, so an over-long note is not even downloaded.
    if part.duration_s is not None and part.duration_s > limits.max_duration_s:
        return Outcome([polite(request, TOO_LONG_TEXT.format(limit=_duration(limits.max_duration_s)))])
    if part.size_bytes is not None and part.size_bytes > limits.max_bytes:
        return Outcome([polite(request, TOO_BIG_TEXT.format(limit=_size(limits.max_bytes)))])
    fetcher = deps.fetchers.get(request.conversation.platform)
    if fetcher is None:
        raise InvalidMessage(f"this asr-worker has no {request.conversation.platform.value} client configured")

    try:
        with telemetry.span("asr download", platform=request.conversation.platform.value):
            download = await fetcher.fetch(request, part)
        fmt = sniff(download.data, download.content_type)
        # Decoding is CPU work; off the event loop, so other notes keep downloading meanwhile.
        samples = await asyncio.to_thread(decode, download.data, fmt, limits.max_duration_s)
    except AudioTooBig:
        return Outcome([polite(request, TOO_BIG_TEXT.format(limit=_size(limits.max_bytes)))])
    except AudioTooLong:
        return Outcome([polite(request, TOO_LONG_TEXT.format(limit=_duration(limits.max_duration_s)))])
    except (AudioUnavailable, UnreadableAudio) as exc:
        log.warning("voice note %s is unusable: %s", request.id, exc)
        return Outcome([polite(request, UNREADABLE_TEXT)], dead_letter=f"unusable audio: {exc}")

    transcriber = deps.transcriber
    try:
        with telemetry.span("asr transcribe", model=transcriber.name, audio_s=duration_s(samples)):
            transcript = await transcriber.transcribe(samples, limits.transcribe_timeout_s)
    except TranscriptionTimeout as exc:
        log.error("voice note %s: %s", request.id, exc)
        return Outcome([polite(request, TOO_SLOW_TEXT)], dead_letter=str(exc))
    except TranscriptionFailed as exc:
        log.error("voice note %s: transcription failed: %s", request.id, exc)
        return Outcome([polite(request, UNREADABLE_TEXT)], dead_letter=f"transcription failed: {exc}")
    telemetry.ASR_SECONDS.labels(model=transcriber.name).observe(transcript.seconds)
    telemetry.ASR_AUDIO_SECONDS.labels(model=transcriber.name).inc(transcript.audio_s)

    if not transcript.text:
        return Outcome([polite(request, NO_SPEECH_TEXT)])
    # A caption sent with the note stays, ahead of what was said.
    caption = [p for p in request.parts if isinstance(p, TextPart)]
    message = request.derive(
        kind=Kind.MESSAGE,
        suffix="asr",
        parts=[*caption, TextPart(text=transcript.text)],
        origin=Origin.VOICE,
        # What Whisper heard the note in (configured, or detected): the model may answer in it.
        meta={**request.meta, "asr_language": transcript.language},
    )
    return Outcome([message])


def polite(request: Envelope, text: str) -> Envelope:
    """A reply straight to the user, through the renderer like any answer."""
    return request.derive(
        kind=Kind.REPLY, suffix="asr-reply", parts=[TextPart(text=text, format="markdown")], origin=Origin.VOICE
    )


def _duration(seconds: float) -> str:
    if seconds >= 60 and seconds % 60 == 0:
        minutes = int(seconds // 60)
        return f"{minutes} minute{'s' if minutes != 1 else ''}"
    return f"{seconds:g} second{'s' if seconds != 1 else ''}"


def _size(limit: int) -> str:
    return f"{limit / (1024 * 1024):.0f} MB" if limit >= 1024 * 1024 else f"{limit // 1024} KB"
