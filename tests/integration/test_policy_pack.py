"""The policy pack (policies/) run by the real Pulumi CLI through the project's own language
host (scripts/toolchain/langhost, RunPlugin): `pulumi preview --policy-pack policies` passes
on both stacks, and fails, naming the rule, on programs that break the rules.

Render mode throughout, each run on a copy with its own local backend: no cluster, and
neither .pulumi-state/ nor rendered/ is touched.
"""

from __future__ import annotations

import json
import shutil
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.test_pulumi_cli import REPO, _env, pulumi

pytestmark = pytest.mark.integration

PACK = REPO / "policies"
PACK_NAME = "onboarding-platform"


@pytest.fixture(scope="module")
def program(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, dict[str, str]]]:
    """A copy of the program and stack files, with both stacks created in its own backend."""
    base = tmp_path_factory.mktemp("policy-pack")
    copy = base / "project"
    copy.mkdir()
    shutil.copy2(REPO / "Pulumi.yaml", copy / "Pulumi.yaml")
    for stack in ("prod", "preprod"):
        lines = (REPO / f"Pulumi.{stack}.yaml").read_text().splitlines(keepends=True)
        (copy / f"Pulumi.{stack}.yaml").write_text(
            "".join(line for line in lines if not line.startswith("encryptionsalt:"))
        )
    for package in ["infra", "components", "stacks", "monitoring", "supervision"]:
        if (REPO / package).is_dir():
            shutil.copytree(
                REPO / package, copy / package, ignore=shutil.ignore_patterns("__pycache__")
            )
    (copy / ".venv").symlink_to(REPO / ".venv")
    state = base / "state"
    state.mkdir()
    env = _env(state)
    for stack in ("prod", "preprod"):
        pulumi(copy, env, "stack", "init", stack, "--secrets-provider", "passphrase")
    yield copy, env


def _policy_section(output: str) -> str:
    """The `Policies:` block of a preview's output."""
    assert "Policies:" in output, output
    return output.split("Policies:", 1)[1].split("\nDiagnostics:", 1)[0]


@pytest.mark.parametrize("stack", ["prod", "preprod"])
def test_the_preview_of_each_stack_passes_the_pack(
    program: tuple[Path, dict[str, str]], stack: str
) -> None:
    copy, env = program
    result = pulumi(copy, env, "preview", "--stack", stack, "--policy-pack", str(PACK))
    policies = _policy_section(result.stdout)
    # The pack was loaded and ran (its name is listed), and nothing was reported.
    assert f"✅ {PACK_NAME}@v" in policies
    assert "[mandatory]" not in policies and "[advisory]" not in policies


def test_the_regions_come_from_the_policy_config(
    program: tuple[Path, dict[str, str]], tmp_path: Path
) -> None:
    """Allowing only Lyon fails prod, whose nodes and pods are in Paris: the config reaches
    the rules, and the rules see the program's nodes and workloads."""
    copy, env = program
    config = tmp_path / "lyon-only.json"
    lyon = {"allowedRegions": ["fr-lyo"]}
    config.write_text(
        json.dumps(
            {
                "nodes-and-volumes-in-allowed-regions": lyon,
                "workloads-pinned-to-allowed-regions": lyon,
            }
        )
    )
    result = pulumi(
        copy,
        env,
        "preview",
        "--stack",
        "prod",
        "--policy-pack",
        str(PACK),
        "--policy-pack-config",
        str(config),
        check=False,
    )
    assert result.returncode != 0
    policies = _policy_section(result.stdout)
    assert "nodes-and-volumes-in-allowed-regions" in policies
    assert "NodePatch onb-node-1 is labelled with region fr-par" in policies
    assert "StatefulSet onboarding-prod/couchdb: its pods may run outside" in policies


BAD_PROGRAM = textwrap.dedent(
    '''
    """Breaks the rules on purpose (tests/integration/test_policy_pack.py)."""

    import os

    import pulumi
    import pulumi_kubernetes as k8s

    render = k8s.Provider("render", render_yaml_to_directory=os.environ["RENDER_DIR"])
    opts = pulumi.ResourceOptions(provider=render)
    couchdb = {"app.kubernetes.io/name": "couchdb", "app.kubernetes.io/instance": "couchdb-bad"}
    ns = "onboarding-bad"

    k8s.core.v1.Service(
        "couchdb-public",
        metadata={"name": "couchdb", "namespace": ns},
        spec={"type": "LoadBalancer", "selector": couchdb, "ports": [{"port": 5984}]},
        opts=opts,
    )
    k8s.core.v1.ConfigMap(
        "app-config",
        metadata={"name": "app-config", "namespace": ns},
        data={"settings.ini": "[couchdb]\\npassword = hunter2\\n"},
        opts=opts,
    )
    k8s.apiextensions.CustomResource(
        "route",
        api_version="gateway.networking.k8s.io/v1",
        kind="HTTPRoute",
        metadata={"name": "public", "namespace": ns},
        spec={
            "parentRefs": [{"name": "edge"}],
            "rules": [{"backendRefs": [{"name": "couchdb", "port": 5984}]}],
        },
        opts=opts,
    )
    '''
)


@pytest.fixture
def bad_project(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """A scratch project (same virtualenv, same CLI and language host) whose resources break
    the rules: a public CouchDB Service, a password in a ConfigMap, a route to CouchDB."""
    project = tmp_path / "bad"
    project.mkdir()
    (project / "Pulumi.yaml").write_text(
        "name: policy-bad\n"
        "runtime:\n  name: python\n  options:\n"
        f"    toolchain: pip\n    virtualenv: {REPO / '.venv'}\n"
    )
    (project / "__main__.py").write_text(BAD_PROGRAM)
    state = tmp_path / "state"
    state.mkdir()
    env = {**_env(state), "RENDER_DIR": str(tmp_path / "rendered")}
    pulumi(project, env, "stack", "init", "bad", "--secrets-provider", "passphrase")
    return project, env


def test_a_program_that_breaks_the_rules_fails_the_preview_naming_each_rule(
    bad_project: tuple[Path, dict[str, str]],
) -> None:
    project, env = bad_project
    # Without the pack the same program previews fine: what fails below is the pack.
    pulumi(project, env, "preview", "--stack", "bad")
    result = pulumi(
        project, env, "preview", "--stack", "bad", "--policy-pack", str(PACK), check=False
    )
    assert result.returncode != 0
    policies = _policy_section(result.stdout)
    assert f"❌ {PACK_NAME}@v" in policies
    for rule, message in [
        ("couchdb-service-internal-only", "Service onboarding-bad/couchdb selects CouchDB pods"),
        ("no-secret-in-configmap", "ConfigMap onboarding-bad/app-config"),
        # a stack rule: run by the engine once every resource is known
        ("couchdb-not-routed-from-edge", "HTTPRoute onboarding-bad/public sends traffic"),
    ]:
        assert f"[mandatory]  {rule}" in policies, policies
        assert message in policies, policies
