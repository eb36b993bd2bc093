"""A small evaluator of Kubernetes NetworkPolicy semantics, for the unit tests.

It answers "may pod A open a TCP connection to pod B on port P?" from the policies the
program declares, following the API reference: a pod selected by no policy of a type is
open for that type; once selected, only what some rule allows is allowed; a connection
needs both the source's egress and the destination's ingress.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Any

from tests.unit.harness import Recorded


@dataclass(frozen=True)
class Pod:
    name: str
    namespace: str
    labels: dict[str, str] = field(default_factory=dict)

    @property
    def namespace_labels(self) -> dict[str, str]:
        return {"kubernetes.io/metadata.name": self.namespace}


def matches(selector: dict[str, Any] | None, labels: dict[str, str]) -> bool:
    if selector is None:
        return True
    assert not selector.get("matchExpressions"), "evaluator handles matchLabels only"
    return all(labels.get(k) == v for k, v in (selector.get("matchLabels") or {}).items())


def _peer_matches(peer: dict[str, Any], policy_namespace: str, pod: Pod) -> bool:
    if "ipBlock" in peer:
        return False
    ns_selector = peer.get("namespaceSelector")
    pod_selector = peer.get("podSelector")
    if ns_selector is None:
        return pod.namespace == policy_namespace and matches(pod_selector, pod.labels)
    return matches(ns_selector, pod.namespace_labels) and matches(pod_selector, pod.labels)


def _block_matches(peer: dict[str, Any], address: str) -> bool:
    """An address outside the cluster matches ipBlock peers only: in `cidr`, in no `except`."""
    block = peer.get("ipBlock")
    if block is None:
        return False
    ip = ipaddress.ip_address(address)

    def within(cidr: str) -> bool:
        network = ipaddress.ip_network(cidr)
        return network.version == ip.version and ip in network

    return within(block["cidr"]) and not any(within(c) for c in block.get("except") or [])


def _port_matches(ports: list[dict[str, Any]] | None, port: int) -> bool:
    if not ports:
        return True
    return any(
        p.get("protocol", "TCP") == "TCP" and ("port" not in p or int(p["port"]) == port)
        for p in ports
    )


class Policies:
    def __init__(self, resources: list[Recorded]) -> None:
        self.policies = [r.inputs for r in resources if r.kind == "NetworkPolicy"]

    def _selecting(self, pod: Pod, policy_type: str) -> list[dict[str, Any]]:
        return [
            p
            for p in self.policies
            if p["metadata"]["namespace"] == pod.namespace
            and policy_type in p["spec"].get("policyTypes", ["Ingress"])
            and matches(p["spec"].get("podSelector"), pod.labels)
        ]

    def _allowed(self, subject: Pod, other: Pod, port: int, policy_type: str) -> bool:
        selecting = self._selecting(subject, policy_type)
        if not selecting:
            return True
        rules_key, peers_key = ("ingress", "from") if policy_type == "Ingress" else ("egress", "to")
        for policy in selecting:
            for rule in policy["spec"].get(rules_key) or []:
                peers = rule.get(peers_key)
                peer_ok = not peers or any(
                    _peer_matches(peer, policy["metadata"]["namespace"], other) for peer in peers
                )
                if peer_ok and _port_matches(rule.get("ports"), port):
                    return True
        return False

    def can_reach_address(self, source: Pod, address: str, port: int) -> bool:
        """May the pod open a TCP connection to an address outside the cluster? Only its
        egress decides (no policy of the cluster selects the other end)."""
        selecting = self._selecting(source, "Egress")
        if not selecting:
            return True
        return any(
            (not rule.get("to") or any(_block_matches(peer, address) for peer in rule["to"]))
            and _port_matches(rule.get("ports"), port)
            for policy in selecting
            for rule in policy["spec"].get("egress") or []
        )

    def can_connect(self, source: Pod, destination: Pod, port: int) -> bool:
        return self._allowed(source, destination, port, "Egress") and self._allowed(
            destination, source, port, "Ingress"
        )


def pod_templates(resources: list[Recorded]) -> dict[str, Pod]:
    """Every pod the program would run, keyed by workload name."""
    pods: dict[str, Pod] = {}
    for r in resources:
        spec = r.spec
        if r.kind == "CronJob":
            template = spec["jobTemplate"]["spec"]["template"]
        elif r.kind in ("StatefulSet", "Deployment", "Job"):
            template = spec["template"]
        else:
            continue
        name = r.metadata["name"]
        pods[name] = Pod(name, r.metadata["namespace"], dict(template["metadata"]["labels"]))
    return pods
