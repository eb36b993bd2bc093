"""What waits for what in a deploy: the objects that select the CouchDB and web app pods
(NetworkPolicies, Services, disruption budgets) must not wait for their workload to be ready.

Found on real pods (tests/realpods): built from the StatefulSet's output, the CouchDB
NetworkPolicies were created only once every CouchDB pod was Ready; but a pod is Ready when
/_up answers, which needs the peer traffic those policies allow, so under an enforcing CNI a
first deploy never finished. KWOK, which marks pods Ready by itself, could not show it."""

from __future__ import annotations

import pytest

from tests.unit.harness import Recorded, by_kind, run_program

WORKLOADS = {"StatefulSet": "couchdb", "Deployment": "webapp"}
SELECTING = ["NetworkPolicy", "Service", "PodDisruptionBudget", "HorizontalPodAutoscaler"]


def urn_of(resource: Recorded) -> str:
    return f"{resource.type}::{resource.name}"


@pytest.mark.parametrize("stack", ["prod", "preprod"])
def test_nothing_selecting_the_pods_waits_for_their_workload(stack: str) -> None:
    resources = run_program(stack)
    workloads = [
        r
        for kind, name in WORKLOADS.items()
        for r in by_kind(resources, kind)
        if r.metadata.get("name") == name
    ]
    assert len(workloads) == 2
    waiting = {
        f"{r.kind}/{r.metadata.get('name')}": [d for d in r.dependencies if d.endswith(suffix)]
        for r in resources
        if r.type.startswith("kubernetes:") and r.kind in SELECTING
        for suffix in [urn_of(w) for w in workloads]
    }
    waiting = {k: v for k, v in waiting.items() if v}
    # the autoscaler names the Deployment it scales, by name: it may wait, nothing else may
    assert set(waiting) <= {"HorizontalPodAutoscaler/webapp"}, waiting
    # the check sees dependencies at all: the setup Job waits for the StatefulSet
    (job,) = [r for r in by_kind(resources, "Job") if "setup" in r.metadata.get("name", "")]
    assert any(d.endswith(urn_of(workloads[0])) for d in job.dependencies), job.dependencies
