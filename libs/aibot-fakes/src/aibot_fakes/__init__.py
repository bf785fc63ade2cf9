"""Fake platform and model servers: real HTTP servers that speak the documented protocols.

- `aibot_fakes.telegram.FakeTelegram`: the Telegram Bot API (point `telegram.Bot` or any client at `.url`).
- `aibot_fakes.llm.FakeLLM`: an OpenAI-compatible chat-completions endpoint (`.endpoint`).
- `aibot_fakes.server.BackgroundServer`: runs any ASGI app inside the current asyncio loop.

Tests run them in their own loop; `python -m aibot_fakes telegram|llm --port P` runs one as a process.
"""
