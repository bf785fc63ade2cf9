"""Malformed input is a 4xx, never a 5xx, and nothing is published for it: property-based fuzzing of
both ingresses with hypothesis (structured mutations of real updates and events, and raw bytes), and
schemathesis generating from each HTTP service's OpenAPI document. Each service must still answer
afterwards. Thousands of requests, in-process (no broker), in well under a minute."""

from __future__ import annotations

import contextlib
import copy
import json
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import REGISTRY
from schemathesis.python import asgi as schemathesis_asgi

from tests.unit.ingress_apps import (
    FS_PATH,
    TG_PATH,
    StubProducer,
    SyncApp,
    feishu_app,
    feishu_event,
    feishu_signed,
    telegram_app,
    telegram_headers,
    telegram_update,
    unlimited,
)

EXAMPLES = 500  # per strategy, four strategies, plus schemathesis: thousands of requests in the file
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=True) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=8,
)


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every key path in a JSON document: the places a mutation may hit."""
    found = [prefix] if prefix else []
    if isinstance(value, dict):
        for key, child in value.items():
            found += _paths(child, (*prefix, key))
    return found


def _set(document: Any, path: tuple[Any, ...], value: Any) -> Any:
    """Set in place (the caller owns a copy); returns the document."""
    target = document
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return document


def mutations(valid: dict[str, Any], extra_keys: list[str]) -> st.SearchStrategy[Any]:
    """A valid document with one to three fields replaced by any JSON value (or new fields added)."""
    paths = _paths(valid) + [(k,) for k in extra_keys]

    @st.composite
    def mutate(draw: st.DrawFn) -> Any:
        document = copy.deepcopy(valid)
        for _ in range(draw(st.integers(1, 3))):
            path = draw(st.sampled_from(paths))
            value = draw(json_values)
            with contextlib.suppress(KeyError, TypeError):  # an earlier mutation replaced a parent
                document = _set(document, path, value)
        return document

    return mutate()


TELEGRAM_EXTRA = ["edited_message", "callback_query", "channel_post", "message_reaction", "poll", "my_chat_member"]
FEISHU_EXTRA = ["uuid", "type", "challenge", "token", "encrypt"]


def _with_message_extras(update: dict[str, Any]) -> dict[str, Any]:
    """A valid update that also has the fields whose types are most often wrong in the wild."""
    message = update["message"]
    message.update(
        entities=[{"type": "bold", "offset": 0, "length": 1}],
        reply_to_message={"message_id": 1, "date": 1, "chat": {"id": 77, "type": "private"}},
        voice={"file_id": "F", "file_unique_id": "U", "duration": 3},
        photo=[{"file_id": "P", "file_unique_id": "PU", "width": 1, "height": 1}],
    )
    return update


def _counted(platform: str, outcome: str) -> float:
    return REGISTRY.get_sample_value("aibot_ingress_events_total", {"platform": platform, "outcome": outcome}) or 0.0


@pytest.fixture(scope="module")
def telegram() -> Iterator[tuple[SyncApp, StubProducer]]:
    with pytest.MonkeyPatch.context() as monkeypatch:
        app, producer = telegram_app(monkeypatch, unlimited())
        client = SyncApp(app)
        yield client, producer
        client.close()


@pytest.fixture(scope="module")
def feishu() -> Iterator[tuple[SyncApp, StubProducer]]:
    with pytest.MonkeyPatch.context() as monkeypatch:
        app, producer = feishu_app(monkeypatch, unlimited())
        client = SyncApp(app)
        yield client, producer
        client.close()


class Tally:
    def __init__(self) -> None:
        self.statuses: dict[int, int] = {}

    def add(self, status: int) -> None:
        self.statuses[status] = self.statuses.get(status, 0) + 1
        assert status < 500, f"answered {status}"


def _post_telegram(client: SyncApp, producer: StubProducer, body: bytes, tally: Tally) -> None:
    published = len(producer.records)
    response = client.post(TG_PATH, body, telegram_headers())
    tally.add(response.status_code)
    if response.status_code != 200:
        assert len(producer.records) == published, "published something for a refused update"


def test_malformed_telegram_updates_are_4xx_and_counted(telegram: tuple[SyncApp, StubProducer]) -> None:
    client, producer = telegram
    tally = Tally()
    malformed_before = _counted("telegram", "malformed")

    @FUZZ
    @given(mutations(_with_message_extras(telegram_update()), TELEGRAM_EXTRA))
    def structured(update: Any) -> None:
        _post_telegram(client, producer, json.dumps(update).encode(), tally)

    @FUZZ
    @given(st.binary(max_size=200) | json_values.map(lambda v: json.dumps(v).encode()))
    def raw(body: bytes) -> None:
        _post_telegram(client, producer, body, tally)

    structured()
    raw()
    assert sum(tally.statuses.values()) >= 2 * EXAMPLES * 0.9
    assert tally.statuses.get(400, 0) > 0 and tally.statuses.get(200, 0) > 0
    assert _counted("telegram", "malformed") - malformed_before == tally.statuses[400]
    # Still answering, and still taking real updates.
    assert client.get("/healthz").status_code == 200
    before = len(producer.records)
    assert client.post(TG_PATH, json.dumps(telegram_update(999_999)).encode(), telegram_headers()).status_code == 200
    assert len(producer.records) == before + 1


def test_a_non_string_feishu_content_is_a_400_not_a_500(feishu: tuple[SyncApp, StubProducer]) -> None:
    client, producer = feishu
    for content in ({"text": "hi"}, 5, ["a"], True):
        body, headers = feishu_signed(feishu_event(f"c-{content!r}", content=content))
        before = len(producer.records)
        assert client.post(FS_PATH, body, headers).status_code == 400
        assert len(producer.records) == before


def test_malformed_feishu_events_are_4xx_and_counted(feishu: tuple[SyncApp, StubProducer]) -> None:
    client, producer = feishu
    tally = Tally()
    malformed_before = _counted("feishu", "malformed")

    def post(body: bytes, headers: dict[str, str]) -> None:
        published = len(producer.records)
        response = client.post(FS_PATH, body, headers)
        tally.add(response.status_code)
        if response.status_code != 200:
            assert len(producer.records) == published

    @FUZZ
    @given(mutations(feishu_event(), FEISHU_EXTRA), st.booleans())
    def signed(event: Any, encrypted: bool) -> None:
        post(*feishu_signed(event, encrypted=encrypted))

    @FUZZ
    @given(st.binary(max_size=200) | json_values.map(lambda v: json.dumps(v).encode()))
    def unsigned(body: bytes) -> None:
        before = tally.statuses.get(401, 0)
        post(body, {"Content-Type": "application/json"})
        assert tally.statuses.get(401, 0) == before + 1  # never past authentication

    signed()
    unsigned()
    assert tally.statuses.get(400, 0) > 0 and tally.statuses.get(200, 0) > 0
    assert _counted("feishu", "malformed") - malformed_before == tally.statuses[400]
    assert client.get("/healthz").status_code == 200
    before = len(producer.records)
    body, headers = feishu_signed(feishu_event("after-fuzz"))
    assert client.post(FS_PATH, body, headers).status_code == 200
    assert len(producer.records) > before


# ---------------------------------------------------------------- schemathesis, from the OpenAPI documents


def _not_a_server_error(response_status: int, tally: Tally) -> None:
    tally.add(response_status)


@pytest.fixture(scope="module", autouse=True)
def _stop_schemathesis_lifespans() -> Iterator[None]:
    yield
    schemathesis_asgi.shutdown_lifespans()


def _schema_test(app: Any, prepare: Any, examples: int) -> Tally:
    """Every operation of the app's OpenAPI document, `examples` generated requests each, sent by
    schemathesis into the app (its lifespan running), each answer checked to be no 5xx."""
    schema = schemathesis.openapi.from_dict(app.openapi())
    schema.app = app
    tally = Tally()
    for result in schema.get_all_operations():
        operation = result.ok()

        @settings(max_examples=examples, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        @given(operation.as_strategy())
        def check(case: Any) -> None:
            response = case.call(app=app, **prepare(case))
            _not_a_server_error(response.status_code, tally)

        check()
    return tally


def test_schemathesis_telegram(monkeypatch: pytest.MonkeyPatch) -> None:
    app, producer = telegram_app(monkeypatch, unlimited())

    def prepare(case: Any) -> dict[str, Any]:
        # Half with the right secret, so the bodies reach the parser; half as generated.
        if case.path == TG_PATH and hash(json.dumps(case.body, default=str)) % 2 == 0:
            return {"headers": telegram_headers()}
        return {}

    tally = _schema_test(app, prepare, 100)
    assert sum(tally.statuses.values()) >= 100
    assert tally.statuses.get(200, 0) > 0
    assert producer.records


def test_schemathesis_feishu(monkeypatch: pytest.MonkeyPatch) -> None:
    app, _ = feishu_app(monkeypatch, unlimited())

    def prepare(case: Any) -> dict[str, Any]:
        if case.path == FS_PATH and isinstance(case.body, dict) and "encrypt" not in case.body:
            # Sign (and encrypt) the generated event as Feishu would, so it gets past authentication.
            # schemathesis serializes the body as json.dumps does, the bytes the signature covers.
            body, headers = feishu_signed(case.body)
            case.body = json.loads(body)
            return {"headers": headers}
        return {}

    tally = _schema_test(app, prepare, 100)
    assert sum(tally.statuses.values()) >= 100
