"""The topic registry tells the truth: what each service's handlers really emit (routed by
`topics.route`) and the topics its stages really read are what the registry's producer and consumer
lists say, so the lag view, the alerts and the docs built from it are right."""

from __future__ import annotations

from collections.abc import Iterable

import pytest

from aibot_asr_worker.handler import handle as handle_voice_note
from aibot_common.catalog import NAMES
from aibot_common.envelope import Conversation, Envelope, Kind, Platform, TextPart
from aibot_common.outcome import Outcome
from aibot_common.settings import RendererSettings
from aibot_common.topics import (
    ACCESS,
    ACCESS_USAGE,
    ALL_TOPICS,
    CONSUMPTION,
    CORE_CONVERSATIONS,
    DEAD_LETTERS,
    GROUP_ARCHIVER,
    GROUP_ASR,
    GROUP_CORE,
    GROUP_RESPONSE_PROCESSOR,
    GROUP_SENDER,
    GROUP_USAGE,
    RENDERER_DELIVERED,
    TELEGRAM_POLLER_LEASE,
    USAGE_DAILY_USERS,
    Topic,
    consumed_by,
    route,
)
from aibot_core_llm.handler import ConversationState
from aibot_core_llm.handler import handle as handle_message
from aibot_ingress_feishu.handler import handle_event
from aibot_ingress_telegram.handler import handle_update
from aibot_renderer.handler import deliver, process_reply
from tests.unit import test_asr_handler as asr
from tests.unit import test_core_handler as core
from tests.unit import test_feishu_handler as feishu
from tests.unit import test_telegram_ingress as telegram
from tests.unit.test_asr_audio import tone

# The services that run stages on the runner: each may file dead letters.
STAGE_SERVICES = {"core-llm", "asr-worker", "renderer"}
# The state tables the stages keep, by service (their changelogs are produced and read back).
TABLES = {"core-llm": CORE_CONVERSATIONS, "renderer": RENDERER_DELIVERED}
# Topics a service's replicas read whole and write through a store, outside any stage: core-llm's
# access state and quota counters (aibot_common.access, aibot_core_llm.quota).
VIEWS = {"core-llm": {ACCESS.name, ACCESS_USAGE.name}}
GROUP_OF_SERVICE = {
    GROUP_CORE: "core-llm",
    GROUP_ASR: "asr-worker",
    GROUP_RESPONSE_PROCESSOR: "renderer",
    **{group: "renderer" for group in GROUP_SENDER.values()},
    GROUP_ARCHIVER: "archiver",
    GROUP_USAGE: "archiver",
}


def _routed(outcomes: Iterable[Outcome]) -> set[str]:
    return {route(envelope).name for outcome in outcomes for envelope in outcome.emit}


def _reply(platform: Platform) -> Envelope:
    return Envelope(
        id=f"reply-{platform.value}",
        kind=Kind.REPLY,
        conversation=Conversation(platform=platform, chat_id="c1"),
        parts=[TextPart(text="**hello**", format="markdown")],
    )


class _Sender:
    async def send(self, message: Envelope) -> None:
        pass


async def _emitted_by_service() -> dict[str, set[str]]:
    voice = {"file_id": "F1", "file_unique_id": "U1", "duration": 3, "mime_type": "audio/ogg", "file_size": 1234}
    ingress_telegram = [
        handle_update(telegram._update(text="hello"), telegram.BOT, telegram.ALL),
        handle_update(telegram._update(voice=voice), telegram.BOT, telegram.ALL),
    ]
    ingress_feishu = [
        handle_event(feishu._event(), feishu.BOT),
        handle_event(feishu._event("audio", {"file_key": "file_v3_abc", "duration": 2500}), feishu.BOT),
    ]
    model = core.ScriptedModel("hello")
    core_llm = [await handle_message(core.message("hi"), ConversationState(), model, core.SETTINGS)]
    heard = asr.deps(asr.Fetcher(tone(1.5)), asr.ScriptedTranscriber("what is the weather"))
    too_long = asr.deps(asr.Fetcher(tone(1.5)))
    asr_worker = [await handle_voice_note(asr.request(), heard), await handle_voice_note(asr.request(999), too_long)]
    renderer = [process_reply(_reply(platform), RendererSettings()) for platform in Platform]
    renderer.append(await deliver(renderer[0].emit[0], None, _Sender()))
    return {
        "ingress-telegram": _routed(ingress_telegram),
        "ingress-feishu": _routed(ingress_feishu),
        "core-llm": _routed(core_llm) | {TABLES["core-llm"].name} | VIEWS["core-llm"],
        "asr-worker": _routed(asr_worker),
        "renderer": _routed(renderer) | {TABLES["renderer"].name},
        # Volumes go to the storage backend; the one topic it writes is the daily-users aggregation.
        "archiver": {USAGE_DAILY_USERS.name},
    }


def _listed(role: str, service: str) -> set[str]:
    return {t.name for t in ALL_TOPICS if service in getattr(t, role)}


@pytest.mark.parametrize("service", NAMES)
async def test_the_producers_listed_are_the_services_that_emit_there(service: str) -> None:
    emitted = (await _emitted_by_service())[service]
    if service in STAGE_SERVICES:
        emitted |= {DEAD_LETTERS.name}
    assert _listed("producers", service) == emitted


@pytest.mark.parametrize("service", sorted(STAGE_SERVICES))
def test_the_consumers_listed_are_the_services_whose_stages_read_there(service: str) -> None:
    read = {topic for group, owner in GROUP_OF_SERVICE.items() if owner == service for topic in consumed_by(group)}
    read |= {TABLES[service].name} if service in TABLES else set()  # restored on partition assignment
    read |= VIEWS.get(service, set())
    assert _listed("consumers", service) == read


def test_the_archiver_reads_every_user_message_and_answer() -> None:
    read = {topic for group, owner in GROUP_OF_SERVICE.items() if owner == "archiver" for topic in consumed_by(group)}
    assert read == {"aibot.inbound.v1", "aibot.replies.v1"}
    # ...and its usage view rebuilds its partitions of the daily-users topic (no committed group).
    assert _listed("consumers", "archiver") == read | {USAGE_DAILY_USERS.name}


def test_every_consumed_topic_has_a_group_and_every_group_a_service() -> None:
    assert {group for _, group in CONSUMPTION} == set(GROUP_OF_SERVICE)
    assert _listed("consumers", "ingress-telegram") == {TELEGRAM_POLLER_LEASE.name}


def test_every_kind_of_envelope_has_one_topic() -> None:
    for kind in Kind:
        for platform in Platform:
            envelope = Envelope(id="x", kind=kind, conversation=Conversation(platform=platform, chat_id="1"))
            assert isinstance(route(envelope), Topic)
    outbound = [
        route(Envelope(id="x", kind=Kind.OUTBOUND, conversation=Conversation(platform=p, chat_id="1"))).name
        for p in Platform
    ]
    assert len(set(outbound)) == len(Platform), "each platform's sender reads its own topic"
