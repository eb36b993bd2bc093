"""The couchops commands with off-site storage, as the CronJobs and a restore job run them:
`backup` copies off site and reads the copy back, `backup-expire` expires both copies,
`verify --backup s3:…` checks the stored objects without the key, `restore --from s3:latest`
downloads (resumable) and restores. Against pouchdb-server (or COUCHDB_URL) and the real
SeaweedFS of tests/ops/s3_server.py, each command a `couchops` subprocess.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from pyrage import x25519

from couchops.couch import Couch
from couchops.offsite import ObjectStorage, list_remote_backups
from tests.ops.conftest import Server
from tests.ops.helpers import bulk, days_ago, last_line, onboarding_doc, run_cli, with_attachment
from tests.ops.s3_server import S3Server, s3_server  # noqa: F401  (the fixture)

pytestmark = pytest.mark.server
SCAN = b"%PDF" + bytes(range(256)) * 40
# Each test takes the fixtures a job is made of: the servers, a bucket, a key, a volume.
# ruff: noqa: PLR0917


@pytest.fixture
def keys(tmp_path: Path) -> dict[str, Any]:
    ops = x25519.Identity.generate()
    identity = tmp_path / "ops.key"
    identity.write_text(f"# operations key of the test\n{ops}\n")
    identity.chmod(0o600)
    return {"public": str(ops.to_public()), "identity_file": str(identity)}


@pytest.fixture
def storage(s3_server: S3Server) -> ObjectStorage:  # noqa: F811
    return ObjectStorage(
        endpoint=s3_server.endpoint,
        bucket=s3_server.new_bucket(),
        region=s3_server.region,
        access_key_id=s3_server.access_key_id,
        secret_access_key=s3_server.secret_access_key,
        prefix="backups/test/",
    )


def job_env(
    server: Server, storage: ObjectStorage, keys: dict[str, Any], backups: Path, **extra: str
) -> dict[str, str]:
    """What the backup CronJob is given: the bucket, its credentials, public keys only."""
    return {
        **server.env(),
        "BACKUP_DIR": str(backups),
        "S3_ENDPOINT": storage.endpoint,
        "S3_BUCKET": storage.bucket,
        "S3_REGION": storage.region,
        "S3_PREFIX": storage.prefix,
        "S3_ACCESS_KEY_ID": storage.access_key_id,
        "S3_SECRET_ACCESS_KEY": storage.secret_access_key,
        "BACKUP_AGE_RECIPIENTS": keys["public"],
        **extra,
    }


def outcome(done: Any) -> dict[str, Any]:
    """The command's own outcome line (a backup prints its audit's after it)."""
    assert done.returncode == 0, done.stderr[-2000:]
    lines = [json.loads(line) for line in done.stdout.strip().splitlines()]
    command = done.args[3]
    result: dict[str, Any] = next(line for line in lines if line["operation"] == command)
    return result


def seed(couch: Couch, db: str) -> None:
    docs = [onboarding_doc(f"u{u:03d}:application", days_ago(2)) for u in range(40)]
    docs[0] = with_attachment(docs[0], "scan.pdf", SCAN, "application/pdf")
    bulk(couch, db, docs)


def test_backup_copies_off_site_and_a_restore_from_s3_gives_the_data_back(
    server: Server,
    couch: Couch,
    make_db: Callable[..., str],
    storage: ObjectStorage,
    keys: dict[str, Any],
    tmp_path: Path,
) -> None:
    source = make_db()
    seed(couch, source)
    env = job_env(server, storage, keys, tmp_path / "volume")

    backed_up = outcome(run_cli(["backup", "--database", source], env))

    remote = list_remote_backups(storage)
    assert len(remote) == 1
    assert backed_up["offsite_objects"] == len(remote[0].objects) == 2  # the file, the manifest
    assert backed_up["offsite_bytes"] == sum(o.size for o in remote[0].objects)
    assert [p.name for p in (tmp_path / "volume").iterdir() if p.name[0].isdigit()] == [
        remote[0].backup_id
    ]
    # The restore job: another machine, an empty volume, the identity mounted for it.
    restore_env = {
        **env,
        "BACKUP_DIR": str(tmp_path / "restore-volume"),
        "BACKUP_AGE_IDENTITY_FILE": keys["identity_file"],
    }
    target = make_db(create=False)
    restored = outcome(
        run_cli(["restore", "--from", "s3:latest", "--database", f"{source}={target}"], restore_env)
    )
    assert restored["documents"] == 40
    verified = outcome(
        run_cli(
            ["verify", "--backup", "s3:latest", "--live", "--database", f"{source}={target}"],
            restore_env,
        )
    )
    assert verified["documents"] == 40
    assert verified["databases"] == 1
    scan = couch.get(f"/{target}/u000:application", params={"attachments": "true"})
    assert base64.b64decode(scan["_attachments"]["scan.pdf"]["data"]) == SCAN


def test_without_a_local_copy_the_volume_keeps_nothing_and_verify_checks_the_objects(
    server: Server,
    couch: Couch,
    make_db: Callable[..., str],
    storage: ObjectStorage,
    keys: dict[str, Any],
    tmp_path: Path,
) -> None:
    source = make_db()
    seed(couch, source)
    env = job_env(server, storage, keys, tmp_path / "volume", BACKUP_KEEP_LOCAL_COPY="false")

    outcome(run_cli(["backup", "--database", source], env))

    assert not [p for p in (tmp_path / "volume").iterdir() if p.name[0].isdigit()]
    # The cluster has no key: verify reads every stored object back against its index.
    checked = outcome(run_cli(["verify", "--backup", "s3:latest"], env))
    assert checked == {"operation": "verify", "ok": True, "objects_checked": 2, "decrypted": 0}
    # A damaged object is caught by that check.
    (only,) = list_remote_backups(storage)
    damaged = storage.folder(only.backup_id) + only.objects[0].name
    client = storage.client()
    body = client.get_object(Bucket=storage.bucket, Key=damaged)["Body"].read()
    client.put_object(Bucket=storage.bucket, Key=damaged, Body=body[:-10])
    failed = run_cli(["verify", "--backup", "s3:latest"], env)
    assert failed.returncode == 4
    assert "differs from its index" in last_line(failed.stderr)


def test_backup_expire_deletes_the_off_site_copies_on_the_same_budget(
    server: Server,
    couch: Couch,
    make_db: Callable[..., str],
    storage: ObjectStorage,
    keys: dict[str, Any],
    tmp_path: Path,
) -> None:
    source = make_db()
    seed(couch, source)
    env = job_env(server, storage, keys, tmp_path / "volume")
    outcome(run_cli(["backup", "--database", source], env))

    kept = outcome(run_cli(["backup-expire"], env))
    assert (kept["offsite_expired_deleted"], kept["offsite_backups_kept"]) == (0, 1)
    # The documents are 2 days old: with a 1-day budget the backup is past it at once.
    expired = outcome(run_cli(["backup-expire"], {**env, "GDPR_MAX_AGE_DAYS": "1"}))
    assert (expired["offsite_expired_deleted"], expired["offsite_backups_kept"]) == (1, 0)
    assert (expired["expired_deleted"], expired["backups_kept"]) == (1, 0)
    assert list_remote_backups(storage) == []


def test_an_off_site_setting_missing_or_wrong_fails_before_anything_is_read(
    server: Server, storage: ObjectStorage, keys: dict[str, Any], tmp_path: Path
) -> None:
    env = job_env(server, storage, keys, tmp_path / "volume")
    cases = [
        ({"S3_ENDPOINT": ""}, "S3_ACCESS_KEY_ID, S3_BUCKET"),
        ({"BACKUP_AGE_RECIPIENTS": ""}, "BACKUP_AGE_RECIPIENTS is not set"),
        ({"BACKUP_KEEP_LOCAL_COPY": "maybe"}, "BACKUP_KEEP_LOCAL_COPY=maybe"),
    ]
    for change, named in cases:
        failed = run_cli(["backup"], {**env, **change})
        assert failed.returncode == 2, (change, failed.stderr[-500:])
        assert named in last_line(failed.stderr), change
    assert not (tmp_path / "volume").exists() or not list((tmp_path / "volume").iterdir())
    no_key = run_cli(["restore", "--from", "s3:latest"], env)
    assert no_key.returncode == 2
    assert "BACKUP_AGE_IDENTITY_FILE is not set" in last_line(no_key.stderr)
