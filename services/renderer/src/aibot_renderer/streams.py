"""What the sender remembers of answers being streamed, in its changelog-backed state per chat.

A chat's outbound records all sit on one partition, so one sender replica at a time works on a chat
and sees a stream's previews and final parts in the order core-llm wrote them. What it has shown is
kept in the chat's state (`SenderState`), written with the changelog like the delivered ids, so a
replica that takes the partition over after a crash edits the same messages instead of starting
a second, half-finished copy of the answer.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field, model_validator

DELIVERED_IDS_KEPT = 500
STREAMS_KEPT = 20  # streams in progress per chat; more means finals were lost, which a re-delivery fixes


class CardShown(BaseModel):
    """A Feishu CardKit card entity showing one part of an answer, and the message that carries it."""

    card_id: str
    message_id: str
    created_at: float  # epoch seconds: its streaming window (10 minutes) and its sequence numbers
    streaming_closed: bool = False  # Feishu closed its streaming early (300309): re-create it


class StreamProgress(BaseModel):
    """How one answer is being previewed. Telegram: a draft (private chats), or messages edited in
    place; Feishu: streaming cards, or nothing ("plain": the final is sent as ordinary messages)."""

    mode: Literal["draft", "edit", "card", "plain"]
    # The messages showing the answer so far (edit mode), in order: part 1 is message_ids[0].
    message_ids: list[int] = Field(default_factory=list)
    cards: list[CardShown] = Field(default_factory=list)  # card mode: part 1 is cards[0]


class SenderState(BaseModel):
    delivered: list[str] = Field(default_factory=list)  # outbound ids sent, and streams finished
    streams: dict[str, StreamProgress] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _from_id_list(cls, value: Any) -> Any:
        # Before streaming the state was only the list of delivered ids.
        return {"delivered": value} if isinstance(value, list) else value

    @classmethod
    def of(cls, stored: Any) -> SenderState:
        return cls.model_validate(stored) if stored else cls()

    def finished(self, stream: str) -> bool:
        return stream in self.delivered

    def with_progress(self, stream: str, progress: StreamProgress) -> SenderState:
        streams = {k: v for k, v in self.streams.items() if k != stream}
        streams[stream] = progress
        return SenderState(delivered=self.delivered, streams=dict(list(streams.items())[-STREAMS_KEPT:]))

    def with_delivered(self, *ids: str, end_stream: str | None = None) -> SenderState:
        streams = {k: v for k, v in self.streams.items() if k != end_stream}
        return SenderState(delivered=[*self.delivered, *ids][-DELIVERED_IDS_KEPT:], streams=streams)
