"""The environment's namespace: quota, default limits and a deny-all network baseline."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
from pulumi_kubernetes.core.v1 import (
    LimitRange,
    LimitRangeItemArgs,
    LimitRangeSpecArgs,
    Namespace,
    ResourceQuota,
    ResourceQuotaSpecArgs,
)
from pulumi_kubernetes.meta.v1 import LabelSelectorArgs, ObjectMetaArgs
from pulumi_kubernetes.networking.v1 import (
    NetworkPolicy,
    NetworkPolicyEgressRuleArgs,
    NetworkPolicyPeerArgs,
    NetworkPolicyPortArgs,
    NetworkPolicySpecArgs,
)

from components.labels import DOMAIN, PART_OF


@dataclass(frozen=True)
class Quota:
    """Totals the environment may request; the stack derives them from its workloads."""

    cpu_requests: str
    memory_requests: str
    memory_limits: str
    storage_requests: str
    pods: int


@dataclass(frozen=True)
class EnvironmentNamespaceArgs:
    environment: str
    name: str
    quota: Quota
    # Pod Security Admission level enforced on every pod of the namespace.
    pod_security_level: str = "restricted"


class EnvironmentNamespace(pulumi.ComponentResource):
    """One namespace per environment, denying all traffic unless a workload allows it."""

    namespace: Namespace
    name: pulumi.Output[str]

    def __init__(
        self, name: str, args: EnvironmentNamespaceArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("onboarding:platform:EnvironmentNamespace", name, None, opts)
        level = args.pod_security_level

        self.namespace = Namespace(
            f"{name}-namespace",
            metadata=ObjectMetaArgs(
                name=args.name,
                labels={
                    "app.kubernetes.io/part-of": PART_OF,
                    f"{DOMAIN}/environment": args.environment,
                    "pod-security.kubernetes.io/enforce": level,
                    "pod-security.kubernetes.io/audit": level,
                    "pod-security.kubernetes.io/warn": level,
                },
            ),
            # Deleting a namespace deletes every claim in it: the CouchDB data volumes and the
            # backups. `pulumi destroy` therefore leaves the namespace, and with it the data.
            opts=pulumi.ResourceOptions(parent=self, retain_on_delete=True),
        )
        self.name = self.namespace.metadata.name
        in_namespace = pulumi.ResourceOptions(parent=self, depends_on=[self.namespace])

        ResourceQuota(
            f"{name}-quota",
            metadata=ObjectMetaArgs(name="environment-quota", namespace=self.name),
            spec=ResourceQuotaSpecArgs(
                hard={
                    "requests.cpu": args.quota.cpu_requests,
                    "requests.memory": args.quota.memory_requests,
                    "limits.memory": args.quota.memory_limits,
                    "requests.storage": args.quota.storage_requests,
                    "pods": str(args.quota.pods),
                    "services.loadbalancers": "0",
                    "services.nodeports": "0",
                }
            ),
            opts=in_namespace,
        )

        # Every container of the program sets its own resources; these defaults only catch
        # a pod started by hand (kubectl run) so it cannot starve the shared nodes.
        LimitRange(
            f"{name}-limits",
            metadata=ObjectMetaArgs(name="container-defaults", namespace=self.name),
            spec=LimitRangeSpecArgs(
                limits=[
                    LimitRangeItemArgs(
                        type="Container",
                        default_request={
                            "cpu": "50m",
                            "memory": "64Mi",
                            "ephemeral-storage": "64Mi",
                        },
                        default={"memory": "256Mi", "ephemeral-storage": "1Gi"},
                    )
                ]
            ),
            opts=in_namespace,
        )

        NetworkPolicy(
            f"{name}-default-deny",
            metadata=ObjectMetaArgs(name="default-deny-all", namespace=self.name),
            spec=NetworkPolicySpecArgs(
                pod_selector=LabelSelectorArgs(),
                policy_types=["Ingress", "Egress"],
            ),
            opts=in_namespace,
        )
        NetworkPolicy(
            f"{name}-allow-dns",
            metadata=ObjectMetaArgs(name="allow-dns-egress", namespace=self.name),
            spec=NetworkPolicySpecArgs(
                pod_selector=LabelSelectorArgs(),
                policy_types=["Egress"],
                egress=[
                    NetworkPolicyEgressRuleArgs(
                        to=[
                            NetworkPolicyPeerArgs(
                                namespace_selector=LabelSelectorArgs(
                                    match_labels={"kubernetes.io/metadata.name": "kube-system"}
                                ),
                                pod_selector=LabelSelectorArgs(
                                    match_labels={"k8s-app": "kube-dns"}
                                ),
                            )
                        ],
                        ports=[
                            NetworkPolicyPortArgs(protocol="UDP", port=53),
                            NetworkPolicyPortArgs(protocol="TCP", port=53),
                        ],
                    )
                ],
            ),
            opts=in_namespace,
        )

        self.register_outputs({"name": self.name})
