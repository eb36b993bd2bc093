"""components/webapp.py: bursts absorbed, no capacity lost to rollouts or drains."""

from __future__ import annotations

from tests.unit.harness import Recorded, one
from tests.unit.netpol import matches, pod_templates


def test_autoscaler_spans_the_configured_range_and_scales_up_at_once(prod: list[Recorded]) -> None:
    hpa = one(prod, "HorizontalPodAutoscaler", "webapp")
    assert (hpa.spec["minReplicas"], hpa.spec["maxReplicas"]) == (3, 20)
    assert hpa.spec["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "webapp",
    }
    assert hpa.spec["behavior"]["scaleUp"]["stabilizationWindowSeconds"] == 0
    assert hpa.spec["behavior"]["scaleDown"]["stabilizationWindowSeconds"] >= 300


def test_rollout_never_removes_a_serving_pod_first(stack: list[Recorded]) -> None:
    deployment = one(stack, "Deployment", "webapp")
    assert deployment.spec["strategy"]["rollingUpdate"]["maxUnavailable"] == 0


def test_pdb_selects_exactly_the_web_pods(stack: list[Recorded]) -> None:
    pdb = one(stack, "PodDisruptionBudget", "webapp")
    selected = {
        n for n, p in pod_templates(stack).items() if matches(pdb.spec["selector"], p.labels)
    }
    assert selected == {"webapp"}


def test_site_reads_database_credentials_from_the_app_secret_not_admin(
    stack: list[Recorded],
) -> None:
    container = one(stack, "Deployment", "webapp").spec["template"]["spec"]["containers"][0]
    refs = {
        e["name"]: e["valueFrom"]["secretKeyRef"]["name"]
        for e in container["env"]
        if "valueFrom" in e
    }
    assert refs == {
        "COUCHDB_USER": "couchdb-app",
        "COUCHDB_PASSWORD": "couchdb-app",
        "USER_PARTITION_SECRET": "couchdb-app",
    }


def test_service_targets_the_deployments_pods(stack: list[Recorded]) -> None:
    service = one(stack, "Service", "webapp")
    selected = {
        n
        for n, p in pod_templates(stack).items()
        if matches({"matchLabels": service.spec["selector"]}, p.labels)
    }
    assert selected == {"webapp"}


def test_deployment_leaves_the_replica_count_to_the_autoscaler(stack: list[Recorded]) -> None:
    # A count in the Deployment would scale a campaign-sized site back down on every update.
    assert "replicas" not in one(stack, "Deployment", "webapp").spec
