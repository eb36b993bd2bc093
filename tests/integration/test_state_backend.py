"""The team state backend of docs/state-backend.md, for real: the pinned Pulumi CLI keeps a
stack's state in an S3-compatible bucket (SeaweedFS, tests/ops/s3_server.py, signed requests,
on loopback), locks the stack while an update runs, refuses a second concurrent update of it
with the lock's owner named, and lets it through once the first is done. Secrets in the state
are encrypted (passphrase secrets provider): the bucket never holds them in clear.

The program here is a minimal Python one (it holds the update open for a few seconds and
exports a secret): locking is the backend's, whatever the program.

Skipped, with the reason, when the toolchain, SeaweedFS or the virtualenv is not there.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from tests.integration import test_pulumi_cli as cli
from tests.ops.s3_server import S3Server, s3_server  # noqa: F401

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PROJECT = "state-backend-probe"
STACK = "preprod"
SECRET = "a-secret-that-must-never-be-stored-in-clear"
PROGRAM = f"""
import os
import time

import pulumi

time.sleep(float(os.environ.get("HOLD_SECONDS", "0")))
pulumi.export("value", pulumi.Output.secret({SECRET!r}))
"""


def backend_url(server: S3Server, bucket: str) -> str:
    host = server.endpoint.removeprefix("http://")
    # gocloud.dev's s3blob options: a path-style, plain-HTTP endpoint on loopback (a real
    # provider is HTTPS and needs neither disable_https nor, usually, use_path_style).
    return (
        f"s3://{bucket}?endpoint={host}&region={server.region}"
        "&use_path_style=true&disable_https=true"
    )


@pytest.fixture
def probe(tmp_path: Path, s3_server: S3Server) -> tuple[Path, dict[str, str], str]:  # noqa: F811
    project = tmp_path / "project"
    project.mkdir()
    (project / "Pulumi.yaml").write_text(
        f"name: {PROJECT}\nruntime:\n  name: python\n  options:\n"
        "    toolchain: pip\n    virtualenv: .venv\n"
    )
    (project / "__main__.py").write_text(PROGRAM)
    (project / ".venv").symlink_to(cli.REPO / ".venv")
    bucket = s3_server.new_bucket()
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PULUMI_", "AWS_")) and k not in {"KUBECONFIG", "VIRTUAL_ENV"}
    }
    env.update(
        PATH=f"{cli.BIN}{os.pathsep}{env.get('PATH', '')}",
        PULUMI_HOME=str(tmp_path / "pulumi-home"),
        PULUMI_BACKEND_URL=backend_url(s3_server, bucket),
        PULUMI_CONFIG_PASSPHRASE="state-backend-test-only",
        PULUMI_SKIP_UPDATE_CHECK="true",
        PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION="true",
        AWS_ACCESS_KEY_ID=s3_server.access_key_id,
        AWS_SECRET_ACCESS_KEY=s3_server.secret_access_key,
        NO_PROXY="127.0.0.1,localhost",
        no_proxy="127.0.0.1,localhost",
    )
    cli.pulumi(project, env, "stack", "init", STACK, "--secrets-provider", "passphrase")
    return project, env, bucket


def keys(server: S3Server, bucket: str, prefix: str = "") -> list[str]:
    listed = server.client().list_objects_v2(Bucket=bucket, Prefix=prefix)
    return [o["Key"] for o in listed.get("Contents", [])]


def test_a_second_update_is_refused_while_the_first_holds_the_lock(
    probe: tuple[Path, dict[str, str], str],
    s3_server: S3Server,  # noqa: F811
) -> None:
    project, env, bucket = probe
    lock_dir = f".pulumi/locks/organization/{PROJECT}/{STACK}/"
    first = subprocess.Popen(
        [str(cli.BIN / "pulumi"), "--non-interactive", "up", "--yes", "--skip-preview"],
        cwd=project,
        env={**env, "HOLD_SECONDS": "20"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while not keys(s3_server, bucket, lock_dir):
            assert first.poll() is None, f"the first update ended early:\n{first.stdout}"
            assert time.monotonic() < deadline, "no lock object appeared in the bucket"
            time.sleep(0.2)
        (lock,) = keys(s3_server, bucket, lock_dir)

        second = cli.pulumi(project, env, "up", "--yes", "--skip-preview", check=False)
        refusal = second.stdout + second.stderr
        assert second.returncode != 0
        assert "the stack is currently locked by 1 lock(s)" in refusal, refusal
        assert lock in refusal  # the lock object is named, with its owner
        assert first.poll() is None, "the refusal came after the first update ended"

        out, _ = first.communicate(timeout=300)
        assert first.returncode == 0, out
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()

    assert keys(s3_server, bucket, lock_dir) == []  # released
    stack_file = f".pulumi/stacks/{PROJECT}/{STACK}.json"
    assert stack_file in keys(s3_server, bucket, ".pulumi/stacks/")
    state = s3_server.client().get_object(Bucket=bucket, Key=stack_file)["Body"].read().decode()
    assert "ciphertext" in state and SECRET not in state

    # Once the first is done, the same update goes through (one update, no changes).
    again = cli.pulumi(project, env, "up", "--yes", "--skip-preview")
    assert "refusing" not in again.stdout
    shown = cli.pulumi(project, env, "stack", "output", "value", "--show-secrets")
    assert shown.stdout.strip() == SECRET
