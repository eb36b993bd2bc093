"""What the local KWOK cluster needs besides its control plane, so that it looks like the
hosting provider's cluster to the Pulumi program (scripts/kube-up.sh runs both commands):

  install   the 5 dedicated nodes (fake, managed by kwok) named in the prod stack file, with
            their region and zone labels but WITHOUT the pool label and taint (the prod stack's
            NodePatch resources add those); a default StorageClass; the `envoy-gateway`
            GatewayClass (what installing Envoy Gateway gives the provider's cluster);
            the CRDs of the kinds the program creates (Prometheus Operator, Gateway API,
            Envoy Gateway policies, cert-manager): every *.yaml of each --crds directory.
  run       two stand-in controllers, polling every second, for what the real cluster runs:
            - a volume provisioner for that StorageClass (what the provider's CSI driver does):
              a claim the scheduler has picked a node for gets a `local` PersistentVolume on
              that node, pre-bound to it; a released volume is deleted;
            - Envoy Gateway's Gateway status: a Gateway of class envoy-gateway is marked
              Accepted and Programmed with an address (Pulumi waits for Programmed). The
              address is a documentation one (192.0.2.0/24): no proxy runs, nothing listens.

Nothing here creates, edits or admits a pod: scheduling, admission and pod status are the real
scheduler's, the real API server's and kwok's.

    python scripts/kube/cluster-addons.py install --kubeconfig K --stack-file Pulumi.prod.yaml \
        --crds DIR [--crds DIR ...]
    python scripts/kube/cluster-addons.py run --kubeconfig K
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from kubeapi import ApiError, KubeAPI

PROVISIONER = "onboarding.local/fake-csi"
STORAGE_CLASS = "onboarding-local"
GATEWAY_CLASS = "envoy-gateway"
GATEWAY_CONTROLLER = "gateway.envoyproxy.io/gatewayclass-controller"
GATEWAY_ADDRESS = "192.0.2.10"
# Enough for both stacks at full scale on any one node (prod's quota is ~13.5 CPU / 32 GiB
# in all, preprod's ~4 CPU / 6 GiB).
NODE_ALLOCATABLE = {"cpu": "32", "memory": "128Gi", "pods": "110", "ephemeral-storage": "500Gi"}


def log(message: str) -> None:
    print(f"[cluster-addons {time.strftime('%H:%M:%S')}] {message}", flush=True)


def wait_for(what: str, check: Any, timeout: float = 120.0) -> Any:
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            result = check()
            if result:
                return result
        except (ApiError, OSError) as error:
            last = error
        time.sleep(0.5)
    raise SystemExit(f"timed out after {timeout:.0f}s waiting for {what} (last error: {last})")


def stack_nodes(stack_file: Path) -> list[dict[str, str]]:
    config = yaml.safe_load(stack_file.read_text())["config"]
    nodes: list[dict[str, str]] = config["onboarding:nodePool"]["nodes"]
    return nodes


def node_manifest(node: dict[str, str]) -> dict[str, Any]:
    name = node["name"]
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            # kwokctl's kwok controller manages the nodes carrying this annotation
            "annotations": {"kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0"},
            "labels": {
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                "type": "kwok",
                "topology.kubernetes.io/region": node["region"],
                "topology.kubernetes.io/zone": node["zone"],
            },
        },
        "spec": {},
        "status": {"allocatable": NODE_ALLOCATABLE, "capacity": NODE_ALLOCATABLE},
    }


def node_ready(api: KubeAPI, name: str) -> bool:
    node = api.get(f"/api/v1/nodes/{name}")
    conditions = (node.get("status") or {}).get("conditions") or []
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def install(api: KubeAPI, stack_file: Path, crds: list[Path], real_nodes: bool = False) -> None:
    wait_for("the API server to be ready", lambda: api.get("/readyz").get("text") == "ok")
    wait_for(
        "the default ServiceAccount (controller-manager up)",
        lambda: api.get_or_none("/api/v1/namespaces/default/serviceaccounts/default"),
    )

    nodes = stack_nodes(stack_file)
    for node in [] if real_nodes else nodes:
        if api.get_or_none(f"/api/v1/nodes/{node['name']}") is None:
            api.create("/api/v1/nodes", node_manifest(node))
            log(f"node {node['name']} created ({node['region']}/{node['zone']})")
    for node in nodes:
        wait_for(f"node {node['name']} to be Ready", lambda n=node: node_ready(api, n["name"]))
    log(f"{len(nodes)} nodes Ready")
    if not real_nodes:
        install_storage_class(api)
    install_crds_and_gateway_class(api, crds)


def install_storage_class(api: KubeAPI) -> None:
    api.apply(
        f"/apis/storage.k8s.io/v1/storageclasses/{STORAGE_CLASS}",
        {
            "apiVersion": "storage.k8s.io/v1",
            "kind": "StorageClass",
            "metadata": {
                "name": STORAGE_CLASS,
                "annotations": {"storageclass.kubernetes.io/is-default-class": "true"},
            },
            "provisioner": PROVISIONER,
            "reclaimPolicy": "Delete",
            "volumeBindingMode": "WaitForFirstConsumer",
        },
    )
    log(f"StorageClass {STORAGE_CLASS} (default) applied")


def install_crds_and_gateway_class(api: KubeAPI, crds: list[Path]) -> None:
    installed = 0
    for directory in crds:
        files = sorted(directory.glob("*.yaml"))
        if not files:
            raise SystemExit(f"no CRD files in {directory}")
        for file in files:
            install_crd(api, yaml.safe_load(file.read_text()))
            installed += 1
        log(f"{len(files)} CRDs established from {directory.name}")
    log(f"{installed} CRDs established in all")

    api.apply(
        f"/apis/gateway.networking.k8s.io/v1/gatewayclasses/{GATEWAY_CLASS}",
        {
            "apiVersion": "gateway.networking.k8s.io/v1",
            "kind": "GatewayClass",
            "metadata": {"name": GATEWAY_CLASS},
            "spec": {"controllerName": GATEWAY_CONTROLLER},
        },
    )
    log(f"GatewayClass {GATEWAY_CLASS} applied")


def install_crd(api: KubeAPI, crd: dict[str, Any]) -> None:
    if crd.get("kind") != "CustomResourceDefinition":
        raise SystemExit(f"not a CustomResourceDefinition: {crd.get('kind')}")
    name = crd["metadata"]["name"]
    api.apply(f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}", crd)

    def established() -> bool:
        status = api.get(f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}")
        return any(
            c["type"] == "Established" and c["status"] == "True"
            for c in (status.get("status") or {}).get("conditions") or []
        )

    wait_for(f"CRD {name} to be established", established)


def provision(api: KubeAPI) -> None:
    for pvc in api.items("/api/v1/persistentvolumeclaims"):
        meta, spec = pvc["metadata"], pvc["spec"]
        annotations = meta.get("annotations", {})
        node = annotations.get("volume.kubernetes.io/selected-node")
        if (
            pvc.get("status", {}).get("phase") != "Pending"
            or spec.get("volumeName")
            or annotations.get("volume.kubernetes.io/storage-provisioner") != PROVISIONER
            or not node
        ):
            continue
        name = f"pvc-{meta['uid']}"
        if api.get_or_none(f"/api/v1/persistentvolumes/{name}") is not None:
            continue
        api.create(
            "/api/v1/persistentvolumes",
            {
                "apiVersion": "v1",
                "kind": "PersistentVolume",
                "metadata": {
                    "name": name,
                    "annotations": {"pv.kubernetes.io/provisioned-by": PROVISIONER},
                },
                "spec": {
                    "capacity": {"storage": spec["resources"]["requests"]["storage"]},
                    "accessModes": spec["accessModes"],
                    "persistentVolumeReclaimPolicy": "Delete",
                    "storageClassName": spec.get("storageClassName"),
                    "volumeMode": spec.get("volumeMode", "Filesystem"),
                    "local": {"path": f"/var/lib/onboarding-fake-volumes/{name}"},
                    "nodeAffinity": {
                        "required": {
                            "nodeSelectorTerms": [
                                {
                                    "matchExpressions": [
                                        {
                                            "key": "kubernetes.io/hostname",
                                            "operator": "In",
                                            "values": [node],
                                        }
                                    ]
                                }
                            ]
                        }
                    },
                    "claimRef": {
                        "apiVersion": "v1",
                        "kind": "PersistentVolumeClaim",
                        "namespace": meta["namespace"],
                        "name": meta["name"],
                        "uid": meta["uid"],
                    },
                },
            },
        )
        log(f"provisioned {name} on {node} for {meta['namespace']}/{meta['name']}")
    for pv in api.items("/api/v1/persistentvolumes"):
        provisioned_by = (
            pv["metadata"].get("annotations", {}).get("pv.kubernetes.io/provisioned-by")
        )
        if (
            provisioned_by == PROVISIONER
            and pv.get("status", {}).get("phase") == "Released"
            and pv["spec"].get("persistentVolumeReclaimPolicy") == "Delete"
        ):
            api.delete(f"/api/v1/persistentvolumes/{pv['metadata']['name']}")
            log(f"deleted released volume {pv['metadata']['name']}")


def publish_gateway_status(api: KubeAPI) -> None:
    for gateway in api.items("/apis/gateway.networking.k8s.io/v1/gateways"):
        meta, status = gateway["metadata"], gateway.get("status") or {}
        if gateway["spec"].get("gatewayClassName") != GATEWAY_CLASS:
            continue
        generation = meta.get("generation", 1)
        if any(
            c["type"] == "Programmed" and c.get("observedGeneration") == generation
            for c in status.get("conditions") or []
        ):
            continue
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())

        def condition(kind: str, gen: int = generation, at: str = now) -> dict[str, Any]:
            return {
                "type": kind,
                "status": "True",
                "reason": kind,
                "message": "stand-in for Envoy Gateway (scripts/kube/cluster-addons.py)",
                "observedGeneration": gen,
                "lastTransitionTime": at,
            }

        api.merge_patch(
            f"/apis/gateway.networking.k8s.io/v1/namespaces/{meta['namespace']}/gateways/"
            f"{meta['name']}/status",
            {
                "status": {
                    "addresses": [{"type": "IPAddress", "value": GATEWAY_ADDRESS}],
                    "conditions": [condition("Accepted"), condition("Programmed")],
                }
            },
        )
        log(f"gateway {meta['namespace']}/{meta['name']}: Programmed, {GATEWAY_ADDRESS}")


def run(api: KubeAPI, gateway_only: bool = False) -> None:
    stopping = False

    def stop(_signum: int, _frame: Any) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    steps = (publish_gateway_status,) if gateway_only else (provision, publish_gateway_status)
    log(f"running: {', '.join(s.__name__ for s in steps)} (gateway class {GATEWAY_CLASS})")
    while not stopping:
        for step in steps:
            try:
                step(api)
            except (ApiError, OSError, KeyError) as error:
                log(f"{step.__name__}: {error}")
        time.sleep(1)
    log("stopped")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p_install = sub.add_parser("install")
    p_install.add_argument("--kubeconfig", required=True)
    p_install.add_argument("--stack-file", required=True, type=Path)
    p_install.add_argument(
        "--crds", required=True, type=Path, action="append", help="a directory of CRD files"
    )
    # a cluster with real nodes (scripts/realpods/): its kubelets register the nodes and a real
    # provisioner serves its own default StorageClass, so neither is faked
    p_install.add_argument(
        "--real-nodes", action="store_true", help="no fake nodes, no StorageClass"
    )
    p_run = sub.add_parser("run")
    p_run.add_argument("--kubeconfig", required=True)
    p_run.add_argument("--gateway-only", action="store_true", help="no stand-in provisioner")
    args = parser.parse_args()
    api = KubeAPI(args.kubeconfig)
    if args.command == "install":
        install(api, args.stack_file, args.crds, args.real_nodes)
    else:
        run(api, args.gateway_only)


if __name__ == "__main__":
    try:
        main()
    except ApiError as error:
        sys.exit(f"cluster-addons: {error}\n{json.dumps(error.body, indent=1)[:2000]}")
