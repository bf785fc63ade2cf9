"""scripts/install-deploy-tools.sh: pinned helm/kubectl in tools/bin, and offline once installed."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from tests.deploy.helpers import REPO

SCRIPT = REPO / "scripts" / "install-deploy-tools.sh"


def test_tools_are_the_pinned_versions(tools_bin: Path) -> None:
    helm = subprocess.run([str(tools_bin / "helm"), "version", "--short"], capture_output=True, text=True, timeout=30)
    assert helm.stdout.startswith("v4.1.4")
    kubectl = subprocess.run(
        [str(tools_bin / "kubectl"), "version", "--client"], capture_output=True, text=True, timeout=30
    )
    assert "v1.35.2" in kubectl.stdout


def test_a_second_run_needs_no_registry(tools_bin: Path, tmp_path: Path) -> None:
    """Once installed, the script must not reach for npm: an npm that fails proves it was not called."""
    (tmp_path / "npm").write_text("#!/bin/sh\necho 'npm must not be called' >&2\nexit 99\n")
    (tmp_path / "npm").chmod(0o755)
    env = {**os.environ, "PATH": f"{tmp_path}:{os.environ['PATH']}", "AIBOT_TOOLS_BIN": str(tools_bin)}
    result = subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True, timeout=60, env=env)
    assert result.returncode == 0, result.stderr
    assert "npm must not be called" not in result.stderr
    assert "v4.1.4" in result.stdout
