"""What the Internet can reach, computed from every manifest the program declares (under
mocks): exactly the site's public paths on its public port, through the Gateway's HTTPS
listener. The same check runs on the real CLI's rendered files in
tests/integration/test_pulumi_cli.py."""

from __future__ import annotations

import copy
from typing import Any
from urllib.parse import urlsplit

import pytest

from infra.settings import parse_settings
from tests.unit.edge_expect import expected_reach, problems
from tests.unit.edge_reach import path_covers, reachable
from tests.unit.harness import Recorded, raw_stack, run_stack

Manifest = dict[str, Any]


def manifests(stack: list[Recorded]) -> list[Manifest]:
    return [
        {**copy.deepcopy(r.inputs), "kind": r.kind}
        for r in stack
        if r.type.startswith("kubernetes:") and not r.type.startswith("kubernetes:helm")
    ]


def named(found: list[Manifest], kind: str, name: str) -> Manifest:
    (manifest,) = [m for m in found if m["kind"] == kind and m["metadata"]["name"] == name]
    return manifest


@pytest.mark.parametrize("env", ["prod", "preprod"])
def test_the_internet_reaches_exactly_the_public_paths_on_the_public_port(
    env: str, prod: list[Recorded], preprod: list[Recorded]
) -> None:
    settings = parse_settings(raw_stack(env))
    reach = reachable(manifests(prod if env == "prod" else preprod))
    assert reach == expected_reach(settings)
    assert problems(reach, settings) == []


@pytest.mark.parametrize("paths", [["/"], ["/ouverture", "/static"]])
def test_the_blackbox_probe_targets_a_reachable_public_url(paths: list[str]) -> None:
    """The supervision's view of the site (Probe) is a path the edge actually routes."""
    raw = copy.deepcopy(raw_stack("prod"))
    raw["ingress"]["publicPaths"] = paths
    settings = parse_settings(raw)
    stack = run_stack("prod", {"onboarding:ingress": raw["ingress"]}).resources
    (probe,) = [r for r in stack if r.kind == "Probe"]
    (url,) = probe.spec["targets"]["staticConfig"]["static"]
    target = urlsplit(url)
    assert target.scheme == "https"
    reach = reachable(manifests(stack))
    assert reach == expected_reach(settings)
    assert any(
        r.host == target.hostname and path_covers(r.path, target.path or "/") for r in reach
    ), (url, reach)


# --- the check fails on each way of opening more ------------------------------------------


@pytest.fixture
def prod_world(prod: list[Recorded]) -> tuple[list[Manifest], Any]:
    return manifests(prod), parse_settings(raw_stack("prod"))


def test_a_route_to_metrics_is_found(prod_world: tuple[list[Manifest], Any]) -> None:
    found, settings = prod_world
    route = named(found, "HTTPRoute", "onboarding")
    route["spec"]["rules"][0]["matches"].append(
        {"path": {"type": "PathPrefix", "value": "/metrics"}}
    )
    report = problems(reachable(found), settings)
    assert any("a management path (/metrics) is routed" in p for p in report), report


def test_a_route_to_the_management_port_is_found(prod_world: tuple[list[Manifest], Any]) -> None:
    found, settings = prod_world
    service = named(found, "Service", "webapp")
    service["spec"]["ports"].append({"name": "mgmt", "port": 9090, "targetPort": "management"})
    route = named(found, "HTTPRoute", "onboarding")
    route["spec"]["rules"].append(
        {
            "matches": [{"path": {"type": "Exact", "value": "/healthz"}}],
            "backendRefs": [{"name": "webapp", "port": 9090}],
        }
    )
    report = problems(reachable(found), settings)
    assert any("the management port is reachable" in p for p in report), report
    assert any("(/healthz) is routed" in p for p in report), report


def test_a_request_mirror_to_couchdb_is_found(prod_world: tuple[list[Manifest], Any]) -> None:
    found, settings = prod_world
    route = named(found, "HTTPRoute", "onboarding")
    port = named(found, "Service", "couchdb")["spec"]["ports"][0]["port"]
    mirror = {"backendRef": {"name": "couchdb", "port": port}}
    route["spec"]["rules"][0]["filters"].append({"type": "RequestMirror", "requestMirror": mirror})
    report = problems(reachable(found), settings)
    assert any("CouchDB is reachable" in p for p in report), report


def test_a_node_port_service_is_found(prod_world: tuple[list[Manifest], Any]) -> None:
    found, settings = prod_world
    named(found, "Service", "couchdb")["spec"]["type"] = "NodePort"
    report = problems(reachable(found), settings)
    assert any("CouchDB is reachable" in p and "NodePort" in p for p in report), report


def test_a_load_balancer_on_the_site_is_found(prod_world: tuple[list[Manifest], Any]) -> None:
    found, settings = prod_world
    named(found, "Service", "webapp")["spec"]["type"] = "LoadBalancer"
    report = problems(reachable(found), settings)
    assert any("not expected" in p and "LoadBalancer" in p for p in report), report


def test_a_host_port_is_found(prod_world: tuple[list[Manifest], Any]) -> None:
    found, settings = prod_world
    container = named(found, "Deployment", "webapp")["spec"]["template"]["spec"]["containers"][0]
    container["ports"][1]["hostPort"] = 9090
    report = problems(reachable(found), settings)
    assert any("the management port is reachable" in p and "hostPort" in p for p in report)


def test_an_ingress_to_couchdb_is_found(prod_world: tuple[list[Manifest], Any]) -> None:
    found, settings = prod_world
    found.append(
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "Ingress",
            "metadata": {"name": "oops", "namespace": settings.namespace},
            "spec": {
                "rules": [
                    {
                        "host": settings.ingress.host,
                        "http": {
                            "paths": [
                                {
                                    "path": "/db",
                                    "pathType": "Prefix",
                                    "backend": {
                                        "service": {"name": "couchdb", "port": {"number": 6984}}
                                    },
                                }
                            ]
                        },
                    }
                ]
            },
        }
    )
    report = problems(reachable(found), settings)
    assert any("CouchDB is reachable" in p and "Ingress" in p for p in report), report


def test_a_second_host_or_a_wider_listener_is_found(prod_world: tuple[list[Manifest], Any]) -> None:
    found, settings = prod_world
    route = named(found, "HTTPRoute", "onboarding")
    route["spec"]["hostnames"].append("admin." + settings.ingress.host)
    gateway = named(found, "Gateway", "onboarding")
    gateway["spec"]["listeners"][0]["hostname"] = "*." + settings.ingress.host
    report = problems(reachable(found), settings)
    assert any("not expected" in p and "admin." in p for p in report), report


def test_a_wildcard_route_host_on_the_listener_gets_the_listener_s_host(
    prod_world: tuple[list[Manifest], Any],
) -> None:
    """A route for *.example.fr on a listener for the site's host answers that host only:
    the same reach as before, nothing more."""
    found, settings = prod_world
    route = named(found, "HTTPRoute", "onboarding")
    route["spec"]["hostnames"] = ["*." + settings.ingress.host.split(".", 1)[1]]
    assert problems(reachable(found), settings) == []


def test_a_tcp_listener_and_route_are_found(prod_world: tuple[list[Manifest], Any]) -> None:
    found, settings = prod_world
    gateway = named(found, "Gateway", "onboarding")
    gateway["spec"]["listeners"].append({"name": "raw", "protocol": "TCP", "port": 5984})
    port = named(found, "Service", "couchdb")["spec"]["ports"][0]["port"]
    tcp_route = {
        "kind": "TCPRoute",
        "metadata": {"name": "raw", "namespace": settings.namespace},
        "spec": {
            "parentRefs": [{"name": "onboarding", "sectionName": "raw"}],
            "rules": [{"backendRefs": [{"name": "couchdb", "port": port}]}],
        },
    }
    # on the HTTPS listener (HTTPRoutes only) it attaches to nothing
    stray = copy.deepcopy(tcp_route)
    stray["spec"]["parentRefs"][0]["sectionName"] = "https"
    assert problems(reachable([*found, stray]), settings) == []
    report = problems(reachable([*found, tcp_route]), settings)
    assert any("CouchDB is reachable" in p and "path=None" in p for p in report), report


def test_the_redirect_listener_reaches_no_backend(prod_world: tuple[list[Manifest], Any]) -> None:
    """Taking the redirect away from the HTTP route makes it a plain-HTTP way in."""
    found, settings = prod_world
    route = named(found, "HTTPRoute", "onboarding-https-redirect")
    route["spec"]["rules"] = [{"backendRefs": [{"name": "webapp", "port": 80}]}]
    report = problems(reachable(found), settings)
    assert any("not expected" in p and "onboarding http'" in p for p in report), report


def test_a_route_from_another_namespace_does_not_attach(
    prod_world: tuple[list[Manifest], Any],
) -> None:
    """allowedRoutes: Same. A route elsewhere naming the Gateway adds nothing."""
    found, settings = prod_world
    stray = copy.deepcopy(named(found, "HTTPRoute", "onboarding"))
    stray["metadata"]["namespace"] = "elsewhere"
    stray["spec"]["parentRefs"][0]["namespace"] = settings.namespace
    found.append(stray)
    assert problems(reachable(found), settings) == []
