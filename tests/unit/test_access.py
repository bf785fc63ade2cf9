"""The access model: roles, the config seed under the topic's records, the policy's decisions."""

from __future__ import annotations

import time

import pytest

from aibot_common import access
from aibot_common.access import AccessState, Role, hash_token, valid_subject
from aibot_common.envelope import Platform
from aibot_common.settings import AccessSettings, ConfigError, load_settings
from tests.unit.access_helpers import MemoryStore, text


def settings(**kwargs: object) -> AccessSettings:
    return AccessSettings.model_validate(kwargs)


def test_a_role_implies_the_ones_below_it() -> None:
    assert Role.ADMIN.implies(Role.DEVELOPER) and Role.ADMIN.implies(Role.USER)
    assert Role.DEVELOPER.implies(Role.USER) and not Role.DEVELOPER.implies(Role.ADMIN)
    assert not Role.USER.implies(Role.DEVELOPER)


def test_without_an_access_block_everyone_may_talk_as_a_user() -> None:
    state = AccessState()
    for envelope in (text("hi"), text("hi", chat="-100", group=True)):
        decision = state.decide(envelope)
        assert decision.allowed and decision.role is Role.USER and not decision.bound


def test_allowlist_refuses_strangers_and_lets_seeded_bindings_in() -> None:
    admin = [{"subject": "telegram:7", "role": "admin"}]
    seeded = settings(policy={"telegram": {"private": "allowlist"}}, bindings=admin)
    state = AccessState(seed=seeded)
    assert state.decide(text("hi", user="8")).reason == "allowlist"
    decision = state.decide(text("hi", user="7"))
    assert decision.allowed and decision.role is Role.ADMIN and decision.bound
    # Feishu keeps its own (default, open) policy.
    assert state.decide(text("hi", user="ou_1", platform=Platform.FEISHU)).allowed


async def test_a_revoke_overrides_a_binding_seeded_from_the_config_file() -> None:
    store = MemoryStore(
        settings(policy={"telegram": {"private": "allowlist"}}, bindings=[{"subject": "telegram:7", "role": "user"}])
    )
    await store.write(access.revoke("telegram:1", "telegram:7"))
    assert not store.state.decide(text("hi", user="7")).allowed
    await store.write(access.grant("telegram:1", "telegram:7", Role.DEVELOPER))
    assert store.state.decide(text("hi", user="7")).role is Role.DEVELOPER


async def test_every_change_is_audited_with_who_what_when() -> None:
    store = MemoryStore()
    await store.write(access.grant("token:ops", "telegram:9", Role.DEVELOPER, chat="telegram:-100"))
    (entry,) = store.state.audit
    assert entry["actor"] == "token:ops" and entry["action"] == "grant" and entry["target"] == "telegram:9"
    assert entry["detail"] == {"role": "developer", "chat": "telegram:-100"} and entry["at"].startswith("20")


async def test_groups_served_by_policy_or_by_a_chat_binding_and_members_any_or_bound() -> None:
    closed = settings(policy={"telegram": {"group": "allowlist"}})
    store = MemoryStore(closed)
    assert store.state.decide(text("hi", chat="-100", group=True)).reason == "group"
    await store.write(access.grant("admin", "chat:telegram:-100", Role.USER))
    member = store.state.decide(text("hi", chat="-100", group=True))
    assert member.allowed and member.role is Role.USER and not member.bound

    only_bound = MemoryStore(settings(policy={"telegram": {"group": "allowlist"}}, group_members="bound"))
    await only_bound.write(access.grant("admin", "chat:telegram:-100", Role.USER))
    assert not only_bound.state.decide(text("hi", chat="-100", group=True)).allowed
    await only_bound.write(access.grant("admin", "telegram:42", Role.USER, chat="telegram:-100"))
    assert only_bound.state.decide(text("hi", chat="-100", group=True)).bound


async def test_pairing_requests_expire_and_approval_binds_the_user() -> None:
    store = MemoryStore(settings(policy={"telegram": {"private": "pairing"}}, pairing_ttl_s=60))
    await store.write(access.notice("telegram:42", "telegram:42", "tg-1", "ABCD2345", 60))
    assert set(store.state.pairings()) == {"ABCD2345"}
    assert store.state.pairings(now=time.time() + 61) == {}
    await store.write(access.approve("telegram:1", "ABCD2345", store.state.pairings()["ABCD2345"]))
    assert store.state.pairings() == {} and store.state.noticed("telegram:42", "telegram:42") is None
    assert store.state.decide(text("hi")).role is Role.USER


async def test_tokens_are_stored_as_their_hash_only() -> None:
    store = MemoryStore()
    token = access.new_token()
    await store.write(access.create_token("cli:alice", token, Role.ADMIN, "ops"))
    assert store.state.token_role(token) is Role.ADMIN
    assert store.state.token_role(token + "x") is None
    assert all(token not in repr(v) and token not in k for k, v in store.state.records.items())
    assert f"token/{hash_token(token)}" in store.state.records


@pytest.mark.parametrize(
    ("subject", "ok"),
    [("telegram:1", True), ("feishu:ou_x", True), ("chat:telegram:-100", True), ("slack:1", False), ("1", False)],
)
def test_subjects(subject: str, ok: bool) -> None:
    assert valid_subject(subject) is ok


def test_the_access_block_of_the_config_file_is_read(tmp_path, monkeypatch) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(
        "access:\n  policy:\n    telegram: {private: pairing, group: allowlist}\n"
        "  bindings:\n    - {subject: 'telegram:1', role: admin}\n"
        "  quotas:\n    user: {messages_per_minute: 5, tokens_per_day: 1000}\n"
    )
    monkeypatch.setenv("AIBOT_CONFIG", str(config))
    loaded = load_settings().access
    assert loaded.policy["telegram"].private == "pairing" and loaded.bindings[0].role == "admin"
    assert loaded.quotas["user"].messages_per_minute == 5


def test_a_misspelt_subject_in_the_config_file_stops_the_service() -> None:
    with pytest.raises(ConfigError, match=r"access\.bindings\.0\.subject"):
        load_settings(access={"bindings": [{"subject": "telegram123", "role": "admin"}]})
