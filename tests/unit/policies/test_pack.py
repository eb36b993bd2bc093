"""The pack's glue (policies/pack.py), and every rule against the real program's resources
(both stacks, under mocks): the program passes, and the rules recognise its objects."""

from __future__ import annotations

import copy
from typing import Any

from pulumi_policy import EnforcementLevel, StackValidationPolicy
from pulumi_policy.proxy import (
    UNKNOWN_ARRAY_VALUE,
    UNKNOWN_STRING_VALUE,
    unknown_checking_proxy,
)

from infra.settings import FRENCH_REGIONS
from policies import pack, rules
from policies.kube import UNKNOWN, kind_of
from policies.rules import Resource
from tests.unit.components.test_backups_object_storage import with_storage
from tests.unit.harness import Recorded

RESOURCE_RULES = [
    rules.couchdb_service_internal,
    rules.couchdb_pods_off_host_network,
    rules.couchdb_ingress_from_cluster_only,
    rules.retention_within_gdpr,
    rules.containers_non_root,
    rules.containers_have_resources,
    rules.images_pinned,
    rules.no_secret_in_env,
    rules.no_secret_in_configmap,
]
REGION_RULES = [
    rules.workloads_in_allowed_regions,
    rules.nodes_and_volumes_in_allowed_regions,
    rules.object_storage_in_allowed_regions,
]
STACK_RULES = [
    rules.couchdb_not_routed,
    rules.replicated_workloads_have_budget,
    rules.replicated_workloads_spread,
]


def test_unknown_values_become_the_unknown_marker_and_the_rest_stays() -> None:
    props = unknown_checking_proxy(
        {
            "metadata": {"name": UNKNOWN_STRING_VALUE, "labels": {"a": "b"}},
            "spec": {"containers": [{"image": "x:1", "env": UNKNOWN_ARRAY_VALUE}]},
        }
    )
    assert pack.plain(props) == {
        "metadata": {"name": UNKNOWN, "labels": {"a": "b"}},
        "spec": {"containers": [{"image": "x:1", "env": UNKNOWN}]},
    }


def test_allowed_regions_default_to_the_french_sites_and_follow_the_config() -> None:
    assert pack.allowed_regions(None) == FRENCH_REGIONS
    assert pack.allowed_regions({}) == FRENCH_REGIONS
    assert pack.allowed_regions({"allowedRegions": ["fr-par"]}) == {"fr-par"}


def test_the_schema_default_is_the_set_of_regions_the_program_allows() -> None:
    default = pack.REGIONS_SCHEMA.properties["allowedRegions"]["default"]
    assert set(default) == FRENCH_REGIONS


def test_every_rule_is_a_uniquely_named_policy_and_the_pack_is_mandatory() -> None:
    policies = pack.policies()
    names = [p.name for p in policies]
    assert len(names) == len(set(names)) == len(RESOURCE_RULES + REGION_RULES + STACK_RULES)
    assert sum(isinstance(p, StackValidationPolicy) for p in policies) == len(STACK_RULES)
    # No policy lowers the pack's level (pack.serve() makes it mandatory).
    assert all(p.enforcement_level in {None, EnforcementLevel.MANDATORY} for p in policies)


def _resources(recorded: list[Recorded]) -> list[Resource]:
    return [
        Resource(kind_of(r.type), f"urn::{r.type}::{r.name}", r.inputs)
        for r in recorded
        if r.type.startswith("kubernetes:")
    ]


def violations(resources: list[Resource]) -> list[str]:
    found = []
    for r in resources:
        for rule in RESOURCE_RULES:
            found += rule(r.kind, r.props)
        for region_rule in REGION_RULES:
            found += region_rule(r.kind, r.props, FRENCH_REGIONS)
    for stack_rule in STACK_RULES:
        found += [f.message for f in stack_rule(resources)]
    return found


def test_the_program_passes_every_rule(stack: list[Recorded]) -> None:
    resources = _resources(stack)
    kinds = {r.kind for r in resources}
    # The rules had something to check: the program's workloads, services and config.
    assert {"StatefulSet", "Deployment", "CronJob", "Service", "ConfigMap"} <= kinds
    assert violations(resources) == []


def _changed(resources: list[Resource], kind: str, name: str, change: Any) -> list[Resource]:
    out = []
    for r in resources:
        props = copy.deepcopy(dict(r.props))
        if r.kind == kind and r.name == name:
            change(props)
        out.append(Resource(r.kind, r.urn, props))
    return out


def test_the_programs_couchdb_service_made_public_is_caught(prod: list[Recorded]) -> None:
    def public(props: dict[str, Any]) -> None:
        props["spec"]["type"] = "LoadBalancer"

    found = violations(_changed(_resources(prod), "Service", "couchdb", public))
    assert len(found) == 1
    assert "Service onboarding-prod/couchdb selects CouchDB pods" in found[0]


def test_the_programs_web_app_without_its_budget_is_caught(prod: list[Recorded]) -> None:
    resources = [
        r for r in _resources(prod) if not (r.kind == "PodDisruptionBudget" and r.name == "webapp")
    ]
    found = violations(resources)
    assert len(found) == 1
    assert "Deployment onboarding-prod/webapp (scaled by HorizontalPodAutoscaler" in found[0]


def test_the_programs_purge_given_a_longer_retention_is_caught(prod: list[Recorded]) -> None:
    def longer(props: dict[str, Any]) -> None:
        pod = props["spec"]["jobTemplate"]["spec"]["template"]["spec"]
        for var in pod["containers"][0]["env"]:
            if var["name"] == "PURGE_RETENTION_DAYS":
                var["value"] = "45"

    found = violations(_changed(_resources(prod), "CronJob", "couchops-purge", longer))
    assert found == [
        "CronJob onboarding-prod/couchops-purge: container 'couchops' sets "
        "PURGE_RETENTION_DAYS=45 (45 days): GDPR allows at most 30 days, and a retention "
        "must be positive"
    ]


def test_the_programs_off_site_bucket_region_is_checked() -> None:
    """With backup.objectStorage set, the jobs that reach the bucket pass with its French
    region, and are caught when that region is not allowed."""
    resources = _resources(with_storage("prod"))
    assert violations(resources) == []
    found = [
        message
        for r in resources
        for message in rules.object_storage_in_allowed_regions(r.kind, r.props, {"fr-lyo"})
    ]
    assert sorted(found) == sorted(
        f"CronJob onboarding-prod/{job}: container 'couchops' sets S3_REGION=fr-par, outside "
        "the allowed regions (fr-lyo): data would leave France"
        for job in ("couchops-backup", "couchops-backup-expire")
    )
