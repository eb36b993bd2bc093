"""components/couchdb_config.py: the `[cluster] placement` of the ini, read back as CouchDB's
ini parser would, and the start script that gives each pod its node's zone, run by a real
POSIX shell."""

from __future__ import annotations

import configparser
import shutil
import subprocess

import pytest

from components.couchdb_config import (
    ClusterIni,
    node_zones_value,
    render_cluster_ini,
    zone_start_script,
)

NODES = [
    f"couchdb@couchdb-{i}.couchdb-headless.onboarding-prod.svc.cluster.local" for i in range(5)
]
ZONES = {
    "onb-node-1": "fr-par-1",
    "onb-node-10": "fr-par-3",
    "onb-node-2": "fr-par-2",
}


def parsed(ini: ClusterIni) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=True, inline_comment_prefixes=None)
    parser.read_string(render_cluster_ini(ini))
    return parser


def test_the_placement_is_rendered_in_the_cluster_section_next_to_the_copies_it_sums_to() -> None:
    ini = parsed(ClusterIni(NODES, 2, 3, 8 * 2**20, {"fr-par-1": 1, "fr-par-2": 1, "fr-par-3": 1}))
    assert ini.get("cluster", "placement") == "fr-par-1:1,fr-par-2:1,fr-par-3:1"
    assert ini.get("cluster", "n") == "3"
    assert ini.get("cluster", "seedlist") == ",".join(NODES)


def test_without_zones_no_placement_is_rendered() -> None:
    assert not parsed(ClusterIni(NODES, 2, 3, 8 * 2**20)).has_option("cluster", "placement")


def test_a_placement_that_would_override_n_with_another_count_is_refused() -> None:
    # CouchDB would make 2 copies, silently, where the settings say 3.
    with pytest.raises(ValueError, match=r"does not make n=3"):
        render_cluster_ini(ClusterIni(NODES, 2, 3, 8 * 2**20, {"a": 1, "b": 1}))


def start(node: str, script: str | None = None) -> subprocess.CompletedProcess[str]:
    """The start script under /bin/sh, as `sh -c` in the pod, with `env` for CouchDB."""
    sh = shutil.which("sh")
    assert sh is not None
    return subprocess.run(
        [sh, "-c", script or zone_start_script(start="env")],
        env={"KUBERNETES_NODE_NAME": node, "COUCHDB_NODE_ZONES": node_zones_value(ZONES)},
        capture_output=True,
        text=True,
        check=False,
    )


@pytest.mark.parametrize(
    ("node", "zone"),
    [("onb-node-1", "fr-par-1"), ("onb-node-10", "fr-par-3"), ("onb-node-2", "fr-par-2")],
)
def test_couchdb_starts_with_the_zone_of_the_node_the_pod_runs_on(node: str, zone: str) -> None:
    # onb-node-1 is a prefix of onb-node-10: each finds its own zone, not the other's.
    done = start(node)
    assert done.returncode == 0, done.stderr
    assert f"COUCHDB_ZONE={zone}" in done.stdout.splitlines()


def test_a_pod_on_a_node_without_a_zone_stops_before_couchdb_starts_and_says_why() -> None:
    done = start("onb-node-9")
    assert done.returncode == 1
    assert done.stdout == ""  # `env`, standing for CouchDB, never ran
    assert done.stderr == (
        "no zone for node 'onb-node-9' in COUCHDB_NODE_ZONES: "
        "onb-node-1=fr-par-1 onb-node-10=fr-par-3 onb-node-2=fr-par-2\n"
    )


def test_the_start_script_starts_the_images_own_entrypoint_and_survives_the_kubelet() -> None:
    script = zone_start_script()
    assert script.rstrip().endswith("exec /docker-entrypoint.sh /opt/couchdb/bin/couchdb")
    # The kubelet expands $(NAME) in a container's args; the script must hold none.
    assert "$(" not in script
