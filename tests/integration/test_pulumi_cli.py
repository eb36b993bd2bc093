"""The real Pulumi CLI, language host and providers (scripts/bootstrap-toolchain.sh) run the real
program in render mode, on a copy of the project with its own local backend, so neither the
developer's .pulumi-state/ nor rendered/ is touched.

Skipped, with the reason, only when the toolchain or the virtualenv is not there.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from infra.settings import parse_settings
from tests.integration.manifest_check import (
    bootstrap_crd_dirs,
    load_manifests,
    stack_kubernetes_version,
    validate_directory,
)
from tests.unit.edge_expect import expected_reach, problems
from tests.unit.edge_reach import reachable
from tests.unit.harness import raw_stack

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
BOOTSTRAP = REPO / "scripts" / "bootstrap-toolchain.sh"
PULUMI_VERSION = next(
    line.split("=", 1)[1].strip()
    for line in BOOTSTRAP.read_text().splitlines()
    if line.startswith("PULUMI_VERSION=")
)
CACHE = Path(os.environ.get("TOOLCHAIN_CACHE", Path.home() / ".cache" / "onboarding-toolchain"))
BIN = CACHE / f"pulumi-{PULUMI_VERSION}" / "bin"
NEEDED = [
    "pulumi",
    "pulumi-language-python",
    "pulumi-language-python-exec",
    "pulumi-resource-kubernetes",
    "pulumi-resource-random",
]
STACKS = ["prod", "preprod"]
PASSPHRASE = "integration-test-only"

_missing = [name for name in NEEDED if not (BIN / name).is_file()]
if _missing:
    pytest.skip(
        f"Pulumi toolchain not built ({', '.join(_missing)} missing in {BIN}): "
        "run scripts/bootstrap-toolchain.sh",
        allow_module_level=True,
    )
if not (REPO / ".venv" / "bin" / "python").is_file():
    pytest.skip("no .venv: run scripts/setup.sh", allow_module_level=True)


@dataclass
class Run:
    stack: str
    project: Path
    rendered: Path
    outputs: dict[str, Any]
    up_log: str


def _env(state: Path) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("PULUMI_") and k not in {"KUBECONFIG", "VIRTUAL_ENV"}
    }
    env.update(
        PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}",
        PULUMI_HOME=str(state.parent / "pulumi-home"),
        PULUMI_BACKEND_URL=f"file://{state}",
        PULUMI_CONFIG_PASSPHRASE=PASSPHRASE,
        PULUMI_SKIP_UPDATE_CHECK="true",
        PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION="true",
        ONBOARDING_RENDER="1",
    )
    return env


def pulumi(
    project: Path, env: dict[str, str], *args: str, check: bool = True
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [str(BIN / "pulumi"), "--non-interactive", *args],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"pulumi {' '.join(args)} exited {result.returncode}\n{result.stdout}\n{result.stderr}"
        )
    return result


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, dict[str, str]]]:
    """A copy of the program (same code, same stack files) with its own state folder."""
    base = tmp_path_factory.mktemp("pulumi-cli")
    copy = base / "project"
    copy.mkdir()
    shutil.copy2(REPO / "Pulumi.yaml", copy / "Pulumi.yaml")
    for stack in STACKS:
        # The test has its own passphrase: a committed salt (made with another) must not be reused.
        lines = (REPO / f"Pulumi.{stack}.yaml").read_text().splitlines(keepends=True)
        (copy / f"Pulumi.{stack}.yaml").write_text(
            "".join(line for line in lines if not line.startswith("encryptionsalt:"))
        )
    for package in ["infra", "components", "stacks"]:
        shutil.copytree(
            REPO / package, copy / package, ignore=shutil.ignore_patterns("__pycache__")
        )
    for optional in ["monitoring", "supervision"]:
        if (REPO / optional).is_dir():
            shutil.copytree(
                REPO / optional, copy / optional, ignore=shutil.ignore_patterns("__pycache__")
            )
    (copy / ".venv").symlink_to(REPO / ".venv")
    state = base / "state"
    state.mkdir()
    yield copy, _env(state)


@pytest.fixture(scope="module")
def runs(project: tuple[Path, dict[str, str]]) -> dict[str, Run]:
    copy, env = project
    result: dict[str, Run] = {}
    for stack in STACKS:
        pulumi(copy, env, "stack", "init", stack, "--secrets-provider", "passphrase")
        up = pulumi(copy, env, "up", "--yes", "--stack", stack)
        outputs = json.loads(
            pulumi(
                copy, env, "stack", "output", "--json", "--show-secrets", "--stack", stack
            ).stdout
        )
        result[stack] = Run(stack, copy, copy / "rendered" / stack, outputs, up.stdout)
    return result


def manifests(run: Run, kind: str) -> list[dict[str, Any]]:
    return [m for _, m in load_manifests(run.rendered) if m.get("kind") == kind]


def stack_config(stack: str) -> dict[str, Any]:
    config: dict[str, Any] = yaml.safe_load((REPO / f"Pulumi.{stack}.yaml").read_text())["config"]
    return config


@pytest.mark.parametrize("stack", STACKS)
def test_every_rendered_manifest_validates_strictly(runs: dict[str, Run], stack: str) -> None:
    run = runs[stack]
    report = validate_directory(
        run.rendered, stack_kubernetes_version(REPO, stack), bootstrap_crd_dirs(REPO)
    )
    assert report.errors == []
    assert report.builtin > 20, report.by_kind
    # Gateway, 2 HTTPRoutes, Certificate, 2 Envoy Gateway policies, 2 PodMonitors, Probe,
    # PrometheusRule at least: each against its CRD's schema
    assert report.schema_checked >= 10, report.by_kind
    for kind in [
        "StatefulSet",
        "Service",
        "Secret",
        "NetworkPolicy",
        "PodDisruptionBudget",
        "CronJob",
    ]:
        assert report.by_kind.get(kind), f"no {kind} rendered for {stack}: {report.by_kind}"


@pytest.mark.parametrize("stack", STACKS)
def test_the_internet_reaches_exactly_the_public_paths(runs: dict[str, Run], stack: str) -> None:
    """From the rendered files: the Gateway's listeners, through the HTTPRoutes, to Services and
    the containerPorts their selectors reach, plus every LoadBalancer/NodePort Service, host
    port and Ingress: exactly the host's public paths on the site's public port."""
    settings = parse_settings(raw_stack(stack))
    reach = reachable(m for _, m in load_manifests(runs[stack].rendered))
    assert problems(reach, settings) == []
    assert reach == expected_reach(settings)


@pytest.mark.parametrize("stack", STACKS)
def test_couchdb_statefulset_spreads_one_pod_per_node(runs: dict[str, Run], stack: str) -> None:
    run = runs[stack]
    (sts,) = [s for s in manifests(run, "StatefulSet") if "couchdb" in s["metadata"]["name"]]
    expected = stack_config(stack)["onboarding:couchdb"]["replicas"]
    assert sts["spec"]["replicas"] == expected
    if stack == "prod":
        assert expected == 5
    required = sts["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"][
        "requiredDuringSchedulingIgnoredDuringExecution"
    ]
    assert any(term["topologyKey"] == "kubernetes.io/hostname" for term in required)
    selector = sts["spec"]["selector"]["matchLabels"]
    for term in required:
        labels = term["labelSelector"]["matchLabels"]
        assert labels.items() <= sts["spec"]["template"]["metadata"]["labels"].items()
        assert labels.items() <= selector.items() or selector.items() <= labels.items()


GENERATED_OUTPUTS = {"result", "bcryptHash", "hex", "b64Std", "b64Url", "base64", "dec"}
SECRET_SIG = "4dabf18193072939515e22adb298388d"  # marks a secret value in an exported state


@dataclass(frozen=True)
class Generated:
    resource: str
    output: str
    secret: bool  # kept encrypted in the state


def generated_values(run: Run) -> dict[str, Generated]:
    """Every value pulumi-random generated for the stack (from its decrypted state), with where
    it comes from and whether the state keeps it as a secret or in plain text."""
    env = _env(run.project.parent / "state")
    state = json.loads(
        pulumi(run.project, env, "stack", "export", "--show-secrets", "--stack", run.stack).stdout
    )
    values: dict[str, Generated] = {}
    for resource in state["deployment"].get("resources", []):
        if not resource["type"].startswith("random:index/"):
            continue
        for key, raw in (resource.get("outputs") or {}).items():
            is_secret = isinstance(raw, dict) and SECRET_SIG in raw
            value = json.loads(raw["plaintext"]) if is_secret else raw
            if key in GENERATED_OUTPUTS and isinstance(value, str) and len(value) >= 12:
                name = resource["urn"].split("::")[-1]
                values[value] = Generated(name, key, is_secret)
    return values


def rendered_secret_values(run: Run) -> set[str]:
    values: set[str] = set()
    for secret in manifests(run, "Secret"):
        for value in (secret.get("data") or {}).values():
            values.add(base64.b64decode(value).decode("utf-8", "replace"))
        values.update((secret.get("stringData") or {}).values())
    return values


def test_no_secret_value_outside_rendered(runs: dict[str, Run]) -> None:
    """The generated secrets are in the rendered Secrets (render mode writes them in plain
    text), and nowhere else: not in the state (encrypted), not in any other file."""
    for run in runs.values():
        password = run.outputs["couchdbAdminPassword"]
        assert isinstance(password, str) and len(password) >= 16
        assert password in rendered_secret_values(run)
        needles = {value for value, g in generated_values(run).items() if g.secret}
        assert password in needles and len(needles) >= 6, len(needles)
        leaks = []
        for path in run.project.parent.rglob("*"):
            if path.is_symlink() or not path.is_file() or run.project / "rendered" in path.parents:
                continue
            text = path.read_bytes().decode("utf-8", "replace")
            leaks += [f"{path}: {v[:4]}..." for v in needles if v in text]
        assert leaks == []
        tracked = subprocess.run(
            ["git", "grep", "-l", "-F", password],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=False,
        )
        assert tracked.stdout == ""


def test_every_random_value_put_in_a_secret_is_secret_in_the_state(runs: dict[str, Run]) -> None:
    """A generated value that lands in a Kubernetes Secret must be a secret in the state too
    (RandomId's outputs, for one, are not: its id is its b64Url value)."""
    for run in runs.values():
        blobs = "\n".join(rendered_secret_values(run))
        plain = sorted(
            f"{g.resource}.{g.output}"
            for value, g in generated_values(run).items()
            if not g.secret and value in blobs
        )
        assert plain == [], f"{run.stack}: in a Secret but plain text in the state: {plain}"


@pytest.mark.parametrize("stack", STACKS)
def test_unchanged_program_previews_no_changes_and_keeps_secrets(
    runs: dict[str, Run], stack: str
) -> None:
    run = runs[stack]
    copy = run.project
    env = _env(copy.parent / "state")
    preview = pulumi(copy, env, "preview", "--expect-no-changes", "--stack", stack, check=False)
    assert preview.returncode == 0, preview.stdout + preview.stderr
    assert "unchanged" in preview.stdout
    for word in ["to create", "to update", "to delete", "to replace"]:
        assert word not in preview.stdout
    pulumi(copy, env, "up", "--yes", "--stack", stack)
    again = json.loads(
        pulumi(copy, env, "stack", "output", "--json", "--show-secrets", "--stack", stack).stdout
    )
    assert again["couchdbAdminPassword"] == run.outputs["couchdbAdminPassword"]


def test_toolchain_versions() -> None:
    env = _env(Path("/nonexistent/state"))
    assert (
        subprocess.run(
            [str(BIN / "pulumi"), "version"], env=env, capture_output=True, text=True, check=True
        ).stdout.strip()
        == f"v{PULUMI_VERSION}"
    )
    host = subprocess.run(
        [str(BIN / "pulumi-language-python"), "-version"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert host.stdout.strip() == PULUMI_VERSION
    sdk_plugins = {}
    for plugin_json in (REPO / ".venv").glob("lib/python*/site-packages/*/pulumi-plugin.json"):
        data = json.loads(plugin_json.read_text())
        # Only resource SDKs name a provider plugin; pulumi_policy's file is {"resource": false}.
        if data.get("resource", True) and "name" in data:
            sdk_plugins[data["name"]] = data["version"]
    random = subprocess.run(
        [str(BIN / "pulumi-resource-random"), "-version"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert random.stdout.strip() == sdk_plugins["random"]
