"""Whether a message the user edited is answered again (`edits` settings).

Telegram sends an edit as a new update (`edited_message`) carrying the original's send time; the
ingress passes it on as `meta["sent_at"]` and the edit's own time as the envelope's event time. In
"window" mode (the default) the edited text is answered only when the edit came within `window_s`
of the original: a quick correction, when the answer to the first version may not even be out or
is about to be, is answered; an edit hours later (fixing a typo in an old message) is not.
"""

from __future__ import annotations

from datetime import datetime

from aibot_common.envelope import Envelope
from aibot_common.settings import EditSettings


def answers_edit(envelope: Envelope, settings: EditSettings) -> bool:
    if envelope.meta.get("edited") != "true" or settings.mode == "reanswer":
        return True
    if settings.mode == "ignore":
        return False
    sent_at = envelope.meta.get("sent_at")
    if not sent_at:
        return False  # no way to tell how late the edit is: leave the conversation as it was
    try:
        delay = (envelope.event_time - datetime.fromisoformat(sent_at)).total_seconds()
    except (ValueError, TypeError):
        return False
    return delay <= settings.window_s
