"""Personal data and secrets in free text: one set of detectors behind both the log masker
(telemetry.mask) and the masking of what users send before it reaches the model (core-llm).

Detectors: phone numbers (mainland China mobiles, with or without +86 and separators; international
numbers written with +), e-mail addresses, Chinese resident ID numbers, bank card numbers, and API
keys / access tokens (OpenAI-style `sk-...`, Feishu tenant/app/user access tokens, Telegram bot
tokens, GitHub, AWS, Slack, JWTs, bearer tokens).

Two strengths. `strict` (for the model) checks what can be checked - the resident ID's check digit,
the card's Luhn sum - so an order number is not hidden from the model for looking like a card.
Logs use the loose form (`strict=False`): a 16-digit number that fails Luhn is still masked there,
because hiding one order number too many from a log costs nothing.

Boundaries are ASCII: Python's `\\w` is Unicode, so `(?<!\\w)` refuses a number written right after
Chinese text (`我的卡号是6222...`), the case the old log masker missed.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

KINDS = ("api_key", "email", "id_card", "phone", "bank_card")

_B = r"(?<![0-9A-Za-z_])"  # not inside an ASCII word or number
_E = r"(?![0-9A-Za-z_])"
# A separator between digit groups: space, hyphen or dot (never a newline: two numbers on two lines).
_S = r"[ \-.]?"


def luhn_ok(digits: str) -> bool:
    total = 0
    for i, char in enumerate(reversed(digits)):
        value = int(char)
        if i % 2:
            value = value * 2 - 9 if value > 4 else value * 2
        total += value
    return total % 10 == 0


_ID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_ID_CHECK = "10X98765432"


def resident_id_ok(value: str) -> bool:
    """GB 11643-1999: the 18th character is a check over the first 17 digits (mod 11)."""
    value = value.upper()
    total = sum(int(c) * w for c, w in zip(value[:17], _ID_WEIGHTS, strict=True))
    return _ID_CHECK[total % 11] == value[17]


def _digits(text: str) -> str:
    return re.sub(r"\D", "", text)


@dataclass(frozen=True)
class Detector:
    kind: str
    pattern: re.Pattern[str]
    # Checked only in strict mode: the value could be real, not just of the right shape.
    check: Callable[[str], bool] = field(default=lambda _: True)
    # Checked always: rules out shapes the pattern cannot (a digit count, say).
    shape: Callable[[str], bool] = field(default=lambda _: True)


DETECTORS: tuple[Detector, ...] = (
    # Secrets first: a token can contain digit runs that would otherwise be taken for a phone.
    Detector(
        "api_key",
        re.compile(
            "|".join(
                (
                    r"\bsk-(?:proj-|ant-|live-|test-)?[A-Za-z0-9_\-]{16,}",  # OpenAI / Anthropic / Stripe style
                    r"\b[tua]-[A-Za-z0-9_]{24,}",  # Feishu tenant / user / app access tokens (t-g104...)
                    r"(?<![0-9])\d{6,12}:[A-Za-z0-9_\-]{30,}",  # Telegram bot token
                    r"\bgh[pousr]_[A-Za-z0-9]{30,}",  # GitHub
                    r"\bAKIA[0-9A-Z]{16}\b",  # AWS access key id
                    r"\bxox[abprs]-[A-Za-z0-9\-]{10,}",  # Slack
                    r"\beyJ[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}",  # JWT
                    r"(?i:\bbearer\s+)[A-Za-z0-9._~+/\-]{16,}=*",  # an Authorization header's value
                )
            )
        ),
    ),
    Detector("email", re.compile(r"[A-Za-z0-9._%+\-]+@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)*\.[A-Za-z]{2,}")),
    Detector(
        "id_card",
        re.compile(_B + r"\d{6}(?:18|19|20)\d{2}(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01])\d{3}[\dXx]" + _E),
        check=resident_id_ok,
    ),
    # Phones before cards, or a long international number would be taken for a card number.
    Detector(
        "phone",
        re.compile(
            # Mainland China mobiles: 1[3-9]x xxxx xxxx, optionally +86 / 0086, separators allowed.
            _B
            + r"(?:(?:\+|00)86"
            + _S
            + r")?1[3-9]\d"
            + _S
            + r"\d{4}"
            + _S
            + r"\d{4}"
            + _E
            # International, written with a leading +: 8 to 15 digits in groups, brackets allowed.
            + r"|(?<![0-9A-Za-z_+])\+\d{1,3}(?:"
            + _S
            + r"\(?\d{1,5}\)?){2,6}"
            + _E
        ),
        shape=lambda v: 8 <= len(_digits(v)) <= 15 if v.startswith("+") else True,
    ),
    # Cards: 13-19 digits, contiguous or in groups (4-4-4-4, 4-6-5...). Not a digit run inside an
    # identifier (`tg-123456-100000002`, a Telegram group id `-1001234567890`).
    Detector(
        "bank_card",
        re.compile(r"(?<![0-9A-Za-z_\-])\d{4}(?:[ \-]?\d{2,6}){2,4}(?![0-9A-Za-z_\-])"),
        check=lambda v: luhn_ok(_digits(v)),
        shape=lambda v: 13 <= len(_digits(v)) <= 19,
    ),
)


@dataclass(frozen=True)
class Found:
    kind: str
    start: int
    end: int
    value: str


def find(text: str, kinds: Iterable[str] = KINDS, *, strict: bool = True) -> list[Found]:
    """Every detected value, in text order, none overlapping (the earlier detector in DETECTORS wins)."""
    wanted = set(kinds)
    taken: list[Found] = []
    for detector in DETECTORS:
        if detector.kind not in wanted:
            continue
        for match in detector.pattern.finditer(text):
            value = match.group(0)
            if not detector.shape(value) or (strict and not detector.check(value)):
                continue
            if any(match.start() < f.end and f.start < match.end() for f in taken):
                continue
            taken.append(Found(detector.kind, match.start(), match.end(), value))
    return sorted(taken, key=lambda f: f.start)


def replace(text: str, found: list[Found], by: Callable[[Found], str]) -> str:
    pieces, last = [], 0
    for item in found:
        pieces += [text[last : item.start], by(item)]
        last = item.end
    pieces.append(text[last:])
    return "".join(pieces)


LOG_MARKERS = {
    "api_key": "[secret]",
    "email": "[email]",
    "id_card": "[id-card]",
    "bank_card": "[card]",
    "phone": "[phone]",
}


def mask_for_logs(text: str) -> str:
    """Every value any detector sees, loosely (no check digits), replaced by a marker."""
    found = find(text, strict=False)
    return replace(text, found, lambda f: LOG_MARKERS[f.kind]) if found else text


# ---------------------------------------------------------------- placeholders for the model

_LABELS = {"api_key": "KEY", "email": "EMAIL", "id_card": "ID", "bank_card": "CARD", "phone": "PHONE"}
_PLACEHOLDER = re.compile(r"\[?\b(KEY|EMAIL|ID|CARD|PHONE)_([0-9a-f]{8})\b\]?")


@dataclass(frozen=True)
class Masked:
    text: str
    # placeholder -> the value it stands for; kept in memory for one message, never stored.
    values: dict[str, str]

    @property
    def kinds(self) -> list[str]:
        labels = {v: k for k, v in _LABELS.items()}
        return sorted({labels[p.strip("[]").split("_", 1)[0]] for p in self.values})


def placeholder(kind: str, value: str, key: bytes, scope: str) -> str:
    """`[PHONE_1a2b3c4d]`: the same value gets the same placeholder in the same conversation (so
    the model can tell two numbers apart and refer back to one), and the tag is keyed, so it cannot
    be matched against a list of numbers without the deployment's key."""
    canonical = _digits(value) if kind in ("phone", "bank_card") else value.lower() if kind == "email" else value
    tag = hmac.new(key, f"{scope}\0{kind}\0{canonical}".encode(), hashlib.sha256).hexdigest()[:8]
    return f"[{_LABELS[kind]}_{tag}]"


def pseudonymize(text: str, kinds: Iterable[str], key: bytes, scope: str) -> Masked:
    found = find(text, kinds, strict=True)
    values: dict[str, str] = {}

    def by(item: Found) -> str:
        name = placeholder(item.kind, item.value, key, scope)
        values.setdefault(name, item.value)
        return name

    return Masked(replace(text, found, by), values)


def restore(text: str, values: dict[str, str]) -> str:
    """Put the values back where the model wrote their placeholders (with or without the brackets,
    which models sometimes drop). Placeholders of values not in `values` (from earlier messages,
    whose values were never kept) stay as they are."""
    if not values:
        return text

    def back(match: re.Match[str]) -> str:
        return values.get(f"[{match.group(1)}_{match.group(2)}]", match.group(0))

    return _PLACEHOLDER.sub(back, text)
