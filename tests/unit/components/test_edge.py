"""components/edge.py: the Gateway, its routes, its certificate and Envoy Gateway's policies."""

from __future__ import annotations

from typing import Any

import pytest

from components.edge import SECURITY_HEADERS, TLS_CIPHERS
from infra.settings import parse_settings
from tests.unit.harness import Recorded, by_kind, one, raw_stack, run_stack


def listeners(stack: list[Recorded]) -> dict[str, dict[str, Any]]:
    return {item["name"]: item for item in one(stack, "Gateway", "onboarding").spec["listeners"]}


@pytest.mark.parametrize("env", ["prod", "preprod"])
def test_gateway_serves_the_host_over_https_with_the_cert_manager_certificate(
    env: str, prod: list[Recorded], preprod: list[Recorded]
) -> None:
    stack = prod if env == "prod" else preprod
    settings = parse_settings(raw_stack(env))
    gateway = one(stack, "Gateway", "onboarding")
    assert gateway.inputs["apiVersion"] == "gateway.networking.k8s.io/v1"
    assert gateway.metadata["namespace"] == settings.namespace
    assert gateway.spec["gatewayClassName"] == settings.ingress.gateway.class_name
    # `pulumi up` fails unless Envoy Gateway programs it
    assert gateway.metadata["annotations"] == {"pulumi.com/waitFor": "condition=Programmed"}
    found = listeners(stack)
    assert sorted(found) == ["http", "https"]
    https, http = found["https"], found["http"]
    assert (https["protocol"], https["port"], https["hostname"]) == (
        "HTTPS",
        443,
        settings.ingress.host,
    )
    assert (http["protocol"], http["port"], http["hostname"]) == ("HTTP", 80, settings.ingress.host)
    for listener in (https, http):
        assert listener["allowedRoutes"]["namespaces"] == {"from": "Same"}
    assert https["tls"]["mode"] == "Terminate"
    (secret_ref,) = https["tls"]["certificateRefs"]
    certificate = one(stack, "Certificate", secret_ref["name"])
    assert certificate.spec["secretName"] == secret_ref["name"] == "onboarding-tls"
    assert certificate.spec["dnsNames"] == [settings.ingress.host]
    assert certificate.spec["issuerRef"] == {
        "group": "cert-manager.io",
        "kind": "ClusterIssuer",
        "name": settings.ingress.cluster_issuer,
    }


def test_plain_http_only_redirects_to_https(stack: list[Recorded]) -> None:
    routes = by_kind(stack, "HTTPRoute")
    on_http = [
        r for r in routes if any(p.get("sectionName") == "http" for p in r.spec["parentRefs"])
    ]
    assert [r.metadata["name"] for r in on_http] == ["onboarding-https-redirect"]
    (rule,) = on_http[0].spec["rules"]
    assert "backendRefs" not in rule
    assert rule["filters"] == [
        {"type": "RequestRedirect", "requestRedirect": {"scheme": "https", "statusCode": 301}}
    ]
    # every other route is on the HTTPS listener only
    for route in routes:
        if route not in on_http:
            assert [p["sectionName"] for p in route.spec["parentRefs"]] == ["https"]


def test_site_route_sends_the_public_paths_with_the_security_headers(
    prod: list[Recorded],
) -> None:
    settings = parse_settings(raw_stack("prod"))
    route = one(prod, "HTTPRoute", "onboarding")
    assert route.spec["hostnames"] == [settings.ingress.host]
    rule = route.spec["rules"][0]
    assert [m["path"] for m in rule["matches"]] == [
        {"type": "PathPrefix", "value": p} for p in settings.ingress.public_paths
    ]
    assert rule["backendRefs"] == [{"group": "", "kind": "Service", "name": "webapp", "port": 80}]
    (headers,) = [f for f in rule["filters"] if f["type"] == "ResponseHeaderModifier"]
    sent = {h["name"]: h["value"] for h in headers["responseHeaderModifier"]["set"]}
    assert sent == SECURITY_HEADERS
    assert sent["Strict-Transport-Security"].startswith("max-age=31536000")


def test_management_paths_are_answered_404_by_the_edge_itself(prod: list[Recorded]) -> None:
    """Were the image to serve /metrics or /healthz on its public port too, "/" would carry
    them; a longer prefix wins in Gateway API, and these rules have no backend at all."""
    settings = parse_settings(raw_stack("prod"))
    assert settings.ingress.public_paths == ["/"]
    rules = one(prod, "HTTPRoute", "onboarding").spec["rules"]
    blocked = [rule for rule in rules if "backendRefs" not in rule]
    assert len(rules) == 2 and len(blocked) == 1
    assert [m["path"] for m in blocked[0]["matches"]] == [
        {"type": "PathPrefix", "value": settings.webapp.metrics_path},
        {"type": "PathPrefix", "value": settings.webapp.health_path},
    ]
    (reference,) = [f["extensionRef"] for f in blocked[0]["filters"] if f["type"] == "ExtensionRef"]
    assert reference["group"] == "gateway.envoyproxy.io"
    assert reference["kind"] == "HTTPRouteFilter"
    direct = one(prod, "HTTPRouteFilter", reference["name"]).spec["directResponse"]
    assert direct["statusCode"] == 404


def test_no_block_rule_when_no_public_path_covers_a_management_path() -> None:
    stack = run_stack("prod", {"onboarding:ingress": public_paths_only("/ouverture")}).resources
    (rule,) = one(stack, "HTTPRoute", "onboarding").spec["rules"]
    assert rule["backendRefs"]
    assert by_kind(stack, "HTTPRouteFilter") == []


def public_paths_only(*paths: str) -> dict[str, Any]:
    edge = dict(raw_stack("prod")["ingress"])
    edge["publicPaths"] = list(paths)
    return edge


def test_tls_policy_sets_tls_1_2_minimum_and_forward_secret_aead_ciphers(
    stack: list[Recorded],
) -> None:
    policy = one(stack, "ClientTrafficPolicy")
    assert policy.inputs["apiVersion"] == "gateway.envoyproxy.io/v1alpha1"
    assert policy.spec["targetRefs"] == [
        {"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "onboarding"}
    ]
    tls = policy.spec["tls"]
    assert tls["minVersion"] == "1.2"
    assert tls["ciphers"] == list(TLS_CIPHERS)
    for cipher in tls["ciphers"]:
        assert cipher.startswith("ECDHE-") and ("GCM" in cipher or "CHACHA20" in cipher)
    assert policy.spec["headers"] == {"withUnderscoresAction": "DropHeader"}


def test_rate_limit_per_client_and_body_limit(prod: list[Recorded]) -> None:
    settings = parse_settings(raw_stack("prod"))
    policy = one(prod, "BackendTrafficPolicy")
    assert policy.spec["targetRefs"] == [
        {"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "onboarding"}
    ]
    limit = policy.spec["rateLimit"]
    assert limit["type"] == "Local"
    cidrs = set()
    for rule in limit["local"]["rules"]:
        assert rule["limit"] == {"requests": settings.ingress.rate_limit_rps, "unit": "Second"}
        ((selector,),) = [rule["clientSelectors"]]
        # Distinct: one bucket per client address, not one for everybody.
        assert selector["sourceCIDR"]["type"] == "Distinct"
        cidrs.add(selector["sourceCIDR"]["value"])
    assert cidrs == {"0.0.0.0/0", "::/0"}
    # maxBodySize: 2m, as ingress-nginx spelled it: 2 MiB.
    assert settings.ingress.max_body_size == "2m"
    assert policy.spec["requestBuffer"] == {"limit": "2Mi"}
    assert one(prod, "ClientTrafficPolicy").spec["connection"]["bufferLimit"] == "2Mi"


def test_no_ingress_nginx_objects_are_left(stack: list[Recorded]) -> None:
    assert by_kind(stack, "Ingress") == []
    assert not [
        c for c in by_kind(stack, "ConfigMap") if c.metadata["name"].endswith("security-headers")
    ]
