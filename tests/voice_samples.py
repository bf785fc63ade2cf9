"""Voice notes for the ASR tests and benchmark, made when needed (no audio lives in the repository).

espeak-ng speaks an English sentence and ffmpeg encodes it as OGG/Opus, what a Telegram voice
note is. Both are Debian packages (`apt-get install espeak-ng ffmpeg`; scripts/bootstrap.sh does it).
The sentence is one tiny.en transcribes word for word from espeak's voice.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from functools import cache
from pathlib import Path

SENTENCE = "Hello, how is the weather in London today?"
# espeak-ng's Mandarin is rough (its `cmn` voice even reads tone digits): Whisper `base` hears Han
# characters in it when told the language, not the exact words, so tests assert only that much.
MANDARIN_SENTENCE = "你好，今天北京的天气怎么样？"
MANDARIN_VOICE = "cmn-latn-pinyin"
EXPECTED_WORDS = ("hello", "weather", "london", "today")
TOOLS = ("espeak-ng", "ffmpeg")


def missing_tools() -> list[str]:
    return [tool for tool in TOOLS if shutil.which(tool) is None]


def skip_reason() -> str:
    return f"needs {' and '.join(missing_tools())} (Debian packages espeak-ng, ffmpeg) to make test speech"


@cache
def speech_ogg(text: str = SENTENCE, voice: str = "en-us", words_per_minute: int = 150) -> bytes:
    """The sentence as OGG/Opus, mono 48 kHz, like a Telegram voice note (about 3 s, 9 KB)."""
    with tempfile.TemporaryDirectory() as tmp:
        wav, ogg = Path(tmp) / "speech.wav", Path(tmp) / "speech.ogg"
        subprocess.run(["espeak-ng", "-v", voice, "-s", str(words_per_minute), "-w", str(wav), text], check=True)
        _ffmpeg("-i", str(wav), "-ac", "1", "-ar", "48000", "-c:a", "libopus", "-b:a", "24k", str(ogg))
        return ogg.read_bytes()


@cache
def silence_ogg(seconds: float) -> bytes:
    """Silent OGG/Opus of the given length (tiny: Opus spends almost nothing on silence)."""
    with tempfile.TemporaryDirectory() as tmp:
        ogg = Path(tmp) / "silence.ogg"
        _ffmpeg("-f", "lavfi", "-i", "anullsrc=r=48000:cl=mono", "-t", str(seconds), "-c:a", "libopus", str(ogg))
        return ogg.read_bytes()


def han_characters(text: str) -> str:
    return "".join(re.findall(r"[\u4e00-\u9fff]", text))


def words(text: str) -> set[str]:
    return set(re.findall(r"[a-z']+", text.lower()))


def _ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-loglevel", "error", "-y", *args], check=True)
