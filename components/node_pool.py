"""The dedicated nodes: their labels and taint, and how an environment schedules onto them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pulumi
from pulumi_kubernetes.core.v1 import (
    NodeAffinityArgs,
    NodePatch,
    NodeSelectorArgs,
    NodeSelectorRequirementArgs,
    NodeSelectorTermArgs,
    NodeSpecPatchArgs,
    TaintPatchArgs,
    TolerationArgs,
)
from pulumi_kubernetes.meta.v1 import ObjectMetaArgs, ObjectMetaPatchArgs
from pulumi_kubernetes.scheduling.v1 import PriorityClass

from components.labels import DOMAIN, PART_OF

POOL_LABEL = f"{DOMAIN}/dedicated"
POOL_VALUE = "onboarding"
REGION_LABEL = "topology.kubernetes.io/region"
ZONE_LABEL = "topology.kubernetes.io/zone"
HOSTNAME_LABEL = "kubernetes.io/hostname"

# prod outranks preprod: on the shared nodes a starved prod pod preempts preprod ones.
PRIORITY_BY_ENVIRONMENT = {"prod": 1_000_000, "preprod": 100_000}


@dataclass(frozen=True)
class PoolNode:
    name: str
    region: str
    zone: str


@dataclass(frozen=True)
class NodePoolArgs:
    environment: str
    nodes: Sequence[PoolNode]
    allowed_regions: frozenset[str]
    # Exactly one stack writes the node labels and taint; see NodePoolSettings.
    manages_nodes: bool = False


class NodePool(pulumi.ComponentResource):
    """Owns (in one stack) the dedicated nodes' labels and taint, and exposes to every
    environment the scheduling terms that keep its pods on those nodes, in France."""

    node_selector: dict[str, str]
    tolerations: list[TolerationArgs]
    node_affinity: NodeAffinityArgs
    priority_class_name: pulumi.Output[str]
    node_patches: list[NodePatch]

    def __init__(
        self, name: str, args: NodePoolArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("onboarding:platform:NodePool", name, None, opts)
        outside = sorted({n.region for n in args.nodes} - args.allowed_regions)
        if outside:
            raise ValueError(f"node pool '{name}' has nodes outside the allowed regions: {outside}")

        self.node_selector = {POOL_LABEL: POOL_VALUE}
        self.tolerations = [
            TolerationArgs(key=POOL_LABEL, operator="Equal", value=POOL_VALUE, effect="NoSchedule")
        ]
        # Enforced by the scheduler, whatever the stack config says: a node without a
        # French region label never receives a pod of this platform.
        self.node_affinity = NodeAffinityArgs(
            required_during_scheduling_ignored_during_execution=NodeSelectorArgs(
                node_selector_terms=[
                    NodeSelectorTermArgs(
                        match_expressions=[
                            NodeSelectorRequirementArgs(
                                key=REGION_LABEL,
                                operator="In",
                                values=sorted(args.allowed_regions),
                            ),
                            NodeSelectorRequirementArgs(
                                key=POOL_LABEL, operator="In", values=[POOL_VALUE]
                            ),
                        ]
                    )
                ]
            )
        )

        self.node_patches = []
        if args.manages_nodes:
            for node in args.nodes:
                self.node_patches.append(
                    NodePatch(
                        f"{name}-{node.name}",
                        metadata=ObjectMetaPatchArgs(
                            name=node.name,
                            labels={
                                POOL_LABEL: POOL_VALUE,
                                REGION_LABEL: node.region,
                                ZONE_LABEL: node.zone,
                            },
                        ),
                        spec=NodeSpecPatchArgs(
                            taints=[
                                TaintPatchArgs(
                                    key=POOL_LABEL, value=POOL_VALUE, effect="NoSchedule"
                                )
                            ]
                        ),
                        # Destroying the managing stack must not pull the nodes from under
                        # the other environment's pods: the labels and taint stay.
                        opts=pulumi.ResourceOptions(parent=self, retain_on_delete=True),
                    )
                )

        priority = PriorityClass(
            f"{name}-priority",
            metadata=ObjectMetaArgs(
                name=f"onboarding-{args.environment}",
                labels={"app.kubernetes.io/part-of": PART_OF},
            ),
            value=PRIORITY_BY_ENVIRONMENT[args.environment],
            global_default=False,
            preemption_policy="PreemptLowerPriority",
            description=f"Workloads of the onboarding platform, {args.environment}.",
            opts=pulumi.ResourceOptions(parent=self),
        )
        self.priority_class_name = priority.metadata.name

        self.register_outputs(
            {
                "node_selector": self.node_selector,
                "priority_class_name": self.priority_class_name,
            }
        )
