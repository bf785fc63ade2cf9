"""Decryption, signature, timestamp window and verification token, checked against Feishu's published
vector and against lark-oapi's own decryptor and dispatcher on the same input."""

from __future__ import annotations

import base64
import json
import time

import pytest
from lark_oapi.core.model import RawRequest
from lark_oapi.core.utils import AESCipher
from lark_oapi.event.dispatcher_handler import EventDispatcherHandler

from aibot_fakes.feishu import FakeFeishu, encrypt, sign
from aibot_ingress_feishu.security import (
    UNAUTHORIZED_REASON,
    Credentials,
    Refused,
    decrypt,
    open_callback,
    signature,
    verify_signature,
)

# Feishu's documented example: Encrypt Key "test key".
VECTOR_KEY = "test key"
VECTOR_CIPHERTEXT = "P37w+VZImNgPEO1RBhJ6RtKl7n6zymIbEG1pReEzghk="
KEY = "unit-encrypt-key"
TOKEN = "unit-verification-token"
CREDS = Credentials(verification_token=TOKEN, encrypt_key=KEY, timestamp_window_s=300)


def test_the_documented_vector_decrypts_to_hello_world() -> None:
    assert decrypt(VECTOR_CIPHERTEXT, VECTOR_KEY) == "hello world"
    assert AESCipher(VECTOR_KEY).decrypt_str(VECTOR_CIPHERTEXT) == "hello world"  # the SDK agrees


def test_what_the_fake_encrypts_the_sdk_and_we_decrypt_alike() -> None:
    plaintext = json.dumps({"schema": "2.0", "text": "你好, world"}, ensure_ascii=False)
    ciphertext = encrypt(plaintext, KEY)
    assert decrypt(ciphertext, KEY) == AESCipher(KEY).decrypt_str(ciphertext) == plaintext
    assert encrypt(plaintext, KEY) != ciphertext  # a fresh IV every time


@pytest.mark.parametrize(
    "ciphertext",
    ["", "not base64!!", "AAAA", VECTOR_CIPHERTEXT[:-4] + "AAA=", encrypt("x", "another key")],
)
def test_undecryptable_input_is_refused_as_a_bad_request(ciphertext: str) -> None:
    with pytest.raises(Refused) as refused:
        decrypt(ciphertext, VECTOR_KEY)
    assert refused.value.status == 400 and VECTOR_KEY not in refused.value.reason


def test_signature_matches_the_sdks_check_and_the_fakes_signer() -> None:
    body = json.dumps({"encrypt": encrypt('{"a": 1}', KEY)}).encode()
    timestamp, nonce = str(int(time.time())), "a1b2c3"
    ours = signature(timestamp, nonce, KEY, body)
    assert ours == sign(timestamp, nonce, KEY, body)
    request = RawRequest()
    request.body = body
    request.headers = {"X-Lark-Request-Timestamp": timestamp, "X-Lark-Request-Nonce": nonce, "X-Lark-Signature": ours}
    EventDispatcherHandler()._verify_sign(request, KEY)  # raises if lark-oapi disagrees
    verify_signature(request.headers, body, KEY, 300)


def _headers(body: bytes, *, timestamp: int | None = None, key: str = KEY) -> dict[str, str]:
    stamp = str(int(time.time()) if timestamp is None else timestamp)
    return {
        "X-Lark-Request-Timestamp": stamp,
        "X-Lark-Request-Nonce": "n0nce",
        "X-Lark-Signature": signature(stamp, "n0nce", key, body),
    }


def test_a_wrong_or_missing_signature_is_unauthorized() -> None:
    body = b'{"encrypt": "abc"}'
    for headers in (_headers(body, key="wrong key"), {}, {**_headers(body), "X-Lark-Request-Timestamp": "soon"}):
        with pytest.raises(Refused) as refused:
            verify_signature(headers, body, KEY, 300)
        assert refused.value.status == 401
    with pytest.raises(Refused, match="signature mismatch"):
        verify_signature(_headers(body), body + b" ", KEY, 300)  # the body was altered


def test_signed_requests_outside_the_window_are_replays() -> None:
    body = b"{}"
    now = time.time()
    verify_signature(_headers(body, timestamp=int(now) - 299), body, KEY, 300, now=now)
    with pytest.raises(Refused, match="outside the 300s window"):
        verify_signature(_headers(body, timestamp=int(now) - 301), body, KEY, 300, now=now)
    with pytest.raises(Refused, match="window"):
        verify_signature(_headers(body, timestamp=int(now) + 400), body, KEY, 300, now=now)


def _event(token: str = TOKEN) -> dict:
    return {
        "schema": "2.0",
        "header": {"event_id": "e1", "event_type": "im.message.receive_v1", "token": token},
        "event": {},
    }


def test_an_encrypted_signed_event_opens_to_its_plaintext() -> None:
    body = json.dumps({"encrypt": encrypt(json.dumps(_event()), KEY)}).encode()
    opened = open_callback(body, _headers(body), CREDS)
    assert opened.payload == _event() and opened.challenge is None


def test_the_verification_token_is_checked_in_both_schemas() -> None:
    plain = Credentials(verification_token=TOKEN, encrypt_key=None, timestamp_window_s=300)
    assert open_callback(json.dumps(_event()).encode(), {}, plain).payload["header"]["event_id"] == "e1"
    with pytest.raises(Refused, match="verification token"):
        open_callback(json.dumps(_event("stolen")).encode(), {}, plain)
    schema1 = {"uuid": "u1", "token": TOKEN, "ts": "1", "type": "event_callback", "event": {"type": "message"}}
    assert open_callback(json.dumps(schema1).encode(), {}, plain).payload["uuid"] == "u1"
    with pytest.raises(Refused):
        open_callback(json.dumps({**schema1, "token": "nope"}).encode(), {}, plain)
    # A schema 2.0 event must not pass on a top-level token: header.token is the one Feishu signs in.
    with pytest.raises(Refused):
        open_callback(json.dumps({**_event("x"), "token": TOKEN}).encode(), {}, plain)


def test_an_encrypted_event_needs_both_signature_and_token() -> None:
    body = json.dumps({"encrypt": encrypt(json.dumps(_event("stolen")), KEY)}).encode()
    with pytest.raises(Refused, match="verification token"):
        open_callback(body, _headers(body), CREDS)
    good = json.dumps({"encrypt": encrypt(json.dumps(_event()), KEY)}).encode()
    with pytest.raises(Refused, match="signature"):
        open_callback(good, {}, CREDS)
    # With an Encrypt Key configured, a plaintext event is still refused unless signed.
    plaintext = json.dumps(_event()).encode()
    with pytest.raises(Refused, match="signature"):
        open_callback(plaintext, {}, CREDS)
    assert open_callback(plaintext, _headers(plaintext), CREDS).payload == _event()


def test_url_verification_plain_and_encrypted_checks_the_token_not_the_signature() -> None:
    check = {"challenge": "ch-123", "token": TOKEN, "type": "url_verification"}
    plain = Credentials(verification_token=TOKEN, encrypt_key=None, timestamp_window_s=300)
    assert open_callback(json.dumps(check).encode(), {}, plain).challenge == "ch-123"
    encrypted = json.dumps({"encrypt": encrypt(json.dumps(check), KEY)}).encode()
    assert open_callback(encrypted, {}, CREDS).challenge == "ch-123"
    forged = json.dumps({"encrypt": encrypt(json.dumps({**check, "token": "guess"}), KEY)}).encode()
    with pytest.raises(Refused, match="verification token"):
        open_callback(forged, {}, CREDS)


def test_unsigned_bodies_that_are_not_feishu_events_are_unauthorized() -> None:
    # Not known to be Feishu's: the one uniform answer, not "bad request" (see the oracle test below).
    no_key = Credentials(verification_token=TOKEN, encrypt_key=None, timestamp_window_s=300)
    for creds in (CREDS, no_key):
        for body in (b"not json", b"[1, 2]", b'{"encrypt": 5}', b'{"encrypt": "abc"}'):
            with pytest.raises(Refused) as refused:
                open_callback(body, {}, creds)
            assert (refused.value.status, refused.value.reason) == (401, UNAUTHORIZED_REASON)


def test_signed_bodies_that_cannot_be_read_are_bad_requests() -> None:
    for body in (b"not json", b"[1, 2]", b'{"encrypt": 5}', json.dumps({"encrypt": encrypt("not json", KEY)}).encode()):
        with pytest.raises(Refused) as refused:
            open_callback(body, _headers(body), CREDS)
        assert refused.value.status == 400


def _unsigned_failures() -> dict[str, bytes]:
    """Unsigned requests that fail at each step Feishu's decryption path has."""
    good = json.dumps({"challenge": "c", "token": TOKEN, "type": "url_verification"})
    ciphertext = encrypt(good, KEY)
    raw = base64.b64decode(ciphertext)
    flipped = base64.b64encode(raw[:-1] + bytes([raw[-1] ^ 1])).decode()  # breaks the PKCS#7 padding
    return {
        "not base64": b'{"encrypt": "!!!"}',
        "bad padding": json.dumps({"encrypt": flipped}).encode(),
        "wrong key": json.dumps({"encrypt": encrypt(good, "another key")}).encode(),
        "not JSON inside": json.dumps({"encrypt": encrypt("not json", KEY)}).encode(),
        "not an object inside": json.dumps({"encrypt": encrypt("[1]", KEY)}).encode(),
        "wrong token": json.dumps({"encrypt": encrypt(good.replace(TOKEN, "guess"), KEY)}).encode(),
        "an event, unsigned": json.dumps({"encrypt": encrypt(json.dumps(_event()), KEY)}).encode(),
        "not JSON outside": b"garbage",
    }


def test_every_unauthenticated_failure_gets_one_answer_no_padding_oracle() -> None:
    answers = set()
    for name, body in _unsigned_failures().items():
        with pytest.raises(Refused) as refused:
            open_callback(body, {}, CREDS)
        answers.add((refused.value.status, refused.value.reason))
        assert refused.value.detail, name  # the log still says what went wrong
    assert answers == {(401, UNAUTHORIZED_REASON)}


async def test_the_http_answers_are_byte_identical(monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.unit.ingress_apps import FS_PATH, client, feishu_app

    app, producer = feishu_app(monkeypatch)
    async with client(app) as http:
        seen = set()
        for body in _unsigned_failures().values():
            response = await http.post(FS_PATH, content=body, headers={"Content-Type": "application/json"})
            seen.add((response.status_code, response.content, tuple(sorted(response.headers.items()))))
        bad_signature = await http.post(
            FS_PATH, content=b'{"encrypt": "abc"}', headers={**_headers(b"other"), "Content-Type": "application/json"}
        )
        seen.add((bad_signature.status_code, bad_signature.content, tuple(sorted(bad_signature.headers.items()))))
    assert len(seen) == 1, seen
    assert producer.records == []


def test_a_signed_request_is_verified_before_anything_is_decrypted(monkeypatch: pytest.MonkeyPatch) -> None:
    from aibot_ingress_feishu import security

    def no_decrypting(*_: object) -> str:
        raise AssertionError("decrypted before the signature and the replay window were checked")

    monkeypatch.setattr(security, "decrypt", no_decrypting)
    body = json.dumps({"encrypt": encrypt(json.dumps(_event()), KEY)}).encode()
    replayed = _headers(body, timestamp=int(time.time()) - 3600)
    for headers in (_headers(body, key="wrong key"), replayed, {**_headers(body), "X-Lark-Signature": "00"}):
        with pytest.raises(Refused) as refused:
            open_callback(body, headers, CREDS)
        assert (refused.value.status, refused.value.reason) == (401, UNAUTHORIZED_REASON)


def test_the_sdks_dispatcher_accepts_what_the_fake_sends() -> None:
    """The fake's events pass lark-oapi's own webhook checks, so tests against the fake mean something."""
    fake = FakeFeishu(encrypt_key=KEY, verification_token=TOKEN)
    received = []
    dispatcher = EventDispatcherHandler.builder(KEY, TOKEN).register_p2_im_message_receive_v1(received.append).build()
    event = {
        "schema": "2.0",
        "header": {"event_id": "e9", "event_type": "im.message.receive_v1", "token": TOKEN, "create_time": "1"},
        "event": {"message": {"message_id": "om_1", "content": '{"text": "hi"}'}},
    }
    request = RawRequest()
    request.body = fake.event_body(event)
    request.headers = fake.signed_headers(request.body)
    response = dispatcher.do(request)
    assert response.status_code == 200, response.content
    assert received[0].event.message.message_id == "om_1"
    assert open_callback(request.body, request.headers, CREDS).payload == event
