"""What a downloaded file really is, and its samples, decoded within the duration limit.

Names and declared MIME types come from the sender and can lie; the first bytes cannot. Decoding
stops as soon as the audio runs past the limit: Opus at a few kbit/s packs hours into a few MB, and
hours at 16 kHz would not fit in memory.
"""

from __future__ import annotations

import io
from collections.abc import Iterator

import av
import numpy as np

SAMPLE_RATE = 16_000  # what Whisper expects
# Content types that are certainly not audio: an error page or an API error body served as the file.
_NOT_AUDIO = ("text/", "application/json", "application/xml", "application/problem+json")
_MAX_BAD_FRAMES = 50


class UnreadableAudio(Exception):
    """The file is empty, not audio, or cannot be decoded: retrying will not help."""


class AudioTooLong(Exception):
    def __init__(self, limit_s: float) -> None:
        super().__init__(f"the audio is longer than {limit_s:g} s")
        self.limit_s = limit_s


def sniff(data: bytes, content_type: str | None = None) -> str:
    """The container format, from the magic bytes (and a content type that rules audio out)."""
    if not data:
        raise UnreadableAudio("the file is empty")
    if content_type:
        main = content_type.split(";", 1)[0].strip().lower()
        if main.startswith(_NOT_AUDIO):
            raise UnreadableAudio(f"the download is {main}, not audio")
    head = data[:12]
    if head.startswith(b"OggS"):
        return "ogg"  # Telegram voice notes and Feishu audio: Opus in Ogg
    if head.startswith(b"RIFF") and head[8:12] == b"WAVE":
        return "wav"
    if head.startswith(b"fLaC"):
        return "flac"
    if head[4:8] == b"ftyp":
        return "mp4"  # m4a / aac in MP4, what phones record
    if head.startswith(b"\x1a\x45\xdf\xa3"):
        return "matroska"  # webm
    if head.startswith(b"#!AMR"):
        return "amr"
    if head.startswith(b"ID3") or (len(head) >= 2 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0):
        return "mp3"
    raise UnreadableAudio(f"not an audio format we know (it starts with {head[:8].hex()})")


def decode(data: bytes, fmt: str, max_duration_s: float) -> np.ndarray:
    """Mono float32 samples at 16 kHz. Raises AudioTooLong past `max_duration_s`, UnreadableAudio on junk."""
    limit = int(max_duration_s * SAMPLE_RATE)
    resampler = av.AudioResampler(format="s16", layout="mono", rate=SAMPLE_RATE)
    pieces: list[np.ndarray] = []
    total = 0
    try:
        with av.open(io.BytesIO(data), mode="r", format=fmt, metadata_errors="ignore") as container:
            if not container.streams.audio:
                raise UnreadableAudio(f"the {fmt} file has no audio stream")
            for frame in _skip_bad_frames(container.decode(audio=0)):
                for out in resampler.resample(frame):
                    samples = out.to_ndarray().reshape(-1)
                    total += samples.size
                    if total > limit:
                        raise AudioTooLong(max_duration_s)
                    pieces.append(samples)
            for out in resampler.resample(None):  # flush what the resampler holds back
                pieces.append(out.to_ndarray().reshape(-1))
    except av.FFmpegError as exc:
        raise UnreadableAudio(f"cannot decode the {fmt} audio: {exc}") from exc
    audio = np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.int16)
    if audio.size == 0:
        raise UnreadableAudio(f"the {fmt} file holds no audio samples")
    return audio.astype(np.float32) / 32768.0


def _skip_bad_frames(frames: Iterator[av.AudioFrame]) -> Iterator[av.AudioFrame]:
    """Skip a few damaged packets, as faster-whisper's own decoder does; a file of nothing else is junk."""
    bad = 0
    while True:
        try:
            yield next(frames)
        except StopIteration:
            return
        except av.InvalidDataError:
            bad += 1
            if bad > _MAX_BAD_FRAMES:
                raise


def duration_s(samples: np.ndarray) -> float:
    return samples.size / SAMPLE_RATE
