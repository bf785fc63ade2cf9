"""The Helm chart against the one table of services (aibot_common.catalog): the generated list its
templates range over is current, and each service has its values block, image and schema entry."""

from __future__ import annotations

import json

import pytest
import yaml

from aibot_common import catalog
from tests.deploy.helpers import CHART

VALUES = yaml.safe_load((CHART / "values.yaml").read_text())
SCHEMA = json.loads((CHART / "values.schema.json").read_text())


def test_the_charts_service_list_is_generated_from_the_catalog() -> None:
    on_disk = (CHART / "files" / "services.yaml").read_text()
    assert on_disk == catalog.chart_fragment(), (
        "charts/ai-bot/files/services.yaml is stale: "
        "uv run python -m aibot_common.catalog chart > charts/ai-bot/files/services.yaml"
    )
    entries = yaml.safe_load(on_disk)
    assert [e["name"] for e in entries] == list(catalog.NAMES)
    assert {e["name"]: e["port"] for e in entries} == {s.name: s.port for s in catalog.SERVICES}


@pytest.mark.parametrize("spec", catalog.SERVICES, ids=catalog.NAMES)
def test_each_service_has_its_values_block_image_and_schema(spec: catalog.ServiceSpec) -> None:
    block = VALUES[spec.values_key]
    assert block["image"]["repository"] == spec.image
    assert spec.values_key in SCHEMA["properties"]
    # The GPU pool settings exist exactly for the services with a CUDA image (same repository, -cuda tag).
    assert ("gpu" in block) == spec.gpu
    if spec.gpu:
        assert block["gpu"]["image"]["repository"] == spec.image


def test_no_values_block_without_a_service() -> None:
    per_service = {key for key, value in VALUES.items() if isinstance(value, dict) and "replicaCount" in value}
    assert per_service == {s.values_key for s in catalog.SERVICES}


def test_the_rendered_chart_runs_each_service_on_its_catalog_port(render) -> None:
    rendered = render("default-values.yaml")
    deployments = rendered.by_component("Deployment")
    for spec in catalog.SERVICES:
        (container,) = deployments[spec.name]["spec"]["template"]["spec"]["containers"]
        assert container["ports"][0]["containerPort"] == spec.port
        # The image's entry point picks the service from its AIBOT_SERVICE; the chart passes no command.
        assert "command" not in container and "args" not in container
    webhooks = next(p for p in rendered.of_kind("NetworkPolicy") if p["metadata"]["name"].endswith("-webhooks"))
    (selector,) = webhooks["spec"]["podSelector"]["matchExpressions"]
    assert selector["values"] == [s.name for s in catalog.SERVICES if s.public]
