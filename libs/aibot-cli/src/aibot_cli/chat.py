"""A terminal chat with the bot through the local fake Telegram: you type, the pipeline answers."""

from __future__ import annotations

import math
import shutil
import subprocess
import sys
import tempfile
import threading
import wave
from pathlib import Path

import httpx

CHAT_ID = 4242


def run_chat(telegram_url: str, chat_id: int = CHAT_ID, user_id: int = 4242) -> None:
    print("Chat with ai-bot (via the local fake Telegram). Type a message and press Enter; Ctrl-D quits.")
    print("Try /help or /reset; `/voice some words` sends those words as a spoken voice note.\n")
    stop = threading.Event()
    after = -1
    with httpx.Client(base_url=telegram_url, timeout=30) as client:
        # Replies arrive on their own schedule: print them from a second thread as they come.
        def receive() -> None:
            nonlocal after
            while not stop.is_set():
                try:
                    items = client.get(
                        "/_fake/sent", params={"chat_id": chat_id, "after_index": after, "timeout": 1}
                    ).json()
                except httpx.HTTPError:
                    continue
                for item in items:
                    after = max(after, item["index"])
                    print(f"\rbot> {item.get('plain_text') or item['text']}\nyou> ", end="", flush=True)

        receiver = threading.Thread(target=receive, daemon=True)
        receiver.start()
        try:
            while True:
                print("you> ", end="", flush=True)
                line = sys.stdin.readline()
                if not line:
                    break
                text = line.strip()
                if text.startswith("/voice "):
                    send_voice(client, chat_id, user_id, text.removeprefix("/voice ").strip())
                elif text:
                    client.post(f"/_fake/users/{chat_id}/messages", json={"text": text, "user_id": user_id})
        except KeyboardInterrupt:
            pass
        finally:
            stop.set()
            receiver.join(timeout=2)
            print()


def send_voice(client: httpx.Client, chat_id: int, user_id: int, words: str) -> None:
    """Speak the words with espeak-ng, encode them as OGG/Opus (a Telegram voice note) with ffmpeg."""
    missing = [tool for tool in ("espeak-ng", "ffmpeg") if shutil.which(tool) is None]
    if missing:
        print(f"(cannot make a voice note: install {' and '.join(missing)})")
        return
    with tempfile.TemporaryDirectory() as tmp:
        wav, ogg = Path(tmp) / "note.wav", Path(tmp) / "note.ogg"
        subprocess.run(["espeak-ng", "-v", "en-us", "-w", str(wav), words], check=True, capture_output=True)
        subprocess.run(
            [
                "ffmpeg",
                "-loglevel",
                "error",
                "-y",
                "-i",
                str(wav),
                "-ac",
                "1",
                "-ar",
                "48000",
                "-c:a",
                "libopus",
                str(ogg),
            ],
            check=True,
            capture_output=True,
        )
        with wave.open(str(wav)) as audio:
            seconds = math.ceil(audio.getnframes() / audio.getframerate())
        client.post(
            f"/_fake/users/{chat_id}/voice", params={"duration": seconds, "user_id": user_id}, content=ogg.read_bytes()
        )
    print(f"(sent a {seconds} s voice note)")
