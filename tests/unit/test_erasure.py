"""Retention and erasure: `/forget` and an operator's erasure request tombstone the conversation's
state through the runner; dead letters are masked; the dead-letter retention is the deployment's."""

from __future__ import annotations

import json

import pytest

from aibot_common.envelope import Conversation, Envelope, Kind, Platform, TextPart
from aibot_common.erasure import erasure_request
from aibot_common.kafka import dead_letter, header
from aibot_common.runner import Consumed
from aibot_common.settings import KafkaSettings, Settings
from aibot_common.state import TOMBSTONE, ChangelogTable
from aibot_common.topics import CORE_CONVERSATIONS, INBOUND, REPLIES
from aibot_core_llm.app import make_handler
from aibot_core_llm.privacy import FORGOTTEN_TEXT, guard
from tests.unit.test_core_handler import ScriptedModel
from tests.unit.test_runner_retries import _Producer, _runner


def _message(text: str, n: int) -> Envelope:
    return Envelope(
        id=f"tg-1-{n}",
        kind=Kind.MESSAGE,
        conversation=Conversation(platform=Platform.TELEGRAM, chat_id="1"),
        parts=[TextPart(text=text)],
    )


def _consumed(envelope: Envelope, offset: int) -> Consumed:
    return Consumed(
        topic=INBOUND.name,
        partition=0,
        offset=offset,
        key=envelope.key,
        value=envelope.to_bytes(),
        headers=[],
        timestamp_ms=0,
    )


@pytest.mark.parametrize("mode", ["mask", "off", "refuse"])
async def test_forget_tombstones_the_users_history(mode: str) -> None:
    settings = Settings(privacy={"mode": mode})
    model = ScriptedModel("noted")
    handler = guard(make_handler(model, settings), settings.privacy)
    table = ChangelogTable(CORE_CONVERSATIONS, KafkaSettings(), "test")
    producer = _Producer()
    runner = _runner(handler, producer, table=table)
    await runner._attempt(_consumed(_message("remember that I like tea", 1), 1))
    assert "I like tea" in json.dumps(table.get(0, "telegram:1"))
    await runner._attempt(_consumed(_message("/forget", 2), 2))
    assert table.get(0, "telegram:1") is None
    assert producer.sent[-1] == (CORE_CONVERSATIONS.name, None)  # the tombstone on the changelog
    (reply,) = [Envelope.from_bytes(v) for t, v in producer.sent if t == REPLIES.name][-1:]
    assert reply.text() == FORGOTTEN_TEXT
    assert len(model.calls) == 1  # /forget never reached the model


async def test_an_operators_erasure_request_tombstones_without_a_reply() -> None:
    settings = Settings()
    handler = guard(make_handler(ScriptedModel("ok"), settings), settings.privacy)
    outcome = await handler(erasure_request("telegram:1"), {"turns": [], "recent_ids": ["x"]})
    assert outcome.state is TOMBSTONE and list(outcome.emit) == []
    request = erasure_request("feishu:oc_1")
    assert request.key == "feishu:oc_1" and request.kind is Kind.MESSAGE
    with pytest.raises(ValueError, match="platform"):
        erasure_request("slack:1")


def test_the_cli_names_the_forget_command() -> None:
    from aibot_cli.main import build_parser

    args = build_parser().parse_args(["forget", "telegram:42"])
    assert args.conversation == "telegram:42" and args.func.__name__ == "cmd_forget"


def test_dead_letters_are_masked_in_value_and_reason() -> None:
    envelope = _message("my card is 4111 1111 1111 1111, phone 138-1234-5678", 3)
    record = dead_letter(
        INBOUND.name,
        0,
        3,
        envelope.key.encode(),
        envelope.to_bytes(),
        ValueError("x"),
        "model said: bad key sk-live-0123456789abcdefABCDEF for 13812345678",
    )
    assert b"4111" not in record.value and b"1234-5678" not in record.value
    assert Envelope.from_bytes(record.value).id == envelope.id  # still an envelope an operator can read
    reason = header(record.headers, "dlq-reason")
    assert "0123456789abcdef" not in reason and "13812345678" not in reason
    binary = dead_letter(INBOUND.name, 0, 4, None, b"\xff\xfe\x00", ValueError("x"), "not an envelope")
    assert binary.value == b"\xff\xfe\x00"  # bytes that are not text are kept as they came
