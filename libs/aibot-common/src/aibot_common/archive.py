"""The conversation archive's format: what one archived record holds, how volumes are named, encoded
and read back. The archiver service writes volumes; `ai-bot archive ls|get` reads them.

Layout in the storage backend (`storage.py`):

    archive/date=YYYY-MM-DD/platform=<telegram|feishu>/part-<HHMMSS>-<digest>.jsonl.gz

one gzip JSON line per envelope, dated by the envelope's `created_at` (UTC), so a re-delivered
record lands in the same day and platform folder as the first time. Delivery is at-least-once: a
crash between writing a volume and committing its offsets writes those records again in another
volume, so readers dedupe by envelope id (`dedupe`), which `ai-bot archive get` does.

Text is masked exactly as the logs are (`telemetry.mask`: e-mail, phone, ID-card and card numbers,
configured secrets), so the archive holds no more personal data than the logs.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
from collections import defaultdict
from collections.abc import Iterable, Sequence
from datetime import UTC, date
from typing import Any

from aibot_common import telemetry
from aibot_common.envelope import AudioPart, Envelope, TextPart

TIER = "archive"


def archive_record(envelope: Envelope, topic: str, partition: int, offset: int) -> dict[str, Any]:
    """One line of a volume: the envelope's facts, its text masked, where it came from in Kafka."""
    parts: list[dict[str, Any]] = []
    for part in envelope.parts:
        if isinstance(part, TextPart):
            parts.append({"type": "text", "text": telemetry.mask(part.text)})
        elif isinstance(part, AudioPart):
            parts.append({"type": "audio", "duration_s": part.duration_s})
        else:
            # Files and images are references into the platform, not content: their type is enough.
            parts.append({"type": part.type})
    record: dict[str, Any] = {
        "id": envelope.id,
        "causation_id": envelope.causation_id,
        "kind": envelope.kind.value,
        "conversation": envelope.key,
        "platform": envelope.conversation.platform.value,
        "chat_type": envelope.conversation.chat_type.value,
        "sender_id": envelope.sender.id if envelope.sender else None,
        "sender_name": telemetry.mask(envelope.sender.display_name)
        if envelope.sender and envelope.sender.display_name
        else None,
        "origin": envelope.origin.value,
        "text": telemetry.mask(envelope.text()),
        "parts": parts,
        "event_time": envelope.event_time.astimezone(UTC).isoformat(),
        "created_at": envelope.created_at.astimezone(UTC).isoformat(),
        "source": {"topic": topic, "partition": partition, "offset": offset},
    }
    return record


def record_day(record: dict[str, Any]) -> date:
    return date.fromisoformat(record["created_at"][:10])


def volumes(records: Sequence[dict[str, Any]]) -> dict[str, bytes]:
    """Group records into one volume per (day, platform): object key -> gzip JSONL bytes.

    The key carries a digest of the ids inside, so writing the same records again (a retried put,
    a re-delivery of exactly the same batch) replaces the object rather than adding a copy."""
    groups: dict[tuple[date, str], list[dict[str, Any]]] = defaultdict(list)
    for record in records:
        groups[(record_day(record), record["platform"])].append(record)
    out: dict[str, bytes] = {}
    for (day, platform), group in sorted(groups.items()):
        digest = hashlib.sha256("\n".join(r["id"] for r in group).encode()).hexdigest()[:16]
        first = min(r["created_at"] for r in group)
        stamp = first[11:19].replace(":", "")
        key = f"{TIER}/date={day.isoformat()}/platform={platform}/part-{stamp}-{digest}.jsonl.gz"
        out[key] = encode_volume(group)
    return out


def encode_volume(records: Iterable[dict[str, Any]]) -> bytes:
    raw = "".join(json.dumps(r, ensure_ascii=False, separators=(",", ":")) + "\n" for r in records).encode()
    buffer = io.BytesIO()
    # mtime=0: the same records always give the same bytes.
    with gzip.GzipFile(fileobj=buffer, mode="wb", mtime=0) as gz:
        gz.write(raw)
    return buffer.getvalue()


def decode_volume(data: bytes) -> list[dict[str, Any]]:
    return [json.loads(line) for line in gzip.decompress(data).decode().splitlines() if line.strip()]


def dedupe(records: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each envelope once (the first copy seen), ordered by time and id: what a reader should use."""
    seen: dict[str, dict[str, Any]] = {}
    for record in records:
        seen.setdefault(record["id"], record)
    return sorted(seen.values(), key=lambda r: (r["created_at"], r["id"]))


def day_prefix(day: date | str, platform: str | None = None) -> str:
    text = day if isinstance(day, str) else day.isoformat()
    date.fromisoformat(text)  # a wrong date is an error here, not an empty listing
    return f"{TIER}/date={text}/" + (f"platform={platform}/" if platform else "")
