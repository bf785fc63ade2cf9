"""The archiver's work on one batch: decode, mask, group into volumes, write each one durably.

A plain function of the records and the storage backend: no Kafka here (the BatchRunner commits
once this returns, so every record it was given must be in a written object by then).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from aibot_common.archive import archive_record, volumes
from aibot_common.errors import InvalidMessage
from aibot_common.runner import Consumed
from aibot_common.storage import Storage

log = logging.getLogger(__name__)


def to_records(batch: Sequence[Consumed]) -> list[dict[str, Any]]:
    """The archive lines of a batch. A record that is not an envelope is left out with a warning: the
    stage that owns the topic dead-letters it, and the dead-letter topic keeps it for 30 days."""
    records = []
    for consumed in batch:
        try:
            envelope = consumed.envelope
        except InvalidMessage as exc:
            log.warning("not archiving %s[%d]@%d: %s", consumed.topic, consumed.partition, consumed.offset, exc)
            continue
        records.append(archive_record(envelope, consumed.topic, consumed.partition, consumed.offset))
    return records


async def write_batch(batch: Sequence[Consumed], storage: Storage) -> list[str]:
    """Write the batch's volumes; returns their keys. Raises if any write fails (the whole batch is
    retried, and volumes already written are replaced by identical ones: same records, same key)."""
    written = []
    for key, data in volumes(to_records(batch)).items():
        await storage.put(key, data)
        written.append(key)
    if written:
        log.info("archived %d records in %d volumes", len(batch), len(written))
    return written
