"""Monitoring in the chart: ServiceMonitor, lag exporter, Grafana dashboard and alert rules. The
dashboard and the rules may only use series the services export (telemetry.py) plus the cAdvisor and
kube-state-metrics series named below, and every alert is run by promtool against synthetic series."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.metrics import MetricWrapperBase

from aibot_common import telemetry
from tests.deploy.helpers import CHART, REPO, SERVICES, TOOLS_BIN, venv_tool

DASHBOARD = json.loads((CHART / "files" / "grafana-dashboard.json").read_text())
RULES = yaml.safe_load((CHART / "files" / "prometheus-rules.yaml").read_text())
MONITORING_ON = (
    "--set",
    "monitoring.enabled=true",
    "--set",
    "monitoring.serviceMonitor.enabled=true",
    "--set",
    "monitoring.prometheusRule.enabled=true",
    "--set",
    "monitoring.grafanaDashboard.enabled=true",
)
# Standard Kubernetes series for CPU and memory: cAdvisor (kubelet) and kube-state-metrics.
KUBERNETES_SERIES = {
    "container_cpu_usage_seconds_total",
    "container_memory_working_set_bytes",
    "kube_pod_container_resource_limits",
}
PROMQL_WORDS = {
    "sum",
    "min",
    "max",
    "avg",
    "count",
    "topk",
    "bottomk",
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "and",
    "or",
    "unless",
    "offset",
    "bool",
    "rate",
    "irate",
    "increase",
    "delta",
    "deriv",
    "histogram_quantile",
    "max_over_time",
    "min_over_time",
    "avg_over_time",
    "time",
    "absent",
    "clamp_min",
    "clamp_max",
    "vector",
    "scalar",
    "label_values",
}


def exported_series() -> set[str]:
    """The sample names the services can export, from the metric objects in telemetry.py."""
    metrics = {m._name: m._type for m in vars(telemetry).values() if isinstance(m, MetricWrapperBase)}
    assert set(metrics) == telemetry.METRIC_NAMES
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}
    return {name + suffix for name, kind in metrics.items() for suffix in suffixes[kind]}


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads (what is left after strings, label matchers,
    grouping clauses, ranges, durations, numbers and PromQL's own words)."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', "", expr)
    expr = re.sub(r"\{[^}]*\}", "", expr)
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", expr)
    expr = re.sub(r"\[[^\]]*\]", "", expr)
    expr = re.sub(r"\b\d+(ms|[smhdwy])\b", "", expr)
    expr = re.sub(r"\b\d+(\.\d+)?([eE][+-]?\d+)?\b", "", expr)
    return {t for t in re.findall(r"[A-Za-z_:][A-Za-z0-9_:]*", expr) if t not in PROMQL_WORDS}


def test_metric_name_extraction() -> None:
    expr = (
        'histogram_quantile(0.99, sum by (platform, le) (rate(aibot_end_to_end_seconds_bucket{x="a b"}[5m])))'
        " > 2 and on (group) max_over_time(aibot_consumer_group_members[6h] offset 1d) * 1e3"
    )
    assert metric_names(expr) == {"aibot_end_to_end_seconds_bucket", "aibot_consumer_group_members"}


def dashboard_exprs() -> list[str]:
    exprs = []
    for panel in DASHBOARD["panels"]:
        for inner in [panel, *panel.get("panels", [])]:
            exprs.extend(t["expr"] for t in inner.get("targets", []))
    return exprs


def rule_exprs() -> dict[str, str]:
    return {r["alert"]: r["expr"] for group in RULES["groups"] for r in group["rules"]}


def test_dashboard_and_rules_use_only_series_the_services_export() -> None:
    known = exported_series() | KUBERNETES_SERIES
    used = {name for expr in [*dashboard_exprs(), *rule_exprs().values()] for name in metric_names(expr)}
    assert used, "no metric found in the dashboard or the rules"
    assert used <= known, f"unknown series: {sorted(used - known)}"
    # And the lag exporter's series are among them: lag is read from the broker, not from the services.
    assert {"aibot_consumer_group_lag", "aibot_consumer_lag", "aibot_consumer_group_no_consumer"} <= used


def test_dashboard_shows_what_an_sre_watches() -> None:
    exprs = "\n".join(dashboard_exprs())
    wanted = {
        "per-topic lag": "aibot_consumer_group_lag",
        "per-partition lag": "aibot_consumer_lag",
        "throughput": "aibot_messages_produced_total",
        "p99 latency": "histogram_quantile(0.99, sum by (platform, le) (rate(aibot_end_to_end_seconds_bucket",
        "error rate": "aibot_stage_errors_total",
        "daily active users": "aibot_active_users",
        "message volume": "aibot_user_messages_total",
        "cpu": "container_cpu_usage_seconds_total",
    }
    missing = [what for what, needle in wanted.items() if needle not in exprs]
    assert not missing, missing
    ids = [p["id"] for p in DASHBOARD["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    assert {v["name"] for v in DASHBOARD["templating"]["list"]} == {"datasource", "namespace"}
    for panel in DASHBOARD["panels"]:
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == "${datasource}"
            assert all('namespace=~"$namespace"' in t["expr"] for t in panel["targets"]), panel["title"]


def test_rules_have_the_agreed_alerts() -> None:
    alerts = rule_exprs()
    assert set(alerts) >= {
        "AibotHighCPU",
        "AibotHighMemory",
        "AibotEndToEndLatencyHigh",
        "AibotStageErrorRateHigh",
        "AibotDailyActiveUsersDrop",
        "AibotMessageVolumeSurge",
        "AibotConsumerLagGrowing",
        "AibotStageNoConsumer",
    }
    runbooks = (REPO / "docs" / "runbooks.md").read_text()
    # GitHub's anchors: the heading lower-cased, so `## AibotHighCPU` is #aibothighcpu.
    anchors = {line[3:].strip().lower() for line in runbooks.splitlines() if line.startswith("## ")}
    for group in RULES["groups"]:
        for rule in group["rules"]:
            assert rule["labels"]["severity"] in ("warning", "critical")
            assert rule["annotations"]["summary"] and rule["annotations"]["description"]
            # A runbook link on every rule, to its own entry in docs/runbooks.md.
            assert rule["annotations"]["runbook_url"] == f"docs/runbooks.md#{rule['alert'].lower()}", rule["alert"]
            assert rule["alert"].lower() in anchors, f"docs/runbooks.md has no entry for {rule['alert']}"
    # One entry per alert, no entry for an alert that no longer exists.
    assert anchors == {name.lower() for name in alerts}


# ---------------------------------------------------------------- the rendered chart


def test_monitoring_off_renders_no_monitoring_objects(render) -> None:
    rendered = render("default-values.yaml")
    assert not rendered.of_kind("ServiceMonitor") and not rendered.of_kind("PrometheusRule")
    assert "lag-exporter" not in rendered.by_component("Deployment")
    assert not [c for c in rendered.of_kind("ConfigMap") if "grafana_dashboard" in c["metadata"]["labels"]]


def test_monitoring_on_renders_monitor_rules_dashboard_and_lag_exporter(render) -> None:
    rendered = render("default-values.yaml", *MONITORING_ON, "--set", "monitoring.serviceMonitor.labels.release=kps")
    (monitor,) = rendered.of_kind("ServiceMonitor")
    assert monitor["metadata"]["labels"]["release"] == "kps"
    (expression,) = monitor["spec"]["selector"]["matchExpressions"]
    assert set(expression["values"]) == {*SERVICES, "lag-exporter"}
    assert monitor["spec"]["endpoints"] == [
        {"port": "http", "path": "/metrics", "interval": "30s", "scrapeTimeout": "10s"}
    ]
    # Every scraped Service has the port the monitor names and the labels it selects by.
    selector = monitor["spec"]["selector"]["matchLabels"]
    services = rendered.by_component("Service")
    for component in expression["values"]:
        if component in services:
            service = services[component]
            assert selector.items() <= service["metadata"]["labels"].items()
            assert "http" in [p["name"] for p in service["spec"]["ports"]]
    assert "lag-exporter" in services

    (rule,) = rendered.of_kind("PrometheusRule")
    assert rule["spec"] == RULES  # the very file compose mounts

    (dashboard,) = [c for c in rendered.of_kind("ConfigMap") if c["metadata"]["labels"].get("grafana_dashboard")]
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(dashboard["data"]["ai-bot.json"]) == DASHBOARD


def test_lag_exporter_runs_the_cli_with_the_services_config_and_lockdown(render) -> None:
    rendered = render("external-kafka-values.yaml", "--set", "monitoring.enabled=true")
    deployment = rendered.by_component("Deployment")["lag-exporter"]
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["command"] == ["ai-bot", "lag", "--serve", "9308", "--interval", "15"]
    assert container["image"].startswith("ghcr.io/ai-bot/ai-bot-core-llm:")
    assert container["ports"] == [{"name": "http", "containerPort": 9308, "protocol": "TCP"}]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["automountServiceAccountToken"] is False
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["AIBOT_CONFIG"] == "/etc/ai-bot/config.yaml"
    # SASL password from the operator's Secret and the Kafka CA, as the services get them.
    assert container["envFrom"] == [{"secretRef": {"name": "ai-bot-secrets"}}]
    assert {m["mountPath"] for m in container["volumeMounts"]} >= {"/etc/ai-bot", "/etc/ai-bot-kafka-ca"}
    assert deployment["spec"]["replicas"] == 1
    # Not rendered when switched off.
    off = render(
        "external-kafka-values.yaml",
        "--set",
        "monitoring.enabled=true",
        "--set",
        "monitoring.lagExporter.enabled=false",
    )
    assert "lag-exporter" not in off.by_component("Deployment")


def test_rendered_monitoring_objects_are_valid_kubernetes(render) -> None:
    validate = venv_tool("kubernetes-validate")
    if validate is None:
        pytest.skip("kubernetes-validate is not installed (uv sync --all-packages installs the dev group)")
    rendered = render("default-values.yaml", *MONITORING_ON)
    assert rendered.path is not None
    # ServiceMonitor and PrometheusRule are CRDs (no built-in schema): the rest is validated.
    result = subprocess.run(
        [validate, "-k", "1.35.0", "--strict", str(rendered.path)], capture_output=True, text=True, timeout=300
    )
    errors = [line for line in result.stdout.splitlines() + result.stderr.splitlines() if line.startswith("ERROR")]
    assert not errors, errors


# ---------------------------------------------------------------- promtool: the alerts really fire


@pytest.fixture(scope="session")
def promtool() -> str:
    """promtool from Debian's prometheus package, unpacked into tools/bin (no service installed)."""
    found = shutil.which("promtool") or (str(TOOLS_BIN / "promtool") if (TOOLS_BIN / "promtool").exists() else None)
    if found:
        return found
    if not shutil.which("apt-get") or not shutil.which("dpkg-deb"):
        pytest.skip("promtool is not installed and this is not a Debian machine (apt-get install prometheus)")
    with tempfile.TemporaryDirectory() as work:

        def download() -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                ["apt-get", "download", "prometheus"], cwd=work, capture_output=True, text=True, timeout=300
            )

        result = download()
        if result.returncode != 0 and os.geteuid() == 0:
            subprocess.run(["apt-get", "update", "-qq"], capture_output=True, timeout=300)
            result = download()
        debs = list(Path(work).glob("prometheus_*.deb"))
        if result.returncode != 0 or not debs:
            pytest.skip(f"promtool could not be fetched (apt-get download prometheus: {result.stderr.strip()[-200:]})")
        subprocess.run(["dpkg-deb", "-x", str(debs[0]), f"{work}/x"], check=True, timeout=120)
        TOOLS_BIN.mkdir(parents=True, exist_ok=True)
        shutil.copy2(f"{work}/x/usr/bin/promtool", TOOLS_BIN / ".promtool.new")
        (TOOLS_BIN / ".promtool.new").replace(TOOLS_BIN / "promtool")
    return str(TOOLS_BIN / "promtool")


def test_promtool_accepts_the_rules(promtool: str) -> None:
    result = subprocess.run(
        [promtool, "check", "rules", str(CHART / "files" / "prometheus-rules.yaml")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def _alert(**labels: str) -> dict[str, Any]:
    return {"exp_labels": labels}


def _case(at: str, alert: str, *firing: dict[str, Any]) -> dict[str, Any]:
    return {"eval_time": at, "alertname": alert, "exp_alerts": list(firing)}


KAFKA_TEST = {
    "interval": "1m",
    "input_series": [
        # core-llm's consumers die at minute 10; records keep arriving: lag grows 20 a minute.
        {"series": 'aibot_consumer_group_lag{topic="aibot.inbound.v1",group="aibot-core-llm"}', "values": "0+20x40"},
        {"series": 'aibot_consumer_group_no_consumer{group="aibot-core-llm"}', "values": "0x10 1x30"},
        {"series": 'aibot_consumer_group_members{group="aibot-core-llm"}', "values": "2x10 0x30"},
        # A big but steady backlog: not growing, so no alert.
        {
            "series": 'aibot_consumer_group_lag{topic="aibot.replies.v1",group="aibot-response-processor"}',
            "values": "500x40",
        },
        {"series": 'aibot_consumer_group_no_consumer{group="aibot-response-processor"}', "values": "0x40"},
        # Feishu is not in use: its sender group never had a consumer and nothing waits. Silent.
        {
            "series": 'aibot_consumer_group_lag{topic="aibot.outbound.feishu.v1",group="aibot-renderer-feishu"}',
            "values": "0x40",
        },
        {"series": 'aibot_consumer_group_no_consumer{group="aibot-renderer-feishu"}', "values": "1x40"},
        {"series": 'aibot_consumer_group_members{group="aibot-renderer-feishu"}', "values": "0x40"},
        # The exporter reads every minute until minute 20, then stops.
        {"series": "aibot_lag_last_refresh_timestamp_seconds", "values": "0+60x20 1200x20"},
        # ...because the brokers stopped answering it at minute 20.
        {"series": "aibot_kafka_up", "values": "1x20 0x20"},
    ],
    "alert_rule_test": [
        _case("5m", "AibotConsumerLagGrowing"),
        _case(
            "30m",
            "AibotConsumerLagGrowing",
            _alert(severity="warning", topic="aibot.inbound.v1", group="aibot-core-llm"),
        ),
        _case("9m", "AibotStageNoConsumer"),
        _case("30m", "AibotStageNoConsumer", _alert(severity="critical", group="aibot-core-llm")),
        _case("15m", "AibotLagFiguresStale"),
        _case("35m", "AibotLagFiguresStale", _alert(severity="warning")),
        _case("21m", "AibotKafkaUnreachable"),
        _case("25m", "AibotKafkaUnreachable", _alert(severity="critical")),
    ],
}

USAGE_TEST = {
    # Samples closer than the 5-minute lookback, or gauges would vanish between them.
    "interval": "2m",
    "input_series": [
        # Telegram: 100 users at this time of day for 33 hours, then half as many: down on yesterday.
        {"series": 'aibot_active_users{platform="telegram"}', "values": "100x1000 50x150"},
        # Feishu: as many as yesterday but half of last week: down on last week.
        {"series": 'aibot_active_users{platform="feishu"}', "values": "100x5040 50x1500"},
        # Telegram messages: 12 per 2 minutes, then 48 (four times as many).
        {"series": 'aibot_user_messages_total{platform="telegram"}', "values": "0+12x1000 12000+48x150"},
        # Feishu messages: steady.
        {"series": 'aibot_user_messages_total{platform="feishu"}', "values": "0+12x6500"},
    ],
    "alert_rule_test": [
        _case("1900m", "AibotDailyActiveUsersDrop"),
        _case("2200m", "AibotDailyActiveUsersDrop", _alert(severity="warning", platform="telegram")),
        _case("12300m", "AibotDailyActiveUsersDrop", _alert(severity="warning", platform="feishu")),
        _case("1900m", "AibotMessageVolumeSurge"),
        _case("2200m", "AibotMessageVolumeSurge", _alert(severity="warning", platform="telegram")),
    ],
}


def _histogram(name: str, labels: str, buckets: dict[str, str]) -> list[dict[str, str]]:
    return [{"series": f'{name}{{{labels},le="{le}"}}', "values": values} for le, values in buckets.items()]


SERVICE_TEST = {
    "interval": "1m",
    "input_series": [
        # Telegram replies take 2-5 s (all in the le=5 bucket): p99 above 2 s. Feishu's take under 1 s.
        *_histogram(
            "aibot_end_to_end_seconds_bucket",
            'platform="telegram"',
            {"1": "0x30", "2": "0x30", "5": "0+100x30", "+Inf": "0+100x30"},
        ),
        *_histogram(
            "aibot_end_to_end_seconds_bucket",
            'platform="feishu"',
            {"1": "0+100x30", "2": "0+100x30", "5": "0+100x30", "+Inf": "0+100x30"},
        ),
        # core-llm fails 10% of its records, the renderer 1%.
        {"series": 'aibot_stage_errors_total{stage="core-llm",error="Retryable"}', "values": "0+10x30"},
        {"series": 'aibot_stage_seconds_count{stage="core-llm"}', "values": "0+100x30"},
        {"series": 'aibot_stage_errors_total{stage="renderer",error="Retryable"}', "values": "0+1x30"},
        {"series": 'aibot_stage_seconds_count{stage="renderer"}', "values": "0+100x30"},
        {"series": 'aibot_llm_errors_total{model="gpt",reason="timeout"}', "values": "0+10x30"},
        {"series": 'aibot_llm_seconds_count{model="gpt"}', "values": "0+90x30"},
        {
            "series": 'aibot_platform_api_calls_total{platform="telegram",method="sendMessage",code="200"}',
            "values": "0+90x30",
        },
        {
            "series": 'aibot_platform_api_calls_total{platform="telegram",method="sendMessage",code="429"}',
            "values": "0+10x30",
        },
        {"series": 'aibot_ingress_events_total{platform="telegram",outcome="accepted"}', "values": "0+100x30"},
        {"series": 'aibot_ingress_events_total{platform="telegram",outcome="unavailable"}', "values": "0+10x30"},
        {"series": 'aibot_dead_letters_total{stage="renderer",error="InvalidMessage"}', "values": "0x10 1x20"},
        # Users run out of their daily tokens 5 times a minute; one chat's rate limit is hit once.
        {"series": 'aibot_quota_exceeded_total{scope="user",limit="tokens"}', "values": "0+5x30"},
        {"series": 'aibot_quota_exceeded_total{scope="chat",limit="rate"}', "values": "0x10 1x20"},
        # One core-llm pod at 90% of its CPU limit and 95% of its memory limit, another comfortable.
        {
            "series": 'container_cpu_usage_seconds_total{namespace="bots",pod="core-1",container="core-llm"}',
            "values": "0+54x30",
        },
        {
            "series": 'container_cpu_usage_seconds_total{namespace="bots",pod="core-2",container="core-llm"}',
            "values": "0+30x30",
        },
        {
            "series": 'container_memory_working_set_bytes{namespace="bots",pod="core-1",container="core-llm"}',
            "values": "973x30",
        },
        {
            "series": 'container_memory_working_set_bytes{namespace="bots",pod="core-2",container="core-llm"}',
            "values": "500x30",
        },
        *[
            {
                "series": f'kube_pod_container_resource_limits{{namespace="bots",pod="{pod}",container="core-llm",'
                f'resource="{resource}"}}',
                "values": f"{limit}x30",
            }
            for pod in ("core-1", "core-2")
            for resource, limit in (("cpu", 1), ("memory", 1024))
        ],
    ],
    "alert_rule_test": [
        _case("5m", "AibotEndToEndLatencyHigh"),
        _case("20m", "AibotEndToEndLatencyHigh", _alert(severity="warning", platform="telegram")),
        _case("20m", "AibotStageErrorRateHigh", _alert(severity="warning", stage="core-llm")),
        _case("20m", "AibotLLMErrorRateHigh", _alert(severity="warning", model="gpt")),
        _case(
            "20m",
            "AibotPlatformAPIErrorRateHigh",
            _alert(severity="warning", platform="telegram", method="sendMessage"),
        ),
        _case("20m", "AibotIngressErrorRateHigh", _alert(severity="warning", platform="telegram")),
        _case("5m", "AibotDeadLetters"),
        _case("12m", "AibotDeadLetters", _alert(severity="warning", stage="renderer", error="InvalidMessage")),
        _case("5m", "AibotQuotaExceeded"),
        _case("25m", "AibotQuotaExceeded", _alert(severity="warning", scope="user", limit="tokens")),
        _case("10m", "AibotHighCPU"),
        _case("25m", "AibotHighCPU", _alert(severity="warning", namespace="bots", pod="core-1", container="core-llm")),
        _case(
            "25m", "AibotHighMemory", _alert(severity="warning", namespace="bots", pod="core-1", container="core-llm")
        ),
    ],
}


def test_every_alert_fires_when_it_should_and_not_before(promtool: str, tmp_path: Path) -> None:
    # promtool compares annotations too; they are checked by `check rules` above, so the copy under
    # test leaves them out and the cases compare labels only.
    rules = json.loads(json.dumps(RULES))
    for group in rules["groups"]:
        for rule in group["rules"]:
            rule.pop("annotations", None)
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(rules))
    # promtool evaluates every rule at every evaluation interval up to the last case: the usage cases
    # span more than a week, so they run on a coarser clock (their `for` is 15-30 minutes).
    runs = {"minutes.yaml": ("1m", [KAFKA_TEST, SERVICE_TEST]), "days.yaml": ("10m", [USAGE_TEST])}
    tested = {case["alertname"] for _, cases in runs.values() for t in cases for case in t["alert_rule_test"]}
    assert tested == set(rule_exprs()), f"alerts without a promtool case: {set(rule_exprs()) - tested}"
    for name, (interval, cases) in runs.items():
        tests = {"rule_files": ["rules.yaml"], "evaluation_interval": interval, "tests": cases}
        (tmp_path / name).write_text(yaml.safe_dump(tests, sort_keys=False))
        result = subprocess.run(
            [promtool, "test", "rules", name], cwd=tmp_path, capture_output=True, text=True, timeout=300
        )
        assert result.returncode == 0, result.stdout + result.stderr


# ---------------------------------------------------------------- docker compose's monitoring profile


def test_compose_monitoring_profile_loads_the_same_rules_dashboard_and_lag_exporter() -> None:
    from fnmatch import fnmatch

    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    services = compose["services"]
    mounts = {
        name: {v.split(":")[1]: v.split(":")[0] for v in services[name]["volumes"]}
        for name in ("prometheus", "grafana")
    }
    # Prometheus: the chart's rules file, where prometheus.yml's rule_files look for rules.
    config_source = mounts["prometheus"]["/etc/prometheus/prometheus.yml"]
    config = yaml.safe_load((REPO / config_source).read_text())
    rule_mounts = [
        target
        for target, source in mounts["prometheus"].items()
        if source == "./charts/ai-bot/files/prometheus-rules.yaml"
    ]
    assert rule_mounts and any(fnmatch(rule_mounts[0], pattern) for pattern in config["rule_files"])
    targets = {t for job in config["scrape_configs"] for group in job["static_configs"] for t in group["targets"]}
    assert "lag-exporter:9308" in targets
    # Grafana: a file provider whose folder holds the chart's dashboard.
    provider_file = mounts["grafana"]["/etc/grafana/provisioning/dashboards/ai-bot.yml"]
    (provider,) = yaml.safe_load((REPO / provider_file).read_text())["providers"]
    dashboard_target = next(t for t, s in mounts["grafana"].items() if s.endswith("files/grafana-dashboard.json"))
    assert Path(dashboard_target).parent == Path(provider["options"]["path"])
    # The exporter itself: the CLI from the core-llm image, only with the monitoring profile.
    exporter = services["lag-exporter"]
    assert exporter["profiles"] == ["monitoring"]
    assert exporter["entrypoint"][:4] == ["ai-bot", "lag", "--serve", "9308"]
    assert exporter["image"].startswith("ai-bot-core-llm:")
    assert "9308/readyz" in " ".join(exporter["healthcheck"]["test"])
