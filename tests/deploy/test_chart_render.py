"""What matters in the rendered chart: scaling, probes, limits, security, secrets, GPU pool, network."""

from __future__ import annotations

import base64
import re

import pytest
import yaml

from aibot_common import catalog
from aibot_common.settings import load_settings
from tests.deploy.helpers import CHART, CI_VALUES, NAMESPACE, SERVICES

DEFAULT, GPU, EXTERNAL = "default-values.yaml", "gpu-values.yaml", "external-kafka-values.yaml"
SECRET_ENV = (
    "AIBOT_TELEGRAM__BOT_TOKEN",
    "AIBOT_TELEGRAM__WEBHOOK__SECRET_TOKEN",
    "AIBOT_FEISHU__APP_SECRET",
    "AIBOT_FEISHU__VERIFICATION_TOKEN",
    "AIBOT_FEISHU__ENCRYPT_KEY",
    "AIBOT_KAFKA__SASL_PASSWORD",
    "AIBOT_LLM_API_KEY",
)
# Shapes of real credentials: a Telegram bot token, OpenAI-style keys, PEM blocks.
KEY_LOOKING = re.compile(r"\d{6,}:[A-Za-z0-9_-]{20,}|\bsk-[A-Za-z0-9_-]{8,}|-----BEGIN [A-Z ]*PRIVATE KEY")
SECRET_NAMED = re.compile(r"(token|secret|password|api_?key|encrypt_key)$", re.IGNORECASE)


def ci_values(name: str) -> dict:
    return yaml.safe_load((CHART / "ci" / name).read_text())


def containers(doc: dict) -> list[dict]:
    spec = doc["spec"]["template"]["spec"] if "template" in doc["spec"] else doc["spec"]
    return spec.get("containers", []) + spec.get("initContainers", [])


def pod_spec(doc: dict) -> dict:
    return doc["spec"]["template"]["spec"]


def workloads(rendered) -> list[dict]:
    return [d for d in rendered.docs if d["kind"] in ("Deployment", "StatefulSet", "Job", "Pod")]


def test_default_renders_every_service_with_its_objects(render) -> None:
    rendered = render(DEFAULT)
    for kind in ("Deployment", "Service", "ServiceAccount", "HorizontalPodAutoscaler", "PodDisruptionBudget"):
        by_component = rendered.by_component(kind)
        assert set(SERVICES) <= set(by_component), f"{kind}: {sorted(by_component)}"
    for name, deployment in rendered.by_component("Deployment").items():
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert labels["app.kubernetes.io/component"] == name
        assert deployment["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"] == name
        (container,) = pod_spec(deployment)["containers"]
        assert container["image"] == f"ghcr.io/ai-bot/ai-bot-{name}:0.1.0"
        assert pod_spec(deployment)["serviceAccountName"] == f"ai-bot-{name}"


def test_a_disabled_platform_runs_no_ingress_service(render) -> None:
    rendered = render(GPU)  # feishu is not enabled there
    assert "ingress-feishu" not in rendered.by_component("Deployment")
    assert "ingress-feishu" not in rendered.by_component("HorizontalPodAutoscaler")
    paths = [p["path"] for p in rendered.of_kind("Ingress")[0]["spec"]["rules"][0]["http"]["paths"]]
    assert paths == ["/telegram/webhook"]


@pytest.mark.parametrize("values_file", [DEFAULT, EXTERNAL])
def test_hpa_per_service_from_2_to_10_at_70_percent_cpu(render, values_file: str) -> None:
    rendered = render(values_file)
    hpas = rendered.by_component("HorizontalPodAutoscaler")
    deployments = rendered.by_component("Deployment")
    assert set(hpas) == set(deployments)
    for name, hpa in hpas.items():
        assert hpa["apiVersion"] == "autoscaling/v2"
        spec = hpa["spec"]
        assert (spec["minReplicas"], spec["maxReplicas"]) == (2, 10), name
        assert spec["scaleTargetRef"] == {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "name": deployments[name]["metadata"]["name"],
        }
        (metric,) = spec["metrics"]
        assert metric["resource"]["name"] == "cpu"
        assert metric["resource"]["target"] == {"type": "Utilization", "averageUtilization": 70}
        # The HPA owns the replica count: a fixed one would fight it on every upgrade.
        assert "replicas" not in deployments[name]["spec"]


def test_hpa_is_overridable_per_service(render) -> None:
    rendered = render(
        DEFAULT,
        "--set",
        "coreLlm.autoscaling.maxReplicas=20",
        "--set",
        "renderer.autoscaling.targetCPUUtilizationPercentage=50",
        "--set",
        "ingressTelegram.autoscaling.enabled=false",
    )
    hpas = rendered.by_component("HorizontalPodAutoscaler")
    assert hpas["core-llm"]["spec"]["maxReplicas"] == 20
    assert hpas["core-llm"]["spec"]["minReplicas"] == 2
    assert hpas["renderer"]["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"] == 50
    assert hpas["asr-worker"]["spec"]["maxReplicas"] == 10
    assert "ingress-telegram" not in hpas
    assert rendered.by_component("Deployment")["ingress-telegram"]["spec"]["replicas"] == 2


@pytest.mark.parametrize("values_file", CI_VALUES)
def test_every_container_has_requests_limits_and_every_service_both_probes(render, values_file: str) -> None:
    rendered = render(values_file)
    for doc in workloads(rendered):
        for container in containers(doc):
            resources = container.get("resources", {})
            where = f"{doc['kind']}/{doc['metadata']['name']}/{container['name']}"
            assert {"cpu", "memory"} <= set(resources.get("requests", {})), where
            assert {"cpu", "memory"} <= set(resources.get("limits", {})), where
            # Kubernetes has no probes for init containers: they finish before the pod serves.
            once = doc["kind"] in ("Job", "Pod") or container in pod_spec(doc).get("initContainers", [])
            assert "livenessProbe" in container or once, where
            assert "readinessProbe" in container or once, where
    for name, deployment in rendered.by_component("Deployment").items():
        if name not in catalog.NAMES:
            continue  # the monitoring pods (lag exporter, alert relay, Alertmanager): probed above
        (container,) = pod_spec(deployment)["containers"]
        assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
        assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
        port = catalog.service(name).port
        admin_port = catalog.service(name).admin_port
        ports = [{"name": "http", "containerPort": port, "protocol": "TCP"}]
        if admin_port:
            ports.append({"name": "admin", "containerPort": admin_port, "protocol": "TCP"})
        assert container["ports"] == ports
        env = {e["name"]: e.get("value") for e in container["env"]}
        assert env["AIBOT_HTTP__PORT"] == str(port)
        assert env.get("AIBOT_ACCESS__ADMIN_PORT") == (str(admin_port) if admin_port else None)
        assert env["AIBOT_ENVIRONMENT"] == "production"
        assert env["AIBOT_CONFIG"] == "/etc/ai-bot/config.yaml"


@pytest.mark.parametrize("values_file", CI_VALUES)
def test_service_pods_are_locked_down(render, values_file: str) -> None:
    rendered = render(values_file)
    for doc in [*rendered.of_kind("Deployment"), *rendered.of_kind("Job")]:
        spec = pod_spec(doc)
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        assert spec["automountServiceAccountToken"] is False
        for container in spec["containers"]:
            context = container["securityContext"]
            assert context["readOnlyRootFilesystem"] is True
            assert context["allowPrivilegeEscalation"] is False
            assert context["capabilities"] == {"drop": ["ALL"]}
            mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
            assert "/tmp" in mounts
        volumes = {v["name"]: v for v in spec["volumes"]}
        tmp = next(v for v in volumes.values() if "emptyDir" in v and v["name"] == "tmp")
        assert tmp["emptyDir"]["sizeLimit"]


@pytest.mark.parametrize("values_file", CI_VALUES)
def test_configmaps_hold_no_secret(render, values_file: str) -> None:
    rendered = render(values_file)
    secret_values = [v for v in (ci_values(values_file).get("secrets") or {}).values() if v]
    for configmap in rendered.of_kind("ConfigMap"):
        text = yaml.safe_dump(configmap.get("data", {}))
        for value in secret_values:
            assert value not in text
        assert not KEY_LOOKING.search(text), KEY_LOOKING.search(text)
        for data in configmap.get("data", {}).values():
            _assert_secret_keys_are_references(yaml.safe_load(data))


def _assert_secret_keys_are_references(node: object, path: str = "") -> None:
    """Anything named like a secret in a ConfigMap may only be a ${VAR} reference to the environment."""
    if isinstance(node, dict):
        for key, value in node.items():
            if SECRET_NAMED.search(str(key)):
                assert isinstance(value, str) and re.fullmatch(r"\$\{[A-Z_][A-Z0-9_]*\}", value), f"{path}.{key}"
            _assert_secret_keys_are_references(value, f"{path}.{key}")
    elif isinstance(node, list):
        for i, item in enumerate(node):
            _assert_secret_keys_are_references(item, f"{path}[{i}]")


def test_chart_secret_holds_the_secrets_under_their_env_names(render) -> None:
    rendered = render(DEFAULT)
    (secret,) = rendered.of_kind("Secret")
    data = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
    values = ci_values(DEFAULT)["secrets"]
    assert data["AIBOT_TELEGRAM__BOT_TOKEN"] == values["telegramBotToken"]
    assert data["AIBOT_LLM_API_KEY"] == values["llmApiKey"]
    assert data["AIBOT_FEISHU__ENCRYPT_KEY"] == values["feishuEncryptKey"]
    # Generated when not given: a valid Telegram secret_token (1-256 of A-Z a-z 0-9 _ -).
    assert re.fullmatch(r"[A-Za-z0-9_-]{32,256}", data["AIBOT_TELEGRAM__WEBHOOK__SECRET_TOKEN"])
    # Unset secrets are left out, not set empty.
    assert "AIBOT_KAFKA__SASL_PASSWORD" not in data
    assert set(data) <= set(SECRET_ENV)
    for deployment in rendered.of_kind("Deployment"):
        (container,) = pod_spec(deployment)["containers"]
        assert container["envFrom"] == [{"secretRef": {"name": secret["metadata"]["name"]}}]


def test_existing_secret_replaces_the_chart_secret(render) -> None:
    rendered = render(EXTERNAL)
    assert rendered.of_kind("Secret") == []
    users = [*rendered.of_kind("Deployment"), *rendered.of_kind("Job")]
    assert len(users) == 6
    for doc in users:
        # The archiver also gets the storage backend's keys, from their own Secret.
        extra = [{"secretRef": {"name": "ai-bot-storage"}}] if doc["metadata"]["name"].endswith("-archiver") else []
        for container in pod_spec(doc)["containers"]:
            assert container["envFrom"] == [{"secretRef": {"name": "ai-bot-secrets"}}, *extra]


@pytest.mark.parametrize("values_file", CI_VALUES)
def test_config_file_is_a_valid_production_config(render, values_file: str, monkeypatch, tmp_path) -> None:
    """The ConfigMap's config.yaml, with the Secret's variables set, loads through the services' own settings."""
    rendered = render(values_file)
    config = rendered.config()
    # The release's Secret (not KEDA's login helper, which no service reads).
    releases = [d for d in rendered.of_kind("Secret") if not d["metadata"]["name"].endswith("-keda-kafka")]
    secret = {k: base64.b64decode(v).decode() for d in releases for k, v in d["data"].items()}
    env = secret or {name: f"from-existing-secret-{i}" for i, name in enumerate(SECRET_ENV)}
    for name in SECRET_ENV:
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    monkeypatch.setenv("AIBOT_CONFIG", str(path))
    monkeypatch.setenv("AIBOT_ENVIRONMENT", "production")
    settings = load_settings()
    assert settings.environment == "production"
    assert settings.llm_model().api_key.get_secret_value() == env["AIBOT_LLM_API_KEY"]
    assert settings.telegram.bot_token.get_secret_value() == env["AIBOT_TELEGRAM__BOT_TOKEN"]
    assert settings.telegram.webhook.url == "https://bot.example.com/telegram/webhook"
    assert settings.asr_model().device == ("cuda" if values_file == GPU else "cpu")
    values = ci_values(values_file)
    assert settings.kafka.partitions == values.get("kafka", {}).get("partitions", 12)


def test_gpu_limits_only_on_asr_worker_and_only_when_enabled(render) -> None:
    for values_file in (DEFAULT, EXTERNAL):
        assert "nvidia.com/gpu" not in render(values_file).text
    rendered = render(GPU)
    for name, deployment in rendered.by_component("Deployment").items():
        spec = pod_spec(deployment)
        (container,) = spec["containers"]
        if name == "asr-worker":
            assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
            assert container["image"] == "ghcr.io/ai-bot/ai-bot-asr-worker:0.1.0-cuda"
            assert spec["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
            assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in spec["tolerations"]
            assert spec["runtimeClassName"] == "nvidia"
            mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
            assert mounts["/models"]["readOnly"] is True
            assert mounts["/var/cache/ai-bot"]["name"] == "model-cache"
            assert {"name": "HF_HOME", "value": "/var/cache/ai-bot/huggingface"} in container["env"]
        else:
            assert "nvidia.com/gpu" not in yaml.safe_dump(container["resources"])
            assert "nodeSelector" not in spec and "tolerations" not in spec
    hpa = rendered.by_component("HorizontalPodAutoscaler")["asr-worker"]["spec"]
    assert (hpa["minReplicas"], hpa["maxReplicas"]) == (1, 3)
    assert rendered.by_component("HorizontalPodAutoscaler")["core-llm"]["spec"]["maxReplicas"] == 10
    asr_models = [m for m in rendered.config()["models"] if m["type"] == "asr"]
    assert [m["device"] for m in asr_models] == ["cuda"]


def test_network_policies_admit_outside_traffic_only_to_the_webhook_receivers(render) -> None:
    rendered = render(DEFAULT)
    policies = {p["metadata"]["name"]: p["spec"] for p in rendered.of_kind("NetworkPolicy")}
    assert set(policies) == {"ai-bot-namespace-only", "ai-bot-webhooks"}
    everyone = policies["ai-bot-namespace-only"]
    assert everyone["podSelector"]["matchLabels"] == {
        "app.kubernetes.io/name": "ai-bot",
        "app.kubernetes.io/instance": "ai-bot",
    }
    assert everyone["policyTypes"] == ["Ingress"]
    same_namespace, metrics = everyone["ingress"]
    assert same_namespace == {"from": [{"podSelector": {}}]}
    assert metrics["from"] == [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}]
    assert metrics["ports"] == [{"port": "http", "protocol": "TCP"}]
    webhooks = policies["ai-bot-webhooks"]
    (selector,) = webhooks["podSelector"]["matchExpressions"]
    assert selector["values"] == ["ingress-telegram", "ingress-feishu"]
    (rule,) = webhooks["ingress"]
    assert rule["from"] == [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}}}]
    external = {p["metadata"]["name"]: p["spec"] for p in render(EXTERNAL).of_kind("NetworkPolicy")}
    assert external["ai-bot-namespace-only"]["ingress"][1]["from"][0]["namespaceSelector"]["matchLabels"] == {
        "kubernetes.io/metadata.name": "observability"
    }


def test_ingress_serves_both_webhooks_over_tls_with_rate_limits(render) -> None:
    rendered = render(DEFAULT)
    (ingress,) = rendered.of_kind("Ingress")
    spec = ingress["spec"]
    assert spec["ingressClassName"] == "nginx"
    assert spec["tls"] == [{"hosts": ["bot.example.com"], "secretName": "ai-bot-tls"}]
    (rule,) = spec["rules"]
    assert rule["host"] == "bot.example.com"
    backends = {p["path"]: p["backend"]["service"]["name"] for p in rule["http"]["paths"]}
    assert backends == {"/telegram/webhook": "ai-bot-ingress-telegram", "/feishu/events": "ai-bot-ingress-feishu"}
    services = {s["metadata"]["name"] for s in rendered.of_kind("Service")}
    assert set(backends.values()) <= services
    annotations = ingress["metadata"]["annotations"]
    assert 0 < int(annotations["nginx.ingress.kubernetes.io/limit-rps"]) <= 100
    assert annotations["nginx.ingress.kubernetes.io/force-ssl-redirect"] == "true"
    assert "ECDHE" in annotations["nginx.ingress.kubernetes.io/ssl-ciphers"]
    (external,) = render(EXTERNAL).of_kind("Ingress")
    assert external["spec"]["tls"][0]["secretName"] == "bot-example-com-tls"
    assert external["metadata"]["annotations"]["nginx.ingress.kubernetes.io/whitelist-source-range"] == (
        "149.154.160.0/20,91.108.4.0/22"
    )


def test_internal_kafka_is_a_single_kraft_broker_and_external_replaces_it(render) -> None:
    rendered = render(DEFAULT)
    (broker,) = rendered.of_kind("StatefulSet")
    (container,) = pod_spec(broker)["containers"]
    assert container["image"].startswith("apache/kafka:")
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert env["KAFKA_ADVERTISED_LISTENERS"] == f"PLAINTEXT://ai-bot-kafka.{NAMESPACE}.svc:9092"
    assert rendered.config()["kafka"]["bootstrap_servers"] == "ai-bot-kafka:9092"
    assert broker["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"] == "8Gi"
    external = render(EXTERNAL)
    assert external.of_kind("StatefulSet") == []
    kafka = external.config()["kafka"]
    assert kafka["security_protocol"] == "SASL_SSL"
    assert kafka["sasl_mechanism"] == "SCRAM-SHA-512"
    assert kafka["ssl_cafile"] == "/etc/ai-bot-kafka-ca/ca.crt"
    assert "sasl_password" not in kafka
    for deployment in external.of_kind("Deployment"):
        volumes = {v["name"]: v for v in pod_spec(deployment)["volumes"]}
        assert volumes["kafka-ca"]["secret"]["secretName"] == "kafka-ca"


@pytest.mark.parametrize(("values_file", "partitions"), [(DEFAULT, "12"), (EXTERNAL, "24")])
def test_topics_hook_job_runs_the_cli_with_the_configured_partitions(render, values_file: str, partitions: str) -> None:
    (job,) = render(values_file).of_kind("Job")
    annotations = job["metadata"]["annotations"]
    assert annotations["helm.sh/hook"] == "post-install,post-upgrade"
    (container,) = pod_spec(job)["containers"]
    assert container["command"] == ["ai-bot", "topics", "create"]
    assert container["image"].startswith("ghcr.io/ai-bot/ai-bot-core-llm:")
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["AIBOT_KAFKA__PARTITIONS"] == partitions
    assert env["AIBOT_CONFIG"] == "/etc/ai-bot/config.yaml"


def test_helm_test_asks_readyz_of_every_service(render) -> None:
    rendered = render(DEFAULT)
    (pod,) = rendered.of_kind("Pod")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    (container,) = pod["spec"]["containers"]
    urls = [a for a in container["command"] if a.startswith("http://")]
    assert urls == [f"http://ai-bot-{s.name}:{s.port}/readyz" for s in catalog.SERVICES]
    assert "urllib.request.urlopen" in container["command"][2]


def test_monitoring_values_are_there_for_the_monitoring_templates() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    monitoring = values["monitoring"]
    # The monitoring templates add their own keys (labels, lagExporter, ...); these switches stay off.
    assert monitoring["enabled"] is False
    assert monitoring["serviceMonitor"]["enabled"] is False and monitoring["serviceMonitor"]["interval"] == "30s"
    assert monitoring["prometheusRule"]["enabled"] is False
    assert monitoring["grafanaDashboard"]["enabled"] is False


def test_notes_give_the_webhook_urls_and_next_steps(helm) -> None:
    result = helm(
        "install", "ai-bot", str(CHART), "--namespace", NAMESPACE, "--dry-run=client", "-f", str(CHART / "ci" / DEFAULT)
    )
    assert result.returncode == 0, result.stderr
    notes = result.stdout.split("NOTES:", 1)[1]
    assert "Telegram: https://bot.example.com/telegram/webhook" in notes
    assert "calls setWebhook" in notes
    assert "Feishu:   https://bot.example.com/feishu/events" in notes
    assert f"helm test ai-bot -n {NAMESPACE}" in notes
    assert "single Kafka broker without replication" in notes


def test_every_consumer_is_a_static_group_member_named_by_its_pod(render) -> None:
    """A restarted pod takes its own partitions back without a rebalance; webhook-only ingresses
    consume nothing and join no group."""
    for name, deployment in render(DEFAULT).by_component("Deployment").items():
        (container,) = pod_spec(deployment)["containers"]
        env = {e["name"]: e for e in container.get("env", [])}
        if name.startswith("ingress-"):
            assert "AIBOT_KAFKA__GROUP_INSTANCE_ID" not in env, name
            continue
        field = env["AIBOT_KAFKA__GROUP_INSTANCE_ID"]["valueFrom"]["fieldRef"]["fieldPath"]
        assert field == "metadata.name", name
