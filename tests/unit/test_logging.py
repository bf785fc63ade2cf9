"""Log lines: JSON with service, trace and conversation ids; personal data masked; secrets never
printed; ERROR lines also on a separate stream."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from aibot_common import telemetry

log = logging.getLogger("aibot.test")


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    service = telemetry._service_name
    yield
    for handler in root.handlers:
        if handler not in handlers:
            handler.close()
    root.handlers[:] = handlers
    root.setLevel(level)
    telemetry._service_name = service
    telemetry.conversation_var.set(None)


def _json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


@pytest.mark.parametrize(
    ("text", "hidden", "marker"),
    [
        ("write to ada.lovelace@example.com please", "ada.lovelace@example.com", "[email]"),
        ("my id is 11010519491231002X", "11010519491231002X", "[id-card]"),
        ("card 4111 1111 1111 1111 exp 12/30", "4111 1111 1111 1111", "[card]"),
        ("card 4111-1111-1111-1111", "4111-1111-1111-1111", "[card]"),
        ("call +44 20 7946 0958 now", "+44 20 7946 0958", "[phone]"),
        ("call +1-415-555-0134", "415-555-0134", "[phone]"),
        ("手机 13812345678 谢谢", "13812345678", "[phone]"),
    ],
)
def test_personal_data_is_masked(text: str, hidden: str, marker: str) -> None:
    masked = telemetry.mask(text)
    assert hidden not in masked
    assert marker in masked


def test_ordinary_numbers_stay_readable() -> None:
    text = "partition 11 offset 123456 took 2.5s, update 987654321"
    assert telemetry.mask(text) == text


def test_registered_secrets_are_replaced_and_short_values_ignored() -> None:
    telemetry.register_secret("987654:AAE-secret-bot-token")
    telemetry.register_secret("abc")  # too short to mask without mangling ordinary words
    masked = telemetry.mask("GET /bot987654:AAE-secret-bot-token/getMe abc")
    assert "AAE-secret-bot-token" not in masked and "[secret]" in masked
    assert masked.endswith(" abc")


def test_json_lines_carry_service_trace_conversation_and_mask_everything(capsys: pytest.CaptureFixture[str]) -> None:
    telemetry.setup_tracing("unit-svc", None)  # spans with real ids, exported nowhere
    telemetry.setup_logging("unit-svc", "INFO", "json")
    telemetry.register_secret("sk-unit-test-api-key-0001")
    telemetry.conversation_var.set("telegram:42")
    with telemetry.span("unit work") as current:
        log.info(
            "user %s wrote from +86 138 1234 5678",
            "bob@example.org",
            extra={"headers": {"Authorization": "Bearer sk-unit-test-api-key-0001"}, "phones": ["13812345678"]},
        )
        trace_id = format(current.get_span_context().trace_id, "032x")
    out = capsys.readouterr().out
    (line,) = _json_lines(out)
    assert line["service"] == "unit-svc" and line["level"] == "INFO" and line["name"] == "aibot.test"
    assert line["trace_id"] == trace_id and len(line["span_id"]) == 16
    assert line["conversation_id"] == "telegram:42"
    assert line["message"] == "user [email] wrote from [phone]"
    assert line["headers"] == {"Authorization": "Bearer [secret]"}  # nested extra values are masked too
    assert line["phones"] == ["[phone]"]
    assert "sk-unit-test-api-key-0001" not in out and "13812345678" not in out


def test_tracebacks_are_masked(capsys: pytest.CaptureFixture[str]) -> None:
    telemetry.setup_logging("unit-svc", "INFO", "json")
    telemetry.register_secret("tb-secret-value-123")
    try:
        raise RuntimeError("connect failed for tb-secret-value-123 (user +1 415 555 0134)")
    except RuntimeError:
        log.exception("request failed")
    captured = capsys.readouterr()
    (line,) = _json_lines(captured.out)
    assert "RuntimeError" in line["exc_info"]
    for stream in (captured.out, captured.err):
        assert "tb-secret-value-123" not in stream and "415 555 0134" not in stream


def test_error_lines_also_go_to_the_error_file_and_only_they(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    errors = tmp_path / "errors.log"
    telemetry.setup_logging("unit-svc", "INFO", "json", error_log_path=str(errors))
    log.info("all is well")
    log.warning("a little odd")
    log.error("broken for ada@example.com")
    logging.getLogger().handlers[1].flush()
    out = _json_lines(capsys.readouterr().out)
    assert [r["level"] for r in out] == ["INFO", "WARNING", "ERROR"]
    (error,) = _json_lines(errors.read_text())
    assert error["level"] == "ERROR" and error["message"] == "broken for [email]"


def test_without_an_error_file_errors_go_to_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    telemetry.setup_logging("unit-svc", "INFO", "json")
    log.info("fine")
    log.critical("down")
    captured = capsys.readouterr()
    assert [r["message"] for r in _json_lines(captured.out)] == ["fine", "down"]
    assert [r["message"] for r in _json_lines(captured.err)] == ["down"]


def test_text_format_masks_too(capsys: pytest.CaptureFixture[str]) -> None:
    telemetry.setup_logging("unit-svc", "INFO", "text")
    log.warning("mail ada@example.com or call 13812345678")
    out = capsys.readouterr().out
    assert "unit-svc WARNING aibot.test: mail [email] or call [phone]" in out


def test_identifiers_with_long_digit_runs_are_not_taken_for_cards() -> None:
    from aibot_common.telemetry import mask

    assert mask("dead-lettering tg-123456-100000002") == "dead-lettering tg-123456-100000002"
    assert mask("chat telegram:-1001234567890") == "chat telegram:-1001234567890"
    assert mask("card 6222 0212 3456 7890 please") == "card [card] please"
