"""Kubernetes objects for the policy tests: compliant by default, each test breaks one thing."""

from __future__ import annotations

import copy
from typing import Any

APP = {"app.kubernetes.io/name": "webapp", "app.kubernetes.io/instance": "webapp-prod"}
COUCHDB = {"app.kubernetes.io/name": "couchdb", "app.kubernetes.io/instance": "couchdb-prod"}
NS = "onboarding-prod"
DIGEST = "sha256:" + "ab" * 32


def container(name: str = "app", **overrides: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "name": name,
        "image": "registry.example.fr/onboarding/web:2.14.0",
        "resources": {
            "requests": {"cpu": "250m", "memory": "256Mi"},
            "limits": {"memory": "512Mi"},
        },
        "securityContext": {"runAsNonRoot": True, "allowPrivilegeEscalation": False},
    }
    spec.update(overrides)
    return spec


def pod_spec(**overrides: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "containers": [container()],
        "securityContext": {"runAsNonRoot": True, "runAsUser": 10001},
        "affinity": {
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [
                        {
                            "matchExpressions": [
                                {
                                    "key": "topology.kubernetes.io/region",
                                    "operator": "In",
                                    "values": ["fr-par", "fr-lyo"],
                                }
                            ]
                        }
                    ]
                }
            }
        },
    }
    spec.update(overrides)
    return spec


def metadata(name: str, labels: dict[str, str] | None = None) -> dict[str, Any]:
    return {"name": name, "namespace": NS, "labels": dict(labels or {})}


def deployment(
    name: str = "webapp",
    labels: dict[str, str] | None = None,
    replicas: int | None = 3,
    spec: dict[str, Any] | None = None,
) -> dict[str, Any]:
    labels = dict(labels or APP)
    body: dict[str, Any] = {
        "selector": {"matchLabels": labels},
        "template": {"metadata": {"labels": labels}, "spec": spec or pod_spec()},
    }
    if replicas is not None:
        body["replicas"] = replicas
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": metadata(name, labels),
        "spec": body,
    }


def statefulset(name: str = "couchdb", **kwargs: Any) -> dict[str, Any]:
    obj = deployment(name, **{"labels": COUCHDB, **kwargs})
    obj["kind"] = "StatefulSet"
    return obj


def cron_job(name: str = "couchops-purge", spec: dict[str, Any] | None = None) -> dict[str, Any]:
    labels = {"app.kubernetes.io/name": "couchops"}
    return {
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": metadata(name, labels),
        "spec": {
            "schedule": "30 3 * * *",
            "jobTemplate": {
                "spec": {"template": {"metadata": {"labels": labels}, "spec": spec or pod_spec()}}
            },
        },
    }


def service(
    name: str, selector: dict[str, str], service_type: str | None = "ClusterIP", **spec: Any
) -> dict[str, Any]:
    body: dict[str, Any] = {"selector": selector, "ports": [{"port": 5984}], **spec}
    if service_type is not None:
        body["type"] = service_type
    return {"apiVersion": "v1", "kind": "Service", "metadata": metadata(name), "spec": body}


def pdb(name: str, selector: dict[str, str], **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": metadata(name),
        "spec": {"selector": {"matchLabels": selector}, **(spec or {"maxUnavailable": 1})},
    }


def with_env(obj: dict[str, Any], *env: dict[str, Any]) -> dict[str, Any]:
    """A copy whose (first) container has these environment variables."""
    obj = copy.deepcopy(obj)
    template = obj["spec"].get("template") or obj["spec"]["jobTemplate"]["spec"]["template"]
    template["spec"]["containers"][0]["env"] = list(env)
    return obj
