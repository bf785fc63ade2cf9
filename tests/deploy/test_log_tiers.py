"""Log tiers: the Fluent Bit file the chart and compose run (the collector cannot run here, so its
structure and every variable it needs are checked), and for real the parts that are ours: the error
stream the services write apart, the time format the collector parses, and the storage layout the
S3 output writes, which the storage backend's retention then sweeps by date."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from datetime import date, datetime
from pathlib import Path

import pytest
import yaml

from aibot_common.storage import Storage
from tests.deploy.helpers import CHART, REPO

FLUENT_BIT = yaml.safe_load((CHART / "files" / "fluent-bit.yaml").read_text())
VARIABLES = set(re.findall(r"\$\{(\w+)\}", (CHART / "files" / "fluent-bit.yaml").read_text()))


def _outputs(name: str) -> dict[str, dict]:
    return {o["match"]: o for o in FLUENT_BIT["pipeline"]["outputs"] if o["name"] == name}


def test_the_error_stream_is_split_by_the_stream_it_was_written_to() -> None:
    (tail,) = FLUENT_BIT["pipeline"]["inputs"]
    assert tail["name"] == "tail" and tail["path"] == "${AIBOT_LOG_PATH}" and tail["tag"] == "aibot.*"
    assert tail["multiline.parser"] == "docker, cri"
    parser, rewrite = FLUENT_BIT["pipeline"]["filters"]
    assert parser["name"] == "parser" and parser["key_name"] == "log" and parser["parser"] == "aibot_json"
    # stderr lines get the errors.* tag and leave the main stream (they are already in it, via stdout).
    assert rewrite["name"] == "rewrite_tag" and rewrite["rule"] == "$stream ^stderr$ errors.$TAG false"


def test_each_stream_goes_to_its_own_index_and_its_own_storage_tier() -> None:
    search = _outputs("opensearch")
    assert {m: o["logstash_prefix"] for m, o in search.items()} == {"aibot.*": "aibot-logs", "errors.*": "aibot-errors"}
    assert all(o["logstash_format"] is True for o in search.values())
    s3 = _outputs("s3")
    assert s3["aibot.*"]["s3_key_format"].startswith("/${AIBOT_LOG_PREFIX}logs/date=%Y-%m-%d/")
    assert s3["errors.*"]["s3_key_format"].startswith("/${AIBOT_LOG_PREFIX}errors/date=%Y-%m-%d/")
    # Searchable 7 days; the error index longer; both by index age, on the indices the outputs write.
    policies = json.loads((CHART / "files" / "opensearch-ism-policies.json").read_text())
    ages = {}
    for policy in policies.values():
        (pattern,) = policy["policy"]["ism_template"][0]["index_patterns"]
        hot = next(s for s in policy["policy"]["states"] if s["name"] == "hot")
        ages[pattern] = hot["transitions"][0]["conditions"]["min_index_age"]
    assert ages == {"aibot-logs-*": "7d", "aibot-errors-*": "30d"}


async def test_the_s3_key_format_is_the_storage_layout_its_retention_sweeps(tmp_path: Path) -> None:
    from aibot_common.settings import StorageSettings

    storage = Storage(StorageSettings(backend="local", path=str(tmp_path), retention_days={"logs": 90, "errors": 180}))
    for match, tier in (("aibot.*", "logs"), ("errors.*", "errors")):
        key_format = _outputs("s3")[match]["s3_key_format"].replace("${AIBOT_LOG_PREFIX}", "").lstrip("/")
        for day in (date(2026, 1, 1), date(2026, 6, 1)):
            key = datetime(day.year, day.month, day.day, 13, 5, 9).strftime(key_format).replace("$UUID", "abc")
            await storage.put(key, b"{}")
        assert await storage.partition_dates(tier) == [date(2026, 1, 1), date(2026, 6, 1)]
    # 2026-06-10: January is past the 90 days of logs, not past the 180 of errors.
    assert await storage.sweep("logs", today=date(2026, 6, 10)) == 1
    assert await storage.sweep("errors", today=date(2026, 6, 10)) == 0
    assert await storage.partition_dates("logs") == [date(2026, 6, 1)]


def test_the_services_write_errors_to_a_stream_apart_in_the_format_the_collector_parses() -> None:
    script = (
        "import logging; from aibot_common import telemetry; telemetry.setup_logging('core-llm');"
        "log = logging.getLogger('x'); log.info('fine'); log.error('broken: mail a@b.example')"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True)
    out = [json.loads(line) for line in result.stdout.splitlines()]
    err = [json.loads(line) for line in result.stderr.splitlines()]
    assert [r["level"] for r in out] == ["INFO", "ERROR"]
    assert err == [out[1]] and err[0]["message"] == "broken: mail [email]"
    # The parser's time_format (Fluent Bit's %L is milliseconds) reads the services' asctime.
    (parser,) = FLUENT_BIT["parsers"]
    assert parser["time_key"] == "asctime"
    datetime.strptime(err[0]["asctime"], parser["time_format"].replace("%L", "%f"))


def test_the_chart_and_compose_set_every_variable_the_file_reads(render) -> None:
    (daemonset,) = render("logging-values.yaml").of_kind("DaemonSet")
    (container,) = daemonset["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    secret_env = {"OPENSEARCH_PASSWORD"}  # from logging.opensearch.passwordSecret
    assert set(env) | secret_env == VARIABLES
    assert env["AIBOT_LOG_PATH"] == "/var/log/containers/ai-bot-*_bots_*.log"
    assert env["AIBOT_LOG_BUCKET"] == "ai-bot-1250000000" and env["AIBOT_LOG_PREFIX"] == "prod/"
    assert {"secretRef": {"name": "ai-bot-storage"}} in container["envFrom"]
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())["services"]["log-collector"]
    assert set(compose["environment"]) | secret_env == VARIABLES
    assert "./charts/ai-bot/files/fluent-bit.yaml:/fluent-bit/etc/ai-bot/fluent-bit.yaml:ro" in compose["volumes"]


def test_logging_refuses_a_storage_backend_it_cannot_write(helm) -> None:
    result = helm(
        "template",
        "ai-bot",
        str(CHART),
        "-f",
        str(CHART / "ci" / "logging-values.yaml"),
        "--set",
        "storage.backend=local",
    )
    assert result.returncode != 0 and "storage.backend=s3" in result.stderr


@pytest.mark.parametrize("name", ["aibot.*", "errors.*"])
def test_outputs_retry_rather_than_drop(name: str) -> None:
    # A search store or bucket that is down delays logs (filesystem buffer), never drops them.
    assert _outputs("opensearch")[name]["retry_limit"] is False
    assert _outputs("s3")[name]["retry_limit"] is False
