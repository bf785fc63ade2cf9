"""CardKit card entities, as the fake Open Platform models them (`FakeFeishu.cardkit`).

What Feishu documents and what streaming code must cope with:
- `POST /open-apis/cardkit/v1/cards` {type: "card_json", data: card JSON 2.0 as a string} creates
  an entity (data.card_id); it is sent once, as the content `{"type": "card", "data": {"card_id"}}`;
- `PUT .../cards/{card_id}/elements/{element_id}/content` {content, sequence} sets a text element's
  whole text while `config.streaming_mode` is on; `sequence` must grow with every operation on the
  card (300317 otherwise); at most 10 operations a second per card (230020, HTTP 429);
- streaming mode closes itself 10 minutes after it was opened (300309 on updates after that);
- `PATCH .../cards/{card_id}/settings` {settings: JSON string, sequence} turns it on or off, and
  `PUT .../cards/{card_id}` {card: {type, data}, sequence} replaces the whole card at any time;
- `DELETE .../cards/{card_id}/elements/{element_id}` {sequence} removes one element (300302 if absent);
- a card holds at most 30 KB (300305); without the `cardkit:card:write` scope every call answers
  99991672.
"""

from __future__ import annotations

import json
import secrets
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

CARD_LIMIT_BYTES = 30 * 1024
STREAMING_WINDOW_S = 600.0
UPDATES_PER_SECOND = 10


class CardKitError(Exception):
    def __init__(self, code: int, msg: str, http_status: int = 400) -> None:
        super().__init__(msg)
        self.code = code
        self.msg = msg
        self.http_status = http_status


@dataclass
class Card:
    card_id: str
    card: dict[str, Any]
    streaming_since: float | None
    sequence: int = 0
    message_id: str | None = None
    recent: deque[float] = field(default_factory=deque)
    updates: int = 0

    def text(self) -> str:
        elements = (self.card.get("body") or {}).get("elements") or []
        return "\n".join(e.get("content", "") for e in elements if e.get("tag") in ("markdown", "plain_text"))


class CardKit:
    def __init__(self) -> None:
        self.cards: dict[str, Card] = {}
        self.enabled = True  # False: the app lacks the cardkit:card:write permission
        self.streaming_window_s = STREAMING_WINDOW_S

    def _check_permission(self) -> None:
        if not self.enabled:
            raise CardKitError(99991672, "Access denied. One of the following scopes is required: [cardkit:card:write]")

    def create(self, body: dict[str, Any]) -> dict[str, Any]:
        self._check_permission()
        card = self._parse(body.get("type"), body.get("data"))
        streaming = bool((card.get("config") or {}).get("streaming_mode"))
        card_id = f"ck_{secrets.token_hex(10)}"
        self.cards[card_id] = Card(card_id, card, time.monotonic() if streaming else None)
        return {"code": 0, "msg": "success", "data": {"card_id": card_id}}

    def get(self, card_id: str) -> Card:
        card = self.cards.get(card_id)
        if card is None:
            raise CardKitError(300301, f"card {card_id} not found")
        return card

    def attach(self, card_id: str, message_id: str) -> Card:
        """The card entity sent in a message (once only)."""
        card = self.get(card_id)
        if card.message_id is not None:
            raise CardKitError(230099, "Failed to create card content: the card entity was already sent")
        card.message_id = message_id
        return card

    def update_content(self, card_id: str, element_id: str, body: dict[str, Any]) -> dict[str, Any]:
        self._check_permission()
        card = self._operate(card_id, body)
        if card.streaming_since is None:
            raise CardKitError(300309, "streaming mode is closed: turn it on before streaming content")
        if time.monotonic() - card.streaming_since > self.streaming_window_s:
            card.streaming_since = None
            raise CardKitError(300309, "streaming mode timed out (10 minutes) and is closed")
        content = body.get("content")
        if not isinstance(content, str):
            raise CardKitError(99992402, "field validation failed: content")
        elements = (card.card.get("body") or {}).get("elements") or []
        element = next((e for e in elements if e.get("element_id") == element_id), None)
        if element is None:
            raise CardKitError(300302, f"element {element_id} not found in the card")
        previous = element.get("content")
        element["content"] = content
        if len(json.dumps(card.card, ensure_ascii=False).encode()) > CARD_LIMIT_BYTES:
            element["content"] = previous
            raise CardKitError(300305, "the card exceeds 30 KB")
        card.updates += 1
        return {"code": 0, "msg": "success", "data": {}}

    def settings(self, card_id: str, body: dict[str, Any]) -> dict[str, Any]:
        self._check_permission()
        card = self._operate(card_id, body)
        try:
            settings = json.loads(body.get("settings") or "{}")
        except ValueError:
            raise CardKitError(99992402, "field validation failed: settings is not JSON") from None
        config = settings.get("config") or {}
        if "streaming_mode" in config:
            card.card.setdefault("config", {})["streaming_mode"] = bool(config["streaming_mode"])
            card.streaming_since = time.monotonic() if config["streaming_mode"] else None
        return {"code": 0, "msg": "success", "data": {}}

    def replace(self, card_id: str, body: dict[str, Any]) -> dict[str, Any]:
        self._check_permission()
        card = self._operate(card_id, body)
        wrapper = body.get("card") or {}
        new = self._parse(wrapper.get("type"), wrapper.get("data"))
        card.card = new
        if not (new.get("config") or {}).get("streaming_mode"):
            card.streaming_since = None
        card.updates += 1
        return {"code": 0, "msg": "success", "data": {}}

    def delete_element(self, card_id: str, element_id: str, body: dict[str, Any]) -> dict[str, Any]:
        self._check_permission()
        card = self._operate(card_id, body)
        elements = (card.card.get("body") or {}).get("elements") or []
        kept = [e for e in elements if e.get("element_id") != element_id]
        if len(kept) == len(elements):
            raise CardKitError(300302, f"element {element_id} not found in the card")
        card.card["body"]["elements"] = kept
        card.updates += 1
        return {"code": 0, "msg": "success", "data": {}}

    def _operate(self, card_id: str, body: dict[str, Any]) -> Card:
        """Every operation on a card: its sequence must grow, and 10 a second at most."""
        card = self.get(card_id)
        sequence = body.get("sequence")
        if not isinstance(sequence, int) or sequence < 1:
            raise CardKitError(99992402, "field validation failed: sequence")
        now = time.monotonic()
        while card.recent and card.recent[0] < now - 1.0:
            card.recent.popleft()
        if len(card.recent) >= UPDATES_PER_SECOND:
            raise CardKitError(230020, "This operation triggers the frequency limit of the card", http_status=429)
        if sequence <= card.sequence:
            raise CardKitError(300317, f"sequence {sequence} is not greater than the card's last ({card.sequence})")
        card.recent.append(now)
        card.sequence = sequence
        return card

    @staticmethod
    def _parse(kind: Any, data: Any) -> dict[str, Any]:
        if kind != "card_json" or not isinstance(data, str):
            raise CardKitError(99992402, "field validation failed: type must be card_json with data a string")
        if len(data.encode()) > CARD_LIMIT_BYTES:
            raise CardKitError(300305, "the card exceeds 30 KB")
        try:
            card = json.loads(data)
        except ValueError:
            raise CardKitError(230099, "Failed to create card content: data is not JSON") from None
        if not isinstance(card, dict) or card.get("schema") != "2.0":
            raise CardKitError(230099, "Failed to create card content: CardKit needs card JSON 2.0")
        elements = (card.get("body") or {}).get("elements")
        if not isinstance(elements, list):
            raise CardKitError(230099, "Failed to create card content: body.elements is required")
        return card
