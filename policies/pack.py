"""Binds the rules (policies/rules.py) to the Pulumi policy engine: one mandatory policy per
rule, so a single violation fails `pulumi preview --policy-pack policies` and `pulumi up`.

Resource rules see one resource's inputs at a time; stack rules see every resource at the end
of the preview. Both get the same objects in render mode and against a cluster: the inputs
the program gives the kubernetes provider.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any, Final

from pulumi_policy import (
    EnforcementLevel,
    Policy,
    PolicyConfigSchema,
    PolicyPack,
    ReportViolation,
    ResourceValidationArgs,
    ResourceValidationPolicy,
    StackValidationArgs,
    StackValidationPolicy,
)
from pulumi_policy.proxy import UnknownValueError

from policies import rules
from policies.kube import UNKNOWN, Obj, kind_of

PACK_NAME: Final = "onboarding-platform"

ResourceRule = Callable[[str, Obj], list[str]]
RegionRule = Callable[[str, Obj, Collection[str]], list[str]]
StackRule = Callable[[Sequence[rules.Resource]], list[rules.Finding]]

REGIONS_KEY: Final = "allowedRegions"
REGIONS_SCHEMA: Final = PolicyConfigSchema(
    properties={
        REGIONS_KEY: {
            "type": "array",
            "items": {"type": "string", "minLength": 1},
            "minItems": 1,
            "uniqueItems": True,
            "default": list(rules.DEFAULT_ALLOWED_REGIONS),
            "description": "topology.kubernetes.io/region values where nodes, volumes and "
            "object storage may be (the hosting provider's French sites)",
        }
    }
)


def plain(value: Any) -> Any:
    """The engine's lazily-checked properties as plain dicts and lists, with every value
    unknown during the preview replaced by `UNKNOWN` (the engine's proxy raises on access)."""
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for key in value:
            try:
                out[key] = plain(value[key])
            except UnknownValueError:
                out[key] = UNKNOWN
        return out
    if isinstance(value, Sequence) and not isinstance(value, str | bytes):
        items: list[Any] = []
        for index in range(len(value)):
            try:
                items.append(plain(value[index]))
            except UnknownValueError:
                items.append(UNKNOWN)
        return items
    return value


def allowed_regions(config: Mapping[str, Any] | None) -> frozenset[str]:
    """The configured regions (`--policy-pack-config`), else the default."""
    regions = (config or {}).get(REGIONS_KEY)
    if isinstance(regions, Sequence) and not isinstance(regions, str) and regions:
        return frozenset(str(r) for r in regions)
    return frozenset(rules.DEFAULT_ALLOWED_REGIONS)


def _kubernetes(resource_type: str) -> bool:
    return resource_type.startswith("kubernetes:")


def resource_policy(name: str, rule: ResourceRule) -> ResourceValidationPolicy:
    def validate(args: ResourceValidationArgs, report: ReportViolation) -> None:
        if not _kubernetes(args.resource_type):
            return
        for message in rule(kind_of(args.resource_type), plain(args.props)):
            report(message, None)

    return ResourceValidationPolicy(name=name, description=_summary(rule), validate=validate)


def region_policy(name: str, rule: RegionRule) -> ResourceValidationPolicy:
    def validate(args: ResourceValidationArgs, report: ReportViolation) -> None:
        if not _kubernetes(args.resource_type):
            return
        regions = allowed_regions(args.get_config())
        for message in rule(kind_of(args.resource_type), plain(args.props), regions):
            report(message, None)

    return ResourceValidationPolicy(
        name=name, description=_summary(rule), validate=validate, config_schema=REGIONS_SCHEMA
    )


def stack_policy(name: str, rule: StackRule) -> StackValidationPolicy:
    def validate(args: StackValidationArgs, report: ReportViolation) -> None:
        resources = [
            rules.Resource(kind_of(r.resource_type), r.urn, plain(r.props))
            for r in args.resources
            if _kubernetes(r.resource_type)
        ]
        for finding in rule(resources):
            report(finding.message, finding.urn)

    return StackValidationPolicy(name=name, description=_summary(rule), validate=validate)


def _summary(rule: Callable[..., object]) -> str:
    """The rule's docstring, on one line: what the policy requires."""
    return " ".join((rule.__doc__ or rule.__name__).split())


def policies() -> list[Policy]:
    """Every rule of the pack, by its policy name (policies/README.md lists them)."""
    return [
        resource_policy("couchdb-service-internal-only", rules.couchdb_service_internal),
        resource_policy("couchdb-pods-off-host-network", rules.couchdb_pods_off_host_network),
        stack_policy("couchdb-not-routed-from-edge", rules.couchdb_not_routed),
        resource_policy(
            "couchdb-ingress-from-cluster-only", rules.couchdb_ingress_from_cluster_only
        ),
        resource_policy("retention-at-most-30-days", rules.retention_within_gdpr),
        region_policy("workloads-pinned-to-allowed-regions", rules.workloads_in_allowed_regions),
        region_policy(
            "nodes-and-volumes-in-allowed-regions", rules.nodes_and_volumes_in_allowed_regions
        ),
        region_policy("object-storage-in-allowed-regions", rules.object_storage_in_allowed_regions),
        stack_policy(
            "replicated-workloads-have-disruption-budget", rules.replicated_workloads_have_budget
        ),
        stack_policy("replicated-workloads-spread", rules.replicated_workloads_spread),
        resource_policy("containers-run-as-non-root", rules.containers_non_root),
        resource_policy(
            "containers-have-requests-and-memory-limit", rules.containers_have_resources
        ),
        resource_policy("container-images-pinned", rules.images_pinned),
        resource_policy("no-secret-literal-in-env", rules.no_secret_in_env),
        resource_policy("no-secret-in-configmap", rules.no_secret_in_configmap),
    ]


def serve() -> None:
    """Starts the pack's gRPC server (it prints its port for the engine and runs until killed)."""
    PolicyPack(
        name=PACK_NAME,
        enforcement_level=EnforcementLevel.MANDATORY,
        policies=policies(),
    )
