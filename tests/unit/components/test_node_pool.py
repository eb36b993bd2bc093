"""components/node_pool.py: the shared nodes, their owner, and scheduling in France."""

from __future__ import annotations

import pulumi
import pytest

from components.node_pool import POOL_LABEL, REGION_LABEL, NodePool, NodePoolArgs, PoolNode
from infra.settings import FRENCH_REGIONS
from tests.unit.harness import Recorded, RecordingMocks, by_kind, one, pod_templates_specs


def test_managing_stack_labels_and_taints_every_dedicated_node(prod: list[Recorded]) -> None:
    patches = by_kind(prod, "NodePatch")
    assert sorted(p.metadata["name"] for p in patches) == [f"onb-node-{i}" for i in range(1, 6)]
    for patch in patches:
        assert patch.metadata["labels"][POOL_LABEL] == "onboarding"
        assert patch.metadata["labels"][REGION_LABEL] == "fr-par"
        assert patch.spec["taints"] == [
            {"key": POOL_LABEL, "value": "onboarding", "effect": "NoSchedule"}
        ]


def test_other_stack_never_writes_the_nodes(preprod: list[Recorded]) -> None:
    assert by_kind(preprod, "NodePatch") == []


def test_every_pod_tolerates_the_pool_taint_and_requires_a_french_pool_node(
    stack: list[Recorded],
) -> None:
    specs = pod_templates_specs(stack)
    assert len(specs) == 7  # site, CouchDB, setup Job, backup, verify, expiry, purge
    for name, spec in specs.items():
        assert spec["nodeSelector"] == {POOL_LABEL: "onboarding"}, name
        assert {
            "key": POOL_LABEL,
            "operator": "Equal",
            "value": "onboarding",
            "effect": "NoSchedule",
        } in spec["tolerations"], name
        terms = spec["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
        region = next(
            e for e in terms["nodeSelectorTerms"][0]["matchExpressions"] if e["key"] == REGION_LABEL
        )
        assert region["operator"] == "In"
        assert set(region["values"]) == FRENCH_REGIONS, name


def test_prod_outranks_preprod_on_the_shared_nodes(
    prod: list[Recorded], preprod: list[Recorded]
) -> None:
    prod_class = one(prod, "PriorityClass")
    preprod_class = one(preprod, "PriorityClass")
    assert prod_class.inputs["value"] > preprod_class.inputs["value"]
    for stack, cls in ((prod, prod_class), (preprod, preprod_class)):
        for spec in pod_templates_specs(stack).values():
            assert spec["priorityClassName"] == cls.metadata["name"]


def test_node_pool_refuses_a_node_outside_the_allowed_regions() -> None:
    pulumi.runtime.set_mocks(RecordingMocks(), project="p", stack="prod")
    with pytest.raises(ValueError, match="outside the allowed regions: \\['de-fra'\\]"):
        NodePool(
            "pool",
            NodePoolArgs(
                environment="prod",
                nodes=[PoolNode("n1", "fr-par", "a"), PoolNode("n2", "de-fra", "b")],
                allowed_regions=FRENCH_REGIONS,
            ),
        )
