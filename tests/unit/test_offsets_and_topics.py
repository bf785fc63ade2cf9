from aiokafka import TopicPartition

from aibot_common.envelope import Conversation, Envelope, Kind, Platform, TextPart
from aibot_common.runner import OffsetTracker
from aibot_common.topics import ALL_TOPICS, CONSUMPTION, INBOUND

TP = TopicPartition("t", 0)


def test_commit_point_is_the_lowest_unfinished_offset() -> None:
    tracker = OffsetTracker()
    assert tracker.committable(TP) is None
    for offset in (10, 11, 12):
        tracker.started(TP, offset)
    tracker.finished(TP, 11)
    assert tracker.committable(TP) == 10  # 10 is still being worked on: 11 must come again after a crash
    tracker.finished(TP, 10)
    assert tracker.committable(TP) == 12
    tracker.finished(TP, 12)
    assert tracker.committable(TP) == 13


def test_forgotten_partitions_commit_nothing() -> None:
    tracker = OffsetTracker()
    tracker.started(TP, 1)
    tracker.forget({TP})
    tracker.finished(TP, 1)  # a late finish after a revoke is harmless
    assert tracker.committable(TP) is None


def test_topic_names_are_unique_versioned_and_consumed_topics_exist() -> None:
    names = [t.name for t in ALL_TOPICS]
    assert len(names) == len(set(names))
    assert all(name.startswith("aibot.") and name.endswith(".v1") for name in names)
    for topic, group in CONSUMPTION:
        assert topic in names and group.startswith("aibot-")


def test_changelogs_are_compacted_and_streams_retained() -> None:
    for topic in ALL_TOPICS:
        config = topic.creation_config()
        if "changelog" in topic.name:
            assert config["cleanup.policy"] == "compact"
        elif topic.compacted:
            # State read whole by every replica (access, quota counters): the last record per key stays.
            assert "compact" in config["cleanup.policy"].split(",")
        else:
            assert int(config["retention.ms"]) >= 7 * 24 * 3600 * 1000


def test_an_inbound_example_parses() -> None:
    raw = (
        b'{"schema_version":1,"id":"tg-1-5","kind":"message","conversation":{"platform":"telegram",'
        b'"chat_id":"42","chat_type":"private"},"parts":[{"type":"text","text":"hi"}],'
        b'"event_time":"2026-11-25T10:00:00Z"}'
    )
    envelope = Envelope.from_bytes(raw)
    assert envelope == Envelope(
        id="tg-1-5",
        kind=Kind.MESSAGE,
        conversation=Conversation(platform=Platform.TELEGRAM, chat_id="42"),
        parts=[TextPart(text="hi")],
        event_time=envelope.event_time,
        created_at=envelope.created_at,
    )
    assert INBOUND.name == "aibot.inbound.v1"
