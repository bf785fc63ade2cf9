"""The admin API over ASGI: tokens by role, fixed 401/403 bodies, audited calls, bindings, pairing,
policy, chats and usage."""

from __future__ import annotations

import httpx
import pytest

from aibot_common import access
from aibot_common.access import Role
from aibot_common.settings import AccessSettings, KafkaSettings
from aibot_core_llm.admin_api import create_admin_app
from aibot_core_llm.quota import UsageCounter
from tests.unit.access_helpers import MemoryStore

TOKENS = {role: access.new_token() for role in Role}


@pytest.fixture
async def api() -> tuple[httpx.AsyncClient, MemoryStore, UsageCounter]:
    store = MemoryStore(AccessSettings.model_validate({"policy": {"telegram": {"private": "pairing"}}}))
    for role, token in TOKENS.items():
        await store.write(access.create_token("cli:test", token, role, f"{role.value}-token"))
    usage = UsageCounter(KafkaSettings(), None, "test")
    app = create_admin_app(store, usage, ("main", "other"), lambda: True)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://admin") as client:
        yield client, store, usage


def auth(role: Role) -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKENS[role]}"}


async def test_no_token_or_a_wrong_one_is_401_and_says_nothing_more(api) -> None:
    client, _, _ = api
    for headers in ({}, {"Authorization": "Bearer aibot_nope"}, {"Authorization": "Basic eDp5"}):
        for path in ("/v1/bindings", "/v1/usage/telegram:1", "/v1/usage/telegram:does-not-exist"):
            response = await client.get(path, headers=headers)
            assert response.status_code == 401 and response.json() == {"detail": "unauthorized"}


async def test_a_lower_role_is_403_whatever_the_resource(api) -> None:
    client, store, _ = api
    audit_before = len(store.state.audit)
    for path in ("/v1/usage/telegram:1", "/v1/usage/telegram:nobody", "/v1/pairings"):
        response = await client.get(path, headers=auth(Role.DEVELOPER))
        assert response.status_code == 403 and response.json() == {"detail": "forbidden"}
    response = await client.post("/v1/pairings/NOSUCH/approve", headers=auth(Role.USER))
    assert response.status_code == 403 and response.json() == {"detail": "forbidden"}
    assert len(store.state.audit) == audit_before  # refused calls write nothing to the topic


async def test_bindings_are_put_listed_and_deleted_with_audit(api) -> None:
    client, store, _ = api
    response = await client.put(
        "/v1/bindings", json={"subject": "telegram:9", "role": "developer"}, headers=auth(Role.ADMIN)
    )
    assert response.status_code == 200
    listed = (await client.get("/v1/bindings", headers=auth(Role.ADMIN))).json()
    assert {"subject": "telegram:9", "role": "developer", "chat": None} in listed
    assert (await client.delete("/v1/bindings/telegram:9", headers=auth(Role.ADMIN))).status_code == 204
    assert (await client.delete("/v1/bindings/telegram:9", headers=auth(Role.ADMIN))).status_code == 404
    bad = await client.put("/v1/bindings", json={"subject": "nobody", "role": "user"}, headers=auth(Role.ADMIN))
    assert bad.status_code == 422
    actions = [(e["actor"], e["action"], e["target"]) for e in store.state.audit if e["action"] != "token"]
    assert ("token:admin-token", "grant", "telegram:9") in actions
    assert ("token:admin-token", "read", "bindings") in actions
    assert ("token:admin-token", "revoke", "telegram:9") in actions


async def test_a_pairing_request_is_listed_and_approved(api) -> None:
    client, store, _ = api
    await store.write(access.notice("telegram:99", "telegram:99", "tg-1", "ABCD2345", 3600))
    (request,) = (await client.get("/v1/pairings", headers=auth(Role.ADMIN))).json()
    assert request["code"] == "ABCD2345" and request["subject"] == "telegram:99"
    response = await client.post("/v1/pairings/abcd2345/approve", headers=auth(Role.ADMIN))
    assert response.json() == {"subject": "telegram:99", "role": "user", "chat": None}
    assert store.state.bound_role("telegram:99", "telegram:99") is Role.USER
    assert (await client.post("/v1/pairings/ABCD2345/approve", headers=auth(Role.ADMIN))).status_code == 404


async def test_policy_and_chats_and_usage(api) -> None:
    client, store, usage = api
    policy = (await client.get("/v1/policy", headers=auth(Role.ADMIN))).json()
    assert policy["policy"]["telegram"] == {"private": "pairing", "group": "open"}
    response = await client.put("/v1/policy/telegram/group", json={"mode": "allowlist"}, headers=auth(Role.ADMIN))
    assert response.status_code == 200 and store.state.mode("telegram", access.ChatType.GROUP) == "allowlist"
    chat = await client.put("/v1/chats/telegram:5", json={"model": "other"}, headers=auth(Role.DEVELOPER))
    assert chat.json() == {"model": "other", "system_prompt": None}
    wrong = await client.put("/v1/chats/telegram:5", json={"model": "gpt-9"}, headers=auth(Role.DEVELOPER))
    assert wrong.status_code == 422
    await usage.add(["telegram:7", "chat:telegram:7"], tokens=120)
    figures = (await client.get("/v1/usage/telegram:7", headers=auth(Role.ADMIN))).json()
    assert figures == {"messages": 1, "tokens": 120}
    assert (await client.get("/v1/whoami", headers=auth(Role.USER))).json() == {"token": "user-token", "role": "user"}


async def test_the_openapi_spec_is_published(api) -> None:
    client, _, _ = api
    spec = (await client.get("/openapi.json")).json()
    assert {"/v1/bindings", "/v1/pairings/{code}/approve", "/v1/policy", "/v1/usage/{subject}"} <= set(spec["paths"])
    assert "HTTPBearer" in spec["components"]["securitySchemes"]


async def test_reload_applies_the_config_files_access_block(api, tmp_path, monkeypatch) -> None:
    client, store, _ = api
    config = tmp_path / "config.yaml"
    config.write_text("access:\n  bindings:\n    - {subject: 'telegram:55', role: developer}\n")
    monkeypatch.setenv("AIBOT_CONFIG", str(config))
    assert (await client.post("/v1/reload", headers=auth(Role.DEVELOPER))).status_code == 403
    response = await client.post("/v1/reload", headers=auth(Role.ADMIN))
    assert response.status_code == 200 and "grant telegram:55" in response.json()["result"]
    assert store.state.bindings()[("telegram:55", None)] is Role.DEVELOPER
    config.write_text("access: {group_members: perhaps}\n")
    broken = await client.post("/v1/reload", headers=auth(Role.ADMIN))
    assert broken.status_code == 422 and "access.group_members" in broken.json()["detail"]
