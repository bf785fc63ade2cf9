"""Fixtures of the deploy checks: helm from tools/bin (installed on first use) and the chart rendered
once per values file."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.deploy.helpers import CHART, NAMESPACE, REPO, TOOLS_BIN, Rendered


@pytest.fixture(scope="session")
def tools_bin() -> Path:
    """tools/bin with helm and the compose schema; runs scripts/install-deploy-tools.sh when missing."""
    if not (TOOLS_BIN / "helm").exists() or not (TOOLS_BIN / "compose-spec.json").exists():
        result = subprocess.run(
            ["bash", str(REPO / "scripts" / "install-deploy-tools.sh")],
            capture_output=True,
            text=True,
            timeout=300,
            env={**os.environ, "AIBOT_TOOLS_BIN": str(TOOLS_BIN)},
        )
        if result.returncode != 0:
            reason = result.stderr.strip()[-300:]
            pytest.skip(f"helm could not be installed (scripts/install-deploy-tools.sh: {reason})")
    return TOOLS_BIN


@pytest.fixture(scope="session")
def helm(tools_bin: Path) -> Callable[..., subprocess.CompletedProcess[str]]:
    def run(*args: str) -> subprocess.CompletedProcess[str]:
        # A private HELM_* home so a developer's repositories or plugins never change the result.
        home = tools_bin / ".helm-home"
        env = {
            **os.environ,
            "HELM_CONFIG_HOME": str(home / "config"),
            "HELM_CACHE_HOME": str(home / "cache"),
            "HELM_DATA_HOME": str(home / "data"),
        }
        return subprocess.run([str(tools_bin / "helm"), *args], capture_output=True, text=True, timeout=120, env=env)

    return run


@pytest.fixture(scope="session")
def render(helm: Callable[..., subprocess.CompletedProcess[str]], tmp_path_factory: pytest.TempPathFactory):
    """render(values_file, *extra_args) -> Rendered; each distinct call renders once per session."""
    cache: dict[tuple[str, ...], Rendered] = {}
    out_dir = tmp_path_factory.mktemp("rendered")

    def run(values_file: str, *extra: str) -> Rendered:
        key = (values_file, *extra)
        if key not in cache:
            result = helm(
                "template",
                "ai-bot",
                str(CHART),
                "--namespace",
                NAMESPACE,
                "-f",
                str(CHART / "ci" / values_file),
                *extra,
            )
            assert result.returncode == 0, result.stderr
            rendered = Rendered(result.stdout)
            rendered.path = out_dir / f"{len(cache)}-{values_file}"
            rendered.path.write_text(result.stdout)
            cache[key] = rendered
        return cache[key]

    return run
