"""HTTP control endpoints of the fake Telegram, for a process that drives it from outside (the terminal chat).

These are not part of the Bot API; they live under /_fake/ so they can never clash with a bot method.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, HTTPException, Query, Request
from pydantic import BaseModel, Field

if TYPE_CHECKING:
    from aibot_fakes.telegram import FakeTelegram


class UserMessage(BaseModel):
    text: str
    user_id: int | None = None
    chat_type: str = "private"
    first_name: str = "Test"
    reply_to_message_id: int | None = None


class UserEdit(BaseModel):
    message_id: int
    text: str
    user_id: int | None = None


class ButtonPress(BaseModel):
    message_id: int
    data: str = Field(min_length=1, max_length=64)
    user_id: int | None = None


MAX_WAIT_S = 60.0


def add_control_routes(app: FastAPI, fake: FakeTelegram) -> None:
    def simulate(action: Any, *args: Any, **kwargs: Any) -> dict[str, Any]:
        try:
            return action(*args, **kwargs)
        except ValueError as exc:
            raise HTTPException(status_code=400, detail=str(exc)) from None

    @app.post("/_fake/users/{chat_id}/messages")
    async def user_message(chat_id: int, body: UserMessage) -> dict[str, Any]:
        return simulate(
            fake.user_sends_text,
            chat_id,
            body.text,
            user_id=body.user_id,
            chat_type=body.chat_type,
            reply_to_message_id=body.reply_to_message_id,
            first_name=body.first_name,
        )

    @app.post("/_fake/users/{chat_id}/edits")
    async def user_edit(chat_id: int, body: UserEdit) -> dict[str, Any]:
        return simulate(fake.user_edits_text, chat_id, body.message_id, body.text, user_id=body.user_id)

    @app.post("/_fake/users/{chat_id}/callbacks")
    async def button_press(chat_id: int, body: ButtonPress) -> dict[str, Any]:
        return simulate(fake.user_presses_button, chat_id, body.message_id, body.data, user_id=body.user_id)

    @app.post("/_fake/users/{chat_id}/voice")
    async def user_voice(
        chat_id: int,
        request: Request,
        duration: int = Query(ge=0),
        mime_type: str = "audio/ogg",
        user_id: int | None = None,
    ) -> dict[str, Any]:
        audio = await request.body()  # the raw audio bytes are the request body
        if not audio:
            raise HTTPException(status_code=400, detail="the request body must be the audio bytes")
        return simulate(fake.user_sends_voice, chat_id, audio, duration=duration, mime_type=mime_type, user_id=user_id)

    @app.get("/_fake/sent")
    async def sent(
        chat_id: int | None = None,
        after_index: int = -1,
        timeout: float = Query(default=0.0, ge=0.0, le=MAX_WAIT_S),
    ) -> list[dict[str, Any]]:
        """Sent items whose index is greater than after_index; with timeout, waits for the first one."""
        return await fake.wait_sent_after(after_index, chat_id, timeout)

    @app.get("/_fake/drafts")
    async def drafts(chat_id: int | None = None) -> list[dict[str, Any]]:
        return [item for item in fake.drafts if chat_id is None or item["chat_id"] == chat_id]

    @app.get("/_fake/calls")
    async def calls(method: str | None = None) -> list[dict[str, Any]]:
        return [call for call in fake.calls if method is None or call["method"].lower() == method.lower()]

    @app.get("/_fake/webhook")
    async def webhook() -> dict[str, Any]:
        return {"webhook": fake.webhook, "pending": fake.deliveries_pending()}
