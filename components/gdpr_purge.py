"""The GDPR purge: every day, nothing personal older than the retention stays readable."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
from pulumi_kubernetes.batch.v1 import CronJob

from components.ops_job import OpsJobTemplate, Schedule, ops_cron_job


@dataclass(frozen=True)
class GdprPurgeArgs:
    """What the purge removes and when it runs.

    infra/settings.py checked these together: data reaches at most `retention_days`, plus the
    longest wait between two runs of `schedule` in `time_zone`, plus one run up to
    `deadline_seconds`, and that stays within the `max_age_days` budget.
    """

    namespace: pulumi.Input[str]
    ops: OpsJobTemplate
    database: str
    schedule: str
    time_zone: str
    retention_days: int
    max_age_days: int
    deadline_seconds: int


class GdprPurge(pulumi.ComponentResource):
    """`couchops purge` on a daily CronJob: purges (not deletes) every revision older than
    the retention, so no body survives in old revisions, indexes or change feeds."""

    cron_job: CronJob

    def __init__(
        self, name: str, args: GdprPurgeArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("onboarding:platform:GdprPurge", name, None, opts)
        self.cron_job = ops_cron_job(
            f"{name}-cronjob",
            self,
            args.ops,
            namespace=args.namespace,
            operation="purge",
            schedule=Schedule(
                cron=args.schedule,
                deadline_seconds=args.deadline_seconds,
                time_zone=args.time_zone,
            ),
            args=["purge"],
            env={
                "COUCHDB_DATABASE": args.database,
                "PURGE_RETENTION_DAYS": str(args.retention_days),
                "GDPR_MAX_AGE_DAYS": str(args.max_age_days),
            },
        )
        self.register_outputs({"schedule": args.schedule})
