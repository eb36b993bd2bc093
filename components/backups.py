"""Backups of every database, documents and attachments, kept at most 30 days (GDPR)."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
from pulumi_kubernetes.batch.v1 import CronJob
from pulumi_kubernetes.core.v1 import (
    PersistentVolumeClaim,
    PersistentVolumeClaimSpecArgs,
    PersistentVolumeClaimVolumeSourceArgs,
    VolumeArgs,
    VolumeMountArgs,
    VolumeResourceRequirementsArgs,
)
from pulumi_kubernetes.meta.v1 import ObjectMetaArgs

from components.couchdb_config import NODE_URLS
from components.labels import standard_labels
from components.ops_job import OpsJobTemplate, Schedule, ops_cron_job

MAX_RETENTION_DAYS = 30
BACKUP_DIR = "/backups"


@dataclass(frozen=True)
class BackupsArgs:
    environment: str
    namespace: pulumi.Input[str]
    ops: OpsJobTemplate
    schedule: str
    storage_size: str
    retention_days: int = MAX_RETENTION_DAYS
    storage_class: str | None = None
    # Weekly, in working hours, clear of the nightly backup sharing the same volume.
    verify_schedule: str = "0 9 * * 0"
    deadline_seconds: int = 4 * 3600


class Backups(pulumi.ComponentResource):
    """A nightly `couchops backup` onto its own volume, pruned past the retention, and a
    weekly `couchops verify` that proves the newest backup restores."""

    volume_claim: PersistentVolumeClaim
    backup_job: CronJob
    verify_job: CronJob

    def __init__(
        self, name: str, args: BackupsArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("onboarding:platform:Backups", name, None, opts)
        if not 1 <= args.retention_days <= MAX_RETENTION_DAYS:
            raise ValueError(
                f"backup retention {args.retention_days} days is outside 1..{MAX_RETENTION_DAYS}"
            )
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
            # A `pulumi destroy` must not take the backups with it.
            opts=pulumi.ResourceOptions(parent=self, retain_on_delete=True),
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
            # Each shard copy read from its own pod (by the headless Service's DNS name, which
            # is the host part of the pod's Erlang node name), not relayed by another node.
            "COUCHDB_NODE_URLS": NODE_URLS,
        }

        self.backup_job = ops_cron_job(
            f"{name}-cronjob",
            self,
            args.ops,
            namespace=args.namespace,
            operation="backup",
            schedule=Schedule(cron=args.schedule, deadline_seconds=args.deadline_seconds),
            args=["backup"],
            env=env,
            volumes=[volume],
            mounts=[VolumeMountArgs(name="backups", mount_path=BACKUP_DIR)],
        )
        self.verify_job = ops_cron_job(
            f"{name}-verify-cronjob",
            self,
            args.ops,
            namespace=args.namespace,
            operation="backup-verify",
            schedule=Schedule(cron=args.verify_schedule, deadline_seconds=args.deadline_seconds),
            args=["verify"],
            env=env,
            volumes=[volume],
            mounts=[VolumeMountArgs(name="backups", mount_path=BACKUP_DIR, read_only=True)],
        )
        self.register_outputs({"volume_claim": self.volume_claim.metadata.name})
