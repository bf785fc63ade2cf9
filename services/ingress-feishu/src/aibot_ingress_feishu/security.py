"""Is this request really from Feishu? Decryption, signature, timestamp window and verification token.

Decryption is lark-oapi's `AESCipher` (AES-256-CBC, key = SHA-256 of the Encrypt Key, IV = the first
16 bytes, PKCS#7 checked). The signature check is written here because the SDK's
`EventDispatcherHandler._verify_sign` compares with `!=` (not constant-time) and has no timestamp
window, so a captured request could be replayed forever; its token check is a private method, so the
same constant-time comparison is done here. Reasons given to the caller never contain a secret.
"""

from __future__ import annotations

import binascii
import hashlib
import hmac
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from lark_oapi.core.const import LARK_REQUEST_NONCE, LARK_REQUEST_SIGNATURE, LARK_REQUEST_TIMESTAMP
from lark_oapi.core.utils import AESCipher

URL_VERIFICATION = "url_verification"


class Refused(Exception):
    """The request is not from Feishu (401) or cannot be read (400). `reason` is the answer's text;
    `detail` (the exception's message) says more, for the log only. Both are safe to log."""

    def __init__(self, status: int, reason: str, detail: str | None = None) -> None:
        super().__init__(detail or reason)
        self.status = status
        self.reason = reason
        self.detail = detail or reason


# The one answer to every request not (yet) known to be Feishu's, whatever went wrong.
UNAUTHORIZED_REASON = "unauthorized"


def unauthorized(detail: str) -> Refused:
    return Refused(401, UNAUTHORIZED_REASON, detail)


@dataclass(frozen=True)
class Credentials:
    verification_token: str
    encrypt_key: str | None
    timestamp_window_s: int


@dataclass(frozen=True)
class Opened:
    """A verified callback: the URL check's challenge, or an event's plaintext JSON."""

    payload: dict[str, Any]

    @property
    def challenge(self) -> str | None:
        if self.payload.get("type") == URL_VERIFICATION:
            challenge = self.payload.get("challenge")
            return challenge if isinstance(challenge, str) else ""
        return None


def decrypt(encrypted: str, encrypt_key: str) -> str:
    """Feishu's `{"encrypt": ...}` -> the plaintext JSON string. Raises Refused(400) if it cannot."""
    try:
        return AESCipher(encrypt_key).decrypt_str(encrypted)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        # Wrong key, truncated data, bad padding: indistinguishable from outside, and all mean "not ours".
        raise Refused(400, "cannot decrypt the event (wrong Encrypt Key, or not from Feishu)") from None


def signature(timestamp: str, nonce: str, encrypt_key: str, body: bytes) -> str:
    """X-Lark-Signature: hex SHA-256 of timestamp + nonce + encrypt_key, then the raw body bytes."""
    return hashlib.sha256((timestamp + nonce + encrypt_key).encode() + body).hexdigest()


def verify_signature(
    headers: Mapping[str, str], body: bytes, encrypt_key: str, window_s: int, now: float | None = None
) -> None:
    timestamp = headers.get(LARK_REQUEST_TIMESTAMP) or headers.get(LARK_REQUEST_TIMESTAMP.lower())
    nonce = headers.get(LARK_REQUEST_NONCE) or headers.get(LARK_REQUEST_NONCE.lower())
    given = headers.get(LARK_REQUEST_SIGNATURE) or headers.get(LARK_REQUEST_SIGNATURE.lower())
    if not timestamp or nonce is None or not given:
        raise unauthorized("signature headers missing (X-Lark-Request-Timestamp/Nonce, X-Lark-Signature)")
    try:
        sent_at = int(timestamp)
    except ValueError:
        raise unauthorized("X-Lark-Request-Timestamp is not a number") from None
    expected = signature(timestamp, nonce, encrypt_key, body)
    if not hmac.compare_digest(expected.encode(), given.strip().lower().encode()):
        raise unauthorized("signature mismatch (wrong Encrypt Key, or the body was altered)")
    # Checked after the signature, so the timestamp itself is known to be Feishu's.
    age = (time.time() if now is None else now) - sent_at
    if abs(age) > window_s:
        raise unauthorized(f"signed {int(age)}s ago, outside the {window_s}s window (a replay?)")


def verify_token(payload: dict[str, Any], expected: str) -> None:
    """Schema 2.0 carries the token in header.token; schema 1.0 and the URL check at the top level."""
    header = payload.get("header")
    token = header.get("token") if isinstance(header, dict) and "schema" in payload else payload.get("token")
    if not isinstance(token, str) or not hmac.compare_digest(token.encode(), expected.encode()):
        raise unauthorized("verification token mismatch")


def _parse(body: bytes, encrypt_key: str | None) -> dict[str, Any]:
    """The body's event JSON, decrypted if it came as `{"encrypt": ...}`. Raises Refused(400)."""
    try:
        outer = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise Refused(400, "body is not JSON") from None
    if not isinstance(outer, dict):
        raise Refused(400, "body is not a JSON object")
    encrypted = outer.get("encrypt")
    if encrypted is None:
        return outer
    if not encrypt_key:
        raise Refused(400, "encrypted event but no feishu.encrypt_key is configured")
    if not isinstance(encrypted, str):
        raise Refused(400, "'encrypt' is not a string")
    try:
        payload = json.loads(decrypt(encrypted, encrypt_key))
    except ValueError:
        raise Refused(400, "decrypted event is not JSON") from None
    if not isinstance(payload, dict):
        raise Refused(400, "decrypted event is not a JSON object")
    return payload


def _signed(headers: Mapping[str, str]) -> bool:
    return any(headers.get(h) or headers.get(h.lower()) for h in (LARK_REQUEST_SIGNATURE, LARK_REQUEST_TIMESTAMP))


def open_callback(
    body: bytes, headers: Mapping[str, str], credentials: Credentials, now: float | None = None
) -> Opened:
    """Everything Feishu's own SDK checks, plus a timestamp window; the verified plaintext payload.

    Nothing is decrypted or parsed before the request is authenticated where it can be: with an
    Encrypt Key, a signed request's signature and timestamp window are checked on the raw bytes
    first. Until the request is known to be Feishu's, every failure gets one answer, `UNAUTHORIZED`
    (the detail goes to the log only): "cannot decrypt" and "not JSON" told apart would be a padding
    oracle that decrypts a captured ciphertext without the key.

    The URL check carries no signature (Feishu sends it before the app is saved), so an unsigned
    request is accepted only as a URL check with the right verification token, like the SDK does.
    """
    key = credentials.encrypt_key
    if key and _signed(headers):
        verify_signature(headers, body, key, credentials.timestamp_window_s, now)
        payload = _parse(body, key)  # signed by Feishu: a failure now is a real 400
        verify_token(payload, credentials.verification_token)
        return Opened(payload)
    try:
        payload = _parse(body, key)
    except Refused as exc:
        raise unauthorized(exc.detail) from None
    opened = Opened(payload)
    if key and opened.challenge is None:
        raise unauthorized("unsigned event: signature headers missing (X-Lark-Request-Timestamp, X-Lark-Signature)")
    verify_token(payload, credentials.verification_token)
    return opened
