"""The admin API in the chart: a ClusterIP port of core-llm, never routed by the webhook Ingress, and
an Ingress of its own only when the operator opts in."""

from __future__ import annotations

from aibot_common import catalog
from aibot_common.access import AccessState
from aibot_common.envelope import ChatType
from aibot_common.settings import AccessSettings

ADMIN_PORT = catalog.service("core-llm").admin_port


def _backends(ingress: dict) -> list[dict]:
    return [p["backend"]["service"] for rule in ingress["spec"]["rules"] for p in rule["http"]["paths"]]


def test_the_admin_port_is_served_inside_the_cluster_only_by_default(render) -> None:
    rendered = render("default-values.yaml")
    service = rendered.by_component("Service")["core-llm"]
    assert service["spec"].get("type", "ClusterIP") == "ClusterIP"
    assert {"name": "admin", "port": ADMIN_PORT, "targetPort": "admin", "protocol": "TCP"} in service["spec"]["ports"]
    for ingress in rendered.of_kind("Ingress"):
        assert all(b["port"] == {"name": "http"} for b in _backends(ingress)), "the webhook Ingress routes http only"
    assert not [d for d in rendered.of_kind("NetworkPolicy") if d["metadata"]["name"].endswith("-admin")]
    # The default access block is what the services assume without one: open to everyone.
    seeded = AccessState(seed=AccessSettings.model_validate(rendered.config()["access"]))
    assert {seeded.mode(p, t) for p in ("telegram", "feishu") for t in ChatType} == {"open"}
    assert seeded.bindings() == {} and seeded.seed.quotas == {} and seeded.seed.group_members == "any"


def test_opting_in_exposes_the_admin_api_on_its_own_host(render) -> None:
    rendered = render(
        "default-values.yaml",
        "--set",
        "adminApi.ingress.enabled=true",
        "--set",
        "adminApi.ingress.host=admin.example.com",
        "--set",
        "adminApi.ingress.sourceRanges={10.0.0.0/8}",
    )
    admin = [d for d in rendered.of_kind("Ingress") if d["metadata"]["name"].endswith("-admin")]
    (ingress,) = admin
    assert ingress["spec"]["rules"][0]["host"] == "admin.example.com"
    assert [b["port"] for b in _backends(ingress)] == [{"name": "admin"}]
    annotations = ingress["metadata"]["annotations"]
    assert annotations["nginx.ingress.kubernetes.io/whitelist-source-range"] == "10.0.0.0/8"
    (policy,) = [d for d in rendered.of_kind("NetworkPolicy") if d["metadata"]["name"].endswith("-admin")]
    assert policy["spec"]["ingress"][0]["ports"] == [{"port": "admin", "protocol": "TCP"}]
