"""The personal-data and secret detectors (pii.py): what the log masker and the model's masking see."""

from __future__ import annotations

import pytest

from aibot_common import pii, telemetry

KEY = b"unit-placeholder-key"


@pytest.mark.parametrize(
    ("text", "hidden", "marker"),
    [
        # The old masker's misses, named in the issue.
        ("我的卡号是6222021234567890", "6222021234567890", "[card]"),
        ("电话 138-1234-5678 谢谢", "138-1234-5678", "[phone]"),
        ("电话 138 1234 5678 谢谢", "138 1234 5678", "[phone]"),
        ("手机号13812345678", "13812345678", "[phone]"),
        ("+86 138 1234 5678", "138 1234 5678", "[phone]"),
        (
            "calling the API failed: invalid key sk-proj-AbC123dEf456GhI789jKl0",
            "sk-proj-AbC123dEf456GhI789jKl0",
            "[secret]",
        ),
        ("feishu said 99991663 for t-g1044ghJRUIJJ5ELPIIL5TMDT4Y5YJ6PQX2EHDJ7", "t-g1044ghJRUIJJ5ELPIIL5", "[secret]"),
        ("Authorization: Bearer abcdefghijklmnop1234567890", "abcdefghijklmnop1234567890", "[secret]"),
        ("bot 123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw0 failed", "AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw0", "[secret]"),
        ("身份证11010519491231002X", "11010519491231002X", "[id-card]"),
        ("mail me at 张三ada@example.com.cn", "ada@example.com.cn", "[email]"),
        ("card 4111 1111 1111 1111 exp 12/30", "4111 1111 1111 1111", "[card]"),
        ("call +1 (415) 555-0134", "555-0134", "[phone]"),
    ],
)
def test_the_log_masker_catches_what_it_used_to_miss(text: str, hidden: str, marker: str) -> None:
    masked = telemetry.mask(text)
    assert hidden not in masked, masked
    assert marker in masked


def test_an_unregistered_secret_in_an_exception_is_masked() -> None:
    try:
        raise RuntimeError("401 from the model: Incorrect API key provided: sk-live-0123456789abcdefABCDEF")
    except RuntimeError as exc:
        assert "0123456789abcdef" not in telemetry.mask(repr(exc))


@pytest.mark.parametrize(
    "text",
    [
        "partition 11 offset 123456 took 2.5s, update 987654321",
        "conversation telegram:-1001234567890 envelope tg-123456-100000002",
        "version 1.2.3, at 2026-12-04 18:43:53, 12 items",
        "t-shirt sizes and sk-short",
    ],
)
def test_ordinary_text_stays_readable(text: str) -> None:
    assert telemetry.mask(text) == text


def test_strict_detection_checks_the_check_digit_and_luhn() -> None:
    kinds = lambda text: [f.kind for f in pii.find(text)]  # noqa: E731
    assert kinds("id 11010519491231002X") == ["id_card"]
    assert kinds("id 110105194912310021") == []  # wrong check digit: not an ID for the model
    assert kinds("card 4111111111111111") == ["bank_card"]
    assert kinds("order 6222021234567890") == []  # fails Luhn: an order number, left alone
    assert kinds("卡号6222020200000000007") == []  # 19 digits, fails Luhn
    assert kinds("卡号4111-1111-1111-1111。") == ["bank_card"]
    assert kinds("call 13812345678 or +44 20 7946 0958") == ["phone", "phone"]
    assert kinds("write ada@example.com") == ["email"]


def test_placeholders_are_stable_keyed_and_restored() -> None:
    text = "我的手机 138-1234-5678, 邮箱 ada@example.com; 再说一遍: 13812345678"
    masked = pii.pseudonymize(text, pii.KINDS, KEY, "telegram:1")
    assert "1234" not in masked.text and "ada@" not in masked.text
    # One number, written two ways: one placeholder, so the model can see it is the same number.
    phone = pii.placeholder("phone", "13812345678", KEY, "telegram:1")
    assert masked.text.count(phone) == 2
    assert masked.kinds == ["email", "phone"]
    # The same value elsewhere, or under another key, gets a different tag: tags do not link chats.
    assert phone != pii.placeholder("phone", "13812345678", KEY, "telegram:2")
    assert phone != pii.placeholder("phone", "13812345678", b"other", "telegram:1")
    # The model's answer gets the values back, with or without the brackets around a placeholder.
    answer = f"I will call {phone} and write to {phone.strip('[]')}; [EMAIL_00000000] stays."
    restored = pii.restore(answer, masked.values)
    assert restored == "I will call 138-1234-5678 and write to 138-1234-5678; [EMAIL_00000000] stays."
