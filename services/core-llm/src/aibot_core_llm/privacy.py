"""Personal data in what users send, kept from the model and from the stored history
(`privacy:` in the settings; the detectors are aibot_common.pii's, the same as the log masker's).

- `mask` (the default): every detected value (phone, e-mail, resident ID, card, API key...) becomes
  a placeholder such as `[PHONE_1a2b3c4d]` before the handler runs, so the prompt and the history in
  the conversation changelog hold only placeholders. The values of the message being answered are
  kept in memory for that one call and put back into the answer, so the user reads their own data
  and the conversation still makes sense. A placeholder from an earlier message stays a placeholder
  (its value was never stored anywhere).
- `refuse`: a message with personal data is answered with `refuse_text`, not sent to the model and
  not stored.
- `off`: sent as it is.

Erasure lives here too: `/forget` (the user) and an operator's erasure request (aibot_common.erasure)
become a tombstone for the conversation's state, before the handler or the model sees anything.

It wraps the stage's handler (see `guard`), so core-llm's handler itself knows nothing of it.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from typing import Any

from aibot_common import pii
from aibot_common.envelope import Envelope, TextPart
from aibot_common.erasure import FORGET_COMMAND, is_erasure_request
from aibot_common.outcome import Handler, Outcome, PublishPartial, Streams
from aibot_common.settings import PrivacySettings
from aibot_common.state import TOMBSTONE
from aibot_core_llm.handler import reply

log = logging.getLogger(__name__)

# Used when privacy.placeholder_key is unset: placeholders stay stable, but their tags are then
# only as secret as this source file. Production deployments should set a key.
_DEFAULT_KEY = b"ai-bot placeholder tags: set privacy.placeholder_key"


def key_of(config: PrivacySettings) -> bytes:
    return config.placeholder_key.get_secret_value().encode() if config.placeholder_key else _DEFAULT_KEY


def mask_envelope(envelope: Envelope, config: PrivacySettings) -> tuple[Envelope, pii.Masked]:
    """The envelope with its text parts masked, and the placeholders' values (for `restore`)."""
    key, scope = key_of(config), envelope.key
    values: dict[str, str] = {}
    parts = []
    for part in envelope.parts:
        if isinstance(part, TextPart):
            masked = pii.pseudonymize(part.text, config.detectors, key, scope)
            values.update(masked.values)
            part = part.model_copy(update={"text": masked.text})
        parts.append(part)
    joined = pii.Masked(text="", values=values)
    return (envelope.model_copy(update={"parts": parts}) if values else envelope), joined


def restore_envelope(envelope: Envelope, values: dict[str, str]) -> Envelope:
    parts = [
        p.model_copy(update={"text": pii.restore(p.text, values)}) if isinstance(p, TextPart) else p
        for p in envelope.parts
    ]
    meta = {k: pii.restore(v, values) if k == "transcript" else v for k, v in envelope.meta.items()}
    return envelope.model_copy(update={"parts": parts, "meta": meta})


FORGOTTEN_TEXT = "Done: I have erased our conversation and everything I kept about it."


# Answers a refusal for a `/forget` its sender may not give, or None (the access gate's may_forget).
MayForget = Callable[[Envelope], str | None]


def erase(envelope: Envelope, may_forget: MayForget | None = None) -> Outcome | None:
    """A tombstone for an erasure request or `/forget` (or the refusal `may_forget` gives its
    sender); None for any other message."""
    if is_erasure_request(envelope):
        log.info("conversation erased on request", extra={"requested_by": envelope.meta.get("erase")})
        return Outcome(state=TOMBSTONE)
    if _is_forget(envelope):
        refusal = may_forget(envelope) if may_forget is not None else None
        if refusal is not None:
            return Outcome(emit=[reply(envelope, refusal)])
        log.info("conversation erased by /forget")
        return Outcome(emit=[reply(envelope, FORGOTTEN_TEXT)], state=TOMBSTONE)
    return None


def _is_forget(envelope: Envelope) -> bool:
    words = envelope.text().split()
    return bool(words) and words[0].lower() == FORGET_COMMAND


def guard(
    handler: Handler | Streams, config: PrivacySettings, may_forget: MayForget | None = None
) -> Handler | Streams:
    """The stage's handler behind erasure and the deployment's privacy mode. A streaming handler's
    partial answers get the same treatment as its final one: restored before they are published.
    `may_forget` answers a refusal for a `/forget` its sender may not give (a group's history is
    everyone's), or None."""
    if isinstance(handler, Streams):
        streaming = handler

        async def guarded_streaming(envelope: Envelope, stored: Any, publish: PublishPartial) -> Outcome:
            values: dict[str, str] = {}

            async def restored(partial: Envelope) -> None:
                await publish(restore_envelope(partial, values) if values else partial)

            async def inner(masked_envelope: Envelope, state: Any) -> Outcome:
                return await streaming.handler(masked_envelope, state, restored)

            plain = _guard(inner, config, values, may_forget)
            return await plain(envelope, stored)

        return Streams(guarded_streaming, interrupt=handler.interrupt)
    return _guard(handler, config, None, may_forget)


def _guard(
    handler: Handler, config: PrivacySettings, seen: dict[str, str] | None, may_forget: MayForget | None
) -> Handler:
    async def guarded(envelope: Envelope, stored: Any) -> Outcome:
        erased = erase(envelope, may_forget)
        if erased is not None:
            return erased
        if config.mode == "off":
            return await handler(envelope, stored)
        masked_envelope, masked = mask_envelope(envelope, config)
        if not masked.values:
            return await handler(envelope, stored)
        if config.mode == "refuse":
            # Kinds only: the values themselves are never logged.
            log.info("refused a message with personal data", extra={"kinds": masked.kinds})
            return Outcome(emit=[reply(envelope, config.refuse_text.format(kinds=", ".join(masked.kinds)))])
        if seen is not None:
            seen.update(masked.values)  # what a streaming handler's partials are restored with
        outcome = await handler(masked_envelope, stored)
        return dataclasses.replace(outcome, emit=[restore_envelope(e, masked.values) for e in outcome.emit])

    return guarded
