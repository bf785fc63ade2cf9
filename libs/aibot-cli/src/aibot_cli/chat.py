"""A terminal chat with the bot through the local fake Telegram: you type, the pipeline answers."""

from __future__ import annotations

import sys
import threading

import httpx

CHAT_ID = 4242


def run_chat(telegram_url: str, chat_id: int = CHAT_ID, user_id: int = 4242) -> None:
    print("Chat with ai-bot (via the local fake Telegram). Type a message and press Enter; Ctrl-D quits.")
    print("Try /help or /reset.\n")
    stop = threading.Event()
    after = -1
    with httpx.Client(base_url=telegram_url, timeout=30) as client:
        # Replies arrive on their own schedule: print them from a second thread as they come.
        def receive() -> None:
            nonlocal after
            while not stop.is_set():
                try:
                    items = client.get("/_fake/sent", params={"chat_id": chat_id, "after_index": after,
                                                              "timeout": 1}).json()
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
                if text:
                    client.post(f"/_fake/users/{chat_id}/messages", json={"text": text, "user_id": user_id})
        except KeyboardInterrupt:
            pass
        finally:
            stop.set()
            receiver.join(timeout=2)
            print()
