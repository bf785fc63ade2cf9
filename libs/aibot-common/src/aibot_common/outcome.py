"""The stage contract: a handler is a plain function from an envelope (and the state its stage keeps
for that conversation) to an `Outcome`. Handlers never touch Kafka; the runner (or, for the HTTP
ingresses, `kafka.publish`) routes what they emit, writes the state and files the dead letter."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from aibot_common.envelope import Envelope


@dataclass(frozen=True)
class Outcome:
    # Envelopes to publish; `topics.route` picks each one's topic from its kind and platform.
    emit: Sequence[Envelope] = ()
    # The conversation's new state in the stage's table (a pydantic model or JSON-able value);
    # None leaves it as it is.
    state: BaseModel | Any | None = None
    # Also file the input under dead letters, with this reason, once `emit` is acknowledged
    # (the user has been told; the record is kept for an operator to look at).
    dead_letter: str | None = None

    def state_value(self) -> Any | None:
        """The state as the JSON-able value the changelog stores."""
        if isinstance(self.state, BaseModel):
            return self.state.model_dump(mode="json")
        return self.state


NOTHING = Outcome()

# What a stage runs per record: the decoded envelope and what the stage's table holds for its
# conversation (None when there is nothing yet, or the stage keeps no state).
Handler = Callable[[Envelope, Any], Awaitable[Outcome]]

# Publishes one envelope (routed by `topics.route`) while the handler is still working, e.g. the
# answer so far. Best effort: it never raises, and what it publishes is disposable, because only the
# Outcome is produced with the state and acknowledged before the offset is committed.
PublishPartial = Callable[[Envelope], Awaitable[None]]


@dataclass(frozen=True)
class Streams:
    """A stage handler that also publishes partial results while it works (core-llm streaming the
    model's answer). The runner passes it the `PublishPartial` it owns, so the handler itself still
    never touches Kafka."""

    handler: Callable[[Envelope, Any, PublishPartial], Awaitable[Outcome]]
    # Shown every record as it is fetched, before it waits in its conversation's lane: how a "stop"
    # reaches the work in progress ahead of it (the record is still handled in order afterwards).
    interrupt: Callable[[Envelope], None] | None = None

    async def __call__(self, envelope: Envelope, state: Any) -> Outcome:
        """Called as a plain `Handler` (a test, a wrapper that knows no streaming): the outcome
        only, what it would have published meanwhile dropped."""
        return await self.handler(envelope, state, _drop)


async def _drop(envelope: Envelope) -> None:
    return None
