"""Pod-level building blocks every workload shares: scheduling, security, resources, identity."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pulumi
from pulumi_kubernetes.core.v1 import (
    CapabilitiesArgs,
    EmptyDirVolumeSourceArgs,
    NodeAffinityArgs,
    PodSecurityContextArgs,
    ResourceRequirementsArgs,
    SeccompProfileArgs,
    SecurityContextArgs,
    ServiceAccount,
    TolerationArgs,
    TopologySpreadConstraintArgs,
    VolumeArgs,
)
from pulumi_kubernetes.meta.v1 import LabelSelectorArgs, ObjectMetaArgs


@dataclass(frozen=True)
class Scheduling:
    """Where an environment's pods may run: the NodePool's outputs, passed on unchanged."""

    node_selector: dict[str, str]
    tolerations: list[TolerationArgs]
    node_affinity: NodeAffinityArgs
    priority_class_name: pulumi.Input[str]

    def pod_fields(self, run_as: RunAs, service_account: pulumi.Input[str]) -> dict[str, Any]:
        """The PodSpec fields every pod of the platform shares: placement on the dedicated
        nodes, priority, an unprivileged identity, the workload's own ServiceAccount and no
        API token (no workload of the platform calls the Kubernetes API)."""
        return {
            "service_account_name": service_account,
            "automount_service_account_token": False,
            # Service links would inject COUCHDB_* variables of their own next to ours.
            "enable_service_links": False,
            "priority_class_name": self.priority_class_name,
            "node_selector": self.node_selector,
            "tolerations": self.tolerations,
            "security_context": run_as.pod_security(),
        }


def spread(topology_key: str, selector: dict[str, str]) -> TopologySpreadConstraintArgs:
    """Spread pods over a topology, but never refuse one: a hard constraint would block
    scheduling while a node is drained."""
    return TopologySpreadConstraintArgs(
        max_skew=1,
        topology_key=topology_key,
        when_unsatisfiable="ScheduleAnyway",
        label_selector=LabelSelectorArgs(match_labels=selector),
    )


@dataclass(frozen=True)
class ContainerResources:
    cpu_request: str
    memory_request: str
    memory_limit: str
    cpu_limit: str | None = None
    # The node's disk a container may fill with its logs, its writable layer and its
    # disk-backed emptyDirs: requested so the scheduler counts it, limited so one container
    # cannot fill a node both environments run on (the kubelet evicts it first).
    ephemeral_storage_request: str = "64Mi"
    ephemeral_storage_limit: str = "1Gi"

    def to_args(self) -> ResourceRequirementsArgs:
        limits = {"memory": self.memory_limit, "ephemeral-storage": self.ephemeral_storage_limit}
        if self.cpu_limit:
            limits["cpu"] = self.cpu_limit
        return ResourceRequirementsArgs(
            requests={
                "cpu": self.cpu_request,
                "memory": self.memory_request,
                "ephemeral-storage": self.ephemeral_storage_request,
            },
            limits=limits,
        )


def scratch_volume(name: str, size_limit: str, *, memory: bool = False) -> VolumeArgs:
    """An emptyDir, always bounded: past `size_limit` the kubelet evicts the pod rather than
    let it fill the node's disk (or, in memory, the pod's memory limit)."""
    return VolumeArgs(
        name=name,
        empty_dir=EmptyDirVolumeSourceArgs(
            size_limit=size_limit, medium="Memory" if memory else None
        ),
    )


def service_account(
    resource_name: str,
    *,
    name: str,
    namespace: pulumi.Input[str],
    labels: dict[str, str],
    parent: pulumi.Resource,
) -> ServiceAccount:
    """A workload's own identity, holding no API token: no workload of the platform reads
    the Kubernetes API, so none is mounted, and a RoleBinding meant for one workload can
    never reach another (they would share `default` otherwise)."""
    return ServiceAccount(
        resource_name,
        metadata=ObjectMetaArgs(name=name, namespace=namespace, labels=labels),
        automount_service_account_token=False,
        opts=pulumi.ResourceOptions(parent=parent),
    )


@dataclass(frozen=True)
class RunAs:
    """The unprivileged identity a pod runs as (Pod Security Standard `restricted`)."""

    user: int
    group: int

    def pod_security(self) -> PodSecurityContextArgs:
        return PodSecurityContextArgs(
            run_as_non_root=True,
            run_as_user=self.user,
            run_as_group=self.group,
            fs_group=self.group,
            fs_group_change_policy="OnRootMismatch",
            seccomp_profile=SeccompProfileArgs(type="RuntimeDefault"),
        )


def restricted_container(*, read_only_root: bool = True) -> SecurityContextArgs:
    return SecurityContextArgs(
        allow_privilege_escalation=False,
        privileged=False,
        read_only_root_filesystem=read_only_root,
        run_as_non_root=True,
        capabilities=CapabilitiesArgs(drop=["ALL"]),
        seccomp_profile=SeccompProfileArgs(type="RuntimeDefault"),
    )
