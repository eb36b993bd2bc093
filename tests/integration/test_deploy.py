"""Deploy mode, for real: the same `pulumi up` that renders manifests without a kubeconfig
deploys with one. The cluster (scripts/kube-up.sh) is a real control plane, v1.34.2 built from
Go modules (scripts/bootstrap-kube.sh): etcd, kube-apiserver with its default admission
plugins (Pod Security, ResourceQuota, LimitRanger, ...) and RBAC, kube-controller-manager,
kube-scheduler; only the nodes and the pods' containers are fake (KWOK: kwok-controller marks
scheduled pods Running and Ready, and pods of Jobs Succeeded). So what is proven here is what a
real cluster would answer: server-side validation and defaulting, admission, the server-side
apply of the NodePatch resources, the scheduler's required anti-affinity, tolerations and node
affinity, Pulumi's awaits (StatefulSet ready, Deployment available, Job complete), and the
edge's custom resources (Gateway API, Envoy Gateway, cert-manager) checked against their CRDs.
Not proven: anything inside a container (CouchDB itself, the web app, couchops), what the
Envoy Gateway and cert-manager controllers would do with those resources (neither runs), and
NetworkPolicy enforcement (no CNI: the policies are only validated and stored).

The real CLI runs on a copy of the program with a throwaway local backend, KUBECONFIG set and
ONBOARDING_RENDER unset: prod, then preprod on the same nodes (prod owns the node patches),
then a no-change preview, then `pulumi destroy` of preprod: refused (protected keys and data),
then done deliberately after `pulumi state unprotect --all`.

Skipped, with the reason, only when the kube binaries (scripts/bootstrap-kube.sh), the Pulumi
toolchain (scripts/bootstrap-toolchain.sh) or the virtualenv are not there.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
CACHE = Path(os.environ.get("TOOLCHAIN_CACHE", Path.home() / ".cache" / "onboarding-toolchain"))


def _pin(script: str, name: str) -> str:
    return next(
        line.split("=", 1)[1].strip()
        for line in (REPO / "scripts" / script).read_text().splitlines()
        if line.startswith(f"{name}=")
    )


PULUMI_BIN = CACHE / f"pulumi-{_pin('bootstrap-toolchain.sh', 'PULUMI_VERSION')}" / "bin"
KUBE_VERSION = _pin("bootstrap-kube.sh", "KUBE_VERSION")
KUBE_BIN = CACHE / f"kube-{KUBE_VERSION}" / "bin"
PULUMI_NEEDED = [
    "pulumi",
    "pulumi-language-python",
    "pulumi-language-python-exec",
    "pulumi-resource-kubernetes",
    "pulumi-resource-random",
]
KUBE_NEEDED = [
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "etcd",
    "kwok",
    "kwokctl",
]
STACKS = ["prod", "preprod"]
NODES = [f"onb-node-{i}" for i in range(1, 6)]
POOL_LABEL = "onboarding.example.fr/dedicated"
POOL_VALUE = "onboarding"
PASSPHRASE = "integration-test-only"
CLUSTER_NAME = "onboarding-it"
# The context kwokctl names in the kubeconfig it writes for that cluster.
KUBE_CONTEXT = f"kwok-{CLUSTER_NAME}"

_missing = [f"{KUBE_BIN}/{n}" for n in KUBE_NEEDED if not (KUBE_BIN / n).is_file()]
if _missing:
    pytest.skip(
        f"kube binaries not built ({', '.join(_missing)}): run scripts/bootstrap-kube.sh",
        allow_module_level=True,
    )
_missing = [f"{PULUMI_BIN}/{n}" for n in PULUMI_NEEDED if not (PULUMI_BIN / n).is_file()]
if _missing:
    pytest.skip(
        f"Pulumi toolchain not built ({', '.join(_missing)}): run scripts/bootstrap-toolchain.sh",
        allow_module_level=True,
    )
if not (REPO / ".venv" / "bin" / "python").is_file():
    pytest.skip("no .venv: run scripts/setup.sh", allow_module_level=True)

_spec = importlib.util.spec_from_file_location("kubeapi", REPO / "scripts" / "kube" / "kubeapi.py")
assert _spec is not None and _spec.loader is not None
kubeapi = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(kubeapi)
KubeAPI = kubeapi.KubeAPI
ApiError = kubeapi.ApiError


@dataclass
class Cluster:
    kubeconfig: Path
    api: Any
    start_seconds: float


@dataclass
class Deployment:
    stack: str
    namespace: str
    outputs: dict[str, Any]
    up_seconds: float
    up_log: str


@dataclass
class Project:
    path: Path
    env: dict[str, str]
    deployments: dict[str, Deployment] = field(default_factory=dict)


def stack_config(stack: str) -> dict[str, Any]:
    config: dict[str, Any] = yaml.safe_load((REPO / f"Pulumi.{stack}.yaml").read_text())["config"]
    return config


def pulumi(project: Project, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [str(PULUMI_BIN / "pulumi"), "--non-interactive", *args],
        cwd=project.path,
        env=project.env,
        capture_output=True,
        text=True,
        timeout=1800,
        check=False,
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"pulumi {' '.join(args)} exited {result.returncode}\n{result.stdout}\n{result.stderr}"
        )
    return result


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """A fresh cluster of its own (state in a temporary folder, random loopback ports)."""
    env = {**os.environ, "ONBOARDING_KUBE_HOME": str(tmp_path_factory.mktemp("kube"))}
    start = time.monotonic()
    up = subprocess.run(
        [str(REPO / "scripts" / "kube-up.sh"), CLUSTER_NAME],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    try:
        assert up.returncode == 0, f"kube-up.sh failed:\n{up.stderr}"
        kubeconfig = Path(up.stdout.strip().splitlines()[-1])
        contexts = [c["name"] for c in yaml.safe_load(kubeconfig.read_text())["contexts"]]
        assert KUBE_CONTEXT in contexts, f"kube-up.sh's kubeconfig has contexts {contexts}"
        elapsed = time.monotonic() - start
        print(f"\n[deploy] cluster started in {elapsed:.1f}s\n{up.stderr}")
        yield Cluster(kubeconfig, KubeAPI(kubeconfig), elapsed)
    finally:
        subprocess.run(
            [str(REPO / "scripts" / "kube-down.sh"), CLUSTER_NAME],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory, cluster: Cluster) -> Project:
    """A copy of the program with its own state folder and the test cluster's kubeconfig."""
    base = tmp_path_factory.mktemp("pulumi-deploy")
    copy = base / "project"
    copy.mkdir()
    for name in ["Pulumi.yaml", *(f"Pulumi.{s}.yaml" for s in STACKS)]:
        shutil.copy2(REPO / name, copy / name)
    for package in ["infra", "components", "stacks", "monitoring", "supervision"]:
        if (REPO / package).is_dir():
            shutil.copytree(
                REPO / package, copy / package, ignore=shutil.ignore_patterns("__pycache__")
            )
    (copy / ".venv").symlink_to(REPO / ".venv")
    state = base / "state"
    state.mkdir()
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PULUMI_", "ONBOARDING_")) and k not in {"KUBECONFIG", "VIRTUAL_ENV"}
    }
    env.update(
        PATH=f"{PULUMI_BIN}{os.pathsep}{env.get('PATH', '')}",
        PULUMI_HOME=str(base / "pulumi-home"),
        PULUMI_BACKEND_URL=f"file://{state}",
        PULUMI_CONFIG_PASSPHRASE=PASSPHRASE,
        PULUMI_SKIP_UPDATE_CHECK="true",
        PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION="true",
        KUBECONFIG=str(cluster.kubeconfig),
        NO_PROXY="127.0.0.1,localhost",
        no_proxy="127.0.0.1,localhost",
    )
    return Project(copy, env)


@pytest.fixture(scope="module")
def deployed(project: Project, cluster: Cluster) -> dict[str, Deployment]:
    for stack in STACKS:
        pulumi(project, "stack", "init", stack, "--secrets-provider", "passphrase")
        # A deploy needs the kube context the stack config names (infra/config.py); the copy
        # names the test cluster's (kube-up.sh's kubeconfig: kwok-<cluster name>).
        pulumi(project, "config", "set", "onboarding:kubeContext", KUBE_CONTEXT, "--stack", stack)
        start = time.monotonic()
        up = pulumi(project, "up", "--yes", "--stack", stack)
        elapsed = time.monotonic() - start
        outputs = json.loads(pulumi(project, "stack", "output", "--json", "--stack", stack).stdout)
        project.deployments[stack] = Deployment(
            stack, outputs["namespace"], outputs, elapsed, up.stdout
        )
        print(f"[deploy] pulumi up --stack {stack}: {elapsed:.1f}s\n{up.stdout[-1500:]}")
    return project.deployments


# ---------------------------------------------------------------------------------------------
# helpers reading the live cluster


def node(cluster: Cluster, name: str) -> dict[str, Any]:
    result: dict[str, Any] = cluster.api.get(f"/api/v1/nodes/{name}")
    return result


def pods(cluster: Cluster, namespace: str, **selector: str) -> list[dict[str, Any]]:
    params = {}
    if selector:
        params["labelSelector"] = ",".join(f"{k}={v}" for k, v in selector.items())
    items: list[dict[str, Any]] = cluster.api.items(
        f"/api/v1/namespaces/{namespace}/pods", **params
    )
    return items


def couchdb_statefulset(cluster: Cluster, namespace: str) -> dict[str, Any]:
    (sts,) = [
        s
        for s in cluster.api.items(f"/apis/apps/v1/namespaces/{namespace}/statefulsets")
        if "couchdb" in s["metadata"]["name"]
    ]
    return sts


def is_ready(pod: dict[str, Any]) -> bool:
    return pod["status"].get("phase") == "Running" and any(
        c["type"] == "Ready" and c["status"] == "True" for c in pod["status"].get("conditions", [])
    )


def names(items: list[dict[str, Any]]) -> set[str]:
    return {i["metadata"]["name"] for i in items}


def api_resources(cluster: Cluster) -> dict[tuple[str, str], tuple[str, bool]]:
    """(group/version, kind) -> (plural, namespaced), from the server's discovery."""
    found: dict[tuple[str, str], tuple[str, bool]] = {}
    versions = ["v1"] + [
        v["groupVersion"] for g in cluster.api.get("/apis")["groups"] for v in g["versions"]
    ]
    for gv in versions:
        path = "/api/v1" if gv == "v1" else f"/apis/{gv}"
        for r in cluster.api.get(path)["resources"]:
            if "/" not in r["name"]:
                found[(gv, r["kind"])] = (r["name"], r["namespaced"])
    return found


def state_resources(project: Project, stack: str) -> list[dict[str, Any]]:
    export = json.loads(pulumi(project, "stack", "export", "--stack", stack).stdout)
    resources: list[dict[str, Any]] = export["deployment"].get("resources", [])
    return [r for r in resources if r["type"].startswith("kubernetes:") and "::" not in r["type"]]


def live_path(cluster: Cluster, resource: dict[str, Any], discovery: dict[Any, Any]) -> str:
    _, group_version, kind = resource["type"].split(":")
    group, version = group_version.split("/")
    kind = kind.removesuffix("Patch")
    gv = version if group == "core" else f"{group}/{version}"
    plural, namespaced = discovery[(gv, kind)]
    meta = resource["outputs"]["metadata"]
    prefix = "/api/v1" if gv == "v1" else f"/apis/{gv}"
    if namespaced:
        return f"{prefix}/namespaces/{meta['namespace']}/{plural}/{meta['name']}"
    return f"{prefix}/{plural}/{meta['name']}"


# ---------------------------------------------------------------------------------------------
# the tests, in the order they run (the last one destroys preprod)


def test_cluster_is_the_real_control_plane_on_loopback(cluster: Cluster) -> None:
    version = cluster.api.get("/version")
    assert version["gitVersion"] == f"v{KUBE_VERSION}"
    assert cluster.api.server.startswith("https://127.0.0.1:")
    for name in NODES:
        labels = node(cluster, name)["metadata"]["labels"]
        assert labels["topology.kubernetes.io/region"] == "fr-par"
    monitoring = {r["kind"] for r in cluster.api.get("/apis/monitoring.coreos.com/v1")["resources"]}
    assert {"PodMonitor", "Probe", "PrometheusRule"} <= monitoring


def test_deploy_mode_not_render_mode(deployed: dict[str, Deployment], project: Project) -> None:
    """The program chose its cluster provider (stacks/provider.py), not the render one."""
    assert not (project.path / "rendered").exists()
    for stack in deployed:
        export = json.loads(pulumi(project, "stack", "export", "--stack", stack).stdout)
        providers = [
            r
            for r in export["deployment"]["resources"]
            if r["type"] == "pulumi:providers:kubernetes"
        ]
        assert [p["urn"].rsplit("::", 1)[1] for p in providers] == [f"{stack}-cluster"]
        assert "renderYamlToDirectory" not in providers[0].get("inputs", {})


def test_prod_node_patches_label_and_taint_the_five_nodes(
    deployed: dict[str, Deployment], cluster: Cluster
) -> None:
    nodes_in_config = [n["name"] for n in stack_config("prod")["onboarding:nodePool"]["nodes"]]
    assert nodes_in_config == NODES
    for name in NODES:
        live = node(cluster, name)
        assert live["metadata"]["labels"][POOL_LABEL] == POOL_VALUE
        taints = live["spec"].get("taints", [])
        assert {"key": POOL_LABEL, "value": POOL_VALUE, "effect": "NoSchedule"} in taints
        # written by server-side apply (operation Apply), by Pulumi's field manager
        owners = [
            m
            for m in live["metadata"]["managedFields"]
            if m["operation"] == "Apply" and f"f:{POOL_LABEL}" in json.dumps(m["fieldsV1"])
        ]
        assert owners, live["metadata"]["managedFields"]
        assert all("pulumi" in m["manager"] for m in owners), owners


@pytest.mark.parametrize("stack", STACKS)
def test_couchdb_pods_run_one_per_node(
    deployed: dict[str, Deployment], cluster: Cluster, stack: str
) -> None:
    namespace = deployed[stack].namespace
    sts = couchdb_statefulset(cluster, namespace)
    replicas = stack_config(stack)["onboarding:couchdb"]["replicas"]
    assert replicas == {"prod": 5, "preprod": 3}[stack]
    assert sts["status"].get("readyReplicas") == replicas
    running = pods(cluster, namespace, **sts["spec"]["selector"]["matchLabels"])
    assert len(running) == replicas
    assert all(is_ready(p) for p in running)
    placed = [p["spec"]["nodeName"] for p in running]
    assert len(set(placed)) == replicas, placed
    assert set(placed) <= set(NODES)
    for pvc in cluster.api.items(f"/api/v1/namespaces/{namespace}/persistentvolumeclaims"):
        if pvc["metadata"]["name"].startswith("data-"):
            assert pvc["status"]["phase"] == "Bound"


@pytest.mark.parametrize("stack", STACKS)
def test_every_pod_landed_on_the_pool_in_france(
    deployed: dict[str, Deployment], cluster: Cluster, stack: str
) -> None:
    live = pods(cluster, deployed[stack].namespace)
    assert live
    for pod in live:
        labels = node(cluster, pod["spec"]["nodeName"])["metadata"]["labels"]
        assert labels[POOL_LABEL] == POOL_VALUE
        assert labels["topology.kubernetes.io/region"].startswith("fr-")
        assert pod["spec"]["priorityClassName"] == f"onboarding-{stack}"


@pytest.mark.parametrize("stack", STACKS)
def test_setup_job_completed(deployed: dict[str, Deployment], cluster: Cluster, stack: str) -> None:
    d = deployed[stack]
    job = cluster.api.get(f"/apis/batch/v1/namespaces/{d.namespace}/jobs/{d.outputs['setupJob']}")
    conditions = {c["type"]: c["status"] for c in job["status"].get("conditions", [])}
    assert conditions.get("Complete") == "True", job["status"]
    assert job["status"].get("succeeded") == 1


@pytest.mark.parametrize("stack", STACKS)
def test_namespace_holds_its_policies_budgets_autoscaler_and_cronjobs(
    deployed: dict[str, Deployment], cluster: Cluster, stack: str
) -> None:
    ns = deployed[stack].namespace
    policies = names(
        cluster.api.items(f"/apis/networking.k8s.io/v1/namespaces/{ns}/networkpolicies")
    )
    assert {"default-deny-all", "allow-dns-egress"} <= policies
    assert any("couchdb" in p for p in policies)
    assert len(policies) >= 5, policies
    pdbs = cluster.api.items(f"/apis/policy/v1/namespaces/{ns}/poddisruptionbudgets")
    assert len(pdbs) >= 2, names(pdbs)
    for pdb in pdbs:
        assert pdb["status"].get("expectedPods", 0) > 0, pdb["metadata"]["name"]
    hpas = cluster.api.items(f"/apis/autoscaling/v2/namespaces/{ns}/horizontalpodautoscalers")
    assert len(hpas) == 1
    webapp = stack_config(stack)["onboarding:webapp"]
    assert hpas[0]["spec"]["minReplicas"] == webapp["minReplicas"]
    assert hpas[0]["spec"]["maxReplicas"] == webapp["maxReplicas"]
    cronjobs = cluster.api.items(f"/apis/batch/v1/namespaces/{ns}/cronjobs")
    assert len(cronjobs) >= 3, names(cronjobs)
    assert any("purge" in n for n in names(cronjobs))
    assert any("backup" in n for n in names(cronjobs))
    quota = cluster.api.get(f"/api/v1/namespaces/{ns}/resourcequotas/environment-quota")
    assert quota["status"]["used"]["pods"] != "0"
    # The edge: accepted by the API server against the Gateway API, Envoy Gateway and
    # cert-manager CRDs (schemas and CEL rules); no ingress-nginx Ingress left.
    assert cluster.api.items(f"/apis/networking.k8s.io/v1/namespaces/{ns}/ingresses") == []
    edge = stack_config(stack)["onboarding:ingress"]
    (gateway,) = cluster.api.items(f"/apis/gateway.networking.k8s.io/v1/namespaces/{ns}/gateways")
    assert gateway["spec"]["gatewayClassName"] == edge["gateway"]["className"]
    # Pulumi waited for it (pulumi.com/waitFor), the status from cluster-addons' stand-in
    assert gateway["metadata"]["annotations"]["pulumi.com/waitFor"] == "condition=Programmed"
    assert {c["type"]: c["status"] for c in gateway["status"]["conditions"]}["Programmed"] == "True"
    assert cluster.api.get_or_none(
        f"/apis/gateway.networking.k8s.io/v1/gatewayclasses/{edge['gateway']['className']}"
    )
    assert {listener["hostname"] for listener in gateway["spec"]["listeners"]} == {edge["host"]}
    routes = cluster.api.items(f"/apis/gateway.networking.k8s.io/v1/namespaces/{ns}/httproutes")
    assert names(routes) == {"onboarding", "onboarding-https-redirect"}
    for kind in ("clienttrafficpolicies", "backendtrafficpolicies"):
        (policy,) = cluster.api.items(
            f"/apis/gateway.envoyproxy.io/v1alpha1/namespaces/{ns}/{kind}"
        )
        assert policy["spec"]["targetRefs"][0]["name"] == gateway["metadata"]["name"]
    certificate = cluster.api.get(
        f"/apis/cert-manager.io/v1/namespaces/{ns}/certificates/onboarding-tls"
    )
    assert certificate["spec"]["dnsNames"] == [edge["host"]]


@pytest.mark.parametrize("stack", STACKS)
def test_every_resource_in_the_state_exists_live(
    deployed: dict[str, Deployment], cluster: Cluster, project: Project, stack: str
) -> None:
    discovery = api_resources(cluster)
    resources = state_resources(project, stack)
    assert len(resources) > 20
    missing = [
        r["urn"]
        for r in resources
        if cluster.api.get_or_none(live_path(cluster, r, discovery)) is None
    ]
    assert missing == []


def contains(live: Any, wanted: Any) -> bool:
    """Whether `live` holds every field and value of `wanted` (server defaults may add more)."""
    if isinstance(wanted, dict):
        return isinstance(live, dict) and all(
            k in live and contains(live[k], v) for k, v in wanted.items()
        )
    if isinstance(wanted, list):
        return (
            isinstance(live, list)
            and len(live) == len(wanted)
            and all(contains(a, b) for a, b in zip(live, wanted, strict=True))
        )
    return bool(live == wanted)


@pytest.mark.parametrize("stack", STACKS)
def test_monitoring_custom_resources_are_stored_whole(
    deployed: dict[str, Deployment], cluster: Cluster, project: Project, stack: str
) -> None:
    """The CRDs' schemas accept them, and prune nothing: a field the Prometheus Operator does
    not know would be dropped silently by the API server, never reported."""
    monitoring = [
        r
        for r in state_resources(project, stack)
        if r["type"].startswith("kubernetes:monitoring.coreos.com/")
    ]
    if not monitoring:
        pytest.skip("the Monitoring component is not wired into stacks/environment.py yet")
    assert {r["type"].rsplit(":", 1)[1] for r in monitoring} >= {
        "PodMonitor",
        "Probe",
        "PrometheusRule",
    }
    discovery = api_resources(cluster)
    for resource in monitoring:
        live = cluster.api.get(live_path(cluster, resource, discovery))
        assert contains(live["spec"], resource["inputs"]["spec"]), resource["urn"]


@pytest.mark.parametrize("stack", STACKS)
def test_edge_custom_resources_are_stored_whole(
    deployed: dict[str, Deployment], cluster: Cluster, project: Project, stack: str
) -> None:
    """Gateway API, Envoy Gateway and cert-manager objects: accepted by their CRDs (schemas
    and CEL rules) and stored as sent. (A field a schema does not declare, a misspelt TLS or
    rate-limit setting, fails the deploy itself: server-side apply refuses it, "field not
    declared in schema", as seen once by adding spec.tls.minimumVersion.)"""
    groups = ("gateway.networking.k8s.io/", "gateway.envoyproxy.io/", "cert-manager.io/")
    edge = [
        r
        for r in state_resources(project, stack)
        if r["type"].startswith(tuple(f"kubernetes:{g}" for g in groups))
    ]
    assert {r["type"].rsplit(":", 1)[1] for r in edge} >= {
        "Gateway",
        "HTTPRoute",
        "ClientTrafficPolicy",
        "BackendTrafficPolicy",
        "HTTPRouteFilter",
        "Certificate",
    }
    discovery = api_resources(cluster)
    for resource in edge:
        live = cluster.api.get(live_path(cluster, resource, discovery))
        assert contains(live["spec"], resource["inputs"]["spec"]), resource["urn"]


@pytest.mark.parametrize("stack", STACKS)
def test_namespace_enforces_restricted_and_admitted_every_pod(
    deployed: dict[str, Deployment], cluster: Cluster, stack: str
) -> None:
    ns = deployed[stack].namespace
    labels = cluster.api.get(f"/api/v1/namespaces/{ns}")["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"
    # The level is enforced, not just labelled: a root pod is refused (server-side dry run).
    with pytest.raises(ApiError) as refused:
        cluster.api.request(
            "POST",
            f"/api/v1/namespaces/{ns}/pods",
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": "psa-probe"},
                "spec": {"containers": [{"name": "c", "image": "busybox:1.37"}]},
            },
            params={"dryRun": "All"},
        )
    assert refused.value.status == 403
    assert 'violates PodSecurity "restricted:' in str(refused.value)
    # Every controller got every pod it asked for: no creation was refused (admission).
    events = cluster.api.items(f"/api/v1/namespaces/{ns}/events")
    failed = [
        f"{e['involvedObject']['kind']}/{e['involvedObject']['name']}: {e['message']}"
        for e in events
        if e["reason"] == "FailedCreate"
    ]
    assert failed == []
    for e in events:
        if e["type"] == "Warning":
            print(f"[deploy] {ns} warning event: {e['reason']}: {e['message']}")
    for deployment in cluster.api.items(f"/apis/apps/v1/namespaces/{ns}/deployments"):
        status = deployment["status"]
        assert status.get("availableReplicas") == deployment["spec"]["replicas"], status
    assert all(is_ready(p) or p["status"]["phase"] == "Succeeded" for p in pods(cluster, ns))


@pytest.mark.parametrize("stack", STACKS)
def test_unchanged_program_changes_nothing(
    deployed: dict[str, Deployment], project: Project, stack: str
) -> None:
    # against the stored state, then against the live objects (refresh), then a real update
    for extra in [[], ["--refresh"]]:
        preview = pulumi(
            project, "preview", "--expect-no-changes", *extra, "--stack", stack, check=False
        )
        assert preview.returncode == 0, preview.stdout + preview.stderr
        for word in ["to create", "to update", "to delete", "to replace"]:
            assert word not in preview.stdout
    again = pulumi(project, "up", "--yes", "--expect-no-changes", "--stack", stack, check=False)
    assert again.returncode == 0, again.stdout + again.stderr


def test_destroying_preprod_leaves_prod_and_the_nodes_alone(
    deployed: dict[str, Deployment], cluster: Cluster, project: Project
) -> None:
    discovery = api_resources(cluster)
    preprod = [(r, live_path(cluster, r, discovery)) for r in state_resources(project, "preprod")]
    prod_ns = deployed["prod"].namespace
    prod_pods_before = {p["metadata"]["uid"] for p in pods(cluster, prod_ns)}
    # The keys and the data are protected: a plain destroy is refused before it deletes
    # anything; a deliberate one unprotects first (runbooks/state-safety.md).
    refused = pulumi(project, "destroy", "--yes", "--stack", "preprod", check=False)
    assert refused.returncode != 0
    assert "protected" in refused.stdout + refused.stderr
    assert couchdb_statefulset(cluster, deployed["preprod"].namespace)  # nothing deleted
    pulumi(project, "state", "unprotect", "--all", "--yes", "--stack", "preprod")
    start = time.monotonic()
    pulumi(project, "destroy", "--yes", "--stack", "preprod")
    print(f"[deploy] pulumi destroy --stack preprod: {time.monotonic() - start:.1f}s")

    # what preprod owned is gone (or going), but for what it marks retainOnDelete
    left = []
    for resource, path in preprod:
        live = cluster.api.get_or_none(path)
        if (
            live
            and not live["metadata"].get("deletionTimestamp")
            and not resource.get("retainOnDelete")
        ):
            left.append(resource["urn"])
    assert left == []
    assert cluster.api.get_or_none("/apis/scheduling.k8s.io/v1/priorityclasses/onboarding-prod")

    prod_pods_after = pods(cluster, prod_ns)
    assert {p["metadata"]["uid"] for p in prod_pods_after} == prod_pods_before
    assert all(is_ready(p) or p["status"]["phase"] == "Succeeded" for p in prod_pods_after)
    sts = couchdb_statefulset(cluster, prod_ns)
    assert sts["status"]["readyReplicas"] == 5
    for name in NODES:
        live = node(cluster, name)
        assert live["metadata"]["labels"][POOL_LABEL] == POOL_VALUE
        assert {"key": POOL_LABEL, "value": POOL_VALUE, "effect": "NoSchedule"} in live["spec"][
            "taints"
        ]
    preview = pulumi(project, "preview", "--expect-no-changes", "--stack", "prod", check=False)
    assert preview.returncode == 0, preview.stdout + preview.stderr


def test_destroy_kept_what_preprod_marks_retain_on_delete(
    deployed: dict[str, Deployment], cluster: Cluster
) -> None:
    """Runs after the destroy above: the backup volume must still be there."""
    ns = deployed["preprod"].namespace
    pvc = cluster.api.get_or_none(f"/api/v1/namespaces/{ns}/persistentvolumeclaims/couchdb-backups")
    assert pvc is not None and not pvc["metadata"].get("deletionTimestamp")
