"""The GDPR purge: every day, nothing personal older than the retention stays readable."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
from pulumi_kubernetes.batch.v1 import CronJob

from components.ops_job import OpsJobTemplate, Schedule, ops_cron_job

MAX_RETENTION_DAYS = 30


@dataclass(frozen=True)
class GdprPurgeArgs:
    namespace: pulumi.Input[str]
    ops: OpsJobTemplate
    database: str
    schedule: str
    retention_days: int = MAX_RETENTION_DAYS
    # Generous, but well inside a day so a stuck run never overlaps the next one.
    deadline_seconds: int = 6 * 3600


class GdprPurge(pulumi.ComponentResource):
    """`couchops purge` on a daily CronJob: purges (not deletes) every revision older than
    the retention, so no body survives in old revisions, indexes or change feeds."""

    cron_job: CronJob

    def __init__(
        self, name: str, args: GdprPurgeArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("onboarding:platform:GdprPurge", name, None, opts)
        if not 1 <= args.retention_days <= MAX_RETENTION_DAYS:
            raise ValueError(
                f"purge retention {args.retention_days} days is outside 1..{MAX_RETENTION_DAYS}"
            )
        self.cron_job = ops_cron_job(
            f"{name}-cronjob",
            self,
            args.ops,
            namespace=args.namespace,
            operation="purge",
            schedule=Schedule(cron=args.schedule, deadline_seconds=args.deadline_seconds),
            args=["purge"],
            env={
                "COUCHDB_DATABASE": args.database,
                "PURGE_RETENTION_DAYS": str(args.retention_days),
            },
        )
        self.register_outputs({"schedule": args.schedule})
