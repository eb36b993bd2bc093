"""Backups of every database, documents and attachments, within the GDPR budget."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

import pulumi
from pulumi_kubernetes.batch.v1 import CronJob
from pulumi_kubernetes.core.v1 import (
    KeyToPathArgs,
    PersistentVolumeClaim,
    PersistentVolumeClaimSpecArgs,
    PersistentVolumeClaimVolumeSourceArgs,
    SecretVolumeSourceArgs,
    VolumeArgs,
    VolumeMountArgs,
    VolumeResourceRequirementsArgs,
)
from pulumi_kubernetes.meta.v1 import LabelSelectorArgs, ObjectMetaArgs
from pulumi_kubernetes.networking.v1 import (
    IPBlockArgs,
    NetworkPolicy,
    NetworkPolicyEgressRuleArgs,
    NetworkPolicyPeerArgs,
    NetworkPolicyPortArgs,
    NetworkPolicySpecArgs,
)

from components.couchdb_config import NODE_URLS
from components.labels import standard_labels
from components.ops_job import OpsJobTemplate, Schedule, ops_cron_job

BACKUP_DIR = "/backups"
OBJECT_STORAGE_CREDENTIALS_DIR = "/var/run/secrets/object-storage"
# The object storage is outside the cluster, known by name only: the jobs that reach it may
# open its port anywhere but the private, shared and link-local ranges (the cloud metadata
# service among them), so the rule opens nothing inside the cluster or the provider's LAN.
PRIVATE_RANGES = {
    "0.0.0.0/0": [
        "10.0.0.0/8",
        "172.16.0.0/12",
        "192.168.0.0/16",
        "100.64.0.0/10",
        "169.254.0.0/16",
        "127.0.0.0/8",
    ],
    "::/0": ["fc00::/7", "fe80::/10", "::1/128"],
}


@dataclass(frozen=True)
class ObjectStorage:
    """Where every backup is also copied, age-encrypted before it leaves the cluster
    (infra/settings.py ObjectStorageSettings checked every field)."""

    endpoint: str
    bucket: str
    region: str
    prefix: str
    # A Secret created outside Pulumi by the hosting provider: keys `accessKeyId` and
    # `secretAccessKey`, mounted as files, never passed as env values.
    credentials_secret: str
    recipients: Sequence[str]
    keep_local_copy: bool = True

    @property
    def port(self) -> int:
        parts = urlsplit(self.endpoint)
        return parts.port or (443 if parts.scheme == "https" else 80)


@dataclass(frozen=True)
class BackupsArgs:
    """What the backups keep and when they run.

    The retention, budget, schedules and expiry interval come from infra/settings.py, which
    checked them together: nothing a backup copies outlives `max_age_days`.
    """

    environment: str
    namespace: pulumi.Input[str]
    ops: OpsJobTemplate
    schedule: str
    verify_schedule: str
    expiry_schedule: str
    time_zone: str
    storage_size: str
    retention_days: int
    # The GDPR budget, and the longest wait between two expiry runs in whole hours: couchops
    # copies only data younger than the budget less both (couchops/retention.py).
    max_age_days: int
    expiry_interval_hours: int
    storage_class: str | None = None
    object_storage: ObjectStorage | None = None
    deadline_seconds: int = 4 * 3600
    # Deleting expired backups takes seconds; a run that hangs must not delay the next hour's.
    expiry_deadline_seconds: int = 15 * 60


class Backups(pulumi.ComponentResource):
    """A nightly `couchops backup` onto its own volume, an hourly `couchops backup-expire`
    that deletes every backup older than the retention, and a weekly `couchops verify` that
    proves the newest backup restores."""

    volume_claim: PersistentVolumeClaim
    backup_job: CronJob
    verify_job: CronJob
    expiry_job: CronJob

    def __init__(
        self, name: str, args: BackupsArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("onboarding:platform:Backups", name, None, opts)
        self.volume_claim = PersistentVolumeClaim(
            f"{name}-volume",
            metadata=ObjectMetaArgs(
                name="couchdb-backups",
                namespace=args.namespace,
                labels=standard_labels("couchdb-backups", args.environment, "backup"),
            ),
            spec=PersistentVolumeClaimSpecArgs(
                access_modes=["ReadWriteOnce"],
                storage_class_name=args.storage_class,
                resources=VolumeResourceRequirementsArgs(requests={"storage": args.storage_size}),
            ),
            # Protected: no `pulumi up` replaces it and `pulumi destroy` stops at it
            # (runbooks/state-safety.md). Once unprotected and destroyed, the volume still
            # stays, but its expiry CronJob is gone: nothing deletes old backups any more, so
            # an operator must run `couchops backup-expire` against it, or delete it, within
            # backup.retentionDays (README).
            opts=pulumi.ResourceOptions(parent=self, retain_on_delete=True, protect=True),
        )
        volume = VolumeArgs(
            name="backups",
            persistent_volume_claim=PersistentVolumeClaimVolumeSourceArgs(
                claim_name=self.volume_claim.metadata.name
            ),
        )
        env = {
            "BACKUP_DIR": BACKUP_DIR,
            "BACKUP_RETENTION_DAYS": str(args.retention_days),
            "BACKUP_EXPIRY_INTERVAL_HOURS": str(args.expiry_interval_hours),
            "GDPR_MAX_AGE_DAYS": str(args.max_age_days),
        }
        reads_couchdb = {
            # Each shard copy read from its own pod (by the headless Service's DNS name, which
            # is the host part of the pod's Erlang node name), not relayed by another node.
            "COUCHDB_NODE_URLS": NODE_URLS,
        }

        storage = args.object_storage

        def job(
            resource: str,
            operation: str,
            cron: str,
            deadline: int,
            command: str,
            *,
            writes: bool,
            couchdb: bool,
            off_site: dict[str, str] | None = None,
            extra_args: list[str] | None = None,
        ) -> CronJob:
            volumes = [volume]
            mounts = [
                VolumeMountArgs(
                    name="backups", mount_path=BACKUP_DIR, read_only=None if writes else True
                )
            ]
            if storage is not None and off_site is not None:
                volumes.append(_credentials_volume(storage.credentials_secret))
                mounts.append(
                    VolumeMountArgs(
                        name="object-storage",
                        mount_path=OBJECT_STORAGE_CREDENTIALS_DIR,
                        read_only=True,
                    )
                )
                self._object_storage_egress(resource, args, operation)
            return ops_cron_job(
                resource,
                self,
                args.ops,
                namespace=args.namespace,
                operation=operation,
                schedule=Schedule(cron=cron, deadline_seconds=deadline, time_zone=args.time_zone),
                args=[command, *(extra_args or [])],
                env={**env, **(reads_couchdb if couchdb else {}), **(off_site or {})},
                volumes=volumes,
                mounts=mounts,
                couchdb=couchdb,
            )

        # The backup copies off site; the expiry deletes the off-site copies too (the GDPR
        # budget holds for them as for the volume).
        upload = expire = None
        if storage is not None:
            expire = _object_storage_env(storage)
            upload = {
                **expire,
                "BACKUP_AGE_RECIPIENTS": ",".join(storage.recipients),
                "BACKUP_KEEP_LOCAL_COPY": "true" if storage.keep_local_copy else "false",
            }

        self.backup_job = job(
            f"{name}-cronjob",
            "backup",
            args.schedule,
            args.deadline_seconds,
            "backup",
            writes=True,
            couchdb=True,
            off_site=upload,
        )
        # The drill verifies the local copy; with none kept, the off-site one, without its
        # key (the cluster never has it): every stored object against its index. Either way
        # it reads backups only (`couchops verify` without --live opens no connection to
        # CouchDB), so it gets no admin credentials and no way to CouchDB's port.
        remote_only = storage is not None and not storage.keep_local_copy
        self.verify_job = job(
            f"{name}-verify-cronjob",
            "backup-verify",
            args.verify_schedule,
            args.deadline_seconds,
            "verify",
            writes=False,
            couchdb=False,
            off_site=expire if remote_only else None,
            extra_args=["--backup", "s3:latest"] if remote_only else [],
        )
        # Apart from the backup run, so backups expire on time even when backups fail. It
        # deletes backups only, and talks to no CouchDB either.
        self.expiry_job = job(
            f"{name}-expire-cronjob",
            "backup-expire",
            args.expiry_schedule,
            args.expiry_deadline_seconds,
            "backup-expire",
            writes=True,
            couchdb=False,
            off_site=expire,
        )
        self.register_outputs({"volume_claim": self.volume_claim.metadata.name})

    def _object_storage_egress(self, resource: str, args: BackupsArgs, operation: str) -> None:
        """Egress from this operation's pods to the object storage's port, outside the
        cluster (the namespace denies all egress by default)."""
        assert args.object_storage is not None
        labels = args.ops.labels(operation, couchdb=False)
        selector = {
            k: labels[k]
            for k in (
                "app.kubernetes.io/name",
                "app.kubernetes.io/instance",
                "app.kubernetes.io/component",
            )
        }
        NetworkPolicy(
            f"{resource}-object-storage-netpol",
            metadata=ObjectMetaArgs(
                name=f"{labels['app.kubernetes.io/name']}-{operation}-object-storage",
                namespace=args.namespace,
                labels=labels,
            ),
            spec=NetworkPolicySpecArgs(
                pod_selector=LabelSelectorArgs(match_labels=selector),
                policy_types=["Egress"],
                egress=[
                    NetworkPolicyEgressRuleArgs(
                        to=[
                            NetworkPolicyPeerArgs(ip_block=IPBlockArgs(cidr=cidr, except_=private))
                            for cidr, private in PRIVATE_RANGES.items()
                        ],
                        ports=[
                            NetworkPolicyPortArgs(protocol="TCP", port=args.object_storage.port)
                        ],
                    )
                ],
            ),
            opts=pulumi.ResourceOptions(parent=self),
        )


def _object_storage_env(storage: ObjectStorage) -> dict[str, str]:
    """Where the bucket is, and the files of its credentials (`_credentials_volume`)."""
    return {
        "S3_ENDPOINT": storage.endpoint,
        "S3_BUCKET": storage.bucket,
        "S3_REGION": storage.region,
        "S3_PREFIX": storage.prefix,
        "S3_ACCESS_KEY_ID_FILE": f"{OBJECT_STORAGE_CREDENTIALS_DIR}/accessKeyId",
        "S3_SECRET_ACCESS_KEY_FILE": f"{OBJECT_STORAGE_CREDENTIALS_DIR}/secretAccessKey",
    }


def _credentials_volume(secret_name: str) -> VolumeArgs:
    return VolumeArgs(
        name="object-storage",
        secret=SecretVolumeSourceArgs(
            secret_name=secret_name,
            default_mode=0o440,
            items=[
                KeyToPathArgs(key="accessKeyId", path="accessKeyId"),
                KeyToPathArgs(key="secretAccessKey", path="secretAccessKey"),
            ],
        ),
    )
