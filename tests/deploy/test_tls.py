"""TLS 1.2 at the least on the public side, for each way in: ingress-nginx, the Gateway API
(HTTPRoute + Gateway with a TLS policy) and the compose Caddy proxy."""

from __future__ import annotations

import re

from tests.deploy.helpers import CHART, REPO

DEFAULT, GATEWAY = "default-values.yaml", "gateway-values.yaml"
# AEAD suites only: none of them exists before TLS 1.2, so an older client cannot negotiate one.
TLS12_ONLY = re.compile(r"^(ECDHE-(ECDSA|RSA)-(AES(128|256)-GCM-SHA(256|384)|CHACHA20-POLY1305))$")


def test_ingress_nginx_offers_only_tls12_suites(render) -> None:
    (ingress,) = render(DEFAULT).of_kind("Ingress")
    ciphers = ingress["metadata"]["annotations"]["nginx.ingress.kubernetes.io/ssl-ciphers"].split(":")
    assert ciphers and all(TLS12_ONLY.match(c) for c in ciphers), ciphers
    assert ingress["metadata"]["annotations"]["nginx.ingress.kubernetes.io/force-ssl-redirect"] == "true"


def test_tls13_only_cannot_be_asked_of_ingress_nginx_per_ingress(helm) -> None:
    result = helm(
        "template",
        "ai-bot",
        str(CHART),
        "-f",
        str(CHART / "ci" / DEFAULT),
        "--set-string",
        "ingress.tls.minVersion=1.3",
    )
    assert result.returncode != 0 and "ssl-protocols" in result.stderr
    older = helm(
        "template",
        "ai-bot",
        str(CHART),
        "-f",
        str(CHART / "ci" / DEFAULT),
        "--set-string",
        "ingress.tls.minVersion=1.1",
    )
    assert older.returncode != 0  # the schema knows only 1.2 and 1.3


def test_gateway_api_route_gateway_and_tls_policy(render) -> None:
    rendered = render(GATEWAY)
    assert rendered.of_kind("Ingress") == []
    (gateway,) = rendered.of_kind("Gateway")
    (listener,) = gateway["spec"]["listeners"]
    assert gateway["spec"]["gatewayClassName"] == "eg"
    assert (listener["protocol"], listener["port"], listener["hostname"]) == ("HTTPS", 443, "bot.example.com")
    assert listener["tls"]["mode"] == "Terminate"
    assert listener["tls"]["certificateRefs"] == [{"kind": "Secret", "name": "ai-bot-tls"}]
    (policy,) = rendered.of_kind("ClientTrafficPolicy")
    assert policy["apiVersion"] == "gateway.envoyproxy.io/v1alpha1"
    assert policy["spec"]["tls"]["minVersion"] == "1.2"
    assert policy["spec"]["targetRefs"] == [
        {"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": gateway["metadata"]["name"]}
    ]
    (route,) = rendered.of_kind("HTTPRoute")
    assert route["spec"]["parentRefs"] == [{"name": gateway["metadata"]["name"]}]
    assert route["spec"]["hostnames"] == ["bot.example.com"]
    services = {s["metadata"]["name"]: s["spec"]["ports"][0]["port"] for s in rendered.of_kind("Service")}
    for rule in route["spec"]["rules"]:
        ((match,), (backend,)) = rule["matches"], rule["backendRefs"]
        assert match["path"]["type"] == "Exact"
        assert services[backend["name"]] == backend["port"]
    assert {r["matches"][0]["path"]["value"] for r in route["spec"]["rules"]} == {"/telegram/webhook"}


def test_an_existing_gateway_gets_only_the_route(helm) -> None:
    result = helm(
        "template",
        "ai-bot",
        str(CHART),
        "-f",
        str(CHART / "ci" / GATEWAY),
        "--set",
        "gateway.existingGateway=shared-gw",
        "--set",
        "gateway.sectionName=https",
    )
    assert result.returncode == 0, result.stderr
    assert "kind: Gateway\n" not in result.stdout and "kind: ClientTrafficPolicy" not in result.stdout
    assert "name: shared-gw\n      sectionName: https" in result.stdout


def test_the_services_believe_forwarded_for_only_from_the_pod_network(render) -> None:
    security = render(DEFAULT).config()["security"]
    assert security["trusted_proxies"] and all(not p.startswith("0.0.0.0") for p in security["trusted_proxies"])
    assert security["rate_limit"]["requests_per_s"] <= 100


def test_the_compose_proxy_sets_tls12_as_the_minimum() -> None:
    caddyfile = (REPO / "deploy" / "caddy" / "Caddyfile").read_text()
    (protocols,) = re.findall(r"^\s*protocols\s+(\S+)(?:\s+(\S+))?\s*$", caddyfile, re.MULTILINE)
    assert protocols == ("tls1.2", "tls1.3")
