"""What an SRE sees of the running pipeline: one trace per user message across every service, the
metrics each service exports, and log lines that keep personal data and secrets out."""

from __future__ import annotations

import asyncio
import itertools
import json
import re

import httpx
import pytest
from aiokafka import AIOKafkaProducer
from prometheus_client.parser import text_string_to_metric_families

from aibot_common import telemetry
from aibot_common.kafka import connection_kwargs
from aibot_common.settings import KafkaSettings
from aibot_common.topics import INBOUND
from aibot_fakes.otlp import ReceivedSpan
from tests.e2e.conftest import Pipeline

pytestmark = pytest.mark.e2e

PIPELINE_SERVICES = ("ingress-telegram", "core-llm", "renderer")
PHONE = "+1 415 555 0134"
CN_MOBILE = "13812345678"


def _ingress_span(pipeline: Pipeline, update_id: int) -> list[ReceivedSpan]:
    return pipeline.otlp.find("telegram update", update_id=update_id)


async def _trace_of_update(pipeline: Pipeline, update_id: int, wanted: set[str]) -> list[ReceivedSpan]:
    """The spans of the trace that the ingress started for this update, once `wanted` names are in."""
    await pipeline.otlp.wait_for(lambda: _ingress_span(pipeline, update_id), timeout=30)
    (root,) = _ingress_span(pipeline, update_id)
    await pipeline.otlp.wait_for(lambda: wanted <= {s.name for s in pipeline.otlp.trace(root.trace_id)}, timeout=30)
    return pipeline.otlp.trace(root.trace_id)


async def test_one_user_message_is_one_trace_across_every_service(pipeline: Pipeline) -> None:
    update = pipeline.telegram.user_sends_text(9101, "trace me")
    await pipeline.telegram.wait_for_sent(1, chat_id=9101)
    wanted = {
        "telegram update",
        f"{INBOUND.name} process",
        "llm chat",
        "aibot.replies.v1 process",
        "aibot.outbound.telegram.v1 process",
        "telegram sendMessage",
    }
    spans = await _trace_of_update(pipeline, update["update_id"], wanted)

    by_name = {s.name: s for s in spans}
    assert {s.service for s in spans} >= set(PIPELINE_SERVICES)
    assert by_name["telegram update"].service == "ingress-telegram"
    assert by_name["llm chat"].service == "core-llm"
    assert by_name["llm chat"].attributes.get("model") == "fake"
    assert by_name["telegram sendMessage"].service == "renderer"
    assert by_name["telegram sendMessage"].kind == "client"
    assert by_name["telegram sendMessage"].status != "error"
    # One connected tree: every span but the ingress's root has its parent in the same trace, so the
    # context really travelled in the Kafka headers from hop to hop (not merely a shared id).
    ids = {s.span_id for s in spans}
    roots = [s for s in spans if s.parent_span_id is None]
    assert len(roots) == 1 and roots[0].service == "ingress-telegram", roots  # the webhook request
    assert all(s.parent_span_id in ids for s in spans if s.parent_span_id is not None)
    # The hops hang off each other in pipeline order.
    chain = [
        "telegram sendMessage",
        "aibot.outbound.telegram.v1 process",
        "aibot.replies.v1 process",
        f"{INBOUND.name} process",
        "telegram update",
    ]
    parents = {s.span_id: s for s in spans}
    for child, ancestor in itertools.pairwise(chain):
        node = by_name[child]
        while node.span_id != by_name[ancestor].span_id:
            assert node.parent_span_id is not None, f"{child} does not descend from {ancestor}"
            node = parents[node.parent_span_id]


def _series(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out.setdefault(sample.name, []).append((sample.labels, sample.value))
    return out


def _metric_base(name: str) -> str:
    for suffix in ("_bucket", "_count", "_sum", "_created", "_total"):
        if name.endswith(suffix):
            return name.removesuffix(suffix)
    return name


EXPECTED_SERIES = {
    "ingress-telegram": {
        "aibot_ingress_events_total": {"platform": "telegram", "outcome": "accepted"},
        "aibot_user_messages_total": {"platform": "telegram"},
        "aibot_messages_produced_total": {"topic": INBOUND.name},
    },
    # Daily active users are counted once for the cluster, by the archiver's usage stage.
    "archiver": {
        "aibot_active_users": {"platform": "telegram"},
    },
    "core-llm": {
        "aibot_messages_consumed_total": {"topic": INBOUND.name, "group": "aibot-core-llm"},
        "aibot_messages_produced_total": {"topic": "aibot.replies.v1"},
        "aibot_stage_seconds_bucket": {"stage": "core-llm"},
        "aibot_llm_seconds_bucket": {"model": "fake"},
        "aibot_llm_tokens_total": {"model": "fake", "kind": "completion"},
        "aibot_in_flight": {"stage": "core-llm"},
    },
    "renderer": {
        "aibot_messages_consumed_total": {"topic": "aibot.outbound.telegram.v1", "group": "aibot-renderer-telegram"},
        "aibot_stage_seconds_bucket": {"stage": "sender-telegram"},
        "aibot_end_to_end_seconds_bucket": {"platform": "telegram", "origin": "text"},
        "aibot_platform_api_calls_total": {"platform": "telegram", "method": "sendMessage", "code": "200"},
    },
}


async def test_every_service_exports_its_named_series_after_traffic(pipeline: Pipeline) -> None:
    for user, chat in ((71, 9201), (72, 9202)):
        pipeline.telegram.user_sends_text(chat, "count me", user_id=user)
    for chat in (9201, 9202):
        await pipeline.telegram.wait_for_sent(1, chat_id=chat)
    async with httpx.AsyncClient() as client:
        for name, expected in EXPECTED_SERIES.items():
            # A stage may run as several replicas: look at all of them together.
            replicas = [p for p in pipeline.supervisor.processes if p.name == name]
            deadline = asyncio.get_running_loop().time() + 30
            while True:
                series: dict[str, list[tuple[dict[str, str], float]]] = {}
                for replica in replicas:
                    for metric, values in _series((await client.get(f"{replica.url}/metrics")).text).items():
                        series.setdefault(metric, []).extend(values)
                # The usage count follows the archiver's batches (a second here): give it that time.
                counted = [v for got, v in series.get("aibot_active_users", []) if got.get("platform") == "telegram"]
                if name != "archiver" or sum(counted) >= 2 or asyncio.get_running_loop().time() > deadline:
                    break
                await asyncio.sleep(0.5)
            for metric, labels in expected.items():
                matching = [v for got, v in series.get(metric, []) if labels.items() <= got.items()]
                assert matching, f"{name} exports no {metric}{labels}"
                if not metric.endswith("_bucket") and metric != "aibot_in_flight":
                    assert max(matching) > 0, f"{name}: {metric}{labels} never moved"
            # Nothing of ours is defined outside telemetry.py (the dashboard and alerts rely on that list).
            ours = {_metric_base(m) for m in series if m.startswith("aibot_")}
            assert ours <= telemetry.METRIC_NAMES, f"{name}: {ours - telemetry.METRIC_NAMES}"
            if name == "archiver":
                active = sum(v for got, v in series["aibot_active_users"] if got["platform"] == "telegram")
                assert active >= 2  # the two users of this test at least, each counted once


def _log_lines(pipeline: Pipeline) -> dict[str, list[str]]:
    """Every replica's lines, by service (a stage may run as several replicas)."""
    lines: dict[str, list[str]] = {name: [] for name in PIPELINE_SERVICES}
    for process in pipeline.supervisor.processes:
        if process.name in lines:
            lines[process.name] += process.log_path.read_text(errors="replace").splitlines()
    return lines


async def test_logs_are_json_with_trace_and_conversation_and_never_show_pii_or_the_token(
    pipeline: Pipeline,
) -> None:
    token = pipeline.telegram.token
    carrying = f"call me on {PHONE} or {CN_MOBILE}; my bot token is {token}"
    # 1. Through the pipeline while the model fails: core-llm logs an ERROR inside the message's trace.
    pipeline.llm.fail_next(status=500, times=2)
    update = pipeline.telegram.user_sends_text(9301, carrying)
    (reply,) = await pipeline.telegram.wait_for_sent(1, chat_id=9301)
    assert reply["text"].startswith("Sorry")
    # 2. A record that is not an envelope, carrying the same data: the runner logs its validation
    #    errors, input included, as it dead-letters it; the masking must catch them there.
    producer = AIOKafkaProducer(**connection_kwargs(KafkaSettings(bootstrap_servers=pipeline.bootstrap)))
    await producer.start()
    try:
        await producer.send_and_wait(INBOUND.name, json.dumps({"note": carrying}).encode(), key=b"telegram:9302")
    finally:
        await producer.stop()

    def dead_letter_logged() -> bool:
        return any("dead-lettering" in line and "[phone]" in line for line in _log_lines(pipeline)["core-llm"])

    for _ in range(100):
        if dead_letter_logged():
            break
        await asyncio.sleep(0.2)
    assert dead_letter_logged(), "core-llm never logged the dead letter"
    (root,) = _ingress_span(pipeline, update["update_id"])
    await asyncio.sleep(0.5)  # let the log files catch up with the last lines

    logs = _log_lines(pipeline)
    everything = "\n".join(line for lines in logs.values() for line in lines)
    digits = re.sub(r"\D", "", PHONE)
    assert token not in everything
    assert token.split(":", 1)[1] not in everything  # not even the secret half
    assert PHONE not in everything and digits not in re.sub(r"[ -]", "", everything)
    assert CN_MOBILE not in everything

    records = {name: [json.loads(line) for line in lines if line.startswith("{")] for name, lines in logs.items()}
    for name, lines in records.items():
        assert lines, f"{name} wrote no JSON log line"
        assert all(r["service"] == name and "level" in r and "message" in r for r in lines)
    # The model failure: an ERROR line with the trace id of the message's trace and its conversation.
    failures = [
        r
        for r in records["core-llm"]
        if r["level"] == "ERROR" and "failed for" in r["message"] and r.get("trace_id") == root.trace_id
    ]
    assert failures, "no ERROR line of core-llm carries the trace id of the failing message"
    assert failures[0]["conversation_id"].endswith("9301")
    # The dead letter: the data was in the line, masked.
    dead = [r for r in records["core-llm"] if "dead-lettering" in r["message"] and "[phone]" in r["message"]]
    assert dead  # (twice in this file: the supervisor writes the error stream into the same log)
    assert all("[secret]" in r["message"] and r["level"] == "ERROR" for r in dead)


async def test_lag_of_the_running_pipeline_drains_to_zero(pipeline: Pipeline) -> None:
    """Read from the broker as the lag exporter does: after the replies went out, nothing waits."""
    from aibot_common.lag import LagReader
    from aibot_common.topics import CONSUMPTION, GROUP_CORE, GROUP_RESPONSE_PROCESSOR, GROUP_SENDER, Platform

    for i in range(5):
        pipeline.telegram.user_sends_text(9401, f"lag {i}")
    await pipeline.telegram.wait_for_sent(5, chat_id=9401)
    running = {GROUP_CORE, GROUP_RESPONSE_PROCESSOR, GROUP_SENDER[Platform.TELEGRAM]}
    async with LagReader(KafkaSettings(bootstrap_servers=pipeline.bootstrap), CONSUMPTION) as reader:
        for _ in range(50):  # offsets are committed a moment after the work is done
            snapshot = await reader.read()
            if all(g.lag == 0 for g in snapshot.groups if g.group in running):
                break
            await asyncio.sleep(0.2)
    groups = {g.group: g for g in snapshot.groups}
    for group in running:
        assert groups[group].lag == 0, groups[group]
        assert groups[group].members, f"{group} shows no consumer while its stage runs"
        # The committed offsets are real: the stage consumed every record produced to its topic.
        assert groups[group].committed == groups[group].end > 0
