"""components/namespace.py: what a destroy keeps, what the quota admits."""

from __future__ import annotations

from typing import Any

import pulumi
import pytest

from components import namespace as namespace_module
from components.namespace import EnvironmentNamespace, EnvironmentNamespaceArgs, Quota
from tests.unit.harness import Recorded, RecordingMocks, one


def test_namespace_enforces_the_restricted_pod_security_standard(stack: list[Recorded]) -> None:
    labels = one(stack, "Namespace").metadata["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"


@pytest.mark.parametrize("kind", ["ResourceQuota"])
def test_quota_uses_only_standard_resource_names(stack: list[Recorded], kind: str) -> None:
    # The API server refuses unknown names (found against a real kube-apiserver: the
    # singular `services.loadbalancer`); kubernetes-validate cannot see it.
    standard = {
        "requests.cpu",
        "requests.memory",
        "limits.memory",
        "requests.storage",
        "pods",
        "services.loadbalancers",
        "services.nodeports",
    }
    assert set(one(stack, kind).spec["hard"]) <= standard


def test_destroy_keeps_the_namespace_and_so_the_data_volumes_in_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Resource options never reach the mocks, so the options are read where they are given.
    captured: list[pulumi.ResourceOptions] = []

    class RecordingNamespace(namespace_module.Namespace):
        def __init__(self, name: str, **kwargs: Any) -> None:
            captured.append(kwargs["opts"])
            super().__init__(name, **kwargs)

    monkeypatch.setattr(namespace_module, "Namespace", RecordingNamespace)
    pulumi.runtime.set_mocks(RecordingMocks(), project="p", stack="prod")

    @pulumi.runtime.test
    def declare() -> None:
        EnvironmentNamespace(
            "ns",
            EnvironmentNamespaceArgs(
                environment="prod",
                name="onboarding-prod",
                quota=Quota("1", "1Gi", "1Gi", "1Gi", 10),
            ),
        )

    declare()
    assert len(captured) == 1
    assert captured[0].retain_on_delete is True
