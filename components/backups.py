"""Backups of every database, documents and attachments, within the GDPR budget."""

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

BACKUP_DIR = "/backups"


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
            # A `pulumi destroy` must not take the backups with it. The volume then stays,
            # but its expiry CronJob is gone: nothing deletes old backups any more, so an
            # operator must run `couchops backup-expire` against it, or delete it, within
            # backup.retentionDays (README).
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
            "BACKUP_EXPIRY_INTERVAL_HOURS": str(args.expiry_interval_hours),
            "GDPR_MAX_AGE_DAYS": str(args.max_age_days),
            # Each shard copy read from its own pod (by the headless Service's DNS name, which
            # is the host part of the pod's Erlang node name), not relayed by another node.
            "COUCHDB_NODE_URLS": NODE_URLS,
        }

        def job(
            resource: str, operation: str, cron: str, deadline: int, command: str, *, writes: bool
        ) -> CronJob:
            return ops_cron_job(
                resource,
                self,
                args.ops,
                namespace=args.namespace,
                operation=operation,
                schedule=Schedule(cron=cron, deadline_seconds=deadline, time_zone=args.time_zone),
                args=[command],
                env=env,
                volumes=[volume],
                mounts=[
                    VolumeMountArgs(
                        name="backups", mount_path=BACKUP_DIR, read_only=None if writes else True
                    )
                ],
            )

        self.backup_job = job(
            f"{name}-cronjob", "backup", args.schedule, args.deadline_seconds, "backup", writes=True
        )
        self.verify_job = job(
            f"{name}-verify-cronjob",
            "backup-verify",
            args.verify_schedule,
            args.deadline_seconds,
            "verify",
            writes=False,
        )
        # Apart from the backup run, so backups expire on time even when backups fail.
        self.expiry_job = job(
            f"{name}-expire-cronjob",
            "backup-expire",
            args.expiry_schedule,
            args.expiry_deadline_seconds,
            "backup-expire",
            writes=True,
        )
        self.register_outputs({"volume_claim": self.volume_claim.metadata.name})
