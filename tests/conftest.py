"""Fixtures shared by every test layer."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from aibot_common.testing.broker import test_broker


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    """One broker per test session (a given cluster, testcontainers, or the embedded broker)."""
    with test_broker() as bootstrap:
        yield bootstrap


@pytest.fixture
def unique() -> str:
    """A fresh suffix for topic and group names, so tests never see each other's records."""
    return uuid.uuid4().hex[:10]
