"""components/backups.py: the off-site copy's settings reach the jobs that talk to the bucket,
its credentials as mounted files, and the namespace's egress opens to the bucket only."""

from __future__ import annotations

from typing import Any

import pytest
from pyrage import x25519  # type: ignore[import-untyped]

from tests.unit.harness import Recorded, by_kind, one, raw_stack, run_program, run_stack
from tests.unit.netpol import Pod, Policies, pod_templates

RECIPIENTS = [str(x25519.Identity.generate().to_public()) for _ in range(2)]
STORAGE = {
    "endpoint": "https://s3.fr-par.scw.cloud",
    "bucket": "onboarding-backups",
    "region": "fr-par",
    "credentialsSecret": "object-storage-credentials",
    "recipients": RECIPIENTS,
}
# Scaleway's object storage in Paris, as its name resolves: a public address.
PUBLIC_ADDRESS = "62.210.0.10"
UPLOADERS = ("couchops-backup", "couchops-backup-expire")


def with_storage(stack: str, **storage: Any) -> list[Recorded]:
    backup = {**raw_stack(stack)["backup"], "objectStorage": {**STORAGE, **storage}}
    return run_program(stack, {"onboarding:backup": backup})


@pytest.fixture(scope="module")
def prod_off_site() -> list[Recorded]:
    return with_storage("prod")


def pod_of(cron: Recorded) -> dict[str, Any]:
    pod: dict[str, Any] = cron.spec["jobTemplate"]["spec"]["template"]["spec"]
    return pod


def env_of(cron: Recorded) -> dict[str, Any]:
    return {e["name"]: e for e in pod_of(cron)["containers"][0]["env"]}


def test_the_backup_gets_the_bucket_the_prefix_and_the_recipients(
    prod_off_site: list[Recorded],
) -> None:
    env = {
        k: v.get("value") for k, v in env_of(one(prod_off_site, "CronJob", UPLOADERS[0])).items()
    }
    assert env["S3_ENDPOINT"] == "https://s3.fr-par.scw.cloud"
    assert env["S3_BUCKET"] == "onboarding-backups"
    assert env["S3_REGION"] == "fr-par"
    # Unset, the prefix is the environment's: prod and preprod may share a bucket.
    assert env["S3_PREFIX"] == "prod/"
    assert env["BACKUP_AGE_RECIPIENTS"].split(",") == RECIPIENTS
    assert env["BACKUP_KEEP_LOCAL_COPY"] == "true"


def test_credentials_are_files_of_the_providers_secret_mounted_read_only(
    prod_off_site: list[Recorded],
) -> None:
    for name in UPLOADERS:
        cron = one(prod_off_site, "CronJob", name)
        env = env_of(cron)
        # Files, never values: no credential in the manifest nor in `kubectl describe`.
        assert "S3_ACCESS_KEY_ID" not in env
        assert "S3_SECRET_ACCESS_KEY" not in env
        assert not any("valueFrom" in e for e in env.values()), name
        paths = {
            env["S3_ACCESS_KEY_ID_FILE"]["value"]: "accessKeyId",
            env["S3_SECRET_ACCESS_KEY_FILE"]["value"]: "secretAccessKey",
        }
        container = pod_of(cron)["containers"][0]
        volumes = {v["name"]: v for v in pod_of(cron)["volumes"]}
        for path, key in paths.items():
            directory, file = path.rsplit("/", 1)
            mount = next(m for m in container["volumeMounts"] if m["mountPath"] == directory)
            assert mount["readOnly"] is True
            secret = volumes[mount["name"]]["secret"]
            assert secret["secretName"] == "object-storage-credentials"
            assert {"key": key, "path": file} in secret["items"]
            assert secret["defaultMode"] == 0o440


def test_the_expiry_reaches_the_bucket_without_the_recipients(
    prod_off_site: list[Recorded],
) -> None:
    # It deletes off-site copies (the GDPR budget holds for them) and never encrypts.
    env = env_of(one(prod_off_site, "CronJob", "couchops-backup-expire"))
    assert env["S3_BUCKET"]["value"] == "onboarding-backups"
    assert "BACKUP_AGE_RECIPIENTS" not in env


def test_the_drill_and_the_purge_know_nothing_of_the_bucket(
    prod_off_site: list[Recorded],
) -> None:
    for name in ("couchops-backup-verify", "couchops-purge"):
        cron = one(prod_off_site, "CronJob", name)
        assert not [k for k in env_of(cron) if k.startswith("S3_")], name
        assert "object-storage" not in {v["name"] for v in pod_of(cron)["volumes"]}, name


def test_a_given_prefix_and_no_local_copy_are_passed_on() -> None:
    resources = with_storage("preprod", prefix="onboarding/preprod/", keepLocalCopy=False)
    env = env_of(one(resources, "CronJob", "couchops-backup"))
    assert env["S3_PREFIX"]["value"] == "onboarding/preprod/"
    assert env["BACKUP_KEEP_LOCAL_COPY"]["value"] == "false"
    default = env_of(one(with_storage("preprod"), "CronJob", "couchops-backup"))
    assert default["S3_PREFIX"]["value"] == "preprod/"


def test_only_the_jobs_using_the_bucket_may_leave_the_cluster_and_only_to_its_port(
    prod_off_site: list[Recorded],
) -> None:
    policies, pods = Policies(prod_off_site), pod_templates(prod_off_site)
    for name in UPLOADERS:
        assert policies.can_reach_address(pods[name], PUBLIC_ADDRESS, 443), name
        assert policies.can_reach_address(pods[name], "2001:bc8:1::10", 443), name
        assert not policies.can_reach_address(pods[name], PUBLIC_ADDRESS, 80), name
        # Not a way into the cluster, the provider's LAN or the cloud metadata service.
        for private in ("10.96.0.1", "172.20.3.4", "192.168.1.1", "169.254.169.254", "fd00::1"):
            assert not policies.can_reach_address(pods[name], private, 443), (name, private)
    others = [n for n in pods if n not in UPLOADERS]
    assert {"couchdb", "webapp", "couchops-backup-verify", "couchops-purge"} <= set(others)
    for name in others:
        assert not policies.can_reach_address(pods[name], PUBLIC_ADDRESS, 443), name
    intruder = Pod("intruder", pods["couchdb"].namespace, {"run": "debug-shell"})
    assert not policies.can_reach_address(intruder, PUBLIC_ADDRESS, 443)


def test_the_egress_follows_the_endpoint_port() -> None:
    resources = with_storage("preprod", endpoint="https://objects.hebergeur.example.fr:8443")
    policies, pods = Policies(resources), pod_templates(resources)
    assert policies.can_reach_address(pods["couchops-backup"], PUBLIC_ADDRESS, 8443)
    assert not policies.can_reach_address(pods["couchops-backup"], PUBLIC_ADDRESS, 443)


def test_without_object_storage_no_job_leaves_the_cluster(stack: list[Recorded]) -> None:
    policies, pods = Policies(stack), pod_templates(stack)
    for name, pod in pods.items():
        assert not policies.can_reach_address(pod, PUBLIC_ADDRESS, 443), name
    for cron in by_kind(stack, "CronJob"):
        assert not [k for k in env_of(cron) if k.startswith(("S3_", "BACKUP_AGE"))]


def test_without_a_local_copy_the_weekly_drill_checks_the_off_site_one_without_its_key() -> None:
    kept = one(with_storage("prod"), "CronJob", "couchops-backup-verify")
    remote = one(with_storage("prod", keepLocalCopy=False), "CronJob", "couchops-backup-verify")

    assert pod_of(kept)["containers"][0]["args"] == ["verify"]
    assert "S3_ENDPOINT" not in env_of(kept)
    assert pod_of(remote)["containers"][0]["args"] == ["verify", "--backup", "s3:latest"]
    env = env_of(remote)
    assert env["S3_BUCKET"]["value"] == "onboarding-backups"
    # The bucket, never the key: the cluster cannot read what it checks.
    assert "BACKUP_AGE_IDENTITY_FILE" not in env
    assert "BACKUP_AGE_RECIPIENTS" not in env


def test_a_stack_without_off_site_copies_is_warned_at_every_run() -> None:
    without = run_stack("prod").warnings
    backup = {**raw_stack("prod")["backup"], "objectStorage": STORAGE}
    with_storage_set = run_stack("prod", {"onboarding:backup": backup}).warnings
    assert any("onboarding:backup.objectStorage is not set" in w for w in without)
    assert not any("objectStorage" in w for w in with_storage_set)
