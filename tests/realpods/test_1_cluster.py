"""The cluster itself, before any stack: five real nodes named and zoned as Pulumi.prod.yaml
says, pods that really run (in the web app stand-in's image: Python's own HTTP server), pod
networking within and across nodes, Services through kube-proxy, cluster DNS, and a
PersistentVolumeClaim provisioned on a node and kept across pods. No CouchDB needed: CI runs
these wherever the node binaries and the stand-in image build."""

from __future__ import annotations

import functools
import json
from typing import Any

import pytest

from tests.realpods.conftest import (
    NODES,
    POOL_TOLERATION,
    WEB_IMAGE,
    Cluster,
    require_image,
    stack_config,
)

pytestmark = [pytest.mark.realpods, pytest.mark.slow]

NAMESPACE = "realpods-basics"
RESTRICTED = {
    "runAsNonRoot": True,
    "runAsUser": 10001,
    "runAsGroup": 10001,
    "seccompProfile": {"type": "RuntimeDefault"},
}
LOCKED = {
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
    "readOnlyRootFilesystem": True,
}


def test_five_real_nodes_named_and_zoned_as_the_stack_says(cluster: Cluster) -> None:
    wanted = {n["name"]: n for n in stack_config("prod")["onboarding:nodePool"]["nodes"]}
    assert sorted(wanted) == NODES
    for name in NODES:
        node = cluster.api.get(f"/api/v1/nodes/{name}")
        info = node["status"]["nodeInfo"]
        assert info["kubeletVersion"] == "v1.34.2", info
        assert info["containerRuntimeVersion"].startswith("containerd://"), info
        ready = {c["type"]: c["status"] for c in node["status"]["conditions"]}["Ready"]
        assert ready == "True", f"{name} is not Ready: {node['status']['conditions']}"
        labels = node["metadata"]["labels"]
        assert labels["topology.kubernetes.io/zone"] == wanted[name]["zone"]
        assert labels["topology.kubernetes.io/region"] == wanted[name]["region"]
        internal = [a["address"] for a in node["status"]["addresses"] if a["type"] == "InternalIP"]
        assert internal == [f"172.31.250.{10 + NODES.index(name) + 1}"], internal


def _namespace(cluster: Cluster) -> None:
    if cluster.api.get_or_none(f"/api/v1/namespaces/{NAMESPACE}") is None:
        cluster.api.create(
            "/api/v1/namespaces",
            {
                "apiVersion": "v1",
                "kind": "Namespace",
                "metadata": {
                    "name": NAMESPACE,
                    "labels": {"pod-security.kubernetes.io/enforce": "restricted"},
                },
            },
        )


def _python(
    code: str, node: str, container: dict[str, Any] | None = None, **extra: Any
) -> dict[str, Any]:
    """A pod spec running `code` with the stand-in's Python, on `node`, restricted."""
    return {
        "nodeSelector": {"kubernetes.io/hostname": node},
        "tolerations": [POOL_TOLERATION],
        "securityContext": RESTRICTED,
        "containers": [
            {
                "name": "python",
                "image": WEB_IMAGE,
                "command": ["python", "-c", code],
                "securityContext": LOCKED,
                "resources": {"requests": {"cpu": "10m", "memory": "32Mi"}},
                **(container or {}),
            }
        ],
        **extra,
    }


SERVER = """
import http.server, os, socket
class Echo(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = f"{socket.gethostname()} on {os.environ['NODE']}".encode()
        self.send_response(200); self.end_headers(); self.wfile.write(body)
http.server.ThreadingHTTPServer(("", 8080), Echo).serve_forever()
"""

# Each address is tried for up to 30 s: a server pod is Ready before every node's kube-proxy
# has its endpoint (a Service without one refuses the connection).
CLIENT = """
import json, socket, sys, time, urllib.request
out = {"dns": {}, "http": {}}
for name in sys.argv[1:]:
    host = name.split("/")[2].split(":")[0]
    start = time.monotonic()
    while True:
        try:
            out["dns"][host] = socket.gethostbyname(host)
            out["http"][name] = urllib.request.urlopen(name, timeout=10).read().decode()
            break
        except OSError as exc:
            out["http"][name] = f"error: {exc}"
            if "HTTP Error" in str(exc) or time.monotonic() - start > 30:
                break
            time.sleep(1)
print(json.dumps(out))
"""


def test_pods_reach_each_other_within_and_across_nodes_through_services_and_dns(
    cluster: Cluster,
) -> None:
    require_image(WEB_IMAGE, "make images")
    _namespace(cluster)
    servers = {"echo-a": NODES[0], "echo-b": NODES[2]}
    for name, node in servers.items():
        cluster.api.create(
            f"/api/v1/namespaces/{NAMESPACE}/pods",
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": name, "labels": {"app": name}},
                "spec": _python(
                    SERVER,
                    node,
                    container={
                        "env": [{"name": "NODE", "value": node}],
                        "ports": [{"containerPort": 8080}],
                        "readinessProbe": {"tcpSocket": {"port": 8080}, "periodSeconds": 2},
                    },
                    automountServiceAccountToken=False,
                ),
            },
        )
        cluster.api.create(
            f"/api/v1/namespaces/{NAMESPACE}/services",
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": name},
                "spec": {"selector": {"app": name}, "ports": [{"port": 80, "targetPort": 8080}]},
            },
        )

    def running_and_ready(name: str) -> bool:
        status = cluster.api.get(f"/api/v1/namespaces/{NAMESPACE}/pods/{name}")["status"]
        conditions = {c["type"]: c["status"] for c in status.get("conditions", [])}
        return status.get("phase") == "Running" and conditions.get("Ready") == "True"

    for name in servers:
        cluster.wait(f"{name} Ready", functools.partial(running_and_ready, name), timeout=180)
    pod_ips = {
        name: cluster.api.get(f"/api/v1/namespaces/{NAMESPACE}/pods/{name}")["status"]["podIP"]
        for name in servers
    }
    # the client runs on node 1: echo-a is on its node, echo-b on node 3
    urls = [
        f"http://echo-a.{NAMESPACE}.svc.cluster.local/",
        f"http://echo-b.{NAMESPACE}.svc.cluster.local/",
        f"http://{pod_ips['echo-b']}:8080/",
        "http://kubernetes.default.svc.cluster.local:443/",
    ]
    _, logs, code = cluster.run_pod(
        NAMESPACE,
        "client",
        _python(CLIENT, NODES[0], container={"args": urls}),
        timeout=180,
    )
    assert code == 0, logs
    out = json.loads(logs.strip().splitlines()[-1])
    assert out["http"][urls[0]] == f"echo-a on {NODES[0]}", out
    assert out["http"][urls[1]] == f"echo-b on {NODES[2]}", out
    assert out["http"][urls[2]] == f"echo-b on {NODES[2]}", out
    services = {
        name: cluster.api.get(f"/api/v1/namespaces/{NAMESPACE}/services/{name}")["spec"][
            "clusterIP"
        ]
        for name in servers
    }
    for name, ip in services.items():
        assert out["dns"][f"{name}.{NAMESPACE}.svc.cluster.local"] == ip
    assert out["dns"]["kubernetes.default.svc.cluster.local"] == "10.96.0.1"
    for name in servers:
        cluster.api.delete(f"/api/v1/namespaces/{NAMESPACE}/pods/{name}")
        cluster.api.delete(f"/api/v1/namespaces/{NAMESPACE}/services/{name}")


def test_a_claim_is_provisioned_on_a_node_and_outlives_its_pod(cluster: Cluster) -> None:
    require_image(WEB_IMAGE, "make images")
    _namespace(cluster)
    claim = "realpods-claim"
    cluster.api.create(
        f"/api/v1/namespaces/{NAMESPACE}/persistentvolumeclaims",
        {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": {"name": claim},
            "spec": {
                "accessModes": ["ReadWriteOnce"],
                "resources": {"requests": {"storage": "1Gi"}},
            },
        },
    )
    volume = {
        "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": claim}}],
        "securityContext": {**RESTRICTED, "fsGroup": 10001},
    }
    mount = {"volumeMounts": [{"name": "data", "mountPath": "/data"}]}
    write = "import pathlib; pathlib.Path('/data/kept').write_text('written by the first pod')"
    _, logs, code = cluster.run_pod(
        NAMESPACE, "writer", _python(write, NODES[1], container=mount, **volume), timeout=240
    )
    assert code == 0, logs
    pvc = cluster.api.get(f"/api/v1/namespaces/{NAMESPACE}/persistentvolumeclaims/{claim}")
    assert pvc["status"]["phase"] == "Bound"
    pv = cluster.api.get(f"/api/v1/persistentvolumes/{pvc['spec']['volumeName']}")
    terms = pv["spec"]["nodeAffinity"]["required"]["nodeSelectorTerms"]
    assert NODES[1] in str(terms), terms
    read = "print(open('/data/kept').read())"
    _, logs, code = cluster.run_pod(
        NAMESPACE, "reader", _python(read, NODES[1], container=mount, **volume), timeout=240
    )
    assert code == 0 and "written by the first pod" in logs, logs
