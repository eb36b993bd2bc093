"""The disaster-recovery rehearsal (scripts/dr_rehearsal.py), end to end at a small scale: a
real control plane with KWOK nodes (scripts/kube-up.sh) that the real Pulumi CLI deploys the
prod stack to, a real S3-compatible server (SeaweedFS), and the CouchDB-protocol server of
tests/ops (pouchdb-server, or the CouchDB of COUCHDB_URL). The namespace is deleted, the
database and the app user dropped, the backup volume emptied; the rehearsal must rebuild,
restore from object storage, verify and let the app user read and write again.

pouchdb-server has no `_membership`: there the rehearsal creates the database and app user
directly instead of running `couchops cluster-setup`, and the summary says so. Run by hand
with COUCHDB_URL (and COUCHDB_ADMIN_PASSWORD) to rehearse on a real CouchDB cluster.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.ops.conftest import Server, server  # noqa: F401  (the fixture)
from tests.ops.s3_server import S3Server, s3_server  # noqa: F401  (the fixture)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
CACHE = Path(os.environ.get("TOOLCHAIN_CACHE", Path.home() / ".cache" / "onboarding-toolchain"))
CLUSTER_NAME = "onboarding-dr"
PROSPECTS = 120


def _pin(script: str, name: str) -> str:
    return next(
        line.split("=", 1)[1].strip()
        for line in (REPO / "scripts" / script).read_text().splitlines()
        if line.startswith(f"{name}=")
    )


_needed = [
    CACHE / f"pulumi-{_pin('bootstrap-toolchain.sh', 'PULUMI_VERSION')}" / "bin" / "pulumi",
    CACHE / f"kube-{_pin('bootstrap-kube.sh', 'KUBE_VERSION')}" / "bin" / "kwok",
]
if missing := [str(p) for p in _needed if not p.is_file()]:
    pytest.skip(
        f"toolchain not built ({', '.join(missing)}): run scripts/bootstrap-toolchain.sh and "
        "scripts/bootstrap-kube.sh",
        allow_module_level=True,
    )


@pytest.fixture(scope="module")
def kubeconfig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    env = {**os.environ, "ONBOARDING_KUBE_HOME": str(tmp_path_factory.mktemp("kube"))}
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
        yield up.stdout.strip().splitlines()[-1]
    finally:
        subprocess.run(
            [str(REPO / "scripts" / "kube-down.sh"), CLUSTER_NAME],
            env=env,
            capture_output=True,
            timeout=300,
            check=False,
        )


def test_the_environment_is_rebuilt_restored_from_object_storage_and_usable_again(
    kubeconfig: str,
    server: Server,  # noqa: F811
    s3_server: S3Server,  # noqa: F811
    tmp_path: Path,
) -> None:
    secrets = {
        "admin": server.credentials[1],
        "s3-key": s3_server.access_key_id,
        "s3-secret": s3_server.secret_access_key,
    }
    for name, value in secrets.items():
        (tmp_path / name).write_text(value)
    command = [
        sys.executable,
        str(REPO / "scripts" / "dr_rehearsal.py"),
        "--kubeconfig",
        kubeconfig,
        "--couchdb-url",
        server.url,
        "--admin-user",
        server.credentials[0],
        "--admin-password-file",
        str(tmp_path / "admin"),
        "--s3-endpoint",
        s3_server.endpoint,
        "--s3-access-key-file",
        str(tmp_path / "s3-key"),
        "--s3-secret-key-file",
        str(tmp_path / "s3-secret"),
        "--bucket",
        s3_server.new_bucket(),
        "--prospects",
        str(PROSPECTS),
        "--attachment-share",
        "0.5",
        "--attachment-kb",
        "40",
        "--sample",
        "10",
        "--work",
        str(tmp_path / "work"),
    ]
    if server.node_urls:
        command += ["--node-urls", server.node_urls]
    done = subprocess.run(command, capture_output=True, text=True, timeout=3000, check=False)
    print(done.stderr[-4000:])
    assert done.returncode == 0, done.stderr[-4000:]
    summary: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])

    assert summary["documents"] == PROSPECTS * 6
    # On CouchDB the backup also holds the setup's index definitions, which the rebuilt
    # setup makes again and the restore keeps.
    assert summary["verified_documents"] == summary["backup_documents"] >= PROSPECTS * 6
    assert summary["restored_documents"] >= PROSPECTS * 6
    assert summary["attachments"] > 0
    assert summary["offsite_bytes"] > summary["backup_bytes"] * 0.9  # encrypted, not dropped
    assert summary["prospects_read_and_written"] == 10
    assert summary["key_escrow_output"] is True
    assert summary["recovery_seconds"] == pytest.approx(
        sum(v for k, v in summary["steps_seconds"].items() if k.startswith("recovery:")), abs=2
    )
    # The backup runs at 01:15 Paris time every day: 25 h apart across the autumn clock
    # change; at most that much data is lost, plus one backup run.
    assert summary["longest_gap_hours"] == 25
    backup_hours = summary["steps_seconds"]["before: backup sent off site"] / 3600
    assert summary["rpo_hours"] == pytest.approx(25 + backup_hours, abs=0.01)
