"""Every Kafka topic of the pipeline, named once.

Keys are the conversation key (`Conversation.key`) on every topic, so one conversation's messages
stay on one partition and in order from the platform to the reply. The changelog topics are
co-partitioned with the topic whose state they hold (same partition count, same key, and the state
record is written to the partition its input came from), so the replica that is assigned input
partition N restores its state from changelog partition N.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from aibot_common.envelope import Envelope, Kind, Platform


@dataclass(frozen=True)
class Topic:
    name: str
    description: str
    producers: tuple[str, ...]
    consumers: tuple[str, ...]
    compacted: bool = False
    # Topic-level config at creation. Retention is generous: a stage that is down for a weekend
    # must find its backlog still there when it comes back.
    config: dict[str, str] = field(default_factory=dict)

    def creation_config(self) -> dict[str, str]:
        base = {"cleanup.policy": "compact"} if self.compacted else {"retention.ms": str(7 * 24 * 3600 * 1000)}
        return {**base, **self.config}


INBOUND = Topic(
    name="aibot.inbound.v1",
    description="User messages (text, or transcribed voice) waiting for the LLM.",
    producers=("ingress-telegram", "ingress-feishu", "asr-worker"),
    consumers=("core-llm", "archiver"),
)
REPLIES = Topic(
    name="aibot.replies.v1",
    description="The assistant's answers (markdown), and the partial text of answers still being "
    "written, waiting to be formatted for their platform.",
    producers=("core-llm", "asr-worker"),
    consumers=("renderer", "archiver"),
)
OUTBOUND_TELEGRAM = Topic(
    name="aibot.outbound.telegram.v1",
    description="Telegram-ready messages (text + entities, at most 4096 characters each) to send.",
    producers=("renderer",),
    consumers=("renderer",),
)
OUTBOUND_FEISHU = Topic(
    name="aibot.outbound.feishu.v1",
    description="Feishu-ready messages (text, post or card content) to send.",
    producers=("renderer",),
    consumers=("renderer",),
)
ASR_REQUESTS = Topic(
    name="aibot.asr.requests.v1",
    description="Voice notes waiting to be downloaded and transcribed.",
    producers=("ingress-telegram", "ingress-feishu"),
    consumers=("asr-worker",),
)
DEAD_LETTERS = Topic(
    name="aibot.deadletter.v1",
    description="Records no stage could process, with headers naming the source topic, partition, "
    "offset, error type and reason. Inspect, fix, and replay by producing them back.",
    producers=("core-llm", "renderer", "asr-worker"),
    consumers=(),
    config={"retention.ms": str(30 * 24 * 3600 * 1000)},
)
CORE_CONVERSATIONS = Topic(
    name="aibot.core.conversations.changelog.v1",
    description="core-llm's per-conversation history and processed ids (changelog of its state).",
    producers=("core-llm",),
    consumers=("core-llm",),
    compacted=True,
)
RENDERER_DELIVERED = Topic(
    name="aibot.renderer.delivered.changelog.v1",
    description="The renderer's per-chat record of delivered message ids (changelog of its dedupe state).",
    producers=("renderer",),
    consumers=("renderer",),
    compacted=True,
)
TELEGRAM_POLLER_LEASE = Topic(
    name="aibot.telegram.poller-lease.v1",
    description="A one-partition topic whose consumer-group owner is the single replica allowed to call "
    "getUpdates (Telegram answers 409 to a second poller). Nothing is written to it.",
    producers=(),
    consumers=("ingress-telegram",),
)
ACCESS = Topic(
    name="aibot.access.v1",
    description="Access control: role bindings, policy, pairing requests, per-chat model and prompt, admin "
    "token hashes, and the audit trail of every change (who, what, when). Every replica reads all of it.",
    producers=("core-llm", "cli"),
    consumers=("core-llm",),
    compacted=True,
)
ACCESS_USAGE = Topic(
    name="aibot.access.usage.v1",
    description="Quota counters: each core-llm replica's running message and token counts per user and chat "
    "and per day/minute (a grow-only counter: a replica writes only its own keys, readers sum them).",
    producers=("core-llm",),
    consumers=("core-llm",),
    compacted=True,
    # Counters of past days and minutes are of no use after two days: compacted and then deleted.
    config={"cleanup.policy": "compact,delete", "retention.ms": str(2 * 24 * 3600 * 1000)},
)

USAGE_DAILY_USERS = Topic(
    name="aibot.usage.daily-users.v1",
    description="One record per user and UTC day (`<day>|<platform>|<user digest>`): the cluster-wide "
    "daily active users, counted by key (usage.py). Compacted per key, deleted after 8 days.",
    producers=("archiver",),
    consumers=("archiver",),
    compacted=True,
    config={"cleanup.policy": "compact,delete", "retention.ms": str(8 * 24 * 3600 * 1000)},
)

OUTBOUND_BY_PLATFORM: dict[Platform, Topic] = {
    Platform.TELEGRAM: OUTBOUND_TELEGRAM,
    Platform.FEISHU: OUTBOUND_FEISHU,
}

ALL_TOPICS: tuple[Topic, ...] = (
    INBOUND,
    REPLIES,
    OUTBOUND_TELEGRAM,
    OUTBOUND_FEISHU,
    ASR_REQUESTS,
    DEAD_LETTERS,
    CORE_CONVERSATIONS,
    RENDERER_DELIVERED,
    TELEGRAM_POLLER_LEASE,
    ACCESS,
    ACCESS_USAGE,
    USAGE_DAILY_USERS,
)

# Topics whose partition count must be one, whatever the configured default.
# The access topics are read whole by every replica (no consumer group): one partition keeps every
# change in one order, so a grant followed by a revoke can never be seen the other way round.
SINGLE_PARTITION = {TELEGRAM_POLLER_LEASE.name, ACCESS.name, ACCESS_USAGE.name}

# Consumer groups, named once: lag is reported per (topic, group).
GROUP_CORE = "aibot-core-llm"
GROUP_RESPONSE_PROCESSOR = "aibot-response-processor"
GROUP_SENDER = {Platform.TELEGRAM: "aibot-renderer-telegram", Platform.FEISHU: "aibot-renderer-feishu"}
GROUP_ASR = "aibot-asr-worker"
GROUP_TELEGRAM_POLLER = "aibot-telegram-poller"
# The archiver reads every user message and answer in a group of its own, so it never slows the pipeline.
GROUP_ARCHIVER = "aibot-archiver"
# Daily active users: the writer reads inbound; the view rebuilds its partitions of the usage topic
# from their beginning and commits nothing, so it is not in CONSUMPTION (its "lag" means nothing).
GROUP_USAGE = "aibot-usage"
GROUP_USAGE_VIEW = "aibot-usage-view"

# Which group consumes which topic: the lag view and the alerts iterate this.
CONSUMPTION: tuple[tuple[str, str], ...] = (
    (INBOUND.name, GROUP_CORE),
    (REPLIES.name, GROUP_RESPONSE_PROCESSOR),
    (OUTBOUND_TELEGRAM.name, GROUP_SENDER[Platform.TELEGRAM]),
    (OUTBOUND_FEISHU.name, GROUP_SENDER[Platform.FEISHU]),
    (ASR_REQUESTS.name, GROUP_ASR),
    (INBOUND.name, GROUP_ARCHIVER),
    (REPLIES.name, GROUP_ARCHIVER),
    (INBOUND.name, GROUP_USAGE),
)


def route(envelope: Envelope) -> Topic:
    """The topic an envelope goes to, from its kind and platform: the pipeline's one routing table.

    A user's message goes to core-llm, a voice note to the asr-worker first, an answer to the
    renderer's processor, and a platform-ready message to its platform's sender.
    """
    if envelope.kind is Kind.MESSAGE:
        return INBOUND
    if envelope.kind is Kind.ASR_REQUEST:
        return ASR_REQUESTS
    if envelope.kind in (Kind.REPLY, Kind.PARTIAL):
        # The same topic and key as the final reply: a conversation's partials and its answer reach
        # the renderer on one partition, in the order they were written.
        return REPLIES
    if envelope.kind is Kind.OUTBOUND:
        return OUTBOUND_BY_PLATFORM[envelope.conversation.platform]
    raise ValueError(f"no topic for envelopes of kind {envelope.kind!r}")


def consumed_by(group: str) -> list[str]:
    """The topics a consumer group reads, from `CONSUMPTION`."""
    return [topic for topic, consumer_group in CONSUMPTION if consumer_group == group]
