"""Transcription with one model per process, shared by every voice note the worker holds.

Two engines behind one `transcribe(samples, timeout_s)`:

- `PooledTranscriber` (CPU): a bounded pool of `asr.workers` threads, each running faster-whisper's
  own `WhisperModel.transcribe`; CTranslate2 runs them in parallel (`num_workers`) on a share of the
  cores each.
- `BatchedTranscriber` (GPU): voice notes that wait together are transcribed together. Their speech
  (Silero VAD, as faster-whisper's batched pipeline does it) is cut into chunks of at most 30 s, and
  the chunks of every waiting note go through `BatchedInferencePipeline` as one batch; the text is
  then handed back to the note each chunk came from. A GPU is fast on one big batch and slow on many
  small ones, and a voice note is usually a single chunk, so batching across notes is what pays.

A transcription's timeout counts from the moment it starts running, not while it waits for a free
worker (the stage's `max_in_flight` bounds that wait). Python cannot kill a thread: on timeout the
caller gets `TranscriptionTimeout` at once; a pool thread stops at the next 30-second window, and a
batch (bounded by `batch_size` notes) runs to its end with the late note's text discarded.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from bisect import bisect_right
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from aibot_asr_worker.audio import SAMPLE_RATE, duration_s

log = logging.getLogger(__name__)

CHUNK_S = 30  # Whisper's window
# Silence between notes in a batch's buffer: never transcribed (the clips skip it), it keeps every
# chunk's start time clear of its neighbour's so text is handed back to the right note.
_GAP = np.zeros(SAMPLE_RATE, dtype=np.float32)


@dataclass(frozen=True)
class Transcript:
    text: str
    language: str
    audio_s: float
    seconds: float  # wall time of the transcription itself


class TranscriptionTimeout(Exception):
    pass


class TranscriptionFailed(Exception):
    """The model raised on this audio: not worth retrying as is; kept in dead letters for a replay."""


class Transcriber(Protocol):
    name: str

    async def transcribe(self, samples: np.ndarray, timeout_s: float) -> Transcript: ...

    def close(self) -> None: ...


@dataclass
class _Job:
    samples: np.ndarray
    started: asyncio.Event = field(default_factory=asyncio.Event)
    result: asyncio.Future[Transcript] | None = None
    # Set from the event loop, read by the worker thread between windows (a bool is atomic enough).
    abandoned: bool = False


async def _run_job(job: _Job, submit: Callable[[], None], timeout_s: float) -> Transcript:
    """Submit, wait (untimed) for the job to start, then wait at most `timeout_s` for its result."""
    loop = asyncio.get_running_loop()
    job.result = loop.create_future()
    try:
        submit()
        await job.started.wait()
        async with asyncio.timeout(timeout_s):
            return await asyncio.shield(job.result)
    except TimeoutError:
        raise TranscriptionTimeout(f"transcription took over {timeout_s:g} s") from None
    finally:
        job.abandoned = True  # finished, timed out or cancelled: the thread may stop working on it
        if not job.result.done():
            job.result.cancel()


def _settle(loop: asyncio.AbstractEventLoop, job: _Job, outcome: Transcript | BaseException) -> None:
    def settle() -> None:
        if job.result is None or job.result.done():
            return
        if isinstance(outcome, BaseException):
            job.result.set_exception(outcome)
        else:
            job.result.set_result(outcome)

    loop.call_soon_threadsafe(settle)


class PooledTranscriber:
    """A bounded pool of threads, one voice note each (CPU)."""

    def __init__(self, model: Any, *, name: str, language: str | None, workers: int, beam_size: int = 5) -> None:
        self.name = name
        self._model = model
        self._language = language
        self._beam_size = beam_size
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="asr")

    async def transcribe(self, samples: np.ndarray, timeout_s: float) -> Transcript:
        loop = asyncio.get_running_loop()
        job = _Job(samples)
        return await _run_job(job, lambda: self._executor.submit(self._work, loop, job), timeout_s)

    def _work(self, loop: asyncio.AbstractEventLoop, job: _Job) -> None:
        if job.abandoned:
            return  # its caller gave up while it queued
        loop.call_soon_threadsafe(job.started.set)
        started = time.perf_counter()
        try:
            segments, info = self._model.transcribe(
                job.samples, language=self._language, beam_size=self._beam_size, vad_filter=True
            )
            texts = []
            for segment in segments:  # lazily decoded, one 30-second window at a time
                if job.abandoned:
                    return
                texts.append(segment.text.strip())
            outcome: Transcript | BaseException = Transcript(
                " ".join(t for t in texts if t), info.language, duration_s(job.samples), time.perf_counter() - started
            )
        except Exception as exc:
            outcome = TranscriptionFailed(f"{type(exc).__name__}: {exc}")
        _settle(loop, job, outcome)

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


class BatchedTranscriber:
    """Voice notes that wait together are transcribed together, in one batch (GPU)."""

    def __init__(
        self,
        model: Any,
        *,
        name: str,
        language: str | None,
        batch_size: int,
        beam_size: int = 5,
        gather_s: float = 0.01,
    ) -> None:
        from faster_whisper import BatchedInferencePipeline

        self.name = name
        self._model = model
        self._pipeline = BatchedInferencePipeline(model)
        self._language = language
        self._batch_size = batch_size
        self._beam_size = beam_size
        self._gather_s = gather_s
        self._queue: asyncio.Queue[_Job] = asyncio.Queue()
        # One batch at a time: the device is busy with the whole of it.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="asr-batch")
        self._dispatcher: asyncio.Task[None] | None = None

    async def transcribe(self, samples: np.ndarray, timeout_s: float) -> Transcript:
        if self._dispatcher is None or self._dispatcher.done():
            self._dispatcher = asyncio.create_task(self._dispatch(), name="asr-batcher")
        job = _Job(samples)
        return await _run_job(job, lambda: self._queue.put_nowait(job), timeout_s)

    async def _dispatch(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self._queue.get()]
            # What is already waiting joins at once; when idle, wait a moment for company.
            deadline = loop.time() + self._gather_s
            while len(batch) < self._batch_size:
                try:
                    batch.append(self._queue.get_nowait())
                    continue
                except asyncio.QueueEmpty:
                    pass
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                with contextlib.suppress(TimeoutError):
                    batch.append(await asyncio.wait_for(self._queue.get(), remaining))
            jobs = [job for job in batch if not job.abandoned]
            if not jobs:
                continue
            for job in jobs:
                job.started.set()
            try:
                outcomes = await loop.run_in_executor(self._executor, self.transcribe_batch, [j.samples for j in jobs])
            except Exception as exc:
                log.exception("asr batch of %d failed", len(jobs))
                outcomes = [TranscriptionFailed(f"{type(exc).__name__}: {exc}")] * len(jobs)
            for job, outcome in zip(jobs, outcomes, strict=True):
                _settle(loop, job, outcome)

    def transcribe_batch(self, batch: list[np.ndarray]) -> list[Transcript]:
        """Transcribe several notes' speech in shared batches (blocking; runs in the worker thread)."""
        from faster_whisper.vad import VadOptions, collect_chunks, get_speech_timestamps

        started = time.perf_counter()
        # The same VAD settings faster-whisper's batched pipeline uses on one file.
        vad = VadOptions(max_speech_duration_s=CHUNK_S, min_silence_duration_ms=160)
        speech: list[list[np.ndarray]] = []
        for samples in batch:
            chunks, _ = collect_chunks(samples, get_speech_timestamps(samples, vad), max_duration=CHUNK_S)
            speech.append([c for c in chunks if c.size])
        languages = [self._language_of(chunks) for chunks in speech]
        texts: list[list[str]] = [[] for _ in batch]
        for language in dict.fromkeys(languages):  # one pass per language: the tokenizer is per language
            members = [i for i, lang in enumerate(languages) if lang == language and speech[i]]
            if members:
                self._run_group(language, [(i, speech[i]) for i in members], texts)
        seconds = time.perf_counter() - started
        return [
            Transcript(" ".join(t for t in texts[i] if t), languages[i], duration_s(samples), seconds)
            for i, samples in enumerate(batch)
        ]

    def _language_of(self, chunks: list[np.ndarray]) -> str:
        if self._language is not None:
            return self._language
        if not self._model.model.is_multilingual or not chunks:
            return "en"
        language, _, _ = self._model.detect_language(audio=np.concatenate(chunks))
        return language

    def _run_group(self, language: str, members: list[tuple[int, list[np.ndarray]]], texts: list[list[str]]) -> None:
        # One buffer holding every chunk, and one clip per chunk: the pipeline batches clips.
        pieces: list[np.ndarray] = []
        clips: list[dict[str, float]] = []
        starts: list[float] = []
        owners: list[int] = []
        offset = 0
        for index, chunks in members:
            for chunk in chunks:
                clips.append({"start": offset / SAMPLE_RATE, "end": (offset + chunk.size) / SAMPLE_RATE})
                starts.append(offset / SAMPLE_RATE)
                owners.append(index)
                pieces += [chunk, _GAP]
                offset += chunk.size + _GAP.size
        segments, _ = self._pipeline.transcribe(
            np.concatenate(pieces),
            language=language,
            clip_timestamps=clips,
            batch_size=self._batch_size,
            beam_size=self._beam_size,
            vad_filter=False,  # done above, per note
        )
        for segment in segments:
            # A segment starts at its clip's start (rounded to ms); the gap makes the lookup unambiguous.
            owner = owners[bisect_right(starts, segment.start + 0.1) - 1]
            texts[owner].append(segment.text.strip())

    def close(self) -> None:
        if self._dispatcher is not None:
            self._dispatcher.cancel()
        self._executor.shutdown(wait=False, cancel_futures=True)
