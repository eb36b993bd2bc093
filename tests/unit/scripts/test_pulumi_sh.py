"""scripts/pulumi.sh's safe defaults, run for real against a stand-in `pulumi` that records how
it is called: render mode applies at once with the public development passphrase; deploy mode
needs a passphrase that is not the public one, the kube context the stack config names, and a
confirmation (pulumi's own prompt on a terminal, CONFIRM=1 or --yes elsewhere).

The real CLI's side (the program refusing a deploy) is in tests/integration/test_safe_defaults.py.
"""

from __future__ import annotations

import os
import pty
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[3]
PUBLIC = "onboarding-local-dev-only-not-a-secret"
VERSION = next(
    line.split("=", 1)[1].strip()
    for line in (REPO / "scripts" / "bootstrap-toolchain.sh").read_text().splitlines()
    if line.startswith("PULUMI_VERSION=")
)
STUB = """#!/usr/bin/env bash
printf 'CALL %s | PASS=%s\\n' "$*" "${PULUMI_CONFIG_PASSPHRASE-<unset>}" >>"$STUB_LOG"
case "$*" in "stack ls"*) echo '[{"name": "prod"}, {"name": "preprod"}]' ;; esac
exit 0
"""

if not (REPO / ".venv" / "bin" / "python").is_file():
    pytest.skip("no .venv: run scripts/setup.sh", allow_module_level=True)


@dataclass
class Sandbox:
    root: Path
    env: dict[str, str]
    log: Path

    def kubeconfig(self, *contexts: str) -> Path:
        path = self.root / "kubeconfig"
        path.write_text(
            yaml.safe_dump(
                {
                    "current-context": contexts[0],
                    "contexts": [{"name": c, "context": {"cluster": "c"}} for c in contexts],
                    "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:9"}}],
                }
            )
        )
        self.env["KUBECONFIG"] = str(path)
        return path

    def run(self, *args: str, tty: bool = False) -> subprocess.CompletedProcess[str]:
        command = [str(self.root / "scripts" / "pulumi.sh"), *args]
        if not tty:
            return subprocess.run(
                command,
                env=self.env,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
        leader, follower = pty.openpty()
        try:
            done = subprocess.run(
                command,
                env=self.env,
                stdin=follower,
                stdout=follower,
                stderr=subprocess.PIPE,
                text=True,
                timeout=60,
                check=False,
            )
        finally:
            os.close(follower)
            os.close(leader)
        return done

    def calls(self, verb: str) -> list[str]:
        lines = self.log.read_text().splitlines() if self.log.exists() else []
        return [line for line in lines if line.startswith(f"CALL {verb} ")]


@pytest.fixture
def box(tmp_path: Path) -> Sandbox:
    root = tmp_path / "repo"
    (root / "scripts").mkdir(parents=True)
    for name in ["pulumi.sh", "pulumi-env.sh", "bootstrap-toolchain.sh"]:
        shutil.copy2(REPO / "scripts" / name, root / "scripts" / name)
    for name in ["Pulumi.yaml", "Pulumi.prod.yaml", "Pulumi.preprod.yaml"]:
        shutil.copy2(REPO / name, root / name)
    (root / ".venv").symlink_to(REPO / ".venv")
    stub = tmp_path / "cache" / f"pulumi-{VERSION}" / "bin" / "pulumi"
    stub.parent.mkdir(parents=True)
    stub.write_text(STUB)
    stub.chmod(0o755)
    (tmp_path / "home").mkdir()
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PULUMI_", "ONBOARDING_", "KUBECONFIG", "CONFIRM"))
    }
    log = tmp_path / "calls.log"
    env.update(
        HOME=str(tmp_path / "home"),
        TOOLCHAIN_CACHE=str(tmp_path / "cache"),
        PULUMI_BACKEND_URL=f"file://{tmp_path / 'state'}",
        STUB_LOG=str(log),
    )
    return Sandbox(root, env, log)


def test_render_mode_applies_at_once_with_the_public_passphrase(box: Sandbox) -> None:
    done = box.run("up", "prod")
    assert done.returncode == 0, done.stderr
    (call,) = box.calls("up")
    assert " --yes " in f"{call} " and "--stack prod" in call
    assert call.endswith(f"PASS={PUBLIC}")


def test_onboarding_render_beside_a_kubeconfig_is_render_mode(box: Sandbox) -> None:
    box.kubeconfig("onboarding-prod")
    box.env["ONBOARDING_RENDER"] = "1"
    done = box.run("up", "prod")
    assert done.returncode == 0, done.stderr
    (call,) = box.calls("up")
    assert "--yes" in call and call.endswith(f"PASS={PUBLIC}")


def test_a_deploy_without_a_passphrase_is_refused_naming_what_to_set(box: Sandbox) -> None:
    box.kubeconfig("onboarding-prod")
    done = box.run("up", "prod")
    assert done.returncode == 1
    assert "no passphrase for the state's secrets" in done.stderr
    assert "PULUMI_CONFIG_PASSPHRASE_FILE" in done.stderr and "KMS" in done.stderr
    assert box.calls("up") == [] and box.calls("stack") == []


def test_a_deploy_with_the_public_passphrase_is_refused(box: Sandbox) -> None:
    box.kubeconfig("onboarding-prod")
    box.env["PULUMI_CONFIG_PASSPHRASE"] = PUBLIC
    done = box.run("up", "prod", "--yes")
    assert done.returncode == 1
    assert "public development passphrase" in done.stderr
    assert box.calls("up") == []


def test_a_deploy_to_a_kubeconfig_without_the_stack_context_is_refused(box: Sandbox) -> None:
    box.kubeconfig("laptop", "onboarding-prod")
    box.env["PULUMI_CONFIG_PASSPHRASE"] = "from-the-secret-store"
    done = box.run("preview", "preprod")
    assert done.returncode == 1
    assert "no context 'onboarding-preprod'" in done.stderr
    assert box.calls("preview") == []


def test_a_deploy_without_a_terminal_or_confirmation_is_refused(box: Sandbox) -> None:
    box.kubeconfig("onboarding-prod")
    box.env["PULUMI_CONFIG_PASSPHRASE"] = "from-the-secret-store"
    done = box.run("up", "prod")
    assert done.returncode == 1
    assert "without confirmation" in done.stderr and "CONFIRM=1" in done.stderr
    assert box.calls("up") == []


def test_a_deploy_on_a_terminal_leaves_the_question_to_pulumi(box: Sandbox) -> None:
    box.kubeconfig("onboarding-prod")
    box.env["PULUMI_CONFIG_PASSPHRASE"] = "from-the-secret-store"
    done = box.run("up", "prod", tty=True)
    assert done.returncode == 0, done.stderr
    (call,) = box.calls("up")
    assert "--yes" not in call and "--skip-preview" not in call
    assert "DEPLOY mode: stack prod, context onboarding-prod" in done.stderr


@pytest.mark.parametrize(("extra", "confirm"), [((), "1"), (("--yes",), None), (("-y",), None)])
def test_an_explicit_confirmation_applies_without_asking(
    box: Sandbox, extra: tuple[str, ...], confirm: str | None
) -> None:
    box.kubeconfig("onboarding-prod")
    passphrase = box.root / "passphrase"
    passphrase.write_text("from-the-secret-store\n")
    box.env["PULUMI_CONFIG_PASSPHRASE_FILE"] = str(passphrase)
    if confirm:
        box.env["CONFIRM"] = confirm
    done = box.run("up", "prod", *extra)
    assert done.returncode == 0, done.stderr
    (call,) = box.calls("up")
    assert call.count("--yes") + call.count(" -y") == 1


def test_a_context_given_on_the_command_line_is_the_one_checked(box: Sandbox) -> None:
    box.kubeconfig("kwok-onboarding")
    box.env["PULUMI_CONFIG_PASSPHRASE"] = "from-the-secret-store"
    refused = box.run("preview", "prod")
    assert refused.returncode == 1 and "no context 'onboarding-prod'" in refused.stderr
    done = box.run("preview", "prod", "--config", "onboarding:kubeContext=kwok-onboarding")
    assert done.returncode == 0, done.stderr
    assert len(box.calls("preview")) == 1


def sourced_passphrase(box: Sandbox) -> str:
    done = subprocess.run(
        [
            "bash",
            "-c",
            'source scripts/pulumi-env.sh && echo "${PULUMI_CONFIG_PASSPHRASE-<unset>}"',
        ],
        cwd=box.root,
        env=box.env,
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    return done.stdout.strip()


def test_pulumi_env_defaults_the_passphrase_in_render_mode_only(box: Sandbox) -> None:
    assert sourced_passphrase(box) == PUBLIC
    box.kubeconfig("onboarding-prod")
    assert sourced_passphrase(box) == "<unset>"
    box.env["ONBOARDING_RENDER"] = "1"
    assert sourced_passphrase(box) == PUBLIC
    box.env["PULUMI_BACKEND_URL"] = "s3://state?endpoint=127.0.0.1:9"
    assert sourced_passphrase(box) == "<unset>"


def test_a_kms_stack_deploys_without_a_passphrase_and_keeps_its_key_lines(box: Sandbox) -> None:
    state_cfg = Path(box.env["PULUMI_BACKEND_URL"].removeprefix("file://")) / "config"
    state_cfg.mkdir(parents=True)
    kms = "secretsprovider: awskms://alias/onboarding-state?region=eu-west-3\nencryptedkey: AQID\n"
    (state_cfg / "Pulumi.prod.yaml").write_text("config: {}\n" + kms)
    box.kubeconfig("onboarding-prod")
    done = box.run("preview", "prod")
    assert done.returncode == 0, done.stderr
    (call,) = box.calls("preview")
    used = Path(call.split("--config-file ")[1].split()[0]).read_text()
    assert used.endswith(kms)  # the repo file's content, then the provider's lines as kept
    assert "onboarding:kubeContext: onboarding-prod" in used
