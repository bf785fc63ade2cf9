"""Audio checks: magic bytes over names, and decoding bounded by the duration limit."""

from __future__ import annotations

import io

import av
import numpy as np
import pytest

from aibot_asr_worker.audio import AudioTooLong, UnreadableAudio, decode, duration_s, sniff


def tone(seconds: float, fmt: str = "ogg", codec: str = "libopus", rate: int = 48_000) -> bytes:
    """A 440 Hz tone encoded in memory with PyAV (no external tools needed)."""
    buffer = io.BytesIO()
    with av.open(buffer, "w", format=fmt) as container:
        stream = container.add_stream(codec, rate=rate, layout="mono")
        t = np.arange(int(rate * seconds)) / rate
        samples = (0.3 * np.sin(2 * np.pi * 440 * t) * 32767).astype(np.int16).reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(samples, format="s16", layout="mono")
        frame.sample_rate = rate
        for packet in stream.encode(frame):
            container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("head", "fmt"),
    [
        (b"OggS\x00\x02" + b"\x00" * 20, "ogg"),
        (b"RIFF\x24\x00\x00\x00WAVEfmt ", "wav"),
        (b"fLaC\x00\x00\x00\x22", "flac"),
        (b"\x00\x00\x00\x20ftypM4A ", "mp4"),
        (b"\x1a\x45\xdf\xa3\x01\x00", "matroska"),
        (b"#!AMR\n", "amr"),
        (b"ID3\x04\x00\x00", "mp3"),
        (b"\xff\xfb\x90\x64\x00", "mp3"),
    ],
)
def test_formats_are_known_by_their_first_bytes(head: bytes, fmt: str) -> None:
    assert sniff(head) == fmt


def test_an_empty_file_is_unreadable() -> None:
    with pytest.raises(UnreadableAudio, match="empty"):
        sniff(b"")


@pytest.mark.parametrize("data", [b"<html><body>404</body></html>", b'{"ok": false}', b"\x00\x01\x02\x03 junk"])
def test_non_audio_bytes_are_refused_whatever_the_name_says(data: bytes) -> None:
    with pytest.raises(UnreadableAudio, match="not an audio format"):
        sniff(data)


def test_a_content_type_that_is_not_audio_is_refused_even_with_audio_bytes() -> None:
    with pytest.raises(UnreadableAudio, match="application/json"):
        sniff(b"OggS" + b"\x00" * 30, "application/json; charset=utf-8")
    assert sniff(b"OggS" + b"\x00" * 30, "audio/ogg") == "ogg"
    assert sniff(b"OggS" + b"\x00" * 30, "application/octet-stream") == "ogg"


def test_an_ogg_opus_note_decodes_to_16khz_mono_float_samples() -> None:
    samples = decode(tone(2.0), "ogg", max_duration_s=10)
    assert samples.dtype == np.float32
    assert duration_s(samples) == pytest.approx(2.0, abs=0.05)
    assert 0.2 < float(np.abs(samples).max()) <= 1.0


def test_other_containers_decode_too() -> None:
    assert duration_s(decode(tone(1.0, "wav", "pcm_s16le", 16_000), "wav", 10)) == pytest.approx(1.0, abs=0.02)


def test_decoding_stops_at_the_duration_limit() -> None:
    with pytest.raises(AudioTooLong) as caught:
        decode(tone(3.0), "ogg", max_duration_s=1.0)
    assert caught.value.limit_s == 1.0


@pytest.mark.parametrize(
    "data",
    [
        b"OggS" + b"\x00" * 200,  # the right magic, nothing behind it
        tone(1.0)[:120],  # cut off inside the headers
    ],
)
def test_corrupt_audio_is_unreadable(data: bytes) -> None:
    with pytest.raises(UnreadableAudio):
        decode(data, sniff(data), max_duration_s=10)
