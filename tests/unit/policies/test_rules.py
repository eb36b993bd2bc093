"""Each rule of policies/rules.py on objects that pass and objects that fail."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from policies import rules
from policies.kube import UNKNOWN
from policies.rules import Resource
from tests.unit.policies.objects import (
    APP,
    COUCHDB,
    DIGEST,
    NS,
    container,
    cron_job,
    deployment,
    metadata,
    pdb,
    pod_spec,
    service,
    statefulset,
    with_env,
)

FRANCE = frozenset(rules.DEFAULT_ALLOWED_REGIONS)


def stack(*objects: dict[str, Any]) -> list[Resource]:
    return [
        Resource(obj["kind"], f"urn:pulumi:prod::onboarding::{obj['kind']}::{i}", obj)
        for i, obj in enumerate(objects)
    ]


# --- couchdb-service-internal-only ------------------------------------------------------------


@pytest.mark.parametrize("service_type", ["ClusterIP", None])
def test_a_cluster_internal_couchdb_service_passes(service_type: str | None) -> None:
    assert (
        rules.couchdb_service_internal("Service", service("couchdb", COUCHDB, service_type)) == []
    )


@pytest.mark.parametrize("service_type", ["LoadBalancer", "NodePort"])
def test_a_couchdb_service_open_outside_the_cluster_fails(service_type: str) -> None:
    [message] = rules.couchdb_service_internal("Service", service("couchdb", COUCHDB, service_type))
    assert "Service onboarding-prod/couchdb" in message
    assert service_type in message


def test_a_couchdb_service_with_external_ips_fails() -> None:
    obj = service("couchdb", COUCHDB, externalIPs=["203.0.113.10"])
    [message] = rules.couchdb_service_internal("Service", obj)
    assert "externalIPs" in message


def test_a_public_service_of_the_web_app_is_not_the_database() -> None:
    assert rules.couchdb_service_internal("Service", service("webapp", APP, "LoadBalancer")) == []


# --- couchdb-pods-off-host-network -----------------------------------------------------------


def test_couchdb_pods_on_the_pod_network_pass() -> None:
    assert rules.couchdb_pods_off_host_network("StatefulSet", statefulset()) == []


def test_couchdb_pods_on_the_host_network_fail() -> None:
    obj = statefulset(spec=pod_spec(hostNetwork=True))
    [message] = rules.couchdb_pods_off_host_network("StatefulSet", obj)
    assert "StatefulSet onboarding-prod/couchdb" in message
    assert "hostNetwork" in message


def test_a_couchdb_host_port_fails() -> None:
    spec = pod_spec(
        containers=[container("couchdb", ports=[{"containerPort": 5984, "hostPort": 5984}])]
    )
    [message] = rules.couchdb_pods_off_host_network("StatefulSet", statefulset(spec=spec))
    assert "container 'couchdb'" in message
    assert "hostPort 5984" in message


def test_host_network_on_other_pods_is_not_this_rules_business() -> None:
    obj = deployment(spec=pod_spec(hostNetwork=True))
    assert rules.couchdb_pods_off_host_network("Deployment", obj) == []


# --- couchdb-not-routed-from-edge ------------------------------------------------------------


def ingress(backend: str) -> dict[str, Any]:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": metadata("onboarding"),
        "spec": {
            "rules": [
                {
                    "host": "ouverture-compte.banque.example.fr",
                    "http": {
                        "paths": [
                            {
                                "path": "/",
                                "pathType": "Prefix",
                                "backend": {"service": {"name": backend, "port": {"number": 80}}},
                            }
                        ]
                    },
                }
            ]
        },
    }


def http_route(backend: str, namespace: str | None = None) -> dict[str, Any]:
    ref: dict[str, Any] = {"name": backend, "port": 80}
    if namespace:
        ref["namespace"] = namespace
    return {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": metadata("onboarding"),
        "spec": {"parentRefs": [{"name": "edge"}], "rules": [{"backendRefs": [ref]}]},
    }


def services() -> list[dict[str, Any]]:
    return [service("couchdb", COUCHDB), service("webapp", APP)]


def test_routes_to_the_web_app_pass() -> None:
    assert (
        rules.couchdb_not_routed(stack(*services(), ingress("webapp"), http_route("webapp"))) == []
    )


def test_an_ingress_to_the_couchdb_service_fails() -> None:
    resources = stack(*services(), ingress("couchdb"))
    [finding] = rules.couchdb_not_routed(resources)
    assert finding.urn == resources[2].urn
    assert "Ingress onboarding-prod/onboarding" in finding.message
    assert "Service onboarding-prod/couchdb" in finding.message


def test_an_http_route_to_the_couchdb_service_fails() -> None:
    [finding] = rules.couchdb_not_routed(stack(*services(), http_route("couchdb", namespace=NS)))
    assert "HTTPRoute onboarding-prod/onboarding" in finding.message


def test_a_request_mirror_to_couchdb_fails() -> None:
    route = http_route("webapp")
    route["spec"]["rules"][0]["filters"] = [
        {
            "type": "RequestMirror",
            "requestMirror": {"backendRef": {"name": "couchdb", "port": 5984}},
        }
    ]
    assert len(rules.couchdb_not_routed(stack(*services(), route))) == 1


def test_a_route_to_a_service_of_the_same_name_in_another_namespace_passes() -> None:
    assert rules.couchdb_not_routed(stack(*services(), http_route("couchdb", "elsewhere"))) == []


# --- couchdb-ingress-from-cluster-only ------------------------------------------------------


def network_policy(pod_selector: dict[str, Any], *ingress: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": metadata("couchdb"),
        "spec": {"podSelector": pod_selector, "policyTypes": ["Ingress"], "ingress": list(ingress)},
    }


CLIENTS = {"from": [{"podSelector": {"matchLabels": {"couchdb-client": "true"}}}]}
MONITORING = {
    "from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}]
}
ANYWHERE = {"from": [{"ipBlock": {"cidr": "0.0.0.0/0"}}], "ports": [{"port": 5984}]}


def test_couchdb_admitting_cluster_pods_and_namespaces_passes() -> None:
    obj = network_policy({"matchLabels": COUCHDB}, CLIENTS, MONITORING)
    assert rules.couchdb_ingress_from_cluster_only("NetworkPolicy", obj) == []


def test_couchdb_admitting_an_ip_block_fails() -> None:
    [message] = rules.couchdb_ingress_from_cluster_only(
        "NetworkPolicy", network_policy({"matchLabels": COUCHDB}, CLIENTS, ANYWHERE)
    )
    assert (
        "NetworkPolicy onboarding-prod/couchdb: ingress rule 1 admits addresses 0.0.0.0/0"
        in message
    )


def test_a_namespace_wide_rule_without_from_reaches_couchdb_too_and_fails() -> None:
    [message] = rules.couchdb_ingress_from_cluster_only(
        "NetworkPolicy", network_policy({}, {"ports": [{"port": 8080}]})
    )
    assert "ingress rule 0 has no `from`" in message


def test_an_ip_block_for_the_web_app_only_is_not_this_rules_business() -> None:
    obj = network_policy({"matchLabels": APP}, ANYWHERE)
    assert rules.couchdb_ingress_from_cluster_only("NetworkPolicy", obj) == []
    excluded = {
        "matchExpressions": [
            {"key": "app.kubernetes.io/name", "operator": "NotIn", "values": ["couchdb"]}
        ]
    }
    assert (
        rules.couchdb_ingress_from_cluster_only("NetworkPolicy", network_policy(excluded, ANYWHERE))
        == []
    )


# --- retention-at-most-30-days ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "value"),
    [("PURGE_RETENTION_DAYS", "28"), ("GDPR_MAX_AGE_DAYS", "30"), ("LOG_RETENTION_HOURS", "720")],
)
def test_a_retention_within_30_days_passes(name: str, value: str) -> None:
    assert (
        rules.retention_within_gdpr("CronJob", with_env(cron_job(), {"name": name, "value": value}))
        == []
    )


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("BACKUP_RETENTION_DAYS", "31"),
        ("GDPR_MAX_AGE_DAYS", "90"),
        ("LOG_RETENTION_HOURS", "721"),
        ("PURGE_RETENTION_DAYS", "0"),
    ],
)
def test_a_retention_beyond_30_days_or_not_positive_fails(name: str, value: str) -> None:
    obj = with_env(cron_job(), {"name": name, "value": value})
    [message] = rules.retention_within_gdpr("CronJob", obj)
    assert f"CronJob onboarding-prod/couchops-purge: container 'app' sets {name}={value}" in message


def test_a_retention_read_from_elsewhere_cannot_be_checked_and_fails() -> None:
    var = {
        "name": "PURGE_RETENTION_DAYS",
        "valueFrom": {"configMapKeyRef": {"name": "x", "key": "d"}},
    }
    [message] = rules.retention_within_gdpr("CronJob", with_env(cron_job(), var))
    assert "literal" in message


def test_a_retention_that_is_not_a_number_fails() -> None:
    obj = with_env(cron_job(), {"name": "BACKUP_RETENTION_DAYS", "value": "a month"})
    [message] = rules.retention_within_gdpr("CronJob", obj)
    assert "not a number" in message


# --- workloads-pinned-to-allowed-regions -----------------------------------------------------


def test_pods_pinned_to_french_regions_pass() -> None:
    assert rules.workloads_in_allowed_regions("Deployment", deployment(), FRANCE) == []


def test_a_region_node_selector_pins_pods_too() -> None:
    spec = pod_spec(affinity={}, nodeSelector={"topology.kubernetes.io/region": "fr-par"})
    assert rules.workloads_in_allowed_regions("Deployment", deployment(spec=spec), FRANCE) == []


def test_pods_allowed_in_a_region_outside_france_fail() -> None:
    obj = deployment()
    terms = obj["spec"]["template"]["spec"]["affinity"]["nodeAffinity"][
        "requiredDuringSchedulingIgnoredDuringExecution"
    ]["nodeSelectorTerms"]
    terms[0]["matchExpressions"][0]["values"].append("eu-west-1")
    [message] = rules.workloads_in_allowed_regions("Deployment", obj, FRANCE)
    assert "Deployment onboarding-prod/webapp" in message
    assert "eu-west-1" in message


def test_pods_without_any_region_constraint_fail() -> None:
    [message] = rules.workloads_in_allowed_regions(
        "Deployment", deployment(spec=pod_spec(affinity={})), FRANCE
    )
    assert "no required node affinity on the region" in message


def test_a_second_node_selector_term_without_region_lets_pods_escape_and_fails() -> None:
    obj = deployment()
    terms = obj["spec"]["template"]["spec"]["affinity"]["nodeAffinity"][
        "requiredDuringSchedulingIgnoredDuringExecution"
    ]["nodeSelectorTerms"]
    terms.append({"matchExpressions": [{"key": "disk", "operator": "In", "values": ["ssd"]}]})
    [message] = rules.workloads_in_allowed_regions("Deployment", obj, FRANCE)
    assert "admits any region" in message


def test_a_node_selector_outside_the_allowed_regions_fails() -> None:
    spec = pod_spec(nodeSelector={"topology.kubernetes.io/region": "fr-par"})
    [message] = rules.workloads_in_allowed_regions("Deployment", deployment(spec=spec), {"fr-lyo"})
    assert "nodeSelector topology.kubernetes.io/region=fr-par" in message


# --- nodes-and-volumes-in-allowed-regions ----------------------------------------------------


def node_patch(region: str | None) -> dict[str, Any]:
    labels = {"topology.kubernetes.io/zone": "fr-par-1"}
    if region:
        labels["topology.kubernetes.io/region"] = region
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": "onb-node-1", "labels": labels},
    }


def test_a_node_in_a_french_region_passes() -> None:
    assert (
        rules.nodes_and_volumes_in_allowed_regions("NodePatch", node_patch("fr-par"), FRANCE) == []
    )
    assert rules.nodes_and_volumes_in_allowed_regions("Node", node_patch("fr-par"), FRANCE) == []


def test_a_node_outside_the_allowed_regions_fails() -> None:
    [message] = rules.nodes_and_volumes_in_allowed_regions(
        "NodePatch", node_patch("de-fra"), FRANCE
    )
    assert "NodePatch onb-node-1 is labelled with region de-fra" in message


def test_a_node_without_a_region_label_fails() -> None:
    [message] = rules.nodes_and_volumes_in_allowed_regions("Node", node_patch(None), FRANCE)
    assert "no topology.kubernetes.io/region label" in message


def test_a_storage_class_confined_to_france_passes_and_one_beyond_fails() -> None:
    storage_class: dict[str, Any] = {
        "kind": "StorageClass",
        "metadata": {"name": "fast"},
        "provisioner": "csi.example.fr",
        "allowedTopologies": [
            {
                "matchLabelExpressions": [
                    {"key": "topology.kubernetes.io/region", "values": ["fr-par"]}
                ]
            }
        ],
    }
    assert rules.nodes_and_volumes_in_allowed_regions("StorageClass", storage_class, FRANCE) == []
    storage_class["allowedTopologies"][0]["matchLabelExpressions"][0]["values"].append("nl-ams")
    storage_class["parameters"] = {"region": "nl-ams"}
    problems = rules.nodes_and_volumes_in_allowed_regions("StorageClass", storage_class, FRANCE)
    assert len(problems) == 2
    assert all("StorageClass fast" in p and "nl-ams" in p for p in problems)


def test_a_persistent_volume_must_be_confined_to_allowed_regions() -> None:
    volume: dict[str, Any] = {
        "kind": "PersistentVolume",
        "metadata": {"name": "pv-1"},
        "spec": {"nodeAffinity": {"required": {"nodeSelectorTerms": copy.deepcopy(_terms())}}},
    }
    assert rules.nodes_and_volumes_in_allowed_regions("PersistentVolume", volume, FRANCE) == []
    del volume["spec"]["nodeAffinity"]
    [message] = rules.nodes_and_volumes_in_allowed_regions("PersistentVolume", volume, FRANCE)
    assert "PersistentVolume pv-1 is not confined" in message


def _terms() -> list[dict[str, Any]]:
    return pod_spec()["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][
        "nodeSelectorTerms"
    ]


# --- object-storage-in-allowed-regions -------------------------------------------------------


def test_an_off_site_bucket_in_a_french_region_passes() -> None:
    obj = with_env(cron_job("couchops-backup"), {"name": "S3_REGION", "value": "fr-par"})
    assert rules.object_storage_in_allowed_regions("CronJob", obj, FRANCE) == []


@pytest.mark.parametrize("name", ["S3_REGION", "AWS_DEFAULT_REGION"])
def test_an_off_site_bucket_outside_the_allowed_regions_fails(name: str) -> None:
    obj = with_env(cron_job("couchops-backup"), {"name": name, "value": "us-east-1"})
    [message] = rules.object_storage_in_allowed_regions("CronJob", obj, FRANCE)
    assert (
        f"CronJob onboarding-prod/couchops-backup: container 'app' sets {name}=us-east-1" in message
    )


def test_a_bucket_region_read_from_elsewhere_fails() -> None:
    var = {"name": "S3_REGION", "valueFrom": {"secretKeyRef": {"name": "s3", "key": "region"}}}
    [message] = rules.object_storage_in_allowed_regions(
        "CronJob", with_env(cron_job(), var), FRANCE
    )
    assert "cannot be checked" in message


# --- replicated-workloads-have-disruption-budget / replicated-workloads-spread ---------------


def hpa(target: str, kind: str = "Deployment") -> dict[str, Any]:
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": metadata(target),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": kind, "name": target},
            "minReplicas": 3,
            "maxReplicas": 20,
        },
    }


def spread(labels: dict[str, str]) -> dict[str, Any]:
    return pod_spec(
        topologySpreadConstraints=[
            {
                "maxSkew": 1,
                "topologyKey": "kubernetes.io/hostname",
                "whenUnsatisfiable": "ScheduleAnyway",
                "labelSelector": {"matchLabels": labels},
            }
        ]
    )


def test_a_replicated_workload_with_a_budget_passes() -> None:
    resources = stack(deployment(), pdb("webapp", APP))
    assert rules.replicated_workloads_have_budget(resources) == []


def test_a_replicated_workload_without_a_budget_fails() -> None:
    resources = stack(deployment(replicas=3), pdb("other", {"app.kubernetes.io/name": "other"}))
    [finding] = rules.replicated_workloads_have_budget(resources)
    assert finding.urn == resources[0].urn
    assert (
        "Deployment onboarding-prod/webapp (3 replicas) has no PodDisruptionBudget"
        in finding.message
    )


def test_a_workload_scaled_by_an_hpa_needs_a_budget_even_without_replicas() -> None:
    resources = stack(deployment(replicas=None), hpa("webapp"))
    [finding] = rules.replicated_workloads_have_budget(resources)
    assert "scaled by HorizontalPodAutoscaler onboarding-prod/webapp" in finding.message


def test_a_single_replica_workload_needs_no_budget() -> None:
    assert rules.replicated_workloads_have_budget(stack(deployment(replicas=1))) == []


def test_a_budget_in_another_namespace_does_not_count() -> None:
    budget = pdb("webapp", APP)
    budget["metadata"]["namespace"] = "onboarding-preprod"
    assert len(rules.replicated_workloads_have_budget(stack(deployment(), budget))) == 1


def test_a_budget_that_allows_no_eviction_fails() -> None:
    resources = stack(statefulset(replicas=5), pdb("couchdb", COUCHDB, maxUnavailable=0))
    [finding] = rules.replicated_workloads_have_budget(resources)
    assert finding.urn == resources[1].urn
    assert "allows no eviction of StatefulSet onboarding-prod/couchdb" in finding.message


def test_a_replicated_workload_spread_over_nodes_passes() -> None:
    assert rules.replicated_workloads_spread(stack(deployment(spec=spread(APP)))) == []


def test_a_required_pod_anti_affinity_on_its_own_pods_spreads_too() -> None:
    anti = {
        "podAntiAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": [
                {"labelSelector": {"matchLabels": COUCHDB}, "topologyKey": "kubernetes.io/hostname"}
            ]
        }
    }
    assert rules.replicated_workloads_spread(stack(statefulset(spec=pod_spec(affinity=anti)))) == []


def test_a_replicated_workload_that_does_not_spread_fails() -> None:
    [finding] = rules.replicated_workloads_spread(stack(deployment(replicas=None), hpa("webapp")))
    assert "Deployment onboarding-prod/webapp" in finding.message
    assert "may share one node" in finding.message


def test_a_spread_constraint_selecting_other_pods_does_not_count() -> None:
    obj = deployment(spec=spread({"app.kubernetes.io/name": "other"}))
    assert len(rules.replicated_workloads_spread(stack(obj))) == 1


# --- containers-run-as-non-root --------------------------------------------------------------


def test_non_root_containers_pass() -> None:
    assert rules.containers_non_root("Deployment", deployment()) == []


def test_run_as_non_root_inherited_from_the_pod_passes() -> None:
    spec = pod_spec(containers=[container(securityContext={})])
    assert rules.containers_non_root("Deployment", deployment(spec=spec)) == []


def test_an_init_container_without_run_as_non_root_fails() -> None:
    spec = pod_spec(
        securityContext={},
        initContainers=[container("init-perms", securityContext={"runAsNonRoot": False})],
    )
    problems = rules.containers_non_root("Deployment", deployment(spec=spec))
    assert problems == [
        "Deployment onboarding-prod/webapp: init container 'init-perms' does not set "
        "runAsNonRoot: true (neither in its securityContext nor in the pod's)"
    ]


def test_a_container_running_as_user_0_fails() -> None:
    spec = pod_spec(containers=[container(securityContext={"runAsNonRoot": True, "runAsUser": 0})])
    [message] = rules.containers_non_root("CronJob", cron_job(spec=spec))
    assert "runs as user 0" in message


# --- containers-have-requests-and-memory-limit -----------------------------------------------


def test_containers_with_requests_and_a_memory_limit_pass() -> None:
    assert rules.containers_have_resources("StatefulSet", statefulset()) == []


def test_a_container_without_memory_limit_or_cpu_request_fails() -> None:
    spec = pod_spec(initContainers=[container("init", resources={"requests": {"memory": "64Mi"}})])
    [message] = rules.containers_have_resources("StatefulSet", statefulset(spec=spec))
    assert "init container 'init' has no requests.cpu, limits.memory" in message


# --- container-images-pinned -----------------------------------------------------------------


@pytest.mark.parametrize(
    "image",
    [
        "docker.io/library/couchdb:3.5.2",
        f"docker.io/library/couchdb:3.5.2@{DIGEST}",
        f"registry.example.fr:5000/couchops@{DIGEST}",
    ],
)
def test_images_pinned_by_tag_or_digest_pass(image: str) -> None:
    spec = pod_spec(containers=[container(image=image)])
    assert rules.images_pinned("Deployment", deployment(spec=spec)) == []


@pytest.mark.parametrize(
    ("image", "problem"),
    [
        ("couchdb", "without a tag"),
        ("registry.example.fr:5000/couchops", "without a tag"),
        ("docker.io/library/couchdb:latest", ":latest tag moves"),
        ("couchdb@sha256:1234", "malformed digest"),
        (UNKNOWN, "no image known before the update"),
    ],
)
def test_images_not_pinned_fail(image: object, problem: str) -> None:
    spec = pod_spec(initContainers=[container("init", image=image)])
    [message] = rules.images_pinned("Deployment", deployment(spec=spec))
    assert "init container 'init'" in message
    assert problem in message


# --- no-secret-literal-in-env ----------------------------------------------------------------


def test_secrets_from_secret_refs_and_mounted_files_pass() -> None:
    obj = with_env(
        deployment(),
        {"name": "COUCHDB_PASSWORD", "valueFrom": {"secretKeyRef": {"name": "app", "key": "pw"}}},
        {"name": "COUCHDB_ADMIN_PASSWORD_FILE", "value": "/var/run/secrets/couchdb/adminPassword"},
        {"name": "COUCHDB_URL", "value": "http://couchdb:5984"},
        {"name": "BACKUP_KEEP_LOCAL_COPY", "value": "true"},
    )
    assert rules.no_secret_in_env("Deployment", obj) == []


@pytest.mark.parametrize(
    "name",
    [
        "COUCHDB_PASSWORD",
        "USER_PARTITION_SECRET",
        "API_TOKEN",
        "COUCHDB_ERLANG_COOKIE",
        "S3_SECRET_ACCESS_KEY",
        "BACKUP_PASSPHRASE",
        # a "file" variable holding the secret itself rather than a path
        "COUCHDB_ADMIN_PASSWORD_FILE",
    ],
)
def test_a_secret_named_variable_with_a_literal_value_fails(name: str) -> None:
    obj = with_env(deployment(), {"name": name, "value": "hunter2"})
    [message] = rules.no_secret_in_env("Deployment", obj)
    assert f"Deployment onboarding-prod/webapp: container 'app' sets {name} as a literal" in message


# --- no-secret-in-configmap ------------------------------------------------------------------


def config_map(data: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": metadata("couchdb-config"),
        "data": data,
    }


def test_a_configuration_without_secrets_passes() -> None:
    ini = (
        "[chttpd]\nrequire_valid_user_except_for_up = true\n[ssl]\n"
        "key_file = /opt/couchdb/etc/tls/tls.key\npassword_file = /run/secrets/pw\n"
    )
    ca = "-----BEGIN CERTIFICATE-----\nMIIB...\n-----END CERTIFICATE-----\n"
    url = "http://couchdb.onboarding-prod.svc.cluster.local:5984"
    data = {"10-cluster.ini": ini, "ca.crt": ca, "url": url, "age-public-key": "age1xyz"}
    assert rules.no_secret_in_configmap("ConfigMap", config_map(data)) == []


@pytest.mark.parametrize(
    ("data", "what"),
    [
        ({"admin-password": "x"}, "named like a secret"),
        ({"tls.key": "x"}, "named like a secret"),
        ({"local.ini": "[admins]\nadmin = -pbkdf2-" + "0a" * 20 + ",aa,10\n"}, "-pbkdf2-"),
        ({"key.pem": "-----BEGIN RSA PRIVATE KEY-----\nMII"}, "PEM private key"),
        ({"vm.args": "-name couchdb@x\n-setcookie monster\n"}, "Erlang cookie"),
        ({"settings.ini": "[chttpd_auth]\nsecret = 5ecr3t\n"}, "secret-named setting"),
        ({"app.yaml": "db:\n  password: hunter2\n"}, "secret-named setting"),
        ({"replicate.json": '{"source": "https://admin:hunter2@couchdb:5984/db"}'}, "inside a URL"),
    ],
)
def test_a_secret_in_a_config_map_fails(data: dict[str, str], what: str) -> None:
    problems = rules.no_secret_in_configmap("ConfigMap", config_map(data))
    assert problems
    assert all("ConfigMap onboarding-prod/couchdb-config" in p for p in problems)
    assert any(what in p for p in problems)
