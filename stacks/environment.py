"""One environment of the platform, composed from its validated settings.

prod and preprod are built by this same function; they differ only by their stack files.
Each component consumes the previous ones' outputs, so no name, label or selector is
spelled twice.
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
from pydantic import SecretStr

from components import couchdb_cluster, webapp
from components.backups import Backups, BackupsArgs, ObjectStorage
from components.consolidation import LegacyConsolidation, LegacyConsolidationArgs
from components.couchdb_cluster import (
    ClusterKeys,
    CouchDBCluster,
    CouchDBClusterArgs,
    PasswordGenerations,
)
from components.edge import Edge, EdgeArgs, proxy_pod_labels
from components.gdpr_purge import GdprPurge, GdprPurgeArgs
from components.monitoring import Monitoring, MonitoringArgs, ScrapeTarget
from components.namespace import EnvironmentNamespace, EnvironmentNamespaceArgs, Quota
from components.node_pool import NodePool, NodePoolArgs, PoolNode
from components.webapp import CouchDBAccess, ExternalService, WebApp, WebAppArgs
from components.workload import ContainerResources, Scheduling
from infra.settings import FRENCH_REGIONS, ResourceSettings, Settings, quantity_value
from supervision.context import Retention

# Operations jobs that may run at once: the setup Job, a backup (or the weekly verify), a
# purge and the hourly backup expiry.
CONCURRENT_OPS_JOBS = 4
# Room for rolling updates (surge pods) above the steady state.
QUOTA_HEADROOM = 1.25


@dataclass(frozen=True)
class Environment:
    namespace: EnvironmentNamespace
    node_pool: NodePool
    couchdb: CouchDBCluster
    webapp: WebApp
    edge: Edge
    backups: Backups
    purge: GdprPurge
    monitoring: Monitoring
    consolidation: LegacyConsolidation | None


def container_resources(settings: ResourceSettings) -> ContainerResources:
    return ContainerResources(
        cpu_request=settings.cpu_request,
        memory_request=settings.memory_request,
        memory_limit=settings.memory_limit,
        cpu_limit=settings.cpu_limit,
        ephemeral_storage_request=settings.ephemeral_storage_request,
        ephemeral_storage_limit=settings.ephemeral_storage_limit,
    )


def environment_quota(settings: Settings) -> Quota:
    """What the environment may request: its workloads at full scale, plus surge room."""
    workloads = [
        (settings.couchdb.resources, settings.couchdb.replicas),
        (settings.webapp.resources, settings.webapp.max_replicas),
        (settings.ops.resources, CONCURRENT_OPS_JOBS),
    ]

    def total(field: str) -> float:
        return QUOTA_HEADROOM * sum(
            quantity_value(getattr(resources, field)) * count for resources, count in workloads
        )

    storage = quantity_value(settings.couchdb.storage_size) * settings.couchdb.replicas
    storage += quantity_value(settings.backup.storage_size)
    pods = settings.couchdb.replicas + settings.webapp.max_replicas + CONCURRENT_OPS_JOBS
    return Quota(
        cpu_requests=f"{int(total('cpu_request') * 1000)}m",
        memory_requests=f"{int(total('memory_request') / 2**20)}Mi",
        memory_limits=f"{int(total('memory_limit') / 2**20)}Mi",
        storage_requests=f"{int(storage / 2**30) + 1}Gi",
        pods=int(pods * QUOTA_HEADROOM) + 1,
    )


def restored_keys(settings: Settings) -> ClusterKeys:
    """The keys taken back from the escrow (`restoredKeys`), as Pulumi secrets."""
    restored = settings.restored_keys
    if restored is None:
        return ClusterKeys()

    def secret(value: SecretStr | None) -> pulumi.Output[str] | None:
        return None if value is None else pulumi.Output.secret(value.get_secret_value())

    return ClusterKeys(
        partition_secret=secret(restored.partition_secret),
        erlang_cookie=secret(restored.erlang_cookie),
        uuid=secret(restored.uuid),
        auth_secret=secret(restored.auth_secret),
    )


def object_storage(settings: Settings) -> ObjectStorage | None:
    storage = settings.backup.object_storage
    if storage is None:
        return None
    return ObjectStorage(
        endpoint=storage.endpoint,
        bucket=storage.bucket,
        region=storage.region,
        prefix=storage.key_prefix(settings.environment),
        credentials_secret=storage.credentials_secret,
        recipients=list(storage.recipients),
        keep_local_copy=storage.keep_local_copy,
    )


def build_environment(
    settings: Settings, opts: pulumi.ResourceOptions | None = None
) -> Environment:
    """Every component of one environment; `opts` carries the Kubernetes provider."""
    env = settings.environment
    base = opts or pulumi.ResourceOptions()
    namespace = EnvironmentNamespace(
        f"{env}-namespace",
        EnvironmentNamespaceArgs(
            environment=env, name=settings.namespace, quota=environment_quota(settings)
        ),
        opts=base,
    )
    in_namespace = pulumi.ResourceOptions.merge(
        base, pulumi.ResourceOptions(depends_on=[namespace])
    )

    pool = NodePool(
        f"{env}-node-pool",
        NodePoolArgs(
            environment=env,
            nodes=[PoolNode(n.name, n.region, n.zone) for n in settings.node_pool.nodes],
            allowed_regions=FRENCH_REGIONS,
            manages_nodes=settings.node_pool.manages_nodes,
        ),
        opts=base,
    )
    scheduling = Scheduling(
        node_selector=pool.node_selector,
        tolerations=pool.tolerations,
        node_affinity=pool.node_affinity,
        priority_class_name=pool.priority_class_name,
    )

    couchdb = CouchDBCluster(
        f"{env}-couchdb",
        CouchDBClusterArgs(
            environment=env,
            namespace=namespace.name,
            namespace_name=settings.namespace,
            image=settings.couchdb.image,
            replicas=settings.couchdb.replicas,
            shards=settings.couchdb.shards,
            shard_copies=settings.couchdb.shard_copies,
            placement=settings.couchdb_placement,
            node_zones={node.name: node.zone for node in settings.node_pool.nodes},
            database=settings.couchdb.database,
            storage_size=settings.couchdb.storage_size,
            storage_class=settings.couchdb.storage_class,
            resources=container_resources(settings.couchdb.resources),
            scheduling=scheduling,
            ops_image=settings.ops.image,
            ops_resources=container_resources(settings.ops.resources),
            pushgateway_url=settings.monitoring.pushgateway_url,
            metrics_namespace=settings.monitoring.namespace,
            max_document_size_bytes=settings.couchdb.max_document_size_bytes,
            purged_infos_limit=settings.couchdb.purged_infos_limit,
            restored_keys=restored_keys(settings),
            password_generations=PasswordGenerations(
                admin=settings.couchdb.password_rotation.admin,
                app=settings.couchdb.password_rotation.app,
            ),
            escrow_recipient=settings.escrow_recipient,
        ),
        opts=in_namespace,
    )
    if not settings.require_image_digests:
        for key, image in settings.tag_only_images().items():
            pulumi.log.warn(
                f"onboarding:{key} {image} is pinned by tag only (requireImageDigests is "
                "false): what the tag points at can change in the registry"
            )
    if settings.backup.object_storage is None:
        pulumi.log.warn(
            f"onboarding:backup.objectStorage is not set: the backups of {env} stay on a volume "
            "of the same cluster, and a lost cluster loses them (docs/offsite-backups.md)"
        )
    if couchdb.key_escrow is not None:
        # Taken with `pulumi stack output keyEscrow --show-secrets`, opened with `age -d`.
        pulumi.export("keyEscrow", couchdb.key_escrow)
    else:
        pulumi.log.warn(
            f"onboarding:escrowRecipient is not set: the keys of {env} (partition key, Erlang "
            "cookie, uuid, auth secret) are not escrowed, and a lost state loses them "
            "(runbooks/state-safety.md)"
        )
    site = WebApp(
        f"{env}-webapp",
        WebAppArgs(
            environment=env,
            namespace=namespace.name,
            image=settings.webapp.image,
            port=settings.webapp.port,
            management_port=settings.webapp.management_port,
            health_path=settings.webapp.health_path,
            min_replicas=settings.webapp.min_replicas,
            max_replicas=settings.webapp.max_replicas,
            target_cpu_utilization=settings.webapp.target_cpu_utilization,
            resources=container_resources(settings.webapp.resources),
            scheduling=scheduling,
            couchdb=CouchDBAccess(
                url=couchdb.url,
                database=settings.couchdb.database,
                credentials_secret=couchdb.app_secret_name,
                client_labels=couchdb.client_labels,
                credentials_digest=couchdb.app_credentials_digest,
                ca_secret_name=couchdb.tls.secret_name,
            ),
            ingress_namespace=settings.ingress.gateway.proxy_namespace,
            ingress_pod_labels=proxy_pod_labels(settings.namespace),
            metrics_namespace=settings.monitoring.namespace,
            egress=[
                ExternalService(rule.name, rule.cidrs, rule.ports, rule.host)
                for rule in settings.webapp.egress
            ],
        ),
        # The app user exists, with the Secret's password, once the setup Job ran: after a
        # rotation the site's pods roll only when the new password works.
        opts=pulumi.ResourceOptions.merge(
            in_namespace, pulumi.ResourceOptions(depends_on=[couchdb.setup_job])
        ),
    )

    edge = Edge(
        f"{env}-edge",
        EdgeArgs(
            environment=env,
            namespace=namespace.name,
            host=settings.ingress.host,
            gateway_class=settings.ingress.gateway.class_name,
            cluster_issuer=settings.ingress.cluster_issuer,
            public_paths=settings.ingress.public_paths,
            blocked_paths=[settings.webapp.metrics_path, settings.webapp.health_path],
            backend_service=site.service_name,
            backend_port=site.service_port,
            rate_limit_rps=settings.ingress.rate_limit_rps,
            max_body_size=settings.ingress.max_body_quantity(),
        ),
        opts=in_namespace,
    )

    backups = Backups(
        f"{env}-backups",
        BackupsArgs(
            environment=env,
            namespace=namespace.name,
            ops=couchdb.ops,
            schedule=settings.backup.schedule,
            verify_schedule=settings.backup.verify_schedule,
            expiry_schedule=settings.backup.expiry_schedule,
            time_zone=settings.time_zone,
            storage_size=settings.backup.storage_size,
            retention_days=settings.backup.retention_days,
            max_age_days=settings.gdpr.max_age_days,
            expiry_interval_hours=settings.backup_expiry_interval_hours,
            storage_class=settings.backup.storage_class,
            object_storage=object_storage(settings),
        ),
        opts=in_namespace,
    )
    purge = GdprPurge(
        f"{env}-gdpr-purge",
        GdprPurgeArgs(
            namespace=namespace.name,
            ops=couchdb.ops,
            database=settings.couchdb.database,
            schedule=settings.purge.schedule,
            time_zone=settings.time_zone,
            retention_days=settings.purge.retention_days,
            max_age_days=settings.gdpr.max_age_days,
            deadline_seconds=settings.purge.deadline_hours * 3600,
        ),
        opts=in_namespace,
    )
    monitoring = Monitoring(
        f"{env}-monitoring",
        MonitoringArgs(
            environment=env,
            namespace=namespace.name,
            namespace_name=settings.namespace,
            couchdb=ScrapeTarget(
                job=couchdb_cluster.NAME,
                selector_labels=couchdb.selector_labels,
                port="metrics",
                path="/_node/_local/_prometheus",
            ),
            couchdb_replicas=settings.couchdb.replicas,
            webapp=ScrapeTarget(
                job=webapp.NAME,
                selector_labels=site.selector_labels,
                port=webapp.MANAGEMENT_PORT_NAME,
                path=settings.webapp.metrics_path,
            ),
            public_url=edge.url,
            monitoring_namespace=settings.monitoring.namespace,
            prometheus_release=settings.monitoring.prometheus_release,
            pushgateway_url=settings.monitoring.pushgateway_url,
            blackbox_prober_url=settings.monitoring.blackbox_prober_url,
            runbook_base_url=settings.monitoring.runbook_base_url,
            grafana_dashboard_label=settings.monitoring.grafana_dashboard_label,
            # GDPRPurgeStale's threshold is checked against the purge these settings run.
            retention=Retention(
                budget_days=settings.gdpr.max_age_days,
                purge_retention_days=settings.purge.retention_days,
                purge_longest_gap_hours=settings.purge_interval_hours,
                purge_deadline_hours=settings.purge.deadline_hours,
            ),
        ),
        opts=in_namespace,
    )
    consolidation = None
    if settings.consolidation.enabled:
        consolidation = LegacyConsolidation(
            f"{env}-consolidation",
            LegacyConsolidationArgs(
                namespace=namespace.name,
                ops=couchdb.ops,
                database=settings.couchdb.database,
                app_secret_name=couchdb.app_secret_name,
                concurrency=settings.consolidation.concurrency,
                delete_sources=settings.consolidation.delete_sources,
            ),
            # The consolidated database and its indexes come from the setup Job.
            opts=pulumi.ResourceOptions.merge(
                in_namespace, pulumi.ResourceOptions(depends_on=[couchdb.setup_job])
            ),
        )
    return Environment(
        namespace, pool, couchdb, site, edge, backups, purge, monitoring, consolidation
    )
