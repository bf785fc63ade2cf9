"""HTTP control endpoints of the fake Feishu, for a process that drives it from outside (`python -m
aibot_fakes feishu`). They are not part of the Open API and live under /_fake/ so they never clash."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, HTTPException, Query, Request
from pydantic import BaseModel

if TYPE_CHECKING:
    from aibot_fakes.feishu import FakeFeishu

MAX_WAIT_S = 60.0


class Subscription(BaseModel):
    url: str
    verify: bool = True


class UserText(BaseModel):
    text: str
    chat_type: str = "p2p"
    open_id: str = "ou_user0000000000000000000000001"
    mention_bot: bool = False


class ButtonPress(BaseModel):
    action: str  # the button's callback value "action" ("stop", "regen")
    open_id: str = "ou_user0000000000000000000000001"


def add_control_routes(app: FastAPI, fake: FakeFeishu) -> None:
    def simulate(action: Any, *args: Any, **kwargs: Any) -> dict[str, Any]:
        try:
            return action(*args, **kwargs)
        except (ValueError, RuntimeError) as exc:
            raise HTTPException(status_code=400, detail=str(exc)) from None

    @app.post("/_fake/subscribe")
    async def subscribe(body: Subscription) -> dict[str, Any]:
        try:
            await fake.subscribe(body.url, verify=body.verify)
        except (ValueError, OSError) as exc:
            raise HTTPException(status_code=400, detail=str(exc)) from None
        return {"event_url": fake.event_url}

    @app.post("/_fake/users/{chat_id}/messages")
    async def user_text(chat_id: str, body: UserText) -> dict[str, Any]:
        return simulate(
            fake.user_sends_text,
            chat_id,
            body.text,
            chat_type=body.chat_type,
            open_id=body.open_id,
            mention_bot=body.mention_bot,
        )

    @app.post("/_fake/messages/{message_id}/press")
    async def press(message_id: str, body: ButtonPress) -> dict[str, Any]:
        """A user presses a button of the bot's card; the answer is the toast the receiver returned."""
        try:
            return await fake.press_card_button(message_id, body.action, open_id=body.open_id)
        except (ValueError, RuntimeError) as exc:
            raise HTTPException(status_code=400, detail=str(exc)) from None

    @app.post("/_fake/users/{chat_id}/audio")
    async def user_audio(
        chat_id: str, request: Request, duration_ms: int = Query(ge=0), chat_type: str = "p2p"
    ) -> dict[str, Any]:
        audio = await request.body()
        if not audio:
            raise HTTPException(status_code=400, detail="the request body must be the audio bytes")
        return simulate(fake.user_sends_audio, chat_id, audio, duration_ms=duration_ms, chat_type=chat_type)

    @app.get("/_fake/sent")
    async def sent(
        chat_id: str | None = None,
        after_index: int = -1,
        timeout: float = Query(default=0.0, ge=0.0, le=MAX_WAIT_S),
    ) -> list[dict[str, Any]]:
        return await fake.wait_sent_after(after_index, chat_id, timeout)

    @app.get("/_fake/calls")
    async def calls(api: str | None = None) -> list[dict[str, Any]]:
        return [call for call in fake.calls if api is None or call["api"] == api]

    @app.get("/_fake/deliveries")
    async def deliveries() -> dict[str, Any]:
        return {"deliveries": fake.deliveries, "undelivered": len(fake.undelivered)}

    @app.post("/_fake/tokens/expire")
    async def expire_tokens() -> dict[str, Any]:
        fake.expire_tokens()
        return {"expired": len(fake.tokens_issued)}
