"""Lag-driven scaling: KEDA ScaledObjects on the Kafka lag of each service's consumer groups, instead
of (never beside) the CPU HPA, checked against KEDA's CRD schema (cloudcoil-models-keda)."""

from __future__ import annotations

from typing import Any

import pytest

from aibot_common import catalog
from aibot_common.topics import CONSUMPTION

KEDA = "keda-values.yaml"


def _strict(model: Any, doc: dict[str, Any]) -> None:
    """Validate against the CRD model, and fail on any field the model does not know (a misspelt key
    would otherwise be dropped silently, as the API server's pruning would)."""
    parsed = model.model_validate(doc)
    assert parsed.model_dump(by_alias=True, exclude_none=True, mode="json") == doc


def test_scaled_objects_replace_the_hpa_of_the_services_named(render) -> None:
    pytest.importorskip("cloudcoil.models.keda", reason="cloudcoil-models-keda (dev group) holds KEDA's schema")
    from cloudcoil.models.keda.v1alpha1 import ScaledObject, TriggerAuthentication

    rendered = render(KEDA)
    scaled = {d["metadata"]["labels"]["app.kubernetes.io/component"]: d for d in rendered.of_kind("ScaledObject")}
    hpas = set(rendered.by_component("HorizontalPodAutoscaler"))
    assert set(scaled) == {"core-llm", "asr-worker"}
    # One autoscaler per Deployment: the lag-scaled services have no HPA, the others keep theirs.
    assert hpas.isdisjoint(scaled)
    assert hpas == set(rendered.by_component("Deployment")) - set(scaled)

    deployments = rendered.by_component("Deployment")
    for name, doc in scaled.items():
        _strict(ScaledObject, doc)
        spec = doc["spec"]
        assert spec["scaleTargetRef"] == {"name": deployments[name]["metadata"]["name"]}
        assert (spec["minReplicaCount"], spec["maxReplicaCount"]) == (2, 10)
        triggers = {(t["metadata"]["topic"], t["metadata"]["consumerGroup"]) for t in spec["triggers"]}
        # Exactly the (topic, group) pairs of the service's groups in the topic registry.
        groups = catalog.service(name).groups
        assert triggers == {(topic, group) for topic, group in CONSUMPTION if group in groups}
        for trigger in spec["triggers"]:
            assert trigger["type"] == "kafka"
            assert trigger["metadata"]["bootstrapServers"] == "kafka-0.kafka.example.internal:9093"
            assert trigger["metadata"]["lagThreshold"] == "50"
            assert trigger["authenticationRef"] == {"name": "ai-bot-keda-kafka"}

    (auth,) = rendered.of_kind("TriggerAuthentication")
    _strict(TriggerAuthentication, auth)
    refs = {r["parameter"]: (r["name"], r["key"]) for r in auth["spec"]["secretTargetRef"]}
    assert refs["password"] == ("ai-bot-secrets", "AIBOT_KAFKA__SASL_PASSWORD")
    assert refs["ca"] == ("kafka-ca", "ca.crt")
    (login,) = [s for s in rendered.of_kind("Secret") if s["metadata"]["name"] == "ai-bot-keda-kafka"]
    import base64

    assert {k: base64.b64decode(v).decode() for k, v in login["data"].items()} == {
        "tls": "enable",
        "sasl": "scram_sha512",
        "username": "ai-bot",
    }


def test_without_keda_every_service_keeps_its_cpu_hpa(render) -> None:
    rendered = render("default-values.yaml")
    assert rendered.of_kind("ScaledObject") == []
    assert set(rendered.by_component("HorizontalPodAutoscaler")) == set(rendered.by_component("Deployment"))


def test_a_service_without_a_topic_cannot_be_scaled_by_lag(helm) -> None:
    from tests.deploy.helpers import CHART

    result = helm(
        "template", "ai-bot", str(CHART), "-f", str(CHART / "ci" / KEDA), "--set", "keda.services={ingress-telegram}"
    )
    assert result.returncode != 0
    # The schema refuses it before the template would (ingresses are not in the list it allows).
    assert "/keda/services/0" in result.stderr


def test_the_schema_allows_exactly_the_services_with_consumer_groups() -> None:
    import json

    from tests.deploy.helpers import CHART

    schema = json.loads((CHART / "values.schema.json").read_text())
    allowed = schema["properties"]["keda"]["properties"]["services"]["items"]["enum"]
    assert allowed == [s.name for s in catalog.SERVICES if s.groups]
