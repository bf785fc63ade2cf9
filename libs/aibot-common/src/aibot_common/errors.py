"""The two kinds of failure a stage can have, and the limit on how many dead letters it may file.

Kept apart from the runner so that platform clients and handlers can say "try again" or "never"
without depending on the consume loop (as arroyo keeps its errors apart from its processing steps).
"""

from __future__ import annotations

# A stage that files more dead letters than this in a minute stops loudly: a bad deploy must not
# quietly pour the whole stream into the dead-letter topic.
DEAD_LETTERS_PER_MINUTE = 600


class Retryable(Exception):
    """Slow down and try again: a timeout, a 429, a 5xx."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class Unavailable(Retryable):
    """The far end itself is down (a 5xx, a refused connection, a timeout), not this record: every
    record would fail alike, so waiting out the outage does not use up the record's attempts, or a
    platform down for a minute would dead-letter every answer of that minute. Bounded all the same
    by the stage's `outage_max_s`."""


class InvalidMessage(Exception):
    """Never retry: the record itself is bad (schema error, poison audio). It goes to dead letters."""


class DeadLetterLimitExceeded(RuntimeError):
    """More than `DEAD_LETTERS_PER_MINUTE` dead letters in a minute: the stage stops."""
