"""components/couchdb_cluster.py with zones: every CouchDB pod starts with its node's zone, and
the ini holds the placement, as declared under mocks."""

from __future__ import annotations

import configparser
from typing import Any

import pulumi
from pulumi_kubernetes.core.v1 import NodeAffinityArgs

from components.couchdb_cluster import CouchDBCluster, CouchDBClusterArgs
from components.couchdb_config import zone_start_script
from components.workload import ContainerResources, Scheduling
from tests.unit.harness import Recorded, RecordingMocks, one

PLACEMENT = {"fr-par-1": 1, "fr-par-2": 1, "fr-par-3": 1}
NODE_ZONES = {
    "onb-node-1": "fr-par-1",
    "onb-node-2": "fr-par-2",
    "onb-node-3": "fr-par-3",
    "onb-node-4": "fr-par-1",
    "onb-node-5": "fr-par-2",
}


def declared(**zones: Any) -> list[Recorded]:
    mocks = RecordingMocks()
    pulumi.runtime.set_mocks(mocks, project="onboarding-platform", stack="prod", preview=False)
    resources = ContainerResources(cpu_request="1", memory_request="1Gi", memory_limit="2Gi")

    @pulumi.runtime.test
    def program() -> None:
        CouchDBCluster(
            "prod-couchdb",
            CouchDBClusterArgs(
                environment="prod",
                namespace="onboarding-prod",
                namespace_name="onboarding-prod",
                image="docker.io/library/couchdb:3.5.2",
                replicas=5,
                shards=2,
                shard_copies=3,
                database="onboarding",
                storage_size="10Gi",
                resources=resources,
                scheduling=Scheduling(
                    node_selector={},
                    tolerations=[],
                    node_affinity=NodeAffinityArgs(),
                    priority_class_name="onboarding-prod",
                ),
                ops_image="registry.example.fr/couchops:0.1.0",
                ops_resources=resources,
                pushgateway_url="http://pushgateway:9091",
                metrics_namespace="monitoring",
                **zones,
            ),
        )

    program()
    return mocks.resources


def couchdb_container(resources: list[Recorded]) -> dict[str, Any]:
    container: dict[str, Any] = one(resources, "StatefulSet", "couchdb").spec["template"]["spec"][
        "containers"
    ][0]
    return container


def test_each_pod_starts_couchdb_with_the_zone_of_the_node_it_runs_on() -> None:
    container = couchdb_container(declared(placement=PLACEMENT, node_zones=NODE_ZONES))
    names = [e["name"] for e in container["env"]]
    assert len(names) == len(set(names)), names
    env = {e["name"]: e for e in container["env"]}
    assert env["KUBERNETES_NODE_NAME"]["valueFrom"] == {"fieldRef": {"fieldPath": "spec.nodeName"}}
    assert env["COUCHDB_NODE_ZONES"]["value"] == (
        "onb-node-1=fr-par-1 onb-node-2=fr-par-2 onb-node-3=fr-par-3 onb-node-4=fr-par-1 "
        "onb-node-5=fr-par-2"
    )
    # The image's entrypoint is kept (no `command`): it runs the script, which starts CouchDB.
    assert "command" not in container
    assert container["args"] == ["/bin/sh", "-c", zone_start_script()]


def test_the_ini_places_one_copy_of_every_range_in_each_zone() -> None:
    resources = declared(placement=PLACEMENT, node_zones=NODE_ZONES)
    ini = configparser.ConfigParser(strict=True)
    ini.read_string(one(resources, "ConfigMap", "couchdb-config").inputs["data"]["10-cluster.ini"])
    assert ini.get("cluster", "placement") == "fr-par-1:1,fr-par-2:1,fr-par-3:1"


def test_without_zones_the_pod_runs_the_image_as_it_is() -> None:
    container = couchdb_container(declared())
    assert "args" not in container
    assert not {"KUBERNETES_NODE_NAME", "COUCHDB_NODE_ZONES"} & {
        e["name"] for e in container["env"]
    }
