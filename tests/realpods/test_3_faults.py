"""Faults on the deployed stacks, with real pods: a CouchDB pod killed during a stream of
acknowledged writes, two nodes drained one after the other through the eviction API, a node
container killed and started again. What is acknowledged is never lost, the disruption budget
holds, and the cluster heals by itself. Timings are printed (pytest -s shows them)."""

from __future__ import annotations

import os
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from tests.realpods.conftest import CLUSTER_NAME, NODES, REPO, Cluster, Project, probe
from tests.realpods.test_2_stacks import (
    DATABASE,
    erlang_nodes,
    namespace,
    node_urls,
    ready,
    replicas,
)

pytestmark = [pytest.mark.realpods, pytest.mark.slow]


def acked_ids(logs: str) -> list[str]:
    return [line.split()[1] for line in logs.splitlines() if line.startswith("ACK ")]


def wait_acks(cluster: Cluster, ns: str, pod: str, count: int, timeout: float = 180) -> None:
    cluster.wait(
        f"{count} acknowledged writes from {pod}",
        lambda: len(acked_ids(cluster.logs(ns, pod))) >= count,
        timeout,
        every=1,
    )


def couchdb_pod(cluster: Cluster, stack: str, ordinal: int) -> dict[str, Any]:
    pod: dict[str, Any] = cluster.api.get(
        f"/api/v1/namespaces/{namespace(stack)}/pods/couchdb-{ordinal}"
    )
    return pod


def wait_all_ready(cluster: Cluster, timeout: float = 600) -> None:
    for stack in ["prod", "preprod"]:
        ns = namespace(stack)

        def all_ready(ns: str = ns, stack: str = stack) -> bool:
            return len([p for p in cluster.couchdb_pods(ns) if ready(p)]) == replicas(stack)

        cluster.wait(f"every CouchDB pod of {ns} Ready", all_ready, timeout, every=3)


def assert_cluster_whole(cluster: Cluster, stack: str) -> None:
    _, result = probe(cluster, namespace(stack), "status", *node_urls(stack))
    assert result is not None
    for url, node in result["nodes"].items():
        assert node.get("up") == 200, (url, node)
        assert node["cluster_nodes"] == erlang_nodes(stack), (url, node)


@contextmanager
def readiness_watch(cluster: Cluster) -> Iterator[dict[str, int]]:
    """Samples, every half second, how many CouchDB pods of each environment are Ready; yields
    the lowest count seen per environment (filled in while it runs)."""
    lowest = {stack: replicas(stack) for stack in ["prod", "preprod"]}
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            for stack, low in list(lowest.items()):
                try:
                    count = len([p for p in cluster.couchdb_pods(namespace(stack)) if ready(p)])
                except Exception as exc:  # an API hiccup is not a sample
                    print(f"[realpods] readiness sample failed: {exc}")
                    continue
                lowest[stack] = min(low, count)
            stop.wait(0.5)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield lowest
    finally:
        stop.set()
        thread.join(10)


def test_a_couchdb_pod_killed_during_acknowledged_writes_loses_none_and_rejoins(
    deployed: Project, cluster: Cluster
) -> None:
    ns = namespace("prod")
    wait_all_ready(cluster)
    count = 400
    writer, _ = probe(
        cluster,
        ns,
        "write",
        DATABASE,
        f"kill-{uuid.uuid4().hex[:6]}",
        str(count),
        "300",
        wait=False,
    )
    wait_acks(cluster, ns, writer, 60)
    victim = couchdb_pod(cluster, "prod", 2)
    killed_at = time.monotonic()
    cluster.api.request(
        "DELETE", f"/api/v1/namespaces/{ns}/pods/couchdb-2", {"gracePeriodSeconds": 0}
    )
    logs, code = cluster.wait_pod(ns, writer, timeout=600)
    ids = acked_ids(logs)
    assert code == 0 and len(ids) == count, logs[-3000:]

    def back() -> bool:
        pod = couchdb_pod(cluster, "prod", 2)
        return pod["metadata"]["uid"] != victim["metadata"]["uid"] and ready(pod)

    cluster.wait("couchdb-2 back and Ready", back, timeout=600)
    rejoined = time.monotonic() - killed_at
    _, result = probe(cluster, ns, "check", DATABASE, *ids)
    assert result is not None and result["missing"] == [], result
    assert_cluster_whole(cluster, "prod")
    retries = [line for line in logs.splitlines() if line.startswith("{")][-1]
    print(
        f"[realpods] pod kill: {count} acknowledged, 0 lost, back Ready after "
        f"{rejoined:.1f}s; writer summary {retries[:600]}"
    )


def evict(cluster: Cluster, pod: dict[str, Any]) -> int:
    meta = pod["metadata"]
    body = {
        "apiVersion": "policy/v1",
        "kind": "Eviction",
        "metadata": {"name": meta["name"], "namespace": meta["namespace"]},
    }
    response = cluster.api.session.post(
        f"{cluster.api.server}/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}/eviction",
        json=body,
        timeout=30,
    )
    return int(response.status_code)


def pods_on(cluster: Cluster, node: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = cluster.api.items(
        "/api/v1/pods", fieldSelector=f"spec.nodeName={node}"
    )
    return [p for p in items if p["status"].get("phase") not in {"Succeeded", "Failed"}]


def drain(cluster: Cluster, node: str, timeout: float) -> dict[str, int]:
    """`kubectl drain` through the eviction API: cordon, then evict every pod, retrying the
    ones a disruption budget refuses (429) until `timeout`; returns refusals per pod."""
    cluster.api.merge_patch(f"/api/v1/nodes/{node}", {"spec": {"unschedulable": True}})
    refused: dict[str, int] = {}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        left = pods_on(cluster, node)
        if not left:
            return refused
        for pod in left:
            code = evict(cluster, pod)
            if code == 429:
                key = f"{pod['metadata']['namespace']}/{pod['metadata']['name']}"
                refused[key] = refused.get(key, 0) + 1
        time.sleep(2)
    return refused


def uncordon(cluster: Cluster, node: str) -> None:
    cluster.api.merge_patch(f"/api/v1/nodes/{node}", {"spec": {"unschedulable": False}})


def test_draining_two_nodes_never_takes_two_couchdb_pods_of_an_environment_down(
    deployed: Project, cluster: Cluster
) -> None:
    """The volumes are local to their node, so a CouchDB pod evicted from a cordoned node
    waits for that node: draining the next node must then be refused for that
    environment's pod by its disruption budget (maxUnavailable 1), until the first node is
    back. Every other pod moves."""
    wait_all_ready(cluster)
    first = couchdb_pod(cluster, "prod", 1)["spec"]["nodeName"]
    second = couchdb_pod(cluster, "prod", 3)["spec"]["nodeName"]
    started = time.monotonic()
    with readiness_watch(cluster) as lowest:
        refused_first = drain(cluster, first, timeout=180)
        assert not pods_on(cluster, first), f"{first} not drained: {refused_first}"
        refused = drain(cluster, second, timeout=45)
        blocked = f"{namespace('prod')}/couchdb-3"
        assert refused.get(blocked, 0) >= 5, (
            f"draining {second} while prod's pod from {first} is down was not refused: {refused}"
        )
        assert any(p["metadata"]["name"] == "couchdb-3" for p in pods_on(cluster, second))
        uncordon(cluster, first)
        cluster.wait(
            f"prod couchdb-1 Ready again on {first}",
            lambda: ready(couchdb_pod(cluster, "prod", 1)),
            timeout=600,
        )
        wait_all_ready(cluster)
        refused_second = drain(cluster, second, timeout=300)
        assert not pods_on(cluster, second), f"{second} not drained: {refused_second}"
        uncordon(cluster, second)
        wait_all_ready(cluster)
    elapsed = time.monotonic() - started
    for stack in ["prod", "preprod"]:
        assert lowest[stack] >= replicas(stack) - 1, (
            f"{stack}: {lowest[stack]} of {replicas(stack)} CouchDB pods Ready at one point"
        )
        assert_cluster_whole(cluster, stack)
    print(
        f"[realpods] drains of {first} then {second}: {elapsed:.1f}s, lowest Ready {lowest}, "
        f"refusals while {first} was down {refused}"
    )


def node_container(action: str, node: str) -> None:
    subprocess.run(
        [str(REPO / "scripts" / "realpods" / "node.sh"), action, CLUSTER_NAME, node],
        env=os.environ,
        check=True,
        capture_output=True,
        text=True,
        timeout=300,
    )


def node_ready(cluster: Cluster, node: str) -> bool:
    conditions = cluster.api.get(f"/api/v1/nodes/{node}")["status"]["conditions"]
    return {c["type"]: c["status"] for c in conditions}.get("Ready") == "True"


def test_a_stopped_node_keeps_the_database_writable_and_the_cluster_heals(
    deployed: Project, cluster: Cluster
) -> None:
    ns = namespace("prod")
    wait_all_ready(cluster)
    victim_node = couchdb_pod(cluster, "prod", 4)["spec"]["nodeName"]
    writer_node = next(n for n in NODES if n != victim_node)
    count = 300
    writer, _ = probe(
        cluster,
        ns,
        "write",
        DATABASE,
        f"node-{uuid.uuid4().hex[:6]}",
        str(count),
        "420",
        wait=False,
        node=writer_node,
    )
    wait_acks(cluster, ns, writer, 30)
    stopped_at = time.monotonic()
    node_container("kill", victim_node)
    cluster.wait(
        f"{victim_node} NotReady", lambda: not node_ready(cluster, victim_node), timeout=180
    )
    not_ready_after = time.monotonic() - stopped_at
    # the database stays writable while the node is away: the stream goes on, and a new
    # writer started after the node is known NotReady writes too
    logs, code = cluster.wait_pod(ns, writer, timeout=900)
    ids = acked_ids(logs)
    assert code == 0 and len(ids) == count, logs[-3000:]
    _, during = probe(
        cluster,
        ns,
        "write",
        DATABASE,
        f"away-{uuid.uuid4().hex[:6]}",
        "50",
        "300",
        node=writer_node,
    )
    assert during is not None and during["acked"] == 50, during
    node_container("start", victim_node)
    cluster.wait(f"{victim_node} Ready", lambda: node_ready(cluster, victim_node), timeout=300)
    wait_all_ready(cluster, timeout=900)
    healed = time.monotonic() - stopped_at
    assert_cluster_whole(cluster, "prod")
    _, result = probe(cluster, ns, "check", DATABASE, *ids)
    assert result is not None and result["missing"] == [], result
    print(
        f"[realpods] node {victim_node} killed: NotReady after {not_ready_after:.1f}s, "
        f"writes acknowledged while away {during}, healed after {healed:.1f}s"
    )
