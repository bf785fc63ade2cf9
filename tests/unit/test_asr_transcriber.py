"""The transcribers' concurrency with a scripted model: bounded pools, timeouts that free the caller,
and voice notes that wait together being batched together."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pytest

from aibot_asr_worker.transcriber import (
    BatchedTranscriber,
    PooledTranscriber,
    Transcript,
    TranscriptionFailed,
    TranscriptionTimeout,
)


@dataclass
class Segment:
    text: str


@dataclass
class Info:
    language: str = "en"


class ScriptedModel:
    """Like WhisperModel.transcribe: the first sample of the audio says how many 0.1 s windows it takes."""

    def __init__(self) -> None:
        self.windows_done = 0
        self.running = 0
        self.most_at_once = 0
        self._lock = threading.Lock()

    def transcribe(self, audio: np.ndarray, **options: object) -> tuple[Iterator[Segment], Info]:
        if audio[0] < 0:
            raise RuntimeError("cannot handle this")
        return self._segments(int(audio[0])), Info()

    def _segments(self, windows: int) -> Iterator[Segment]:
        with self._lock:
            self.running += 1
            self.most_at_once = max(self.most_at_once, self.running)
        try:
            for i in range(windows):
                time.sleep(0.1)
                with self._lock:
                    self.windows_done += 1
                yield Segment(f"w{i}")
        finally:
            with self._lock:
                self.running -= 1


def note(windows: int) -> np.ndarray:
    return np.full(1600, windows, dtype=np.float32)


async def test_notes_are_transcribed_in_parallel_up_to_the_pool_size() -> None:
    model = ScriptedModel()
    pool = PooledTranscriber(model, name="m", language="en", workers=2)
    try:
        results = await asyncio.gather(*(pool.transcribe(note(2), 5) for _ in range(4)))
    finally:
        pool.close()
    assert [r.text for r in results] == ["w0 w1"] * 4
    assert model.most_at_once == 2


async def test_the_timeout_counts_from_the_start_of_the_transcription_not_the_wait_for_a_worker() -> None:
    pool = PooledTranscriber(ScriptedModel(), name="m", language="en", workers=1)
    try:
        # Each takes 0.4 s; the second waits 0.4 s for the only worker and still fits its 0.6 s.
        results = await asyncio.gather(pool.transcribe(note(4), 0.6), pool.transcribe(note(4), 0.6))
    finally:
        pool.close()
    assert [r.text for r in results] == ["w0 w1 w2 w3"] * 2


async def test_a_slow_note_times_out_on_its_own_and_does_not_hold_up_the_others() -> None:
    model = ScriptedModel()
    pool = PooledTranscriber(model, name="m", language="en", workers=2)
    try:
        started = time.monotonic()
        slow = asyncio.create_task(pool.transcribe(note(50), 0.3))  # 5 s of work, 0.3 s allowed
        quick = [await pool.transcribe(note(1), 2) for _ in range(3)]
        with pytest.raises(TranscriptionTimeout, match=r"over 0\.3 s"):
            await slow
        assert time.monotonic() - started < 2
        assert [r.text for r in quick] == ["w0"] * 3
        # The abandoned thread stops at its next window instead of working on for 5 s.
        await asyncio.sleep(0.3)
        done = model.windows_done
        await asyncio.sleep(0.4)
        assert model.windows_done == done
        assert model.running == 0
    finally:
        pool.close()


async def test_a_model_error_is_a_failed_transcription() -> None:
    pool = PooledTranscriber(ScriptedModel(), name="m", language="en", workers=1)
    try:
        with pytest.raises(TranscriptionFailed, match="cannot handle this"):
            await pool.transcribe(note(-1), 2)
        assert (await pool.transcribe(note(1), 2)).text == "w0"  # and the pool goes on
    finally:
        pool.close()


class RecordingBatches(BatchedTranscriber):
    """The batcher with its model call replaced: records which notes went together."""

    def __init__(self, batch_size: int) -> None:
        super().__init__(ScriptedModel(), name="m", language="en", batch_size=batch_size, gather_s=0.01)
        self.batches: list[list[int]] = []
        self.release = threading.Event()

    def transcribe_batch(self, batch: list[np.ndarray]) -> list[Transcript]:
        self.batches.append([int(s[0]) for s in batch])
        if len(self.batches) == 1:
            self.release.wait(5)  # hold the first batch so the next notes queue up behind it
        if any(s[0] < 0 for s in batch):
            raise RuntimeError("device error")
        return [Transcript(f"note {int(s[0])}", "en", 0.1, 0.01) for s in batch]


async def test_notes_waiting_together_are_transcribed_together() -> None:
    batcher = RecordingBatches(batch_size=2)
    try:
        first = asyncio.create_task(batcher.transcribe(note(1), 5))
        await asyncio.sleep(0.1)  # the first batch is running
        rest = [asyncio.create_task(batcher.transcribe(note(n), 5)) for n in (2, 3, 4)]
        await asyncio.sleep(0.1)
        batcher.release.set()
        results = await asyncio.gather(first, *rest)
    finally:
        batcher.close()
    assert [r.text for r in results] == ["note 1", "note 2", "note 3", "note 4"]
    assert batcher.batches == [[1], [2, 3], [4]]


async def test_a_failing_batch_fails_its_notes_and_the_batcher_goes_on() -> None:
    batcher = RecordingBatches(batch_size=4)
    batcher.release.set()
    try:
        with pytest.raises(TranscriptionFailed, match="device error"):
            await batcher.transcribe(note(-1), 5)
        assert (await batcher.transcribe(note(5), 5)).text == "note 5"
    finally:
        batcher.close()


async def test_a_batch_that_runs_too_long_times_its_notes_out() -> None:
    batcher = RecordingBatches(batch_size=4)
    try:
        with pytest.raises(TranscriptionTimeout):
            await batcher.transcribe(note(1), 0.2)
    finally:
        batcher.release.set()
        batcher.close()
