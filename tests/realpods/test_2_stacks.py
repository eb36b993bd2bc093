"""Both stacks deployed with the real `pulumi up` on the real-pods cluster: every pod Ready on
the dedicated nodes, CouchDB forming its cluster from the rendered configuration alone, the
setup Job run in the ops image, a second `up` that changes nothing, the web app stand-in
writing and reading through its Service, and the purge and backup CronJobs, started by hand,
doing their work. Needs the CouchDB image in the image archive (skipped with the reason
otherwise: conftest.require_image)."""

from __future__ import annotations

import json
import os
import re
import uuid
from typing import Any

import pytest

from tests.realpods.conftest import (
    NODES,
    OPS_IMAGE,
    WEB_IMAGE,
    Cluster,
    Project,
    outcome,
    probe,
    stack_config,
)

pytestmark = [pytest.mark.realpods, pytest.mark.slow]

DATABASE = "onboarding"


def namespace(stack: str) -> str:
    return f"onboarding-{stack}"


def replicas(stack: str) -> int:
    return int(stack_config(stack)["onboarding:couchdb"]["replicas"])


def node_urls(stack: str) -> list[str]:
    ns = namespace(stack)
    return [
        f"https://couchdb-{i}.couchdb-headless.{ns}.svc.cluster.local:6984"
        for i in range(replicas(stack))
    ]


def erlang_nodes(stack: str) -> list[str]:
    ns = namespace(stack)
    return sorted(
        f"couchdb@couchdb-{i}.couchdb-headless.{ns}.svc.cluster.local"
        for i in range(replicas(stack))
    )


def ready(pod: dict[str, Any]) -> bool:
    return pod["status"].get("phase") == "Running" and any(
        c["type"] == "Ready" and c["status"] == "True" for c in pod["status"].get("conditions", [])
    )


@pytest.mark.parametrize("stack", ["prod", "preprod"])
def test_every_pod_is_ready_on_the_dedicated_nodes(
    deployed: Project, cluster: Cluster, stack: str
) -> None:
    ns = namespace(stack)
    print(f"[realpods] pulumi up {stack}: {deployed.up_seconds[stack]:.1f}s")
    couchdb = cluster.couchdb_pods(ns)
    assert len(couchdb) == replicas(stack)
    webapp = cluster.pods(ns, **{"app.kubernetes.io/name": "webapp"})
    assert webapp, f"no web app pod in {ns}"
    for pod in couchdb + webapp:
        assert ready(pod), f"{pod['metadata']['name']} not Ready: {pod['status']}"
        assert pod["spec"]["nodeName"] in NODES
        for status in pod["status"]["containerStatuses"]:
            assert status["imageID"], status  # a real image, really pulled or loaded
    hosts = [p["spec"]["nodeName"] for p in couchdb]
    assert len(set(hosts)) == len(hosts), f"two CouchDB pods of {ns} share a node: {hosts}"


@pytest.mark.parametrize("stack", ["prod", "preprod"])
def test_couchdb_forms_its_cluster_from_the_rendered_configuration(
    deployed: Project, cluster: Cluster, stack: str
) -> None:
    ns = namespace(stack)
    # The pods hold only the admin's pbkdf2 hash (20-secrets.ini); the password is in the
    # client Secret, and logging in with it proves the rendered hash is the right one.
    ini = cluster.secret(ns, "couchdb-server", "20-secrets.ini")
    password = cluster.secret(ns, "couchdb-admin", "adminPassword")
    assert "admin = -pbkdf2" in ini and password not in ini
    _, result = probe(cluster, ns, "status", *node_urls(stack))
    assert result is not None
    for url, node in result["nodes"].items():
        assert node.get("up") == 200, (url, node)
        assert node["all_nodes"] == erlang_nodes(stack), (url, node)
        assert node["cluster_nodes"] == erlang_nodes(stack), (url, node)
        assert node["login"] == 200 and "_admin" in node["roles"], (url, node)


@pytest.mark.parametrize("stack", ["prod", "preprod"])
def test_the_setup_job_ran_in_the_ops_image(
    deployed: Project, cluster: Cluster, stack: str
) -> None:
    ns = namespace(stack)
    jobs = [
        j
        for j in cluster.api.items(f"/apis/batch/v1/namespaces/{ns}/jobs")
        if j["metadata"]["name"].startswith("couchdb-setup")
    ]
    assert len(jobs) == 1, [j["metadata"]["name"] for j in jobs]
    assert jobs[0]["status"].get("succeeded") == 1, jobs[0]["status"]
    attempts = cluster.pods(ns, **{"job-name": jobs[0]["metadata"]["name"]})
    (pod,) = [p for p in attempts if p["status"].get("phase") == "Succeeded"]
    for failed in [p for p in attempts if p is not pod]:  # the Job's retries, said
        name = failed["metadata"]["name"]
        print(f"[realpods] {ns} setup attempt {name} failed: {cluster.logs(ns, name)[-400:]}")
    (status,) = pod["status"]["containerStatuses"]
    assert status["image"].endswith(OPS_IMAGE.split("/", 1)[1]), status
    assert status["state"]["terminated"]["exitCode"] == 0, status
    logs = cluster.logs(ns, pod["metadata"]["name"]).strip()
    if "no such file or directory" in logs and "/var/log/pods/" in logs:
        # a kept cluster whose node containers were recreated since: the log files went with them
        print(f"[realpods] the setup pod's log is gone with its node: {logs[:200]}")
    else:
        assert outcome(logs)["ok"] is True, logs[-2000:]
    _, result = probe(cluster, ns, "info", DATABASE)
    assert result is not None
    assert result["db"]["props"].get("partitioned") is True, result


def test_a_second_up_changes_nothing(deployed: Project) -> None:
    for stack in ["prod", "preprod"]:
        up = deployed.pulumi("up", "--yes", "--expect-no-changes", "--stack", stack)
        assert "unchanged" in up.stdout, up.stdout[-2000:]


WEB_CLIENT = """
import json, sys, time, urllib.error, urllib.request
base, keep_trying = sys.argv[1], float(sys.argv[3])
def call(method, path, body=None):
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(base + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.status, json.loads(response.read() or b"null")
# a new pod may be refused until the NetworkPolicy enforcer knows its address: retry a while
start = time.monotonic()
while True:
    try:
        urllib.request.urlopen(base + "/", timeout=5)
        break
    except urllib.error.HTTPError:
        break
    except OSError as exc:
        if time.monotonic() - start > keep_trying:
            raise SystemExit(f"refused for {keep_trying:.0f}s: {exc}")
        time.sleep(1)
code, created = call("POST", "/prospects", {"email": sys.argv[2], "firstName": "Realpods"})
code2, read = call("GET", "/prospects/" + created["id"])
print(json.dumps({"create": [code, created], "read": [code2, read]}))
"""


def test_the_web_app_writes_and_reads_through_its_service(
    deployed: Project, cluster: Cluster
) -> None:
    """From where the edge's Envoy proxies run (the only peers the web app's NetworkPolicy
    admits on its public port): through the web app's Service, whose pods write to CouchDB
    through CouchDB's Service as the app user."""
    ns = namespace("prod")
    edge = "envoy-gateway-system"
    if cluster.api.get_or_none(f"/api/v1/namespaces/{edge}") is None:
        cluster.api.create(
            "/api/v1/namespaces",
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": edge}},
        )
    email = f"realpods-{uuid.uuid4().hex[:8]}@example.org"
    spec = {
        "tolerations": [
            {"key": "onboarding.example.fr/dedicated", "operator": "Exists", "effect": "NoSchedule"}
        ],
        "containers": [
            {
                "name": "edge",
                "image": WEB_IMAGE,
                "command": ["python", "-c", WEB_CLIENT],
                "args": [f"http://webapp.{ns}.svc.cluster.local", email, "90"],
                "resources": {"requests": {"cpu": "10m", "memory": "32Mi"}},
            }
        ],
    }
    labels = {
        "gateway.envoyproxy.io/owning-gateway-name": "onboarding",
        "gateway.envoyproxy.io/owning-gateway-namespace": ns,
    }
    _, logs, code = cluster.run_pod(edge, "edge-client", spec, labels=labels, timeout=180)
    assert code == 0, logs
    out = json.loads(logs.strip().splitlines()[-1])
    assert out["create"][0] == 201, out
    assert out["read"][0] == 200 and out["read"][1]["email"] == email, out
    doc_id = out["create"][1]["id"]
    _, result = probe(cluster, ns, "check", DATABASE, doc_id)
    assert result is not None and result["missing"] == [], result


def test_the_network_policies_are_enforced(deployed: Project, cluster: Cluster) -> None:
    """kube-router (scripts/realpods/netpol.sh) enforces the program's NetworkPolicies: the
    same probe that reaches every CouchDB node as a labelled client is refused without the
    label, and the web app's public port refuses a pod that is not the edge's."""
    if os.environ.get("ONBOARDING_REALPODS_NETPOL") == "0":
        pytest.skip("ONBOARDING_REALPODS_NETPOL=0: the cluster enforces no NetworkPolicy")
    ns = namespace("prod")
    pod, allowed = probe(cluster, ns, "status", *node_urls("prod")[:2])
    assert allowed is not None
    waited = re.search(r"reachable after ([0-9.]+)s", cluster.logs(ns, pod))
    assert waited and float(waited.group(1)) < 20, cluster.logs(ns, pod)[-1000:]
    assert all(n.get("up") == 200 for n in allowed["nodes"].values()), allowed
    # refused for as long as the labelled probe may wait for the enforcer, and longer
    _, refused = probe(cluster, ns, "status", *node_urls("prod")[:2], client=False, wait_seconds=20)
    assert refused is not None
    for url, node in refused["nodes"].items():
        assert "error" in node and "up" not in node, (url, node)
    spec = {
        "containers": [
            {
                "name": "outsider",
                "image": WEB_IMAGE,
                "command": ["python", "-c", WEB_CLIENT],
                "args": [f"http://webapp.{ns}.svc.cluster.local", "outsider@example.org", "20"],
                "resources": {"requests": {"cpu": "10m", "memory": "32Mi"}},
            }
        ],
        "tolerations": [
            {"key": "onboarding.example.fr/dedicated", "operator": "Exists", "effect": "NoSchedule"}
        ],
    }
    _, logs, code = cluster.run_pod("default", "outsider", spec, timeout=180)
    assert code != 0 and "refused for 20s" in logs, logs[-2000:]


def test_the_purge_cronjob_removes_a_document_older_than_the_retention(
    deployed: Project, cluster: Cluster
) -> None:
    ns = namespace("prod")
    old = f"realpods:old-{uuid.uuid4().hex[:8]}"
    _, put = probe(cluster, ns, "put-old", DATABASE, old, "40")
    assert put is not None
    prefix = f"fresh-{uuid.uuid4().hex[:6]}"
    _, fresh = probe(cluster, ns, "write", DATABASE, prefix, "1", "60")
    assert fresh is not None and fresh["acked"] == 1
    _, view = probe(cluster, ns, "view", DATABASE, "realpods")
    assert view is not None and view["rows"] >= 2, view  # the old document is in the index
    _, before = probe(cluster, ns, "reads", DATABASE, old, put["rev"])
    assert before is not None and before["reads"]["plain"]["status"] == 200, before

    job = cluster.trigger_cronjob(ns, "couchops-purge")
    status = cluster.wait_job(ns, job, timeout=600)
    logs = cluster.job_logs(ns, job)
    assert status.get("succeeded") == 1, logs[-3000:]
    summary = outcome(logs)
    assert summary["ok"] is True, summary

    _, after = probe(cluster, ns, "reads", DATABASE, old, put["rev"])
    assert after is not None
    reads = after["reads"]
    for name in ["plain", "stable", "by_revision"]:
        assert reads[name]["status"] == 404, (name, reads[name])
    assert old not in reads["all_docs"]["body"] or "not_found" in reads["all_docs"]["body"]
    for name in ["partition_all_docs", "changes", "find", "view", "view_stable"]:
        assert reads[name]["status"] == 200, (name, reads[name])
        assert old not in reads[name]["body"], (name, reads[name])
    assert put["createdAt"] not in reads["view"]["body"], reads["view"]
    assert '"missing"' in reads["open_revs_all"]["body"] or reads["open_revs_all"]["status"] == 404
    # a document younger than the retention stays
    _, kept = probe(cluster, ns, "check", DATABASE, f"realpods:{prefix}-00000")
    assert kept is not None and kept["missing"] == [], kept


def test_the_backup_cronjob_writes_a_backup_the_verify_cronjob_verifies(
    deployed: Project, cluster: Cluster
) -> None:
    ns = namespace("prod")
    backup = cluster.trigger_cronjob(ns, "couchops-backup")
    status = cluster.wait_job(ns, backup, timeout=900)
    logs = cluster.job_logs(ns, backup)
    assert status.get("succeeded") == 1, logs[-3000:]
    made = outcome(logs)
    assert made["ok"] is True, made

    verify = cluster.trigger_cronjob(ns, "couchops-backup-verify")
    status = cluster.wait_job(ns, verify, timeout=900)
    logs = cluster.job_logs(ns, verify)
    assert status.get("succeeded") == 1, logs[-3000:]
    summaries = [line for line in logs.splitlines() if "verify.summary" in line]
    assert summaries, logs[-3000:]
    assert outcome(logs)["ok"] is True, logs[-2000:]
