from aibot_common.envelope import AudioPart, Conversation, Envelope, Kind, Platform, TextPart


def _message(**changes: object) -> Envelope:
    data = {
        "id": "tg-1-100",
        "kind": Kind.MESSAGE,
        "conversation": Conversation(platform=Platform.TELEGRAM, chat_id="42"),
        "parts": [TextPart(text="hello")],
    }
    data.update(changes)
    return Envelope(**data)


def test_round_trip_keeps_parts_by_type() -> None:
    original = _message(parts=[TextPart(text="hi"), AudioPart(file_ref="f1", duration_s=2.5)])
    decoded = Envelope.from_bytes(original.to_bytes())
    assert decoded == original
    assert isinstance(decoded.parts[1], AudioPart)


def test_key_is_the_conversation() -> None:
    assert _message().key == "telegram:42"


def test_unknown_fields_are_ignored_so_newer_producers_do_not_break_older_consumers() -> None:
    raw = _message().to_bytes().replace(b'"kind"', b'"a_future_field":{"x":1},"kind"')
    assert Envelope.from_bytes(raw).text() == "hello"


def test_derived_ids_are_deterministic_and_point_back() -> None:
    message = _message()
    first = message.derive(kind=Kind.REPLY, suffix="reply", parts=[TextPart(text="answer")])
    again = message.derive(kind=Kind.REPLY, suffix="reply", parts=[TextPart(text="answer")])
    assert first.id == again.id != message.id
    assert first.causation_id == message.id
    assert first.key == message.key
