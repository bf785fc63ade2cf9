"""The archive's format: masked lines, one volume per day and platform, stable keys, dedupe."""

from __future__ import annotations

from datetime import UTC, datetime

from aibot_common.archive import archive_record, decode_volume, dedupe, volumes
from aibot_common.envelope import AudioPart, Conversation, Envelope, Kind, Platform, Sender, TextPart


def _envelope(n: int, platform: Platform = Platform.TELEGRAM, day: int = 1) -> Envelope:
    return Envelope(
        id=f"e-{n}",
        kind=Kind.MESSAGE,
        conversation=Conversation(platform=platform, chat_id="42"),
        sender=Sender(id="7", display_name="mail me: bob@example.org"),
        parts=[TextPart(text="card 4111 1111 1111 1111, id 11010519491231002X"), AudioPart(file_ref="f", duration_s=2)],
        created_at=datetime(2026, 6, day, 23, 59, 30, tzinfo=UTC),
    )


def test_a_line_is_masked_as_the_logs_are() -> None:
    line = archive_record(_envelope(1), "aibot.inbound.v1", 3, 17)
    assert line["text"] == "card [card], id [id-card]"
    assert line["sender_name"] == "mail me: [email]"
    assert line["parts"] == [{"type": "text", "text": "card [card], id [id-card]"}, {"type": "audio", "duration_s": 2}]
    assert line["source"] == {"topic": "aibot.inbound.v1", "partition": 3, "offset": 17}
    assert line["conversation"] == "telegram:42"


def test_one_volume_per_day_and_platform_with_a_key_that_names_its_contents() -> None:
    lines = [
        archive_record(_envelope(1), "t", 0, 1),
        archive_record(_envelope(2, Platform.FEISHU), "t", 0, 2),
        archive_record(_envelope(3, day=2), "t", 0, 3),
        archive_record(_envelope(4), "t", 0, 4),
    ]
    written = volumes(lines)
    assert sorted(k.rsplit("/", 1)[0] for k in written) == [
        "archive/date=2026-06-01/platform=feishu",
        "archive/date=2026-06-01/platform=telegram",
        "archive/date=2026-06-02/platform=telegram",
    ]
    telegram_day1 = next(v for k, v in written.items() if "06-01/platform=telegram" in k)
    assert [r["id"] for r in decode_volume(telegram_day1)] == ["e-1", "e-4"]
    # The same records give the same key and bytes (a retried write replaces, never adds)...
    assert volumes(lines) == written
    # ...and other records another key.
    assert set(volumes(lines[:1])) & set(written) == set()


def test_dedupe_keeps_one_copy_per_envelope_id() -> None:
    a, b = archive_record(_envelope(1), "t", 0, 1), archive_record(_envelope(2), "t", 0, 2)
    assert [r["id"] for r in dedupe([b, a, b, a])] == ["e-1", "e-2"]
