"""Fixtures for the real-pods tests (marker `realpods`): a local Kubernetes 1.34 cluster whose
five nodes are containers running containerd, runc, a kubelet and kube-proxy built from Go
modules (scripts/realpods/up.sh), both stacks deployed on it with the real `pulumi up`, and
helpers that run short programs in pods of the cluster.

Everything the tests say about CouchDB is asked from INSIDE the cluster, by a pod labelled as a
CouchDB client (the only peers the environment's NetworkPolicies let in), running
tests/realpods/probe.py in the ops image with the admin credentials and the CA the program's own
Secrets hold: the same path the setup Job, the purge and the backup take.

Skips, each with its reason: no docker daemon binary or not root (the node containers); the
node binaries, the images of the ops tool and the web app stand-in not built (`make nodes
images`); the CouchDB image absent from the image archive (it is in no registry reachable here:
see scripts/realpods/README.md) for the tests that need CouchDB.
"""

from __future__ import annotations

import base64
import importlib.util
import json
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CACHE = Path(os.environ.get("TOOLCHAIN_CACHE", Path.home() / ".cache" / "onboarding-toolchain"))


def _pin(script: str, name: str) -> str:
    return next(
        line.split("=", 1)[1].strip()
        for line in (REPO / "scripts" / script).read_text().splitlines()
        if line.startswith(f"{name}=")
    )


PULUMI_BIN = CACHE / f"pulumi-{_pin('bootstrap-toolchain.sh', 'PULUMI_VERSION')}" / "bin"
PULUMI_NEEDED = [
    "pulumi",
    "pulumi-language-python",
    "pulumi-language-python-exec",
    "pulumi-resource-kubernetes",
    "pulumi-resource-random",
]
_spec = importlib.util.spec_from_file_location("kubeapi", REPO / "scripts" / "kube" / "kubeapi.py")
assert _spec is not None and _spec.loader is not None
kubeapi = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(kubeapi)
KubeAPI = kubeapi.KubeAPI
ARCHIVE = Path(
    os.environ.get("ONBOARDING_IMAGE_ARCHIVE", Path.home() / ".cache" / "onboarding-images")
)
# On a machine with a registry the images are pulled by the names the stack files give, and
# none is needed in the archive (scripts/realpods/README.md).
PULL = os.environ.get("ONBOARDING_REALPODS_PULL") == "1"
CLUSTER_NAME = os.environ.get("ONBOARDING_REALPODS_NAME", "onboarding-rp")
# Keep the cluster (and the deployments) after the session, to look at it by hand.
KEEP = os.environ.get("ONBOARDING_REALPODS_KEEP") == "1"
PASSPHRASE = "realpods-test-only"
# prod first: it owns the dedicated nodes' pool label and taint (managesNodes: true), which
# every pod of both environments selects and tolerates; preprod on unlabelled nodes would wait.
STACKS_IN_ORDER = ["prod", "preprod"]
NODES = [f"onb-node-{i}" for i in range(1, 6)]
POOL_TOLERATION = {
    "key": "onboarding.example.fr/dedicated",
    "operator": "Equal",
    "value": "onboarding",
    "effect": "NoSchedule",
}
CLIENT_LABEL = "onboarding.example.fr/couchdb-client"
PROBE = (Path(__file__).parent / "probe.py").read_text()


def stack_config(stack: str) -> dict[str, Any]:
    config: dict[str, Any] = yaml.safe_load((REPO / f"Pulumi.{stack}.yaml").read_text())["config"]
    return config


def image_of(stack: str, key: str) -> str:
    return str(stack_config(stack)[f"onboarding:{key}"]["image"])


COUCHDB_IMAGE = image_of("prod", "couchdb")
OPS_IMAGE = image_of("prod", "ops")
WEB_IMAGE = image_of("prod", "webapp")


def archived(image: str) -> Path | None:
    """The archive (a `docker save` tar) holding `image`, from the index scripts write beside."""
    for tar in sorted(ARCHIVE.glob("*.tar")):
        manifest = subprocess.run(
            ["tar", "-xOf", str(tar), "manifest.json"], capture_output=True, check=False
        )
        if manifest.returncode != 0:
            continue
        tags = {t for entry in json.loads(manifest.stdout) for t in entry.get("RepoTags") or []}
        short = image.removeprefix("docker.io/").removeprefix("library/")
        if image in tags or short in tags:
            return tar
    return None


def require_image(image: str, why: str) -> None:
    if PULL:
        return
    if archived(image) is None:
        pytest.skip(
            f"{image} is not in the image archive {ARCHIVE} ({why}); on a machine with a "
            "registry set ONBOARDING_REALPODS_PULL=1 (scripts/realpods/README.md)"
        )


def _prerequisites() -> str | None:
    if os.geteuid() != 0:
        return "needs root (node containers, routes to the pod network)"
    if shutil.which("dockerd") is None:
        return "no dockerd (Debian's docker.io): scripts/realpods/up.sh installs it as root"
    missing = [f"{PULUMI_BIN}/{n}" for n in PULUMI_NEEDED if not (PULUMI_BIN / n).is_file()]
    if missing:
        return f"Pulumi toolchain not built ({', '.join(missing)}): make toolchain"
    return None


_why = _prerequisites()
if _why:
    pytest.skip(_why, allow_module_level=True)


# ---------------------------------------------------------------------------------------------
# the cluster


@dataclass
class Cluster:
    kubeconfig: Path
    api: Any
    start_seconds: float
    home: Path

    def wait(
        self, what: str, check: Callable[[], Any], timeout: float = 300, every: float = 2
    ) -> Any:
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            try:
                last = check()
            except Exception as exc:  # reported if it never succeeds
                last = exc
            else:
                if last:
                    return last
            time.sleep(every)
        raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}: {last!r}")

    def pods(self, namespace: str, **selector: str) -> list[dict[str, Any]]:
        params = {"labelSelector": ",".join(f"{k}={v}" for k, v in selector.items())}
        items: list[dict[str, Any]] = self.api.items(
            f"/api/v1/namespaces/{namespace}/pods", **params
        )
        return items

    def couchdb_pods(self, namespace: str) -> list[dict[str, Any]]:
        return sorted(
            self.pods(namespace, **{"app.kubernetes.io/name": "couchdb"}),
            key=lambda p: str(p["metadata"]["name"]),
        )

    def secret(self, namespace: str, name: str, key: str) -> str:
        data = self.api.get(f"/api/v1/namespaces/{namespace}/secrets/{name}")["data"]
        return base64.b64decode(data[key]).decode()

    def logs(self, namespace: str, pod: str) -> str:
        response = self.api.session.get(
            f"{self.api.server}/api/v1/namespaces/{namespace}/pods/{pod}/log",
            timeout=self.api.timeout,
        )
        response.raise_for_status()
        return str(response.text)

    def run_pod(
        self,
        namespace: str,
        name: str,
        spec: dict[str, Any],
        *,
        labels: dict[str, str] | None = None,
        timeout: float = 300,
        wait: bool = True,
    ) -> tuple[str, str, int | None]:
        """Creates a pod (restartPolicy Never); unless `wait` is False, waits for it to end and
        returns (name, logs, exit code). The pod is left for the caller to look at."""
        pod_name = f"{name}-{uuid.uuid4().hex[:6]}"
        body = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": pod_name, "namespace": namespace, "labels": labels or {}},
            "spec": {"restartPolicy": "Never", "automountServiceAccountToken": False, **spec},
        }
        self.api.create(f"/api/v1/namespaces/{namespace}/pods", body)
        if not wait:
            return pod_name, "", None
        return pod_name, *self.wait_pod(namespace, pod_name, timeout)

    def wait_pod(self, namespace: str, pod: str, timeout: float = 300) -> tuple[str, int | None]:
        path = f"/api/v1/namespaces/{namespace}/pods/{pod}"

        def ended() -> dict[str, Any] | None:
            status = self.api.get(path)["status"]
            return status if status.get("phase") in {"Succeeded", "Failed"} else None

        status = self.wait(f"pod {namespace}/{pod} to end", ended, timeout)
        terminated = (
            (status.get("containerStatuses") or [{}])[0].get("state", {}).get("terminated", {})
        )
        return self.logs(namespace, pod), terminated.get("exitCode")

    def trigger_cronjob(self, namespace: str, cronjob: str) -> str:
        """What `kubectl create job --from=cronjob/NAME` does: a Job from the CronJob's
        template, owned by it, annotated as instantiated by hand."""
        cj = self.api.get(f"/apis/batch/v1/namespaces/{namespace}/cronjobs/{cronjob}")
        template = cj["spec"]["jobTemplate"]
        name = f"{cronjob[:40]}-manual-{uuid.uuid4().hex[:5]}"
        job = {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {
                "name": name,
                "namespace": namespace,
                "labels": template.get("metadata", {}).get("labels", {}),
                "annotations": {"cronjob.kubernetes.io/instantiate": "manual"},
                "ownerReferences": [
                    {
                        "apiVersion": "batch/v1",
                        "kind": "CronJob",
                        "name": cronjob,
                        "uid": cj["metadata"]["uid"],
                        "controller": True,
                    }
                ],
            },
            "spec": template["spec"],
        }
        self.api.create(f"/apis/batch/v1/namespaces/{namespace}/jobs", job)
        return name

    def wait_job(self, namespace: str, job: str, timeout: float = 600) -> dict[str, Any]:
        path = f"/apis/batch/v1/namespaces/{namespace}/jobs/{job}"

        def done() -> dict[str, Any] | None:
            status: dict[str, Any] = self.api.get(path)["status"]
            for cond in status.get("conditions", []):
                if cond["type"] in {"Complete", "Failed"} and cond["status"] == "True":
                    return status
            return None

        status: dict[str, Any] = self.wait(f"job {namespace}/{job}", done, timeout, every=3)
        return status

    def job_logs(self, namespace: str, job: str) -> str:
        return "\n".join(
            self.logs(namespace, p["metadata"]["name"])
            for p in self.pods(namespace, **{"job-name": job})
        )


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """The real-pods cluster, started once for the session (reused if a healthy one of that name
    runs), stopped at the end unless ONBOARDING_REALPODS_KEEP=1."""
    home = Path(
        os.environ.get("ONBOARDING_REALPODS_HOME", Path.home() / ".cache" / "onboarding-realpods")
    )
    env = {**os.environ, "ONBOARDING_REALPODS_HOME": str(home)}
    start = time.monotonic()
    up = subprocess.run(
        [str(REPO / "scripts" / "realpods" / "up.sh"), CLUSTER_NAME],
        env=env,
        capture_output=True,
        text=True,
        timeout=2400,
        check=False,
    )
    try:
        assert up.returncode == 0, f"scripts/realpods/up.sh failed:\n{up.stderr[-6000:]}"
        kubeconfig = Path(up.stdout.strip().splitlines()[-1])
        elapsed = time.monotonic() - start
        print(f"\n[realpods] cluster up in {elapsed:.1f}s\n{up.stderr[-3000:]}")
        yield Cluster(kubeconfig, KubeAPI(kubeconfig), elapsed, home / CLUSTER_NAME)
    finally:
        if not KEEP:
            subprocess.run(
                [str(REPO / "scripts" / "realpods" / "down.sh"), CLUSTER_NAME],
                env=env,
                capture_output=True,
                text=True,
                timeout=600,
                check=False,
            )


# ---------------------------------------------------------------------------------------------
# the program, deployed


@dataclass
class Project:
    path: Path
    env: dict[str, str]
    up_seconds: dict[str, float] = field(default_factory=dict)
    up_logs: dict[str, str] = field(default_factory=dict)

    def pulumi(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [str(PULUMI_BIN / "pulumi"), "--non-interactive", *args],
            cwd=self.path,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=2400,
            check=False,
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"pulumi {' '.join(args)} exited {result.returncode}\n"
                f"{result.stdout[-8000:]}\n{result.stderr[-4000:]}"
            )
        return result


@pytest.fixture(scope="session")
def project(tmp_path_factory: pytest.TempPathFactory, cluster: Cluster) -> Project:
    """A copy of the program with a state of its own and the cluster's kubeconfig, whose
    contexts carry the names the stack files give (onboarding-prod, onboarding-preprod)."""
    # ONBOARDING_REALPODS_STATE keeps the project copy and its state across sessions (with
    # ONBOARDING_REALPODS_KEEP=1 for the cluster): a later session then updates the same stacks.
    kept = os.environ.get("ONBOARDING_REALPODS_STATE")
    base = Path(kept) if kept else tmp_path_factory.mktemp("realpods-pulumi")
    copy = base / "project"
    copy.mkdir(parents=True, exist_ok=True)
    for name in ["Pulumi.yaml", *(f"Pulumi.{s}.yaml" for s in STACKS_IN_ORDER)]:
        shutil.copy2(REPO / name, copy / name)
    for package in ["infra", "components", "stacks", "monitoring", "supervision", "policies"]:
        if (REPO / package).is_dir():
            shutil.copytree(
                REPO / package,
                copy / package,
                ignore=shutil.ignore_patterns("__pycache__"),
                dirs_exist_ok=True,
            )
    if not (copy / ".venv").exists():
        (copy / ".venv").symlink_to(REPO / ".venv")
    state = base / "state"
    state.mkdir(exist_ok=True)
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
    )
    return Project(copy, env)


@pytest.fixture(scope="session")
def deployed(project: Project, cluster: Cluster) -> Project:
    """prod, then preprod, each with the real `pulumi up` of the unchanged stack files."""
    for image, why in [
        (COUCHDB_IMAGE, "built outside the repository from CouchDB's public sources"),
        (OPS_IMAGE, "make images"),
        (WEB_IMAGE, "make images"),
    ]:
        require_image(image, why)
    for stack in STACKS_IN_ORDER:
        if project.pulumi("stack", "select", stack, check=False).returncode != 0:
            project.pulumi("stack", "init", stack, "--secrets-provider", "passphrase")
        start = time.monotonic()
        up = project.pulumi("up", "--yes", "--skip-preview", "--stack", stack)
        project.up_seconds[stack] = time.monotonic() - start
        project.up_logs[stack] = up.stdout
        print(f"[realpods] pulumi up --stack {stack}: {project.up_seconds[stack]:.1f}s")
    return project


# ---------------------------------------------------------------------------------------------
# programs run in the cluster


def outcome(logs: str) -> dict[str, Any]:
    """The result line couchops prints on stdout (`{"operation": ..., "ok": ...}`), found among
    its log lines on stderr: the kubelet's log interleaves both streams in no fixed order."""
    results: list[dict[str, Any]] = []
    for line in logs.splitlines():
        if line.startswith("{") and '"ok"' in line:
            entry = json.loads(line)
            if "ok" in entry and "event" not in entry:
                results.append(entry)
    assert results, f"no couchops result line in:\n{logs[-3000:]}"
    return results[-1]


def probe_spec(
    namespace: str, *args: str, image: str = OPS_IMAGE, wait_seconds: float = 90
) -> dict[str, Any]:
    """A pod spec running probe.py in the ops image as a CouchDB client of the namespace:
    the admin credentials from couchdb-admin, the CA from couchdb-tls (ca.crt only), the
    restricted Pod Security profile the namespace enforces, and the pool's toleration."""
    return {
        "tolerations": [POOL_TOLERATION],
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": 10001,
            "runAsGroup": 10001,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [
            {
                "name": "probe",
                "image": image,
                "command": ["python", "-c", PROBE],
                "args": list(args),
                "env": [
                    {"name": "COUCHDB_URL", "value": f"https://couchdb.{namespace}.svc:6984"},
                    {"name": "COUCHDB_CA_FILE", "value": "/var/run/secrets/couchdb-ca/ca.crt"},
                    {"name": "NAMESPACE", "value": namespace},
                    {"name": "PROBE_WAIT", "value": str(wait_seconds)},
                    *(
                        {
                            "name": name,
                            "valueFrom": {"secretKeyRef": {"name": "couchdb-admin", "key": key}},
                        }
                        for name, key in [
                            ("COUCHDB_ADMIN_USER", "adminUsername"),
                            ("COUCHDB_ADMIN_PASSWORD", "adminPassword"),
                        ]
                    ),
                ],
                "resources": {
                    "requests": {"cpu": "50m", "memory": "64Mi", "ephemeral-storage": "16Mi"},
                    "limits": {"memory": "256Mi", "ephemeral-storage": "64Mi"},
                },
                "securityContext": {
                    "allowPrivilegeEscalation": False,
                    "capabilities": {"drop": ["ALL"]},
                    "readOnlyRootFilesystem": True,
                },
                "volumeMounts": [
                    {"name": "ca", "mountPath": "/var/run/secrets/couchdb-ca", "readOnly": True}
                ],
            }
        ],
        "volumes": [
            {
                "name": "ca",
                "secret": {
                    "secretName": "couchdb-tls",
                    "items": [{"key": "ca.crt", "path": "ca.crt"}],
                },
            }
        ],
    }


def probe(
    cluster: Cluster,
    namespace: str,
    *args: str,
    timeout: float = 300,
    wait: bool = True,
    node: str | None = None,
    client: bool = True,
    wait_seconds: float = 90,
) -> tuple[str, dict[str, Any] | None]:
    """Runs probe.py ARGS in a client pod of `namespace` (on `node` if given); returns (pod,
    the JSON result it printed last). Fails with the pod's log when it exits non-zero. With
    `client` False the pod lacks the CouchDB-client label the NetworkPolicies admit."""
    spec = probe_spec(namespace, *args, wait_seconds=wait_seconds)
    if node:
        spec["nodeName"] = node
    pod, logs, code = cluster.run_pod(
        namespace,
        "realpods-probe",
        spec,
        labels={
            **({CLIENT_LABEL: "true"} if client else {}),
            "app.kubernetes.io/name": "realpods-probe",
        },
        timeout=timeout,
        wait=wait,
    )
    if not wait:
        return pod, None
    assert code == 0, f"probe {args} in {namespace} exited {code}:\n{logs[-4000:]}"
    lines = [line for line in logs.splitlines() if line.startswith("{")]
    assert lines, f"probe {args} printed no result:\n{logs[-4000:]}"
    result: dict[str, Any] = json.loads(lines[-1])
    return pod, result
