"""asr-worker's handler with a scripted platform and transcriber: every outcome a voice note can have."""

from __future__ import annotations

import numpy as np
import pytest

from aibot_asr_worker.download import AudioTooBig, AudioUnavailable, Download
from aibot_asr_worker.handler import (
    NO_SPEECH_TEXT,
    TOO_SLOW_TEXT,
    UNREADABLE_TEXT,
    AsrDeps,
    handle,
)
from aibot_asr_worker.transcriber import Transcript, TranscriptionFailed, TranscriptionTimeout
from aibot_common.envelope import AudioPart, Conversation, Envelope, Kind, Origin, Platform, Sender, TextPart
from aibot_common.errors import InvalidMessage, Retryable
from aibot_common.settings import AsrSettings
from tests.unit.test_asr_audio import tone

SETTINGS = AsrSettings(max_duration_s=60, max_bytes=1024 * 1024, transcribe_timeout_s=5)


class Fetcher:
    def __init__(self, answer: bytes | Exception) -> None:
        self.answer = answer
        self.calls: list[str] = []

    async def fetch(self, request: Envelope, part: AudioPart) -> Download:
        self.calls.append(part.file_ref)
        if isinstance(self.answer, Exception):
            raise self.answer
        return Download(self.answer)


class ScriptedTranscriber:
    name = "scripted"

    def __init__(self, answer: str | Exception = "hello there") -> None:
        self.answer = answer
        self.seen: list[np.ndarray] = []

    async def transcribe(self, samples: np.ndarray, timeout_s: float) -> Transcript:
        self.seen.append(samples)
        if isinstance(self.answer, Exception):
            raise self.answer
        return Transcript(self.answer, "en", samples.size / 16_000, 0.1)

    def close(self) -> None:
        pass


def request(duration: float | None = 2, size: int | None = 9000, caption: str | None = None) -> Envelope:
    parts: list = [AudioPart(file_ref="voice-1", duration_s=duration, size_bytes=size, mime_type="audio/ogg")]
    if caption:
        parts.insert(0, TextPart(text=caption))
    return Envelope(
        id="tg-1-100",
        kind=Kind.ASR_REQUEST,
        conversation=Conversation(platform=Platform.TELEGRAM, chat_id="42"),
        sender=Sender(id="42", display_name="Ada"),
        parts=parts,
        reply_to_message_id="7",
        meta={"message_id": "7"},
    )


def deps(fetcher: Fetcher, transcriber: ScriptedTranscriber | None = None, settings: AsrSettings = SETTINGS):
    return AsrDeps({Platform.TELEGRAM: fetcher}, transcriber or ScriptedTranscriber(), settings)


async def test_the_transcript_becomes_a_voice_message_for_core_derived_from_the_request() -> None:
    fetcher, transcriber = Fetcher(tone(1.5)), ScriptedTranscriber("what is the weather")
    original = request()
    outcome = await handle(original, deps(fetcher, transcriber))
    (message,) = outcome.emit
    assert outcome.dead_letter is None
    assert message.kind is Kind.MESSAGE and message.origin is Origin.VOICE
    assert message.text() == "what is the weather"
    assert message.id == original.derive(kind=Kind.MESSAGE, suffix="asr").id  # deterministic: re-delivery dedupes
    assert message.causation_id == original.id
    assert message.key == original.key and message.conversation == original.conversation
    assert message.reply_to_message_id == "7"
    assert message.meta == {"message_id": "7", "asr_language": "en"}  # what Whisper heard it in
    assert message.sender == original.sender
    assert not any(isinstance(p, AudioPart) for p in message.parts)
    assert fetcher.calls == ["voice-1"]
    assert transcriber.seen[0].size == pytest.approx(1.5 * 16_000, rel=0.02)


async def test_a_caption_stays_ahead_of_the_transcript() -> None:
    outcome = await handle(request(caption="note to self"), deps(Fetcher(tone(1.0)), ScriptedTranscriber("buy milk")))
    assert outcome.emit[0].text() == "note to self\nbuy milk"


@pytest.mark.parametrize(
    ("duration", "size", "says"),
    [(61, 9000, "too long: I can transcribe up to 1 minute"), (2, 2 * 1024 * 1024, "too big: I can take up to 1 MB")],
)
async def test_declared_limits_are_checked_before_downloading(duration: float, size: int, says: str) -> None:
    fetcher = Fetcher(tone(1.0))
    outcome = await handle(request(duration=duration, size=size), deps(fetcher))
    (reply,) = outcome.emit
    assert reply.kind is Kind.REPLY and says in reply.text()
    assert reply.reply_to_message_id == "7" and reply.causation_id == "tg-1-100"
    assert outcome.dead_letter is None  # nothing wrong with the record: no dead letter
    assert fetcher.calls == []


async def test_audio_longer_than_declared_gets_the_limit_reply_after_decoding() -> None:
    settings = SETTINGS.model_copy(update={"max_duration_s": 1.0})
    transcriber = ScriptedTranscriber()
    outcome = await handle(request(duration=0.5), deps(Fetcher(tone(2.0)), transcriber, settings))
    assert "too long: I can transcribe up to 1 second." in outcome.emit[0].text()
    assert outcome.dead_letter is None and transcriber.seen == []


async def test_a_file_found_too_big_while_downloading_gets_the_limit_reply() -> None:
    outcome = await handle(request(size=None), deps(Fetcher(AudioTooBig(5_000_000, 1024 * 1024))))
    assert "too big" in outcome.emit[0].text() and outcome.dead_letter is None


@pytest.mark.parametrize(
    ("answer", "reason"),
    [
        (b"", "the file is empty"),
        (b"<html>not found</html>", "not an audio format"),
        (b"OggS" + b"\x00" * 64, "cannot decode"),
        (AudioUnavailable("telegram refused the file: invalid file_id"), "invalid file_id"),
    ],
)
async def test_unusable_audio_gets_a_clear_reply_and_a_dead_letter(answer: bytes | Exception, reason: str) -> None:
    transcriber = ScriptedTranscriber()
    outcome = await handle(request(), deps(Fetcher(answer), transcriber))
    (reply,) = outcome.emit
    assert reply.kind is Kind.REPLY and reply.text() == UNREADABLE_TEXT
    assert reply.text().startswith("Sorry, I could not understand the audio")
    assert outcome.dead_letter is not None and reason in outcome.dead_letter
    assert transcriber.seen == []


@pytest.mark.parametrize(
    ("error", "text"),
    [
        (TranscriptionTimeout("transcription took over 5 s"), TOO_SLOW_TEXT),
        (TranscriptionFailed("RuntimeError: bad input"), UNREADABLE_TEXT),
    ],
)
async def test_a_failed_transcription_gets_a_reply_and_a_dead_letter(error: Exception, text: str) -> None:
    outcome = await handle(request(), deps(Fetcher(tone(1.0)), ScriptedTranscriber(error)))
    assert outcome.emit[0].text() == text
    assert outcome.dead_letter is not None and str(error) in outcome.dead_letter


async def test_no_words_heard_gets_a_reply_but_no_dead_letter() -> None:
    outcome = await handle(request(), deps(Fetcher(tone(1.0)), ScriptedTranscriber("")))
    assert outcome.emit[0].text() == NO_SPEECH_TEXT and outcome.dead_letter is None


async def test_transient_platform_failures_are_left_to_the_runner_to_retry() -> None:
    with pytest.raises(Retryable):
        await handle(request(), deps(Fetcher(Retryable("telegram download failed: timed out"))))


async def test_a_request_without_audio_or_without_a_platform_client_is_invalid() -> None:
    no_audio = request().model_copy(update={"parts": [TextPart(text="hi")]})
    with pytest.raises(InvalidMessage, match="without an audio part"):
        await handle(no_audio, deps(Fetcher(tone(1.0))))
    feishu = request().model_copy(update={"conversation": Conversation(platform=Platform.FEISHU, chat_id="oc_1")})
    with pytest.raises(InvalidMessage, match="no feishu client"):
        await handle(feishu, deps(Fetcher(tone(1.0))))
