"""core-llm's access gate with scripted models and an in-memory store: who reaches the model, the
commands by role, the model and prompt per chat, and quotas."""

from __future__ import annotations

from aibot_common import access, telemetry
from aibot_common.access import Role
from aibot_common.envelope import ChatType, Platform
from aibot_common.settings import AccessSettings, CoreSettings, KafkaSettings
from aibot_core_llm.access_gate import AccessGate
from aibot_core_llm.handler import ConversationState
from aibot_core_llm.llm import Completion
from aibot_core_llm.quota import UsageCounter
from tests.unit.access_helpers import MemoryStore, text
from tests.unit.test_core_handler import ScriptedModel

ADMIN = "1"


class CountingModel(ScriptedModel):
    """Answers with the provider's token figures, as a real endpoint does."""

    async def complete(self, messages: list[dict[str, str]]) -> Completion:
        await super().complete(messages)
        return Completion(f"{self.name} answers", prompt_tokens=30, completion_tokens=20)


def gate(**access_settings: object) -> tuple[AccessGate, dict[str, CountingModel], MemoryStore]:
    settings = AccessSettings.model_validate(
        {"bindings": [{"subject": f"telegram:{ADMIN}", "role": "admin"}], **access_settings}
    )
    store = MemoryStore(settings)
    models = {"main": CountingModel(), "other": CountingModel()}
    models["main"].name, models["other"].name = "main", "other"
    usage = UsageCounter(KafkaSettings(), None, "test")
    core = CoreSettings(system_prompt="default prompt", llm_attempts=1)
    return AccessGate(store, usage, dict(models), "main", core, settings), models, store


async def say(g: AccessGate, envelope, state: ConversationState | None = None) -> tuple[list[str], ConversationState]:
    state = state or ConversationState()
    outcome = await g(envelope, state)
    return [e.text() for e in outcome.emit], outcome.state or state


async def test_with_the_default_policy_everyone_reaches_the_model() -> None:
    g, models, _ = gate()
    texts, _ = await say(g, text("hello", user="99"))
    assert texts == ["main answers"] and len(models["main"].calls) == 1


async def test_a_stranger_in_allowlist_mode_is_told_once_and_the_model_gets_nothing() -> None:
    g, models, _ = gate(policy={"telegram": {"private": "allowlist"}})
    before = telemetry.ACCESS_REFUSED.labels(platform="telegram", reason="allowlist")._value.get()
    first, state = await say(g, text("hello", user="99"))
    assert len(first) == 1 and "not on its list" in first[0] and "telegram:99" in first[0]
    for i in range(3):
        later, state = await say(g, text(f"hello {i}", user="99"), state)
        assert later == []
    assert models["main"].calls == [] and models["other"].calls == []
    assert telemetry.ACCESS_REFUSED.labels(platform="telegram", reason="allowlist")._value.get() == before + 4


async def test_a_redelivered_refusal_is_answered_the_same_way() -> None:
    g, _, _ = gate(policy={"telegram": {"private": "allowlist"}})
    message = text("hello", user="99")
    first, _ = await say(g, message)
    again, _ = await say(g, message)  # the state was not committed: the same record comes back
    assert again == first


async def test_pairing_gives_a_code_an_admin_approves_and_then_the_user_is_answered() -> None:
    g, models, store = gate(policy={"telegram": {"private": "pairing"}})
    (refusal,), _ = await say(g, text("hello", user="99"))
    (code,) = store.state.pairings()
    assert code in refusal and f"/approve {code}" in refusal
    assert (await say(g, text("again?", user="99")))[0] == []
    (approved,), _ = await say(g, text(f"/approve {code.lower()}", user=ADMIN))
    assert "telegram:99 may now use" in approved
    assert (await say(g, text("hello", user="99")))[0] == ["main answers"]
    assert [c.action for c in store.changes if c.audited] == ["pairing", "approve"]
    assert len(models["main"].calls) == 1  # only the approved user's message


async def test_a_user_cannot_approve_or_grant_and_is_told_why() -> None:
    g, _, store = gate()
    (answer,), _ = await say(g, text("/grant telegram:99 admin", user="99"))
    assert answer == "Sorry, /grant needs the admin role; you have user."
    (answer,), _ = await say(g, text("/approve ABCD", user="99"))
    assert "needs the admin role" in answer
    assert store.state.bound_role("telegram:99", "telegram:99") is None


async def test_unknown_commands_get_an_answer_not_the_model() -> None:
    g, models, _ = gate()
    (answer,), _ = await say(g, text("/frobnicate", user="99"))
    assert "don't know the command /frobnicate" in answer and models["main"].calls == []


async def test_an_admin_grants_and_revokes_roles() -> None:
    g, _, store = gate()
    (answer,), _ = await say(g, text("/grant 77 developer", user=ADMIN))
    assert answer == "Granted developer to telegram:77."
    assert store.state.bound_role("telegram:77", "telegram:5") is Role.DEVELOPER
    (answer,), _ = await say(g, text("/revoke telegram:77", user=ADMIN))
    assert store.state.bound_role("telegram:77", "telegram:5") is None
    (answer,), _ = await say(g, text("/grant 77 king", user=ADMIN))
    assert answer.startswith("Usage: /grant")


async def test_a_developer_switches_this_chats_model_and_the_next_request_goes_there() -> None:
    g, models, _ = gate(bindings=[{"subject": "telegram:5", "role": "developer"}])
    (listing,), _ = await say(g, text("/model", user="5"))
    assert "* main" in listing and "  other" in listing
    (answer,), _ = await say(g, text("/model use other", user="5"))
    assert answer == "This chat now uses other."
    (reply,), _ = await say(g, text("hi", user="5"))
    assert reply == "other answers" and len(models["other"].calls) == 1 and models["main"].calls == []
    # Another chat keeps the default.
    assert (await say(g, text("hi", user="6")))[0] == ["main answers"]
    (answer,), _ = await say(g, text("/model use nope", user="5"))
    assert "no model 'nope'" in answer


async def test_a_chats_system_prompt_goes_to_the_model() -> None:
    g, models, _ = gate(bindings=[{"subject": "telegram:5", "role": "developer"}])
    await say(g, text("/system You are a pirate. Say arr.", user="5"))
    await say(g, text("hi", user="5"))
    assert models["main"].calls[-1][0] == {"role": "system", "content": "You are a pirate. Say arr."}
    (shown,), _ = await say(g, text("/system", user="5"))
    assert "pirate" in shown
    (answer,), _ = await say(g, text("/system x", user="6"))
    assert "needs the developer role" in answer


async def test_reset_in_a_group_needs_a_role_bound_there() -> None:
    g, _, _ = gate()
    (answer,), _ = await say(g, text("/reset", user="99", chat="-100", group=True))
    assert "bound in this group" in answer
    (answer,), _ = await say(g, text("/reset", user=ADMIN, chat="-100", group=True))
    assert "forgotten" in answer
    (answer,), _ = await say(g, text("/reset", user="99"))  # a private chat is the user's own
    assert "forgotten" in answer


async def test_a_users_message_rate_is_limited_and_answered_clearly() -> None:
    g, models, _ = gate(quotas={"user": {"messages_per_minute": 2}})
    before = telemetry.QUOTA_EXCEEDED.labels(scope="user", limit="rate")._value.get()
    for i in range(2):
        assert (await say(g, text(f"m{i}", user="99")))[0] == ["main answers"]
    (answer,), _ = await say(g, text("m3", user="99"))
    assert "faster than your limit of 2 a minute" in answer
    assert len(models["main"].calls) == 2
    assert telemetry.QUOTA_EXCEEDED.labels(scope="user", limit="rate")._value.get() == before + 1
    # The admin's role has no quota.
    assert (await say(g, text("m", user=ADMIN)))[0] == ["main answers"]


async def test_a_daily_token_budget_counts_across_chats_of_one_user() -> None:
    g, _, _ = gate(quotas={"user": {"tokens_per_day": 100}})
    await say(g, text("a", user="99"))  # 50 tokens in the private chat
    await say(g, text("b", user="99", chat="-100", group=True))  # 50 more in a group
    (answer,), _ = await say(g, text("c", user="99", chat="-200", group=True))
    assert "daily budget of 100 tokens is used up" in answer
    assert g.usage.today("telegram:99").tokens == 100


async def test_whoami_and_help_show_the_role_and_its_commands() -> None:
    g, _, _ = gate()
    (answer,), _ = await say(g, text("/whoami", user=ADMIN))
    assert "telegram:1, role admin (bound to you)" in answer
    (user_help,), _ = await say(g, text("/help", user="99"))
    (admin_help,), _ = await say(g, text("/help", user=ADMIN))
    assert "/whoami" in user_help and "/grant" not in user_help and "/grant" in admin_help


async def test_an_admin_sees_status_and_stats() -> None:
    g, _, store = gate()
    await say(g, text("hello", user="99"))
    await store.write(access.grant("x", "telegram:5", Role.USER))
    (status,), _ = await say(g, text("/status", user=ADMIN))
    assert "telegram private: open" in status and "Bindings: 2" in status
    (stats,), _ = await say(g, text("/stats", user=ADMIN))
    assert "telegram:99: 1 messages, 50 tokens" in stats


async def test_in_a_group_each_refused_member_is_told_once_and_a_bound_group_is_served() -> None:
    g, models, _ = gate(policy={"telegram": {"group": "allowlist"}})
    (told,), state = await say(g, text("hi bot", user="99", chat="-100", group=True))
    assert "only answer approved users in this group" in told
    assert (await say(g, text("hi again", user="99", chat="-100", group=True), state))[0] == []
    (other,), _ = await say(g, text("me too", user="98", chat="-100", group=True), state)
    assert "telegram:98" in other
    assert models["main"].calls == []
    await say(g, text("/grant chat:telegram:-100 user", user=ADMIN, chat="-100", group=True))
    assert (await say(g, text("now?", user="99", chat="-100", group=True)))[0] == ["main answers"]


async def test_feishu_users_are_feishu_subjects() -> None:
    g, _, _ = gate(policy={"feishu": {"private": "allowlist"}}, bindings=[{"subject": "feishu:ou_a", "role": "user"}])
    assert (await say(g, text("hi", user="ou_a", platform=Platform.FEISHU)))[0] == ["main answers"]
    (refused,), _ = await say(g, text("hi", user="ou_b", platform=Platform.FEISHU))
    assert "feishu:ou_b" in refused
    assert (await say(g, text("hi", user="42")))[0] == ["main answers"]  # Telegram stays open


async def test_an_admin_reloads_the_config_files_access_block(tmp_path, monkeypatch) -> None:
    """The operator edits the file; /reload puts what changed on the topic for every replica."""
    g, _, store = gate(
        bindings=[{"subject": f"telegram:{ADMIN}", "role": "admin"}, {"subject": "telegram:7", "role": "user"}]
    )
    config = tmp_path / "config.yaml"
    config.write_text(
        "access:\n"
        "  policy: {telegram: {private: allowlist}}\n"
        "  bindings:\n"
        f"    - {{subject: 'telegram:{ADMIN}', role: admin}}\n"
        "    - {subject: 'telegram:8', role: developer}\n"
    )
    monkeypatch.setenv("AIBOT_CONFIG", str(config))
    (answer,), _ = await say(g, text("/reload", user="7"))
    assert "needs the admin role" in answer  # only an admin may
    (answer,), _ = await say(g, text("/reload", user=ADMIN))
    assert "grant telegram:8" in answer and "revoke telegram:7" in answer and "policy telegram/private" in answer
    bindings = store.state.bindings()
    assert bindings[("telegram:8", None)] is Role.DEVELOPER and ("telegram:7", None) not in bindings
    assert store.state.mode(Platform.TELEGRAM.value, ChatType.PRIVATE) == "allowlist"
    assert {c.action for c in store.changes} >= {"grant", "revoke", "policy"}  # audited, on the topic
    (again,), _ = await say(g, text("/reload", user=ADMIN))
    assert "nothing had changed" in again
    config.write_text("access: {policy: {telegram: {private: sometimes}}}\n")
    (broken,), _ = await say(g, text("/reload", user=ADMIN))
    assert broken.startswith("The config file was not reloaded") and "access.policy" in broken
