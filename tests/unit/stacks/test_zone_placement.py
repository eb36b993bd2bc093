"""stacks/environment.py and zones: the zones of the stack file's nodes reach CouchDB's
`[cluster] placement` and each CouchDB pod's start, in the whole program under mocks.

The quorum of n copies is CouchDB's default r and w (docs.couchdb.org, "Theory": for n=3, two
copies answer); the table below is that rule written out, not the code's formula.
"""

from __future__ import annotations

import configparser
import copy
import shutil
import subprocess
from collections import Counter
from typing import Any

import pulumi
import pytest

from tests.unit.harness import Recorded, one, raw_stack, run_program

QUORUM = {3: 2, 4: 3, 5: 3}
IMAGE_START = "exec /docker-entrypoint.sh /opt/couchdb/bin/couchdb"


def stack_zones(stack: str) -> dict[str, str]:
    """Node name -> zone, as the stack file writes them."""
    return {node["name"]: node["zone"] for node in raw_stack(stack)["nodePool"]["nodes"]}


def cluster_section(resources: list[Recorded]) -> configparser.SectionProxy:
    ini = configparser.ConfigParser(strict=True, inline_comment_prefixes=None)
    ini.read_string(one(resources, "ConfigMap", "couchdb-config").inputs["data"]["10-cluster.ini"])
    return ini["cluster"]


def couchdb_container(resources: list[Recorded]) -> dict[str, Any]:
    spec = one(resources, "StatefulSet", "couchdb").spec["template"]["spec"]
    container: dict[str, Any] = spec["containers"][0]
    return container


@pytest.mark.parametrize("name", ["prod", "preprod"])
def test_the_rendered_placement_keeps_a_quorum_of_every_range_when_any_zone_of_the_stack_is_lost(
    name: str, prod: list[Recorded], preprod: list[Recorded]
) -> None:
    cluster = cluster_section(prod if name == "prod" else preprod)
    placement = {
        zone: int(copies)
        for zone, copies in (rule.split(":") for rule in cluster["placement"].split(","))
    }
    copies = raw_stack(name)["couchdb"]["shardCopies"]
    assert sum(placement.values()) == copies == int(cluster["n"])
    nodes_per_zone = Counter(stack_zones(name).values())
    for zone, held in placement.items():
        assert held <= nodes_per_zone[zone], (zone, placement)  # one copy per node at most
        assert copies - held >= QUORUM[copies], (zone, placement)
    # Both stack files spread their nodes over three zones: each one gets a copy.
    assert set(placement) == set(nodes_per_zone)


@pytest.mark.parametrize("name", ["prod", "preprod"])
def test_every_couchdb_pod_starts_with_the_zone_the_stack_gives_its_node(
    name: str, prod: list[Recorded], preprod: list[Recorded]
) -> None:
    container = couchdb_container(prod if name == "prod" else preprod)
    env = {e["name"]: e for e in container["env"]}
    assert env["KUBERNETES_NODE_NAME"]["valueFrom"] == {"fieldRef": {"fieldPath": "spec.nodeName"}}
    node_zones = env["COUCHDB_NODE_ZONES"]["value"]
    assert dict(entry.split("=") for entry in node_zones.split()) == stack_zones(name)
    # The StatefulSet's own start, run by a real shell as each node's pod would run it, with
    # `env` standing for the image's start of CouchDB.
    shell, flag, script = container["args"]
    assert shell == "/bin/sh"
    assert script.rstrip().endswith(IMAGE_START)
    sh = shutil.which("sh")
    assert sh is not None
    for node, zone in stack_zones(name).items():
        done = subprocess.run(
            [sh, flag, script.replace(IMAGE_START, "exec env")],
            env={"KUBERNETES_NODE_NAME": node, "COUCHDB_NODE_ZONES": node_zones},
            capture_output=True,
            text=True,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        assert f"COUCHDB_ZONE={zone}" in done.stdout.splitlines(), node


def test_a_stack_whose_nodes_span_two_zones_is_refused_naming_the_shard_copies() -> None:
    # Three copies over two zones: one zone holds two, and losing it leaves one of three.
    node_pool = copy.deepcopy(raw_stack("prod")["nodePool"])
    for node in node_pool["nodes"]:
        node["zone"] = "fr-par-1" if node["zone"] == "fr-par-3" else node["zone"]
    with pytest.raises(pulumi.RunError) as refused:
        run_program("prod", {"onboarding:nodePool": node_pool})
    message = str(refused.value)
    assert "onboarding:couchdb.shardCopies" in message
    assert "losing one zone would lose the quorum of some shard range" in message
    assert "fr-par-1 (3 nodes" in message and "fr-par-2 (2 nodes" in message
