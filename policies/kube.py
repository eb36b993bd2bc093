"""Readers of Kubernetes objects as the policy engine hands them over: the resource's inputs,
in the API's own shape (`spec.template.spec.containers`, camelCase keys), as plain dicts.

A value the engine cannot know during a preview (computed from another resource's output) is
`UNKNOWN`; the rules treat it as "cannot be proven" wherever the value matters.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

Obj = Mapping[str, Any]


class Unknown:
    """A value only known once the update runs."""

    _instance: Unknown | None = None

    def __new__(cls) -> Unknown:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "<unknown during preview>"


UNKNOWN: Final = Unknown()

# Kinds whose objects carry a pod template, and where it sits.
_TEMPLATE_PATHS: Final[dict[str, tuple[str, ...]]] = {
    "Pod": (),
    "Deployment": ("spec", "template"),
    "StatefulSet": ("spec", "template"),
    "DaemonSet": ("spec", "template"),
    "ReplicaSet": ("spec", "template"),
    "ReplicationController": ("spec", "template"),
    "Job": ("spec", "template"),
    "CronJob": ("spec", "jobTemplate", "spec", "template"),
}
WORKLOAD_KINDS: Final = frozenset(_TEMPLATE_PATHS)


def kind_of(resource_type: str) -> str:
    """`kubernetes:apps/v1:Deployment` -> `Deployment` (also for custom resources)."""
    return resource_type.rsplit(":", 1)[-1]


def group_of(resource_type: str) -> str:
    """`kubernetes:gateway.networking.k8s.io/v1:HTTPRoute` -> `gateway.networking.k8s.io`;
    the core group (`kubernetes:core/v1:Service`) -> ``."""
    parts = resource_type.split(":")
    if len(parts) != 3 or parts[0] != "kubernetes":
        return ""
    group = parts[1].split("/", 1)[0]
    return "" if group == "core" else group


def mapping(value: Any) -> Obj:
    return value if isinstance(value, Mapping) else {}


def sequence(value: Any) -> Sequence[Any]:
    if isinstance(value, Sequence) and not isinstance(value, str | bytes):
        return value
    return ()


def dig(obj: Any, *path: str) -> Any:
    """The value at `path`, or None when any step is missing (UNKNOWN is passed through)."""
    for key in path:
        if not isinstance(obj, Mapping):
            return None
        obj = obj.get(key)
    return obj


def namespace(props: Obj) -> str:
    value = dig(props, "metadata", "namespace")
    return value if isinstance(value, str) and value else "default"


def describe(kind: str, props: Obj) -> str:
    """`StatefulSet onboarding-prod/couchdb`: how a message names the object."""
    name = dig(props, "metadata", "name")
    if name is UNKNOWN:
        name = "(name known after the update)"
    elif not isinstance(name, str) or not name:
        name = "(unnamed)"
    ns = dig(props, "metadata", "namespace")
    return f"{kind} {ns}/{name}" if isinstance(ns, str) and ns else f"{kind} {name}"


@dataclass(frozen=True)
class PodTemplate:
    labels: Obj
    spec: Obj


def pod_template(kind: str, props: Obj) -> PodTemplate | None:
    """The pods a workload creates (a Pod is its own template); None for other kinds."""
    if kind not in _TEMPLATE_PATHS:
        return None
    template = dig(props, *_TEMPLATE_PATHS[kind]) if _TEMPLATE_PATHS[kind] else props
    template = mapping(template)
    return PodTemplate(
        labels=mapping(dig(template, "metadata", "labels")), spec=mapping(template.get("spec"))
    )


@dataclass(frozen=True)
class Container:
    role: str  # "container", "init container", "ephemeral container"
    name: str
    spec: Obj

    def __str__(self) -> str:
        return f"{self.role} '{self.name}'"


def containers(pod_spec: Obj) -> Iterator[Container]:
    """Every container of a pod: init containers and ephemeral containers included."""
    for key, role in (
        ("initContainers", "init container"),
        ("containers", "container"),
        ("ephemeralContainers", "ephemeral container"),
    ):
        for item in sequence(pod_spec.get(key)):
            spec = mapping(item)
            name = spec.get("name")
            yield Container(role, name if isinstance(name, str) else "?", spec)


def env_vars(container: Container) -> Iterator[tuple[str, Obj]]:
    for item in sequence(container.spec.get("env")):
        var = mapping(item)
        name = var.get("name")
        if isinstance(name, str):
            yield name, var


def labels_match(selector: Obj, labels: Obj) -> bool:
    """Whether a LabelSelector (matchLabels and matchExpressions) selects these labels.
    An empty selector selects everything, as in a PodDisruptionBudget."""
    return all(
        labels.get(key) == value for key, value in mapping(selector.get("matchLabels")).items()
    ) and all(
        _expression_matches(mapping(item), labels)
        for item in sequence(selector.get("matchExpressions"))
    )


def _expression_matches(expression: Obj, labels: Obj) -> bool:
    key, operator = str(expression.get("key")), expression.get("operator")
    present = key in labels
    values = sequence(expression.get("values"))
    if operator == "In":
        return present and labels[key] in values
    if operator == "NotIn":
        return not (present and labels[key] in values)
    if operator == "Exists":
        return present
    if operator == "DoesNotExist":
        return not present
    return False
