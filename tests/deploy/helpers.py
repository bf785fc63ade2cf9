"""What the deploy checks share: paths, the services, and the rendered chart with its lookups."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import yaml

from aibot_common import catalog

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "ai-bot"
TOOLS_BIN = Path(os.environ.get("AIBOT_TOOLS_BIN", REPO / "tools" / "bin"))
CI_VALUES = sorted(p.name for p in (CHART / "ci").glob("*.yaml"))
SERVICES = catalog.NAMES  # the deploy checks hold every deployment to the one table of services
NAMESPACE = "bots"


def venv_tool(name: str) -> str | None:
    """A console script of the dev dependencies (hadolint, shellcheck, kubernetes-validate)."""
    candidate = Path(sys.executable).parent / name
    return str(candidate) if candidate.exists() else shutil.which(name)


class Rendered:
    """The manifests of one `helm template` run, with lookups the assertions need."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.path: Path | None = None
        self.docs = [d for d in yaml.safe_load_all(text) if d]

    def of_kind(self, kind: str) -> list[dict]:
        return [d for d in self.docs if d["kind"] == kind]

    def one(self, kind: str, name: str) -> dict:
        found = [d for d in self.of_kind(kind) if d["metadata"]["name"] == name]
        assert len(found) == 1, f"expected one {kind} {name}, found {len(found)}"
        return found[0]

    def by_component(self, kind: str) -> dict[str, dict]:
        return {d["metadata"]["labels"]["app.kubernetes.io/component"]: d for d in self.of_kind(kind)}

    def config(self) -> dict:
        (configmap,) = [d for d in self.of_kind("ConfigMap") if "config.yaml" in d.get("data", {})]
        return yaml.safe_load(configmap["data"]["config.yaml"])
