"""stacks/environment.py: whole environments, from their real stack files."""

from __future__ import annotations

import pytest

from infra.settings import quantity_value
from tests.unit.harness import Recorded, by_kind, one, pod_templates_specs, raw_stack, run_program

CLUSTER_SCOPED = {"Namespace", "PriorityClass", "NodePatch", "ClusterRole", "ClusterRoleBinding"}


def kubernetes_objects(stack: list[Recorded]) -> list[Recorded]:
    return [r for r in stack if r.type.startswith("kubernetes:") and r.kind != "kubernetes"]


def test_both_stacks_evaluate_from_their_stack_files() -> None:
    # How long it takes is measured by bench/stack_eval.py, not asserted here.
    for name in ("prod", "preprod"):
        resources = run_program(name)
        assert one(resources, "Namespace").metadata["name"] == f"onboarding-{name}"
        assert by_kind(resources, "StatefulSet"), name


def test_stacks_never_own_the_same_cluster_scoped_object(
    prod: list[Recorded], preprod: list[Recorded]
) -> None:
    def owned(stack: list[Recorded]) -> set[tuple[str, str]]:
        return {
            (r.kind, r.metadata["name"])
            for r in kubernetes_objects(stack)
            if r.kind in CLUSTER_SCOPED
        }

    assert owned(prod) & owned(preprod) == set()
    # Node labels and taints: written by exactly one of the two stacks.
    assert bool(by_kind(prod, "NodePatch")) != bool(by_kind(preprod, "NodePatch"))


def test_every_namespaced_object_stays_in_its_environment(stack: list[Recorded]) -> None:
    namespace = one(stack, "Namespace").metadata["name"]
    for r in kubernetes_objects(stack):
        if r.kind not in CLUSTER_SCOPED:
            assert r.metadata["namespace"] == namespace, (r.kind, r.metadata.get("name"))


def test_environments_share_no_namespaced_object(
    prod: list[Recorded], preprod: list[Recorded]
) -> None:
    def keys(stack: list[Recorded]) -> set[tuple[str, str, str]]:
        return {
            (r.kind, r.metadata.get("namespace", ""), r.metadata["name"])
            for r in kubernetes_objects(stack)
        }

    assert keys(prod) & keys(preprod) == set()


def test_workloads_carry_the_recommended_labels(stack: list[Recorded]) -> None:
    required = {
        "app.kubernetes.io/name",
        "app.kubernetes.io/instance",
        "app.kubernetes.io/component",
        "app.kubernetes.io/part-of",
        "app.kubernetes.io/managed-by",
        "app.kubernetes.io/version",
    }
    for kind in ("StatefulSet", "Deployment", "Job", "CronJob", "Service"):
        for r in by_kind(stack, kind):
            assert required <= set(r.metadata["labels"]), (kind, r.metadata["name"])


def test_every_image_is_pinned(stack: list[Recorded]) -> None:
    for name, spec in pod_templates_specs(stack).items():
        for container in spec["containers"]:
            image = container["image"]
            tail = image.rsplit("/", 1)[-1]
            assert "@sha256:" in image or (":" in tail and not tail.endswith(":latest")), name


def test_quota_admits_every_workload_at_full_scale(stack: list[Recorded]) -> None:
    hard = one(stack, "ResourceQuota").spec["hard"]
    specs = pod_templates_specs(stack)
    replicas = {r.metadata["name"]: r.spec["replicas"] for r in by_kind(stack, "StatefulSet")}
    replicas["webapp"] = one(stack, "HorizontalPodAutoscaler").spec["maxReplicas"]
    cpu = memory = 0.0
    for name, spec in specs.items():
        count = replicas.get(name, 1)
        for container in spec["containers"]:
            cpu += count * quantity_value(container["resources"]["requests"]["cpu"])
            memory += count * quantity_value(container["resources"]["requests"]["memory"])
    assert quantity_value(hard["requests.cpu"]) >= cpu
    assert quantity_value(hard["requests.memory"]) >= memory
    assert hard["services.loadbalancers"] == "0"


def test_every_cronjob_runs_in_the_stack_time_zone(stack: list[Recorded]) -> None:
    # The zone infra/settings.py checked each schedule in (onboarding:timeZone).
    zones = {r.metadata["name"]: r.spec["timeZone"] for r in by_kind(stack, "CronJob")}
    assert zones == {
        "couchops-backup": "Europe/Paris",
        "couchops-backup-verify": "Europe/Paris",
        "couchops-backup-expire": "Europe/Paris",
        "couchops-purge": "Europe/Paris",
    }


def test_a_stack_in_another_time_zone_reads_every_schedule_there() -> None:
    resources = run_program("preprod", {"onboarding:timeZone": "UTC"})
    assert {r.spec["timeZone"] for r in by_kind(resources, "CronJob")} == {"UTC"}


def test_the_purge_stale_alert_is_checked_against_the_stack_purge() -> None:
    # The stack's purge (25 h between starts in Europe/Paris + a 12-hour run) reaches the
    # supervision: GDPRPurgeStale's 32 hours would page on a normal night, so nothing is built.
    purge = {**raw_stack("prod")["purge"], "deadlineHours": 12}
    with pytest.raises(ValueError, match=r"37 h apart \(longest gap between starts 25 h"):
        run_program("prod", {"onboarding:purge": purge})
