"""helm lint --strict, the schema, the early failures, and Kubernetes 1.35 validation of what renders."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.deploy.helpers import CHART, CI_VALUES, venv_tool


def test_ci_values_files_exist() -> None:
    assert {"default-values.yaml", "gpu-values.yaml", "external-kafka-values.yaml"} <= set(CI_VALUES)


@pytest.mark.parametrize("values_file", CI_VALUES)
def test_helm_lint_strict(helm, values_file: str) -> None:
    result = helm("lint", "--strict", str(CHART), "-f", str(CHART / "ci" / values_file))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 chart(s) failed" in result.stdout


@pytest.mark.parametrize("values_file", CI_VALUES)
def test_rendered_manifests_are_valid_kubernetes_1_35(render, values_file: str) -> None:
    tool = venv_tool("kubernetes-validate")
    if tool is None:
        pytest.skip("kubernetes-validate is not installed (uv sync --all-packages installs the dev group)")
    rendered = render(values_file)
    result = subprocess.run(
        [tool, "-k", "1.35.0", "--strict", "--quiet", str(rendered.path)], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert len(rendered.docs) > 20


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("kafka:\n  partitions: twelve\n", "/kafka/partitions"),
        ('autoscaling:\n  minReplicas: "2"\n', "/autoscaling/minReplicas"),
        ("coreLlm:\n  autoscaling:\n    maxReplicas: ten\n", "/coreLlm/autoscaling/maxReplicas"),
        ("ingress:\n  rateLimit:\n    rps: fast\n", "/ingress/rateLimit/rps"),
    ],
)
def test_schema_rejects_a_string_where_a_number_belongs(helm, tmp_path: Path, override: str, message: str) -> None:
    bad = tmp_path / "bad-values.yaml"
    bad.write_text(override)
    default = str(CHART / "ci" / "default-values.yaml")
    lint = helm("lint", "--strict", str(CHART), "-f", default, "-f", str(bad))
    template = helm("template", "ai-bot", str(CHART), "-f", default, "-f", str(bad))
    assert lint.returncode != 0
    assert message in lint.stdout + lint.stderr
    assert template.returncode != 0
    assert message in template.stderr
    assert "want integer" in template.stderr


@pytest.mark.parametrize(
    ("override", "message"),
    [
        # An api key in the models list would land in the ConfigMap: the schema refuses it.
        (
            "config:\n  models:\n    - {name: m, type: llm, endpoint: 'https://x', api_key: sk-abc}\n",
            "additional properties 'api_key' not allowed",
        ),
        ("config:\n  telegram:\n    bot_token: '123:abc'\n", "additional properties 'bot_token' not allowed"),
        ("kafka:\n  securityProtocol: TLS\n", "/kafka/securityProtocol"),
        ("unknownKey: 1\n", "additional properties 'unknownKey' not allowed"),
    ],
)
def test_schema_rejects_secrets_in_config_and_unknown_values(helm, tmp_path: Path, override: str, message: str) -> None:
    bad = tmp_path / "bad-values.yaml"
    bad.write_text(override)
    result = helm("template", "ai-bot", str(CHART), "-f", str(CHART / "ci" / "default-values.yaml"), "-f", str(bad))
    assert result.returncode != 0
    assert message in result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((), "set secrets.telegramBotToken"),
        (("--set", "secrets.telegramBotToken=1:x"), "webhook mode needs a public URL"),
        (("--set", "secrets.telegramBotToken=1:x", "--set", "ingress.host=a.b"), "set secrets.llmApiKey"),
        (("--set", "existingSecret=s", "--set", "config.telegram.mode=polling"), "set ingress.host"),
        (
            ("--set", "existingSecret=s", "--set", "ingress.host=a.b", "--set", "kafka.bootstrapServers=k:9092"),
            "not both",
        ),
        (
            ("--set", "existingSecret=s", "--set", "ingress.host=a.b", "--set", "kafka.internal.enabled=false"),
            "set kafka.bootstrapServers",
        ),
        (
            ("--set", "existingSecret=s", "--set", "ingress.host=a.b", "--set", "config.feishu.enabled=true"),
            "set feishu.app_id",
        ),
    ],
)
def test_template_fails_early_with_what_to_set(helm, args: tuple[str, ...], message: str) -> None:
    result = helm("template", "ai-bot", str(CHART), *args)
    assert result.returncode != 0
    assert message in result.stderr


def test_existing_secret_and_host_are_enough_to_render(helm) -> None:
    result = helm("template", "ai-bot", str(CHART), "--set", "existingSecret=s", "--set", "ingress.host=a.example")
    assert result.returncode == 0, result.stderr
