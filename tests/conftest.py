"""Fixtures shared by every test layer."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from aibot_common.testing.broker import APACHE_KAFKA_VERSION, test_broker, test_broker_kind


def pytest_report_header(config: pytest.Config) -> str:
    kind = test_broker_kind()
    detail = {"apache-kafka": f"Apache Kafka {APACHE_KAFKA_VERSION} from .kafka/libs", "embedded": "embedded Tansu"}
    return f"kafka broker: {detail.get(kind, kind)}"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests that kill or restart a service of the shared pipeline run after all the others, so no
    other test meets a pipeline that is recovering; the order no longer rests on file names."""
    items.sort(key=lambda item: item.get_closest_marker("disrupts_pipeline") is not None)


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    """One broker per test session: a given cluster, testcontainers, Apache Kafka from the fetched jars,
    or the embedded broker (`aibot_common.testing.broker.test_broker`)."""
    with test_broker() as bootstrap:
        yield bootstrap


@pytest.fixture
def unique() -> str:
    """A fresh suffix for topic and group names, so tests never see each other's records."""
    return uuid.uuid4().hex[:10]
