"""The pod every operations job runs: the `couchops` tool, its settings and credentials.

The setup Job, the backup, verify, expiry and purge CronJobs differ only by their subcommand
and a few settings; this is the one place that knows how the tool is configured in a pod.

Least privilege: each operation runs under its own ServiceAccount (no API token: couchops
never calls the Kubernetes API), and only an operation that talks to CouchDB mounts the
admin credentials and carries the client label that lets it reach CouchDB's port.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import pulumi
from pulumi_kubernetes.batch.v1 import CronJob, CronJobSpecArgs, JobSpecArgs, JobTemplateSpecArgs
from pulumi_kubernetes.core.v1 import (
    AffinityArgs,
    ContainerArgs,
    EnvVarArgs,
    KeyToPathArgs,
    PodSpecArgs,
    PodTemplateSpecArgs,
    SecretVolumeSourceArgs,
    VolumeArgs,
    VolumeMountArgs,
)
from pulumi_kubernetes.meta.v1 import ObjectMetaArgs

from components.labels import PUSHES_METRICS_LABEL, standard_labels
from components.tls import CA_FILE_ENV, CLIENT_CA_FILE, ca_mount, ca_volume
from components.workload import (
    ContainerResources,
    RunAs,
    Scheduling,
    restricted_container,
    scratch_volume,
    service_account,
)

OPS_NAME = "couchops"
OPS_RUN_AS = RunAs(user=10001, group=10001)
CREDENTIALS_DIR = "/var/run/secrets/couchdb"
# couchops writes no temporary file (it streams to the backup volume); /tmp only has to
# exist for Python and the libraries it loads.
TMP_SIZE_LIMIT = "64Mi"


@dataclass(frozen=True)
class OpsJobTemplate:
    """How to run `couchops` against this environment's CouchDB."""

    environment: str
    image: str
    resources: ContainerResources
    couchdb_url: pulumi.Input[str]
    admin_secret_name: pulumi.Input[str]
    client_labels: Mapping[str, str]
    scheduling: Scheduling
    pushgateway_url: str
    # The Secret whose `ca.crt` (only that key) every operation talking to CouchDB mounts to
    # verify its HTTPS certificate (COUCHDB_CA_FILE); None: the system's CAs verify it.
    ca_secret_name: pulumi.Input[str] | None = None

    def labels(self, operation: str, *, couchdb: bool = True) -> dict[str, str]:
        """The operation's labels; with `couchdb`, the client label that opens CouchDB's port
        to its pods (both NetworkPolicies select on it)."""
        return {
            **standard_labels(OPS_NAME, self.environment, operation, self.image),
            **(self.client_labels if couchdb else {}),
            PUSHES_METRICS_LABEL: "true",
        }

    def service_account(
        self,
        resource_name: str,
        parent: pulumi.Resource,
        namespace: pulumi.Input[str],
        operation: str,
    ) -> pulumi.Output[str]:
        """The operation's own ServiceAccount (`couchops-<operation>`): its name, for
        `pod_template`."""
        account = service_account(
            resource_name,
            name=f"{OPS_NAME}-{operation}",
            namespace=namespace,
            labels=standard_labels(OPS_NAME, self.environment, operation, self.image),
            parent=parent,
        )
        return account.metadata.name

    def pod_template(
        self,
        operation: str,
        args: Sequence[str],
        env: Mapping[str, pulumi.Input[str]] | None = None,
        volumes: Sequence[VolumeArgs] = (),
        mounts: Sequence[VolumeMountArgs] = (),
        *,
        service_account: pulumi.Input[str],
        couchdb: bool = True,
    ) -> PodTemplateSpecArgs:
        """The pod of one operation. `couchdb=False`: an operation that never talks to
        CouchDB (it only reads or deletes backups) gets neither its URL nor the admin
        credentials nor the client label, so its pods cannot even open CouchDB's port."""
        settings: dict[str, pulumi.Input[str]] = {
            "ENVIRONMENT": self.environment,
            "PUSHGATEWAY_URL": self.pushgateway_url,
            **(env or {}),
        }
        credential_volumes: list[VolumeArgs] = []
        credential_mounts: list[VolumeMountArgs] = []
        if couchdb:
            settings.update(
                {
                    "COUCHDB_URL": self.couchdb_url,
                    "COUCHDB_ADMIN_USER_FILE": f"{CREDENTIALS_DIR}/adminUsername",
                    "COUCHDB_ADMIN_PASSWORD_FILE": f"{CREDENTIALS_DIR}/adminPassword",
                }
            )
            credential_volumes.append(
                VolumeArgs(
                    name="couchdb-admin",
                    secret=SecretVolumeSourceArgs(
                        secret_name=self.admin_secret_name,
                        default_mode=0o440,
                        items=[
                            KeyToPathArgs(key="adminUsername", path="adminUsername"),
                            KeyToPathArgs(key="adminPassword", path="adminPassword"),
                        ],
                    ),
                )
            )
            credential_mounts.append(
                VolumeMountArgs(name="couchdb-admin", mount_path=CREDENTIALS_DIR, read_only=True)
            )
            if self.ca_secret_name is not None:
                settings[CA_FILE_ENV] = CLIENT_CA_FILE
                credential_volumes.append(ca_volume(self.ca_secret_name))
                credential_mounts.append(ca_mount())
        return PodTemplateSpecArgs(
            metadata=ObjectMetaArgs(labels=self.labels(operation, couchdb=couchdb)),
            spec=PodSpecArgs(
                **self.scheduling.pod_fields(OPS_RUN_AS, service_account),
                restart_policy="Never",
                affinity=AffinityArgs(node_affinity=self.scheduling.node_affinity),
                containers=[
                    ContainerArgs(
                        name=OPS_NAME,
                        image=self.image,
                        args=list(args),
                        env=[EnvVarArgs(name=k, value=v) for k, v in sorted(settings.items())],
                        resources=self.resources.to_args(),
                        security_context=restricted_container(),
                        volume_mounts=[
                            *credential_mounts,
                            VolumeMountArgs(name="tmp", mount_path="/tmp"),
                            *mounts,
                        ],
                    )
                ],
                volumes=[
                    *credential_volumes,
                    scratch_volume("tmp", TMP_SIZE_LIMIT),
                    *volumes,
                ],
            ),
        )


@dataclass(frozen=True)
class Schedule:
    """When a recurring operation runs and how long it may take."""

    cron: str
    # A run that has not finished by then is killed and counts as failed.
    deadline_seconds: int
    # The zone `cron` is read in (CronJob timeZone): the one infra/settings.py checked the
    # schedule in, where a time skipped in spring does not run and one repeated in autumn
    # runs twice (infra/schedules.py).
    time_zone: str
    # A run missed by more than this (controller down, node drained) is skipped, not
    # started late on top of the next one.
    starting_deadline_seconds: int = 3600


def ops_cron_job(
    resource_name: str,
    parent: pulumi.Resource,
    template: OpsJobTemplate,
    *,
    namespace: pulumi.Input[str],
    operation: str,
    schedule: Schedule,
    args: Sequence[str],
    env: Mapping[str, pulumi.Input[str]] | None = None,
    volumes: Sequence[VolumeArgs] = (),
    mounts: Sequence[VolumeMountArgs] = (),
    couchdb: bool = True,
) -> CronJob:
    """A CronJob running one `couchops` subcommand under its own ServiceAccount: never two
    runs at once, bounded runtime. `couchdb=False` for an operation that never talks to
    CouchDB (`OpsJobTemplate.pod_template`)."""
    account = template.service_account(f"{resource_name}-sa", parent, namespace, operation)
    labels = template.labels(operation, couchdb=couchdb)
    return CronJob(
        resource_name,
        metadata=ObjectMetaArgs(
            name=f"{OPS_NAME}-{operation}",
            namespace=namespace,
            labels=labels,
        ),
        spec=CronJobSpecArgs(
            schedule=schedule.cron,
            time_zone=schedule.time_zone,
            concurrency_policy="Forbid",
            starting_deadline_seconds=schedule.starting_deadline_seconds,
            successful_jobs_history_limit=3,
            failed_jobs_history_limit=5,
            job_template=JobTemplateSpecArgs(
                metadata=ObjectMetaArgs(labels=labels),
                spec=JobSpecArgs(
                    backoff_limit=2,
                    active_deadline_seconds=schedule.deadline_seconds,
                    template=template.pod_template(
                        operation,
                        args,
                        env,
                        volumes,
                        mounts,
                        service_account=account,
                        couchdb=couchdb,
                    ),
                ),
            ),
        ),
        opts=pulumi.ResourceOptions(parent=parent),
    )
