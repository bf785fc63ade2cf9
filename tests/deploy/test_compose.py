"""docker-compose.yml: valid Compose, every service built and health-checked, one public port,
secrets from the env file, and a config file the services accept."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from aibot_common import catalog
from aibot_common.settings import ConfigError, load_settings
from tests.deploy.helpers import REPO

COMPOSE_FILE = REPO / "docker-compose.yml"
COMPOSE = yaml.safe_load(COMPOSE_FILE.read_text())  # anchors and `<<` merges resolved, as compose does
ENV_EXAMPLE = REPO / ".env.example"


def env_example(*, commented: bool = False) -> dict[str, str]:
    """The variables .env.example sets (with commented=True, also the commented-out ones)."""
    prefix = r"#?\s*" if commented else ""
    pairs = re.findall(rf"^{prefix}([A-Z][A-Z0-9_]*)=(.*)$", ENV_EXAMPLE.read_text(), flags=re.MULTILINE)
    return dict(pairs)


def test_compose_file_follows_the_compose_specification(tools_bin: Path) -> None:
    import jsonschema

    schema = json.loads((tools_bin / "compose-spec.json").read_text())
    # The file names its draft as http://json-schema.org/draft/2019-09/schema# (http, not the https id
    # jsonschema knows), so the draft is chosen here rather than guessed.
    validator = jsonschema.Draft201909Validator(schema)
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(COMPOSE)]
    assert errors == []


def test_docker_compose_config_accepts_it(tmp_path: Path) -> None:
    tool = shutil.which("docker-compose")
    if tool is None:
        pytest.skip("docker-compose is not installed (apt-get install docker-compose); the schema test covers the file")
    env = {**os.environ, "AIBOT_ENV_FILE": str(ENV_EXAMPLE), "COMPOSE_PROFILES": "feishu,monitoring"}
    result = subprocess.run(
        [tool, "-f", str(COMPOSE_FILE), "--project-directory", str(REPO), "config"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert set(yaml.safe_load(result.stdout)["services"]) >= {*catalog.NAMES, "kafka", "proxy"}


def test_kafka_is_apache_kafka_in_kraft_mode_with_a_healthcheck() -> None:
    kafka = COMPOSE["services"]["kafka"]
    assert kafka["image"].startswith("apache/kafka:")
    assert kafka["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert kafka["environment"]["KAFKA_ADVERTISED_LISTENERS"] == "PLAINTEXT://kafka:9092"
    assert "kafka-broker-api-versions.sh" in " ".join(kafka["healthcheck"]["test"])
    assert any(v.endswith(":/var/lib/kafka/data") for v in kafka["volumes"])


# The containers built from docker/Dockerfile that are not services of the catalog: CLI commands
# run from the core-llm image (which, like every image, carries the ai-bot CLI).
CLI_CONTAINERS = {
    "topics": "core-llm",
    "lag-exporter": "core-llm",
    "alertmanager-config": "core-llm",
    "alert-relay": "core-llm",
}


def test_the_compose_services_are_the_catalog() -> None:
    built = {name for name, s in COMPOSE["services"].items() if "build" in s}
    assert built == {*catalog.NAMES, *CLI_CONTAINERS}


@pytest.mark.parametrize("name", catalog.NAMES)
def test_each_service_is_built_from_the_dockerfile_and_health_checked(name: str) -> None:
    service = COMPOSE["services"][name]
    assert service["build"] == {"context": ".", "dockerfile": "docker/Dockerfile", "args": {"SERVICE": name}}
    assert service["image"] == f"{catalog.service(name).image}:${{AIBOT_IMAGE_TAG:-local}}"
    # The image's entry point asks its own /readyz (port from the catalog or AIBOT_HTTP__PORT).
    assert service["healthcheck"]["test"] == ["CMD", "python", "-m", "aibot_common.entrypoint", "readyz"]
    assert "AIBOT_HTTP__PORT" not in service["environment"]
    assert service["depends_on"]["kafka"] == {"condition": "service_healthy"}
    assert service["depends_on"]["topics"] == {"condition": "service_completed_successfully"}
    assert service["env_file"] == "${AIBOT_ENV_FILE:-.env}"
    assert service["environment"]["AIBOT_CONFIG"] == "/etc/ai-bot/config.yaml"
    assert service["environment"]["AIBOT_KAFKA__BOOTSTRAP_SERVERS"] == "kafka:9092"
    assert any(v.endswith(":/etc/ai-bot/config.yaml:ro") for v in service["volumes"])
    assert service["read_only"] is True and service["cap_drop"] == ["ALL"]
    # Only the proxy publishes a port; the services stay on the compose network.
    assert "ports" not in service
    # Only an ingress of a platform other than the default one waits for its profile.
    spec = catalog.service(name)
    assert service.get("profiles", []) == ([spec.platform] if spec.platform and spec.platform != "telegram" else [])


@pytest.mark.parametrize("name", sorted(CLI_CONTAINERS))
def test_cli_containers_use_a_service_image(name: str) -> None:
    container = COMPOSE["services"][name]
    image_of = CLI_CONTAINERS[name]
    assert container["build"] == {"context": ".", "dockerfile": "docker/Dockerfile", "args": {"SERVICE": image_of}}
    assert container["image"] == COMPOSE["services"][image_of]["image"]
    assert container["entrypoint"][0] == "ai-bot"


def test_topics_are_created_by_the_cli_before_the_services_start() -> None:
    topics = COMPOSE["services"]["topics"]
    assert topics["entrypoint"] == ["ai-bot", "topics", "create"]
    assert topics["depends_on"] == {"kafka": {"condition": "service_healthy"}}


def test_webhooks_are_published_on_one_port_through_the_proxy() -> None:
    published = {name: s["ports"] for name, s in COMPOSE["services"].items() if "ports" in s and not s.get("profiles")}
    assert published == {"proxy": ["${AIBOT_HTTPS_PORT:-443}:443"]}
    proxy = COMPOSE["services"]["proxy"]
    caddyfile_mount = next(v for v in proxy["volumes"] if v.endswith(":/etc/caddy/Caddyfile:ro"))
    caddyfile = (REPO / caddyfile_mount.split(":")[0]).read_text()
    routes = dict(re.findall(r"handle (/\S+) \{\s*reverse_proxy (\S+)", caddyfile))
    upstream = {name: f"{name}:{catalog.service(name).port}" for name in ("ingress-telegram", "ingress-feishu")}
    assert routes == {"/telegram/webhook": upstream["ingress-telegram"], "/feishu/events": upstream["ingress-feishu"]}
    # Exactly the public services of the catalog, at their ports.
    assert set(routes.values()) == {f"{s.name}:{s.port}" for s in catalog.SERVICES if s.public}
    # Monitoring, when enabled, listens on loopback only.
    for name in ("prometheus", "grafana", "alertmanager"):
        assert COMPOSE["services"][name]["profiles"] == ["monitoring"]
        assert all(p.startswith("127.0.0.1:") for p in COMPOSE["services"][name]["ports"])


def test_prometheus_scrapes_every_service() -> None:
    mount = next(v for v in COMPOSE["services"]["prometheus"]["volumes"] if v.endswith("prometheus.yml:ro"))
    config = yaml.safe_load((REPO / mount.split(":")[0]).read_text())
    (job,) = [j for j in config["scrape_configs"] if j["job_name"] == "ai-bot"]
    targets = {group["labels"]["service"]: group["targets"] for group in job["static_configs"]}
    expected = {s.name: [f"{s.name}:{s.port}"] for s in catalog.SERVICES}
    assert targets == {**expected, "lag-exporter": ["lag-exporter:9308"]}


def test_env_example_names_every_secret_and_the_real_env_file_is_ignored() -> None:
    names = set(env_example(commented=True))
    assert {
        "AIBOT_TELEGRAM__BOT_TOKEN",
        "AIBOT_TELEGRAM__WEBHOOK__SECRET_TOKEN",
        "AIBOT_FEISHU__APP_SECRET",
        "AIBOT_FEISHU__VERIFICATION_TOKEN",
        "AIBOT_FEISHU__ENCRYPT_KEY",
        "AIBOT_LLM_API_KEY",
        "AIBOT_PUBLIC_HOST",
    } <= names
    ignored = subprocess.run(["git", "check-ignore", "-q", ".env"], cwd=REPO, check=False)
    assert ignored.returncode == 0, ".env must be git-ignored"
    tracked = subprocess.run(["git", "check-ignore", "-q", ".env.example"], cwd=REPO, check=False)
    assert tracked.returncode == 1


def _load_compose_config(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]):
    for name in [n for n in os.environ if n.startswith("AIBOT_")]:
        monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    service_env = COMPOSE["services"]["core-llm"]["environment"]
    for name, value in service_env.items():
        monkeypatch.setenv(name, value)
    mount = next(v for v in COMPOSE["services"]["core-llm"]["volumes"] if v.endswith(":/etc/ai-bot/config.yaml:ro"))
    default_file = re.fullmatch(r"\$\{AIBOT_CONFIG_FILE:-(.+)\}", mount.split(":/etc")[0]).group(1)
    monkeypatch.setenv("AIBOT_CONFIG", str(REPO / default_file))
    return load_settings()


def test_compose_config_file_loads_with_the_env_file(monkeypatch: pytest.MonkeyPatch) -> None:
    filled = {k: v for k, v in env_example().items() if v and v != "changeme"}
    filled |= {
        "AIBOT_TELEGRAM__BOT_TOKEN": "123456:AAH-real-looking",
        "AIBOT_LLM_API_KEY": "sk-test-1234",
        "AIBOT_TELEGRAM__WEBHOOK__SECRET_TOKEN": "a" * 32,
    }
    settings = _load_compose_config(monkeypatch, filled)
    assert settings.environment == "production"
    assert settings.kafka.bootstrap_servers == "kafka:9092"
    assert settings.telegram.webhook.url == "https://bot.example.com/telegram/webhook"
    assert settings.llm_model().api_key.get_secret_value() == "sk-test-1234"
    assert settings.llm_model().endpoint == "https://api.openai.com/v1/chat/completions"
    assert settings.asr_model().device == "cpu"


def test_the_example_placeholders_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """Copying .env.example without filling it in must not start a bot with placeholder secrets."""
    with pytest.raises(ConfigError, match="placeholder"):
        _load_compose_config(monkeypatch, {k: v for k, v in env_example().items() if v})


def test_alertmanager_reads_the_config_the_cli_writes_and_prometheus_sends_to_it() -> None:
    """One generator of Alertmanager's config (`ai-bot alerts config`, tested against the real
    Alertmanager in test_alert_delivery.py), written into the volume Alertmanager starts from."""
    services = COMPOSE["services"]
    writer = services["alertmanager-config"]
    assert writer["entrypoint"][:3] == ["ai-bot", "alerts", "config"]
    out = writer["entrypoint"][writer["entrypoint"].index("--out") + 1]
    volume = next(v.split(":")[0] for v in writer["volumes"] if v.split(":")[1] == str(Path(out).parent))
    alertmanager = services["alertmanager"]
    mount = next(v for v in alertmanager["volumes"] if v.startswith(f"{volume}:"))
    assert f"--config.file={mount.split(':')[1]}/{Path(out).name}" in alertmanager["command"]
    assert alertmanager["depends_on"] == {"alertmanager-config": {"condition": "service_completed_successfully"}}
    assert services["alert-relay"]["entrypoint"][:3] == ["ai-bot", "alerts", "relay"]
    prometheus = yaml.safe_load((REPO / "deploy/prometheus/prometheus.yml").read_text())
    assert prometheus["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"] == ["alertmanager:9093"]
