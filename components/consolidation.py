"""Migration of the legacy per-user databases into the single consolidated database."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

import pulumi
from pulumi_kubernetes.batch.v1 import Job, JobSpecArgs
from pulumi_kubernetes.core.v1 import (
    KeyToPathArgs,
    SecretVolumeSourceArgs,
    VolumeArgs,
    VolumeMountArgs,
)
from pulumi_kubernetes.meta.v1 import ObjectMetaArgs

from components.couchdb_config import NODE_URLS
from components.ops_job import OPS_NAME, OpsJobTemplate

APP_SECRET_DIR = "/var/run/secrets/couchdb-app"  # noqa: S105 (a mount path)


@dataclass(frozen=True)
class LegacyConsolidationArgs:
    namespace: pulumi.Input[str]
    ops: OpsJobTemplate
    database: str
    # The Secret holding `partitionSecret`, the key of the users' partition pseudonyms.
    app_secret_name: pulumi.Input[str]
    concurrency: int = 8
    delete_sources: bool = False
    deadline_seconds: int = 4 * 3600


class LegacyConsolidation(pulumi.ComponentResource):
    """A one-shot `couchops consolidate` Job: every `userdb-<hex>` database folded into the
    consolidated one under its user's pseudonymous partition, counts verified per user.

    Idempotent, so the Job is named after its settings: changing them (e.g. turning on
    `deleteSources` once a first run verified everything) runs it again.
    """

    job: Job

    def __init__(
        self,
        name: str,
        args: LegacyConsolidationArgs,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("onboarding:platform:LegacyConsolidation", name, None, opts)
        command = ["consolidate", "--concurrency", str(args.concurrency)]
        if args.delete_sources:
            command.append("--delete-sources")
        env = {
            "COUCHDB_DATABASE": args.database,
            "USER_PARTITION_SECRET_FILE": f"{APP_SECRET_DIR}/partitionSecret",
            # Each source read from its copy's own pod (2,000 sources: 37.9-43.1 s of
            # CouchDB CPU instead of 40.4-51.0 s relayed, 3-node 3.5.2).
            "COUCHDB_NODE_URLS": NODE_URLS,
        }
        fingerprint = hashlib.sha256(
            json.dumps({"args": command, "image": args.ops.image, **env}, sort_keys=True).encode()
        ).hexdigest()[:10]
        # The partition key only (not the app user's password): it names each user's
        # partition; the copy itself is done with the admin credentials.
        template = args.ops.pod_template(
            "consolidate",
            command,
            env=env,
            service_account=args.ops.service_account(
                f"{name}-sa", self, args.namespace, "consolidate"
            ),
            volumes=[
                VolumeArgs(
                    name="couchdb-app",
                    secret=SecretVolumeSourceArgs(
                        secret_name=args.app_secret_name,
                        default_mode=0o440,
                        items=[KeyToPathArgs(key="partitionSecret", path="partitionSecret")],
                    ),
                )
            ],
            mounts=[VolumeMountArgs(name="couchdb-app", mount_path=APP_SECRET_DIR, read_only=True)],
        )
        self.job = Job(
            f"{name}-job",
            metadata=ObjectMetaArgs(
                name=f"{OPS_NAME}-consolidate-{fingerprint}",
                namespace=args.namespace,
                labels=args.ops.labels("consolidate"),
            ),
            spec=JobSpecArgs(
                backoff_limit=3,
                active_deadline_seconds=args.deadline_seconds,
                template=template,
            ),
            opts=pulumi.ResourceOptions(parent=self),
        )
        self.register_outputs({"job": self.job.metadata.name})
