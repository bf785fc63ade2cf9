"""The message envelope every topic carries.

One typed, versioned schema for the whole pipeline. Consumers ignore fields they do not know, so
adding an optional field never breaks an older replica during a rolling upgrade; a breaking change
is a new schema version on a new topic (see `topics.py`).
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

SCHEMA_VERSION = 1


class Platform(StrEnum):
    TELEGRAM = "telegram"
    FEISHU = "feishu"


class ChatType(StrEnum):
    PRIVATE = "private"
    GROUP = "group"


class Kind(StrEnum):
    MESSAGE = "message"  # a user's message, ingress/ASR -> core
    REPLY = "reply"  # the assistant's answer, core -> response processor
    # The answer so far while the model is still writing it (the whole text, not a delta), core ->
    # response processor. Disposable: the REPLY that follows is what counts and what history keeps.
    PARTIAL = "partial"
    OUTBOUND = "outbound"  # one platform-ready message, response processor -> renderer
    ASR_REQUEST = "asr_request"  # a voice note to transcribe, ingress -> asr-worker


class Origin(StrEnum):
    TEXT = "text"
    VOICE = "voice"


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")


class TextPart(_Frozen):
    type: Literal["text"] = "text"
    text: str
    # "markdown" for model output; "plain" for user text; "telegram_entities" for rendered output.
    format: Literal["plain", "markdown", "telegram_entities", "feishu_post", "feishu_card"] = "plain"
    # Rendered form for a platform: Telegram MessageEntity dicts, or a Feishu content JSON string.
    entities: list[dict] | None = None
    rendered: str | None = None


class AudioPart(_Frozen):
    type: Literal["audio"] = "audio"
    file_ref: str  # Telegram file_id, or Feishu file_key
    duration_s: float | None = None
    size_bytes: int | None = None
    mime_type: str | None = None


class ImagePart(_Frozen):
    type: Literal["image"] = "image"
    file_ref: str


class FilePart(_Frozen):
    type: Literal["file"] = "file"
    file_ref: str
    name: str | None = None


class UnsupportedPart(_Frozen):
    """A platform message type we do not handle yet (sticker, video, location...)."""

    type: Literal["unsupported"] = "unsupported"
    platform_type: str


Part = Annotated[TextPart | AudioPart | ImagePart | FilePart | UnsupportedPart, Field(discriminator="type")]


class Conversation(_Frozen):
    platform: Platform
    chat_id: str
    chat_type: ChatType = ChatType.PRIVATE

    @property
    def key(self) -> str:
        """The Kafka key: every envelope of one conversation lands on one partition, in order."""
        return f"{self.platform.value}:{self.chat_id}"


class Sender(_Frozen):
    id: str
    display_name: str | None = None


class Envelope(_Frozen):
    schema_version: int = SCHEMA_VERSION
    id: str = Field(description="Unique and deterministic per platform event, so a re-delivery dedupes.")
    causation_id: str | None = Field(default=None, description="The envelope that caused this one.")
    kind: Kind
    conversation: Conversation
    sender: Sender | None = None
    origin: Origin = Origin.TEXT
    parts: list[Part] = Field(default_factory=list)
    # The platform's id of the user message this answers (reply threading).
    reply_to_message_id: str | None = None
    # When the platform produced the user's event: the start of the end-to-end latency.
    event_time: datetime = Field(default_factory=lambda: datetime.now(UTC))
    created_at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    # Platform extras that have no typed field (callback_query_id, feishu message_id...).
    meta: dict[str, str] = Field(default_factory=dict)

    @property
    def key(self) -> str:
        return self.conversation.key

    def text(self) -> str:
        """All text parts joined: what the user said, or what the assistant answered."""
        return "\n".join(p.text for p in self.parts if isinstance(p, TextPart))

    def derive(self, *, kind: Kind, suffix: str, **changes: object) -> Envelope:
        """A follow-up envelope caused by this one, with an id derived deterministically from ours,
        so that re-processing the same input produces the same output id (dedupe downstream)."""
        data = self.model_dump()
        data.update(
            id=derived_id(self.id, suffix),
            causation_id=self.id,
            kind=kind,
            created_at=datetime.now(UTC),
        )
        data.update(changes)
        return Envelope.model_validate(data)

    def to_bytes(self) -> bytes:
        return self.model_dump_json(exclude_none=True).encode()

    @classmethod
    def from_bytes(cls, raw: bytes) -> Envelope:
        return cls.model_validate_json(raw)


def user_message_kind(parts: list[Part]) -> Kind:
    """What an ingress makes of a user's message: a voice note is transcribed first (ASR_REQUEST),
    anything else goes straight to the model (MESSAGE)."""
    return Kind.ASR_REQUEST if any(isinstance(p, AudioPart) for p in parts) else Kind.MESSAGE


def derived_id(parent_id: str, suffix: str) -> str:
    digest = hashlib.sha256(f"{parent_id}/{suffix}".encode()).hexdigest()[:24]
    return f"{suffix}-{digest}"
