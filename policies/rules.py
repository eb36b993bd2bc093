"""The policy rules, as plain functions over Kubernetes objects (policies/kube.py).

A resource rule takes the object's kind and properties and returns one message per problem,
each naming the object and what is wrong; a stack rule takes every resource of the stack (it
needs to relate objects: a route to the Service it sends to, a workload to its budget) and
returns findings tied to the resource at fault. No rule knows about Pulumi: policies/pack.py
binds them to the engine, and tests call them with dicts.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass
from typing import Final

from policies.kube import (
    UNKNOWN,
    Container,
    Obj,
    PodTemplate,
    containers,
    describe,
    dig,
    env_vars,
    labels_match,
    mapping,
    namespace,
    pod_template,
    sequence,
)

# CouchDB's pods, as components/couchdb_cluster.py labels them (components/labels.py builds
# `app.kubernetes.io/name` from the workload's name, "couchdb").
COUCHDB_LABELS: Final = {"app.kubernetes.io/name": "couchdb"}

# The GDPR contract: nothing personal older than 30 days (infra/settings.py MAX_RETENTION_DAYS).
MAX_RETENTION_DAYS: Final = 30

# The `topology.kubernetes.io/region` labels of the hosting provider's French sites; the
# policy's default for `allowedRegions` (policies/pack.py), equal to infra/settings.py
# FRENCH_REGIONS (tests/unit/policies checks they agree).
DEFAULT_ALLOWED_REGIONS: Final = (
    "fr-gra",
    "fr-lil",
    "fr-lyo",
    "fr-mrs",
    "fr-nte",
    "fr-par",
    "fr-rbx",
    "fr-sbg",
)
REGION_LABELS: Final = ("topology.kubernetes.io/region", "failure-domain.beta.kubernetes.io/region")


@dataclass(frozen=True)
class Resource:
    """One resource of the stack, as a stack rule sees it."""

    kind: str
    urn: str
    props: Obj

    @property
    def namespace(self) -> str:
        return namespace(self.props)

    @property
    def name(self) -> str:
        value = dig(self.props, "metadata", "name")
        return value if isinstance(value, str) else ""

    def __str__(self) -> str:
        return describe(self.kind, self.props)


@dataclass(frozen=True)
class Finding:
    urn: str
    message: str


def _is_couchdb(labels: Obj) -> bool:
    return all(labels.get(k) == v for k, v in COUCHDB_LABELS.items())


# ---------------------------------------------------------------------------------------------
# The database is never reachable from outside the cluster.


def couchdb_service_internal(kind: str, props: Obj) -> list[str]:
    """A Service that selects CouchDB pods is ClusterIP (or headless) without external IPs."""
    if kind != "Service" or not _selects_couchdb(props):
        return []
    problems = []
    service_type = dig(props, "spec", "type")
    if service_type in {"LoadBalancer", "NodePort"} or service_type is UNKNOWN:
        problems.append(
            f"{describe(kind, props)} selects CouchDB pods and is of type {service_type}: "
            "it opens the database outside the cluster; only ClusterIP is allowed"
        )
    if sequence(dig(props, "spec", "externalIPs")) or dig(props, "spec", "externalIPs") is UNKNOWN:
        problems.append(
            f"{describe(kind, props)} selects CouchDB pods and has externalIPs: "
            "the database would answer on addresses outside the cluster"
        )
    return problems


def _selects_couchdb(service: Obj) -> bool:
    selector = mapping(dig(service, "spec", "selector"))
    return any(selector.get(k) == v for k, v in COUCHDB_LABELS.items())


def couchdb_pods_off_host_network(kind: str, props: Obj) -> list[str]:
    """CouchDB pods use neither the node's network namespace nor host ports."""
    template = pod_template(kind, props)
    if template is None or not _is_couchdb(template.labels):
        return []
    problems = []
    if template.spec.get("hostNetwork") in (True, UNKNOWN):
        problems.append(
            f"{describe(kind, props)} runs CouchDB pods with hostNetwork: "
            "the database would listen on the node's own addresses"
        )
    for container in containers(template.spec):
        for item in sequence(container.spec.get("ports")):
            host_port = mapping(item).get("hostPort")
            if host_port:
                problems.append(
                    f"{describe(kind, props)}: {container} of CouchDB publishes hostPort "
                    f"{host_port}: the database would answer on the node's address"
                )
    return problems


_ROUTE_KINDS: Final = frozenset({"HTTPRoute", "GRPCRoute", "TLSRoute", "TCPRoute", "UDPRoute"})


def couchdb_not_routed(resources: Sequence[Resource]) -> list[Finding]:
    """No Ingress or Gateway API route sends traffic to a Service that selects CouchDB pods."""
    couchdb_services = {
        (r.namespace, r.name)
        for r in resources
        if r.kind == "Service" and _selects_couchdb(r.props)
    }
    findings = []
    for route in resources:
        for ns, name in _route_backends(route):
            if (ns, name) in couchdb_services:
                findings.append(
                    Finding(
                        route.urn,
                        f"{route} sends traffic to Service {ns}/{name}, which selects CouchDB "
                        "pods: the database must not be reachable through the edge",
                    )
                )
    return findings


def _route_backends(route: Resource) -> Iterator[tuple[str, str]]:
    """(namespace, name) of every Service an Ingress or a Gateway API route points at."""
    spec = mapping(route.props.get("spec"))
    if route.kind == "Ingress":
        backends = [spec.get("defaultBackend")]
        for rule in sequence(spec.get("rules")):
            backends += [mapping(p).get("backend") for p in sequence(dig(rule, "http", "paths"))]
        for backend in backends:
            name = dig(backend, "service", "name")
            if isinstance(name, str):
                yield route.namespace, name
    elif route.kind in _ROUTE_KINDS:
        for rule in sequence(spec.get("rules")):
            refs = list(sequence(mapping(rule).get("backendRefs")))
            for item in sequence(mapping(rule).get("filters")):
                mirror = dig(item, "requestMirror", "backendRef")
                if mirror is not None:
                    refs.append(mirror)
            for item in refs:
                ref = mapping(item)
                if ref.get("kind", "Service") != "Service" or ref.get("group") not in {"", None}:
                    continue
                name, ns = ref.get("name"), ref.get("namespace") or route.namespace
                if isinstance(name, str) and isinstance(ns, str):
                    yield ns, name


def couchdb_ingress_from_cluster_only(kind: str, props: Obj) -> list[str]:
    """A NetworkPolicy that may select CouchDB pods admits traffic only from pods or
    namespaces: no ipBlock peer, and no ingress rule without `from` (which admits any source,
    outside the cluster included)."""
    if kind != "NetworkPolicy" or not _may_select_couchdb(
        mapping(dig(props, "spec", "podSelector"))
    ):
        return []
    problems = []
    for index, item in enumerate(sequence(dig(props, "spec", "ingress"))):
        peers = sequence(mapping(item).get("from"))
        if not peers:
            problems.append(
                f"{describe(kind, props)}: ingress rule {index} has no `from` and selects "
                "CouchDB pods: it admits any source, outside the cluster included"
            )
        for peer in peers:
            block = mapping(peer).get("ipBlock")
            if block:
                cidr = mapping(block).get("cidr")
                problems.append(
                    f"{describe(kind, props)}: ingress rule {index} admits addresses {cidr} "
                    "to CouchDB pods; only pods and namespaces of the cluster may reach them"
                )
    return problems


def _may_select_couchdb(pod_selector: Obj) -> bool:
    """Whether a pod selector can select CouchDB pods, judged on the CouchDB labels alone (a
    requirement on another label may or may not hold: assume it does)."""
    relevant = {
        "matchLabels": {
            k: v for k, v in mapping(pod_selector.get("matchLabels")).items() if k in COUCHDB_LABELS
        },
        "matchExpressions": [
            e
            for e in sequence(pod_selector.get("matchExpressions"))
            if mapping(e).get("key") in COUCHDB_LABELS
        ],
    }
    return labels_match(relevant, COUCHDB_LABELS)


# ---------------------------------------------------------------------------------------------
# GDPR: no retention beyond 30 days.

# PURGE_RETENTION_DAYS, BACKUP_RETENTION_DAYS, GDPR_MAX_AGE_DAYS (couchops/settings.py), and
# any other retention or maximum age the jobs may be given, in days, hours or seconds.
_RETENTION_ENV: Final = re.compile(
    r"^(?:\w+_)?(?:RETENTION|MAX_AGE)(?:_\w+)?_(DAYS|HOURS|SECONDS)$"
)
_SECONDS_PER: Final = {"DAYS": 86400, "HOURS": 3600, "SECONDS": 1}


def retention_within_gdpr(kind: str, props: Obj) -> list[str]:
    """Every retention or maximum age given to a container is a literal of at most 30 days."""
    template = pod_template(kind, props)
    if template is None:
        return []
    problems = []
    for container in containers(template.spec):
        for name, var in env_vars(container):
            match = _RETENTION_ENV.match(name)
            if not match:
                continue
            where = f"{describe(kind, props)}: {container} sets {name}"
            value = var.get("value")
            if "valueFrom" in var or not isinstance(value, str):
                problems.append(
                    f"{where} from elsewhere than a literal value: a retention must be written "
                    "in the manifest so that it can be checked against the 30-day GDPR limit"
                )
                continue
            try:
                amount = float(value)
            except ValueError:
                problems.append(f"{where}={value!r}, which is not a number")
                continue
            days = amount * _SECONDS_PER[match.group(1)] / 86400
            if not 0 < days <= MAX_RETENTION_DAYS:
                problems.append(
                    f"{where}={value} ({days:g} days): GDPR allows at most "
                    f"{MAX_RETENTION_DAYS} days, and a retention must be positive"
                )
    return problems


# ---------------------------------------------------------------------------------------------
# Data residency: nodes, volumes and the off-site copies stay in the allowed French regions.


def _outside(values: Collection[object], allowed: Collection[str]) -> list[str]:
    return sorted(str(v) for v in values if v not in allowed)


def _region_terms(terms: Sequence[object], allowed: Collection[str]) -> str | None:
    """None when every node selector term (ORed) pins the region to allowed ones (an `In`
    expression on a region label); otherwise what is wrong."""
    if not terms:
        return "no required node affinity on the region"
    for item in terms:
        pinned = False
        for expression in sequence(mapping(item).get("matchExpressions")):
            expr = mapping(expression)
            if expr.get("key") not in REGION_LABELS:
                continue
            values = list(sequence(expr.get("values")))
            if expr.get("operator") != "In" or not values:
                return f"a region expression with operator {expr.get('operator')} pins nothing"
            outside = _outside(values, allowed)
            if outside:
                return f"regions outside the allowed ones: {', '.join(outside)}"
            pinned = True
        if not pinned:
            return "a node selector term without a region expression admits any region"
    return None


def workloads_in_allowed_regions(kind: str, props: Obj, allowed: Collection[str]) -> list[str]:
    """Every pod is scheduled only onto nodes of an allowed region: a region nodeSelector, or
    a required node affinity whose every term keeps the region `In` the allowed list."""
    template = pod_template(kind, props)
    if template is None:
        return []
    where = describe(kind, props)
    selector = mapping(template.spec.get("nodeSelector"))
    pinned_by_selector = False
    for label in REGION_LABELS:
        if label in selector:
            if selector[label] not in allowed:
                return [f"{where}: nodeSelector {label}={selector[label]} is not an allowed region"]
            pinned_by_selector = True
    terms = sequence(
        dig(
            template.spec,
            "affinity",
            "nodeAffinity",
            "requiredDuringSchedulingIgnoredDuringExecution",
            "nodeSelectorTerms",
        )
    )
    if pinned_by_selector and not terms:
        return []
    problem = _region_terms(terms, allowed)
    if problem is None:
        return []
    return [
        f"{where}: its pods may run outside the allowed regions ({problem}); "
        f"allowed: {', '.join(sorted(allowed))}"
    ]


def nodes_and_volumes_in_allowed_regions(
    kind: str, props: Obj, allowed: Collection[str]
) -> list[str]:
    """Nodes (and node patches) carry an allowed region label; StorageClasses and
    PersistentVolumes are confined to allowed regions."""
    where = describe(kind, props)
    if kind in {"Node", "NodePatch"}:
        labels = mapping(dig(props, "metadata", "labels"))
        regions = [labels[label] for label in REGION_LABELS if label in labels]
        if kind == "Node" and not regions:
            return [f"{where} has no topology.kubernetes.io/region label: its region is unknown"]
        outside = _outside(regions, allowed)
        if outside:
            return [
                f"{where} is labelled with region {', '.join(outside)}, outside the allowed "
                f"regions ({', '.join(sorted(allowed))})"
            ]
        return []
    if kind == "StorageClass":
        problems = []
        for term in sequence(props.get("allowedTopologies")):
            for expression in sequence(mapping(term).get("matchLabelExpressions")):
                expr = mapping(expression)
                if expr.get("key") in REGION_LABELS:
                    outside = _outside(list(sequence(expr.get("values"))), allowed)
                    if outside:
                        problems.append(f"{where} allows volumes in regions {', '.join(outside)}")
        region = mapping(props.get("parameters")).get("region")
        if region is not None and region not in allowed:
            problems.append(f"{where} provisions volumes in region {region}")
        return problems
    if kind == "PersistentVolume":
        terms = sequence(dig(props, "spec", "nodeAffinity", "required", "nodeSelectorTerms"))
        problem = _region_terms(terms, allowed)
        return [f"{where} is not confined to the allowed regions ({problem})"] if problem else []
    return []


# S3_REGION (components/backups.py), AWS_REGION, AWS_DEFAULT_REGION...
_REGION_ENV: Final = re.compile(r"^(?:\w+_)?REGION$")


def object_storage_in_allowed_regions(kind: str, props: Obj, allowed: Collection[str]) -> list[str]:
    """A region handed to a container (the off-site backups' bucket) is an allowed one."""
    template = pod_template(kind, props)
    if template is None:
        return []
    problems = []
    for container in containers(template.spec):
        for name, var in env_vars(container):
            if not _REGION_ENV.match(name):
                continue
            value = var.get("value")
            if "valueFrom" in var or not isinstance(value, str):
                problems.append(
                    f"{describe(kind, props)}: {container} takes {name} from elsewhere than a "
                    "literal value: the region of its storage cannot be checked"
                )
            elif value not in allowed:
                problems.append(
                    f"{describe(kind, props)}: {container} sets {name}={value}, outside the "
                    f"allowed regions ({', '.join(sorted(allowed))}): data would leave France"
                )
    return problems


# ---------------------------------------------------------------------------------------------
# Availability: every replicated workload has a disruption budget and spreads its pods.


@dataclass(frozen=True)
class _Replicated:
    resource: Resource
    template: PodTemplate
    why: str


def _replicated(resources: Sequence[Resource]) -> list[_Replicated]:
    """Deployments and StatefulSets with more than one replica or scaled by an HPA."""
    scaled = {}
    for r in resources:
        if r.kind == "HorizontalPodAutoscaler":
            target = mapping(dig(r.props, "spec", "scaleTargetRef"))
            scaled[(r.namespace, target.get("kind"), target.get("name"))] = r
    found = []
    for r in resources:
        if r.kind not in {"Deployment", "StatefulSet"}:
            continue
        template = pod_template(r.kind, r.props)
        assert template is not None
        replicas = dig(r.props, "spec", "replicas")
        hpa = scaled.get((r.namespace, r.kind, r.name))
        if hpa is not None:
            found.append(_Replicated(r, template, f"scaled by {hpa}"))
        elif replicas is UNKNOWN or (isinstance(replicas, int | float) and replicas > 1):
            found.append(_Replicated(r, template, f"{replicas} replicas"))
    return found


def replicated_workloads_have_budget(resources: Sequence[Resource]) -> list[Finding]:
    """A PodDisruptionBudget in the workload's namespace selects its pods, and allows at least
    one voluntary eviction (a budget of 0 blocks every node drain)."""
    budgets = [r for r in resources if r.kind == "PodDisruptionBudget"]
    findings = []
    for item in _replicated(resources):
        mine = [
            b
            for b in budgets
            if b.namespace == item.resource.namespace
            and labels_match(mapping(dig(b.props, "spec", "selector")), item.template.labels)
        ]
        if not mine:
            findings.append(
                Finding(
                    item.resource.urn,
                    f"{item.resource} ({item.why}) has no PodDisruptionBudget selecting its "
                    "pods: a node drain may evict them all at once",
                )
            )
        for budget in mine:
            if dig(budget.props, "spec", "maxUnavailable") in {0, "0", "0%"}:
                findings.append(
                    Finding(
                        budget.urn,
                        f"{budget} allows no eviction of {item.resource}'s pods "
                        "(maxUnavailable 0): every node drain would block",
                    )
                )
    return findings


def replicated_workloads_spread(resources: Sequence[Resource]) -> list[Finding]:
    """The pods of a replicated workload are spread over nodes or zones: a topology spread
    constraint or a pod anti-affinity term that selects the workload's own pods."""
    findings = []
    for item in _replicated(resources):
        if not _spreads(item.template):
            findings.append(
                Finding(
                    item.resource.urn,
                    f"{item.resource} ({item.why}) has neither topologySpreadConstraints nor "
                    "podAntiAffinity selecting its own pods: its replicas may share one node",
                )
            )
    return findings


def _spreads(template: PodTemplate) -> bool:
    anti = mapping(dig(template.spec, "affinity", "podAntiAffinity"))
    terms = [
        *sequence(template.spec.get("topologySpreadConstraints")),
        *sequence(anti.get("requiredDuringSchedulingIgnoredDuringExecution")),
        *(
            mapping(t).get("podAffinityTerm")
            for t in sequence(anti.get("preferredDuringSchedulingIgnoredDuringExecution"))
        ),
    ]
    # Each has a topologyKey and a labelSelector; an empty selector would spread nothing.
    return any(
        mapping(term).get("topologyKey")
        and mapping(mapping(term).get("labelSelector"))
        and labels_match(mapping(mapping(term).get("labelSelector")), template.labels)
        for term in terms
    )


# ---------------------------------------------------------------------------------------------
# Hardened containers.


def _effective(container: Container, pod_spec: Obj, key: str) -> object:
    """A securityContext field as the kubelet applies it: the container's, else the pod's."""
    own = mapping(container.spec.get("securityContext"))
    if key in own:
        return own[key]
    return mapping(pod_spec.get("securityContext")).get(key)


def containers_non_root(kind: str, props: Obj) -> list[str]:
    """Every container runs with runAsNonRoot true and no runAsUser 0."""
    template = pod_template(kind, props)
    if template is None:
        return []
    problems = []
    for container in containers(template.spec):
        if _effective(container, template.spec, "runAsNonRoot") is not True:
            problems.append(
                f"{describe(kind, props)}: {container} does not set runAsNonRoot: true "
                "(neither in its securityContext nor in the pod's)"
            )
        if _effective(container, template.spec, "runAsUser") == 0:
            problems.append(f"{describe(kind, props)}: {container} runs as user 0 (root)")
    return problems


def containers_have_resources(kind: str, props: Obj) -> list[str]:
    """Every container requests cpu and memory and has a memory limit."""
    template = pod_template(kind, props)
    if template is None:
        return []
    problems = []
    for container in containers(template.spec):
        if container.role == "ephemeral container":
            continue  # the API gives ephemeral containers no resources field
        resources = mapping(container.spec.get("resources"))
        missing = [
            f"{section}.{name}"
            for section, name in (("requests", "cpu"), ("requests", "memory"), ("limits", "memory"))
            if mapping(resources.get(section)).get(name) in {None, ""}
        ]
        if missing:
            problems.append(
                f"{describe(kind, props)}: {container} has no {', '.join(missing)}: "
                "the scheduler cannot place it safely and a leak could starve its node"
            )
    return problems


_DIGEST: Final = re.compile(r"^sha256:[0-9a-f]{64}$")


def image_pin_problem(image: object) -> str | None:
    """None when an image reference is pinned: a valid sha256 digest, or else a tag other
    than `latest`."""
    if not isinstance(image, str) or not image:
        return "has no image known before the update" if image is UNKNOWN else "has no image"
    if "@" in image:
        digest = image.split("@", 1)[1]
        return None if _DIGEST.match(digest) else f"has a malformed digest ({digest})"
    last = image.rsplit("/", 1)[-1]
    if ":" not in last:
        return f"uses {image} without a tag (that is :latest)"
    if last.rsplit(":", 1)[1] == "latest":
        return f"uses {image}: the :latest tag moves"
    return None


def images_pinned(kind: str, props: Obj) -> list[str]:
    """Every container image is pinned by a digest or a tag that is not `latest`."""
    template = pod_template(kind, props)
    if template is None:
        return []
    problems = []
    for container in containers(template.spec):
        problem = image_pin_problem(container.spec.get("image"))
        if problem:
            problems.append(f"{describe(kind, props)}: {container} {problem}")
    return problems


# ---------------------------------------------------------------------------------------------
# No secret written in clear in a manifest.

_SECRET_WORDS: Final = frozenset(
    {
        "password",
        "passwd",
        "secret",
        "secrets",
        "token",
        "key",
        "cookie",
        "passphrase",
        "credential",
        "credentials",
        "apikey",
        "privatekey",
        "salt",
    }
)
# A value that is a path to a mounted file is how a secret should be handed over.
_FILE_SUFFIXES: Final = ("_FILE", "_PATH", "_DIR")


def _words(name: str) -> list[str]:
    return [w for w in re.split(r"[^a-z0-9]+", name.lower()) if w]


def secret_like_env_name(name: str) -> bool:
    return any(w in _SECRET_WORDS for w in _words(name))


def _is_file_reference(name: str, value: object) -> bool:
    return (
        name.upper().endswith(_FILE_SUFFIXES) and isinstance(value, str) and value.startswith("/")
    )


def no_secret_in_env(kind: str, props: Obj) -> list[str]:
    """An environment variable named like a secret takes its value from a Secret (valueFrom),
    never from a literal; `*_FILE`/`*_PATH`/`*_DIR` variables holding an absolute path (to a
    mounted secret file) are fine."""
    template = pod_template(kind, props)
    if template is None:
        return []
    problems = []
    for container in containers(template.spec):
        for name, var in env_vars(container):
            if not secret_like_env_name(name) or "valueFrom" in var:
                continue
            value = var.get("value")
            if value in {None, ""}:
                continue
            if _is_file_reference(name, value):
                continue
            problems.append(
                f"{describe(kind, props)}: {container} sets {name} as a literal value: a secret "
                "belongs in a Secret, referenced with valueFrom.secretKeyRef (or a mounted file)"
            )
    return problems


_SECRET_CONTENT: Final = (
    (re.compile(r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----"), "a PEM private key"),
    (re.compile(r"-pbkdf2-[0-9a-f]{16,}"), "a CouchDB password hash (-pbkdf2-)"),
    (re.compile(r"AGE-SECRET-KEY-1[0-9A-Z]{20,}"), "an age secret key"),
    (re.compile(r"-setcookie\s+\S+"), "an Erlang cookie (-setcookie)"),
    (re.compile(r"[a-z][a-z0-9+.-]*://[^/\s:@]+:[^/\s@]+@"), "credentials inside a URL"),
    (
        re.compile(
            r"(?im)^\s*[\w.-]*(password|passwd|secret|token|cookie|passphrase)[\w.-]*\s*[=:]\s*"
            r"(?![\"']?(/|\$))\S+"
        ),
        "a secret-named setting with a value",
    ),
)


def secret_like_key(key: str) -> bool:
    """A ConfigMap key that names a secret: `password`, `api-token`, `tls.key`..."""
    words = _words(key)
    if "public" in words or "pub" in words:
        return False
    return any(w in _SECRET_WORDS - {"key"} for w in words) or (bool(words) and words[-1] == "key")


def no_secret_in_configmap(kind: str, props: Obj) -> list[str]:
    """A ConfigMap holds no secret: no key named like one, no value that looks like one."""
    if kind != "ConfigMap":
        return []
    problems = []
    for section in ("data", "binaryData"):
        for key, value in mapping(props.get(section)).items():
            if secret_like_key(key):
                problems.append(
                    f"{describe(kind, props)}: {section} key '{key}' is named like a secret; "
                    "secrets belong in a Secret"
                )
            if section == "data" and isinstance(value, str):
                for pattern, what in _SECRET_CONTENT:
                    if pattern.search(value):
                        problems.append(
                            f"{describe(kind, props)}: {section} key '{key}' contains {what}; "
                            "secrets belong in a Secret"
                        )
    return problems
