"""The program itself refuses an unsafe deploy, whatever script (or none) runs the CLI: the real
Pulumi CLI, language host and program, on a copy of the project, with a kubeconfig present and
ONBOARDING_RENDER unset (deploy mode). Each refusal comes from infra/config.py before any
cluster is contacted (the kubeconfig points at a closed loopback port), with a message naming
what to set; the same stack previews in render mode, so nothing else is in the way.

Skipped, with the reason, when the toolchain or the virtualenv is not there (the import below).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests.integration import test_pulumi_cli as cli

pytestmark = pytest.mark.integration

project = cli.project
PUBLIC = "onboarding-local-dev-only-not-a-secret"


def deploy_env(env: dict[str, str], base: Path, *contexts: str) -> dict[str, str]:
    kubeconfig = base / "kubeconfig"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "current-context": contexts[0],
                "clusters": [{"name": "closed", "cluster": {"server": "https://127.0.0.1:9"}}],
                "users": [{"name": "nobody", "user": {"token": "none"}}],
                "contexts": [
                    {"name": c, "context": {"cluster": "closed", "user": "nobody"}}
                    for c in contexts
                ],
            }
        )
    )
    deploy = {k: v for k, v in env.items() if k != "ONBOARDING_RENDER"}
    deploy["KUBECONFIG"] = str(kubeconfig)
    return deploy


def test_the_program_refuses_a_deploy_with_the_public_passphrase(
    project: tuple[Path, dict[str, str]],
) -> None:
    copy, env = project
    public = {**deploy_env(env, copy.parent, "onboarding-prod"), "PULUMI_CONFIG_PASSPHRASE": PUBLIC}
    cli.pulumi(copy, public, "stack", "init", "prod", "--secrets-provider", "passphrase")
    refused = cli.pulumi(copy, public, "preview", "--stack", "prod", check=False)
    out = refused.stdout + refused.stderr
    assert refused.returncode != 0
    assert "refusing to deploy: the state's secrets are encrypted with the public" in out
    assert "PULUMI_CONFIG_PASSPHRASE_FILE" in out
    # Render mode, same stack, same passphrase: previews (the refusal is the deploy's only).
    rendered = cli.pulumi(
        copy, env | {"PULUMI_CONFIG_PASSPHRASE": PUBLIC}, "preview", "--stack", "prod"
    )
    assert "refusing" not in rendered.stdout + rendered.stderr


def test_the_program_refuses_a_kubeconfig_without_the_stack_context(
    project: tuple[Path, dict[str, str]],
) -> None:
    copy, env = project
    deploy = deploy_env(env, copy.parent, "laptop", "onboarding-prod")
    cli.pulumi(copy, deploy, "stack", "init", "preprod", "--secrets-provider", "passphrase")
    refused = cli.pulumi(copy, deploy, "preview", "--stack", "preprod", check=False)
    out = refused.stdout + refused.stderr
    assert refused.returncode != 0
    assert "onboarding:kubeContext is 'onboarding-preprod'" in out
    assert "has no such context (it has: laptop, onboarding-prod)" in out

    cli.pulumi(copy, deploy, "config", "rm", "onboarding:kubeContext", "--stack", "preprod")
    try:
        refused = cli.pulumi(copy, deploy, "preview", "--stack", "preprod", check=False)
        out = refused.stdout + refused.stderr
        assert refused.returncode != 0
        assert "stack preprod names no kube context" in out
    finally:
        cli.pulumi(
            copy,
            deploy,
            "config",
            "set",
            "onboarding:kubeContext",
            "onboarding-preprod",
            "--stack",
            "preprod",
        )
