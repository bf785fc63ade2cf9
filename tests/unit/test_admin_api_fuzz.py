"""The admin API fuzzed from its own OpenAPI document (schemathesis): every operation, generated
paths, queries and bodies, with an admin token, a lower role's token and none. Never a 5xx, never
more than the fixed 401/403 bodies to a caller without the role, and the API still answers."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.python import asgi as schemathesis_asgi

from aibot_common import access
from aibot_common.access import Role
from aibot_common.settings import AccessSettings, KafkaSettings, RateLimitSettings, SecuritySettings
from aibot_core_llm.admin_api import create_admin_app
from aibot_core_llm.quota import UsageCounter
from tests.unit.access_helpers import MemoryStore

TOKENS = {role: access.new_token() for role in Role}
EXAMPLES = 25  # per operation and caller: about 1000 requests in all, in seconds


@pytest.fixture(scope="module", autouse=True)
def _stop_schemathesis_lifespans() -> Iterator[None]:
    yield
    schemathesis_asgi.shutdown_lifespans()


async def _admin_app() -> tuple[Any, MemoryStore]:
    store = MemoryStore(AccessSettings.model_validate({"policy": {"telegram": {"private": "pairing"}}}))
    for role, token in TOKENS.items():
        await store.write(access.create_token("cli:test", token, role, f"{role.value}-token"))
    # Thousands of requests from one address: the per-IP limit (tested on its own) would answer most.
    unlimited = SecuritySettings(rate_limit=RateLimitSettings(enabled=False))
    usage = UsageCounter(KafkaSettings(), None, "test")
    return create_admin_app(store, usage, ("main", "other"), lambda: True, unlimited), store


@pytest.mark.parametrize("caller", [Role.ADMIN, Role.USER, None], ids=["admin", "user", "no-token"])
async def test_the_admin_api_answers_every_generated_request_without_a_5xx(caller: Role | None) -> None:
    app, _ = await _admin_app()
    schema = schemathesis.openapi.from_dict(app.openapi())
    headers = {"Authorization": f"Bearer {TOKENS[caller]}"} if caller else {}
    statuses: dict[int, int] = {}
    for result in schema.get_all_operations():
        operation = result.ok()

        @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        @given(operation.as_strategy())
        def check(case: Any) -> None:
            response = case.call(app=app, headers=headers)
            statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
            assert response.status_code < 500, f"{case.method} {case.formatted_path}: {response.status_code}"
            if (
                caller is None
                and case.path != "/openapi.json"
                and not case.path.endswith(("healthz", "readyz", "metrics"))
            ):
                assert response.status_code == 401 and response.json() == {"detail": "unauthorized"}

        check()
    print(f"admin API schemathesis ({caller}): {sum(statuses.values())} requests, statuses {statuses}")
    assert sum(statuses.values()) >= EXAMPLES
    if caller is Role.ADMIN:
        assert any(200 <= s < 300 for s in statuses)  # some generated calls were valid and done
