"""The service table (aibot_common.catalog) matches the packages on disk, and the images' entry point
(aibot_common.entrypoint) runs and probes the service an image was built for."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import threading
import tomllib
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest

from aibot_common import catalog, entrypoint
from aibot_common.testing.broker import free_port

REPO = Path(__file__).resolve().parents[2]


def test_every_service_directory_is_in_the_table_and_every_entry_has_its_package() -> None:
    on_disk = {p.parent.name for p in (REPO / "services").glob("*/pyproject.toml")}
    assert set(catalog.NAMES) == on_disk
    for spec in catalog.SERVICES:
        project = tomllib.loads((REPO / "services" / spec.name / "pyproject.toml").read_text())["project"]
        assert project["name"] == spec.package
        assert "aibot-fakes" not in " ".join(project["dependencies"]), f"{spec.name} must not depend on the fakes"
        main = REPO / "services" / spec.name / "src" / spec.module / "__main__.py"
        # `python -m <module>` and the image's entry point both call this main().
        functions = {n.name for n in ast.parse(main.read_text()).body if isinstance(n, ast.FunctionDef)}
        assert "main" in functions, main


def test_names_ports_and_values_keys_are_distinct() -> None:
    for attribute in ("name", "module", "port", "values_key", "image"):
        values = [getattr(s, attribute) for s in catalog.SERVICES]
        assert len(set(values)) == len(values), attribute
    assert catalog.service("core-llm").values_key == "coreLlm"
    assert catalog.service("ingress-telegram").values_key == "ingressTelegram"
    assert [s.name for s in catalog.SERVICES if s.public] == ["ingress-telegram", "ingress-feishu"]
    assert [s.name for s in catalog.SERVICES if s.gpu] == ["asr-worker"]


def test_an_unknown_service_is_refused_with_the_known_names() -> None:
    with pytest.raises(KeyError, match=r"unknown service 'core'.*core-llm, asr-worker"):
        catalog.service("core")


def test_catalog_command_lists_the_names_for_shell_loops() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "aibot_common.catalog", "names"], capture_output=True, text=True, check=True
    )
    assert result.stdout.split() == list(catalog.NAMES)
    gpu = subprocess.run(
        [sys.executable, "-m", "aibot_common.catalog", "names", "--gpu"], capture_output=True, text=True, check=True
    )
    assert gpu.stdout.split() == ["asr-worker"]
    usage = subprocess.run([sys.executable, "-m", "aibot_common.catalog"], capture_output=True, text=True)
    assert usage.returncode == 2 and "names" in usage.stderr


def _entrypoint(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("AIBOT_")}
    return subprocess.run(
        [sys.executable, "-m", "aibot_common.entrypoint", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**clean, **env},
    )


def test_entrypoint_without_or_with_an_unknown_service_says_which_exist() -> None:
    missing = _entrypoint()
    assert missing.returncode == 2
    assert "AIBOT_SERVICE: set it to the service to run, one of ingress-telegram" in missing.stderr
    unknown = _entrypoint(AIBOT_SERVICE="llm")
    assert unknown.returncode == 2
    assert "unknown service 'llm'" in unknown.stderr


def test_entrypoint_runs_the_named_service_like_python_dash_m() -> None:
    # No model configured: core-llm's own start-up check answers, so it was core-llm's main that ran.
    result = _entrypoint(AIBOT_SERVICE="core-llm")
    assert result.returncode == 2
    assert "ai-bot core-llm: no llm model in the models list" in result.stderr


class _Health(BaseHTTPRequestHandler):
    status = {"/healthz": 200, "/readyz": 503}

    def do_GET(self) -> None:
        self.send_response(self.status.get(self.path, 404))
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def health_port() -> Iterator[int]:
    server = HTTPServer(("127.0.0.1", free_port()), _Health)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()
    thread.join()


def test_probe_passes_on_200_and_fails_on_503_or_nothing_listening(
    health_port: int, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = catalog.service("renderer")
    monkeypatch.setenv("AIBOT_HTTP__PORT", str(health_port))
    assert entrypoint.probe(spec, "healthz") == 0
    assert entrypoint.probe(spec, "readyz") == 1
    assert "503" in capsys.readouterr().err
    monkeypatch.setenv("AIBOT_HTTP__PORT", str(free_port()))
    assert entrypoint.probe(spec, "healthz", timeout_s=1) == 1
    assert "renderer: http://127.0.0.1:" in capsys.readouterr().err


def test_probe_uses_the_catalog_port_when_none_is_configured(monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[str] = []

    def refuse(url: str, timeout: float) -> None:
        asked.append(url)
        raise OSError("connection refused")

    monkeypatch.delenv("AIBOT_HTTP__PORT", raising=False)
    monkeypatch.setenv("AIBOT_SERVICE", "asr-worker")
    monkeypatch.setattr(entrypoint.urllib.request, "urlopen", refuse)
    assert entrypoint.main(["healthz"]) == 1
    assert asked == ["http://127.0.0.1:8084/healthz"]
    assert entrypoint.main(["metrics"]) == 2


def test_the_catalogs_consumer_groups_are_the_topic_registrys() -> None:
    """Every group of topics.CONSUMPTION belongs to exactly one service of the table, so the chart's
    lag-driven autoscaler (KEDA) watches every group of a service and no other service's."""
    from aibot_common.topics import CONSUMPTION

    owners: dict[str, list[str]] = {}
    for spec in catalog.SERVICES:
        for group in spec.groups:
            owners.setdefault(group, []).append(spec.name)
    assert {group for _, group in CONSUMPTION} == set(owners)
    assert all(len(names) == 1 for names in owners.values()), owners
