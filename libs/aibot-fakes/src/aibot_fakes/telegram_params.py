"""Bot API request parameters, read the way the Bot API server reads them.

Telegram takes parameters from the query string, a JSON body, a urlencoded form or multipart form
data. In a form every value is a string, and structured fields (entities, reply_markup, ...) are JSON
text; python-telegram-bot sends exactly that. So the fake turns every transport into one typed dict.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import Request


class ApiError(Exception):
    """An error answer of the Bot API: {"ok": false, "error_code", "description", "parameters"?}."""

    def __init__(self, error_code: int, description: str, parameters: dict[str, Any] | None = None) -> None:
        super().__init__(description)
        self.error_code = error_code
        self.description = description
        self.parameters = parameters

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"ok": False, "error_code": self.error_code, "description": self.description}
        if self.parameters:
            body["parameters"] = self.parameters
        return body


def bad_request(detail: str) -> ApiError:
    return ApiError(400, f"Bad Request: {detail}")


JSON_FIELDS = frozenset(
    {
        "entities",
        "caption_entities",
        "reply_parameters",
        "reply_markup",
        "allowed_updates",
        "link_preview_options",
        "commands",
        "scope",
        "message_ids",
    }
)
INT_FIELDS = frozenset(
    {
        "message_id",
        "reply_to_message_id",
        "offset",
        "limit",
        "timeout",
        "max_connections",
        "cache_time",
        "draft_id",
        "message_thread_id",
    }
)
BOOL_FIELDS = frozenset(
    {
        "drop_pending_updates",
        "disable_notification",
        "protect_content",
        "allow_sending_without_reply",
        "show_alert",
        "disable_web_page_preview",
    }
)


def _coerce(name: str, value: Any) -> Any:
    if name in JSON_FIELDS and isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            raise bad_request(f"can't parse {name} JSON object") from None
    if name in INT_FIELDS or name == "chat_id":
        if isinstance(value, bool):
            raise bad_request(f"wrong parameter {name} in request")
        if isinstance(value, int):
            return value
        if isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                if name == "chat_id" and value.startswith("@"):
                    return value  # a channel username; resolved (or not) by the method
                raise bad_request(f"wrong parameter {name} in request") from None
        raise bad_request(f"wrong parameter {name} in request")
    if name in BOOL_FIELDS and isinstance(value, str):
        return value.lower() in ("true", "1")
    return value


async def read_params(request: Request) -> dict[str, Any]:
    raw: dict[str, Any] = dict(request.query_params)
    content_type = request.headers.get("content-type", "")
    if request.method == "POST":
        if content_type.startswith("application/json"):
            body = await request.body()
            if body:
                try:
                    parsed = json.loads(body)
                except ValueError:
                    raise bad_request("can't parse JSON object") from None
                if not isinstance(parsed, dict):
                    raise bad_request("JSON object expected")
                raw.update(parsed)
        elif content_type.startswith(("application/x-www-form-urlencoded", "multipart/form-data")):
            form = await request.form()
            for key, value in form.multi_items():
                if isinstance(value, str):
                    raw[key] = value
                else:  # an uploaded file: its bytes, for methods that take files
                    raw[key] = await value.read()
    return coerce_params(raw)


def coerce_params(raw: dict[str, Any]) -> dict[str, Any]:
    """Typed values whatever the transport: ints, booleans and JSON-encoded structures decoded."""
    return {key: _coerce(key, value) for key, value in raw.items()}


def require_int(params: dict[str, Any], name: str) -> int:
    value = params.get(name)
    if value is None:
        raise bad_request(f"{name} is empty")
    if not isinstance(value, int):
        raise bad_request(f"wrong parameter {name} in request")
    return value
