"""components/monitoring.py: what Prometheus scrapes, probes and alerts on, per stack."""

from __future__ import annotations

import json

import pytest
import yaml

from tests.unit.harness import ROOT, Recorded, by_kind, one
from tests.unit.netpol import Pod, Policies, matches, pod_templates


@pytest.mark.parametrize("env", ["prod", "preprod"])
def test_deployed_rules_are_exactly_the_promtool_tested_files(
    env: str, prod: list[Recorded], preprod: list[Recorded]
) -> None:
    stack = prod if env == "prod" else preprod
    deployed = one(stack, "PrometheusRule").spec["groups"]
    tested = yaml.safe_load((ROOT / "monitoring" / "rules" / f"{env}.rules.yaml").read_text())
    assert json.loads(json.dumps(deployed)) == tested["groups"]


def test_pod_monitors_select_exactly_their_workload_on_a_declared_port(
    stack: list[Recorded],
) -> None:
    pods = pod_templates(stack)
    workloads = {r.metadata["name"]: r for r in by_kind(stack, "StatefulSet")}
    workloads.update({r.metadata["name"]: r for r in by_kind(stack, "Deployment")})
    monitors = by_kind(stack, "PodMonitor")
    assert sorted(m.metadata["name"] for m in monitors) == ["couchdb", "webapp"]
    for monitor in monitors:
        job = monitor.metadata["name"]
        selected = {n for n, p in pods.items() if matches(monitor.spec["selector"], p.labels)}
        assert selected == {job}
        # The `job` label Prometheus derives must equal the one the rules select on.
        assert pods[job].labels[monitor.spec["jobLabel"]] == job
        ports = {
            port["name"]
            for c in workloads[job].spec["template"]["spec"]["containers"]
            for port in c["ports"]
        }
        assert monitor.spec["podMetricsEndpoints"][0]["port"] in ports


def test_probe_checks_the_public_url_the_gateway_serves(stack: list[Recorded]) -> None:
    probe = one(stack, "Probe")
    (listener,) = [
        listener
        for listener in one(stack, "Gateway").spec["listeners"]
        if listener["protocol"] == "HTTPS"
    ]
    host = listener["hostname"]
    assert one(stack, "HTTPRoute", "onboarding").spec["hostnames"] == [host]
    assert probe.spec["targets"]["staticConfig"]["static"] == [f"https://{host}/"]
    assert probe.spec["jobName"] == "blackbox"
    assert probe.spec["module"] == "http_2xx"


def test_monitoring_objects_carry_the_operator_release_label(stack: list[Recorded]) -> None:
    for kind in ("PodMonitor", "Probe", "PrometheusRule"):
        for r in by_kind(stack, kind):
            assert r.metadata["labels"]["release"] == "kube-prometheus-stack"


def test_dashboards_are_grafana_configmaps_of_valid_json(stack: list[Recorded]) -> None:
    dashboards = [
        c for c in by_kind(stack, "ConfigMap") if "grafana_dashboard" in c.metadata["labels"]
    ]
    assert len(dashboards) >= 5
    for config_map in dashboards:
        ((file_name, content),) = config_map.inputs["data"].items()
        model = json.loads(content)
        assert file_name == f"{model['uid']}.json"
        assert model["panels"]


def test_only_ops_jobs_may_push_to_the_pushgateway(stack: list[Recorded]) -> None:
    policies = Policies(stack)
    pods = pod_templates(stack)
    gateway = Pod("pushgateway", "monitoring", {"app.kubernetes.io/name": "prometheus-pushgateway"})
    for name, pod in pods.items():
        allowed = policies.can_connect(pod, gateway, 9091)
        assert allowed == (name.startswith(("couchops-", "couchdb-setup-"))), name
