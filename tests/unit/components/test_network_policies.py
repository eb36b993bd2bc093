"""Who may talk to whom, computed from every NetworkPolicy the stacks declare."""

from __future__ import annotations

import pytest

from components.edge import proxy_pod_labels
from tests.unit.harness import Recorded
from tests.unit.netpol import Pod, Policies, pod_templates

COUCHDB_HTTPS, EPMD, DIST, METRICS = 6984, 4369, 9100, 17986
# CouchDB's plain listener: bound (CouchDB 3.5 cannot switch it off), reachable by nobody.
COUCHDB_PLAIN = 5984
SITE, SITE_MANAGEMENT = 8080, 9090


def world(stack: list[Recorded]) -> tuple[Policies, dict[str, Pod]]:
    pods = pod_templates(stack)
    namespace = pods["couchdb"].namespace
    # Envoy Gateway's proxies for this environment's Gateway, and for another Gateway.
    pods["ingress-controller"] = Pod(
        "ingress-controller", "envoy-gateway-system", proxy_pod_labels(namespace)
    )
    pods["other-gateway"] = Pod(
        "other-gateway", "envoy-gateway-system", proxy_pod_labels("onboarding-other")
    )
    pods["prometheus"] = Pod("prometheus", "monitoring", {"app.kubernetes.io/name": "prometheus"})
    pods["intruder"] = Pod("intruder", namespace, {"run": "debug-shell"})
    pods["other-env"] = Pod("other-env", "onboarding-other", {"app.kubernetes.io/name": "webapp"})
    return Policies(stack), pods


def test_web_app_and_the_ops_jobs_that_use_couchdb_reach_its_https_port_only(
    stack: list[Recorded],
) -> None:
    policies, pods = world(stack)
    setup = next(n for n in pods if n.startswith("couchdb-setup-"))
    clients = [n for n in pods if n == "webapp" or n.startswith(("couchops-", "couchdb-setup-"))]
    assert sorted(clients) == sorted(
        [
            "webapp",
            setup,
            "couchops-backup",
            "couchops-backup-verify",
            "couchops-backup-expire",
            "couchops-purge",
        ]
    )
    for name in ("webapp", "couchops-backup", "couchops-purge", setup):
        assert policies.can_connect(pods[name], pods["couchdb"], COUCHDB_HTTPS), name
        assert not policies.can_connect(pods[name], pods["couchdb"], COUCHDB_PLAIN), name


@pytest.mark.parametrize("job", ["couchops-backup-verify", "couchops-backup-expire"])
def test_jobs_that_only_read_or_delete_backups_cannot_reach_couchdb(
    stack: list[Recorded], job: str
) -> None:
    """`couchops verify` (without --live) and `backup-expire` open no connection to CouchDB:
    their pods get no way to its port, from either side's policies."""
    policies, pods = world(stack)
    for port in (COUCHDB_HTTPS, COUCHDB_PLAIN, EPMD, DIST, METRICS):
        assert not policies.can_connect(pods[job], pods["couchdb"], port), port


@pytest.mark.parametrize(
    "source", ["ingress-controller", "other-gateway", "prometheus", "intruder", "other-env"]
)
def test_nothing_else_reaches_couchdb_http(stack: list[Recorded], source: str) -> None:
    policies, pods = world(stack)
    for port in (COUCHDB_HTTPS, COUCHDB_PLAIN):
        assert not policies.can_connect(pods[source], pods["couchdb"], port), port


def test_erlang_ports_are_open_only_between_couchdb_pods(stack: list[Recorded]) -> None:
    policies, pods = world(stack)
    for port in (EPMD, DIST):
        assert policies.can_connect(pods["couchdb"], pods["couchdb"], port)
        for other in pods:
            if other != "couchdb":
                assert not policies.can_connect(pods[other], pods["couchdb"], port), other


def test_metrics_port_is_open_to_the_monitoring_namespace_only(stack: list[Recorded]) -> None:
    policies, pods = world(stack)
    assert policies.can_connect(pods["prometheus"], pods["couchdb"], METRICS)
    assert not policies.can_connect(pods["webapp"], pods["couchdb"], METRICS)
    assert not policies.can_connect(pods["intruder"], pods["couchdb"], METRICS)


def test_site_is_reachable_from_its_gateway_s_proxies_only(stack: list[Recorded]) -> None:
    policies, pods = world(stack)
    assert policies.can_connect(pods["ingress-controller"], pods["webapp"], SITE)
    for source in ("intruder", "other-env", "other-gateway", "prometheus"):
        assert not policies.can_connect(pods[source], pods["webapp"], SITE), source


def test_management_port_is_open_to_the_monitoring_namespace_only(stack: list[Recorded]) -> None:
    """Metrics and health: Prometheus scrapes them, the edge's proxies never reach them."""
    policies, pods = world(stack)
    assert policies.can_connect(pods["prometheus"], pods["webapp"], SITE_MANAGEMENT)
    for source in ("ingress-controller", "other-gateway", "intruder", "other-env"):
        assert not policies.can_connect(pods[source], pods["webapp"], SITE_MANAGEMENT), source


def test_unlabelled_pod_in_the_namespace_can_reach_nothing_but_dns(stack: list[Recorded]) -> None:
    policies, pods = world(stack)
    dns = Pod("coredns", "kube-system", {"k8s-app": "kube-dns"})
    assert policies.can_connect(pods["intruder"], dns, 53)
    for target in ("couchdb", "webapp"):
        for port in (COUCHDB_HTTPS, COUCHDB_PLAIN, SITE, SITE_MANAGEMENT, EPMD, DIST, METRICS):
            assert not policies.can_connect(pods["intruder"], pods[target], port)
