"""The agency's onboarding web site: Deployment, Service, autoscaler, disruption budget."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import pulumi
from pulumi_kubernetes.apps.v1 import (
    Deployment,
    DeploymentSpecArgs,
    DeploymentStrategyArgs,
    RollingUpdateDeploymentArgs,
)
from pulumi_kubernetes.autoscaling.v2 import (
    CrossVersionObjectReferenceArgs,
    HorizontalPodAutoscaler,
    HorizontalPodAutoscalerBehaviorArgs,
    HorizontalPodAutoscalerSpecArgs,
    HPAScalingPolicyArgs,
    HPAScalingRulesArgs,
    MetricSpecArgs,
    MetricTargetArgs,
    ResourceMetricSourceArgs,
)
from pulumi_kubernetes.core.v1 import (
    AffinityArgs,
    ContainerArgs,
    ContainerPortArgs,
    EnvVarArgs,
    EnvVarSourceArgs,
    HTTPGetActionArgs,
    PodSpecArgs,
    PodTemplateSpecArgs,
    ProbeArgs,
    SecretKeySelectorArgs,
    Service,
    ServicePortArgs,
    ServiceSpecArgs,
    VolumeMountArgs,
)
from pulumi_kubernetes.meta.v1 import LabelSelectorArgs, ObjectMetaArgs
from pulumi_kubernetes.networking.v1 import (
    IPBlockArgs,
    NetworkPolicy,
    NetworkPolicyEgressRuleArgs,
    NetworkPolicyIngressRuleArgs,
    NetworkPolicyPeerArgs,
    NetworkPolicyPortArgs,
    NetworkPolicySpecArgs,
)
from pulumi_kubernetes.policy.v1 import PodDisruptionBudget, PodDisruptionBudgetSpecArgs

from components.labels import DOMAIN, standard_labels
from components.node_pool import HOSTNAME_LABEL
from components.tls import CA_FILE_ENV, CLIENT_CA_FILE, ca_mount, ca_volume
from components.workload import (
    ContainerResources,
    RunAs,
    Scheduling,
    restricted_container,
    scratch_volume,
    service_account,
    spread,
)

NAME = "webapp"
SERVICE_PORT = 80
# The container port serving the metrics and the health path; not on the Service.
MANAGEMENT_PORT_NAME = "management"
WEBAPP_RUN_AS = RunAs(user=10001, group=10001)
TMP_SIZE_LIMIT = "256Mi"


@dataclass(frozen=True)
class ExternalService:
    """An external service the site may call: its address ranges and TCP ports.
    NetworkPolicy matches addresses, never names: `host` is kept as an annotation only."""

    name: str
    cidrs: Sequence[str]
    ports: Sequence[int]
    host: str | None = None


@dataclass(frozen=True)
class CouchDBAccess:
    """What the site needs to reach the database, all taken from CouchDBCluster outputs."""

    url: pulumi.Input[str]
    database: str
    credentials_secret: pulumi.Input[str]
    client_labels: Mapping[str, str]
    # Changes exactly when the credentials Secret's content does (a rotated password).
    credentials_digest: pulumi.Input[str]
    # The Secret whose `ca.crt` verifies CouchDB's HTTPS certificate (mounted alone, the
    # file named by COUCHDB_CA_FILE); None: the system's CAs verify it.
    ca_secret_name: pulumi.Input[str] | None = None


@dataclass(frozen=True)
class WebAppArgs:
    environment: str
    namespace: pulumi.Input[str]
    image: str
    # The site's port, the only one the edge routes to; the management port serves the
    # metrics and the health path, for Prometheus and the kubelet only.
    port: int
    management_port: int
    health_path: str
    min_replicas: int
    max_replicas: int
    target_cpu_utilization: int
    resources: ContainerResources
    scheduling: Scheduling
    couchdb: CouchDBAccess
    # The edge's proxies (pods of ingress_namespace carrying ingress_pod_labels) may open the
    # public port only; the monitoring namespace's pods the management port only.
    ingress_namespace: str
    ingress_pod_labels: Mapping[str, str]
    metrics_namespace: str
    # The only destinations outside the cluster the site may open; empty: none (the
    # namespace's policies allow DNS, and the CouchDB client label CouchDB's port).
    egress: Sequence[ExternalService] = field(default_factory=tuple)


class WebApp(pulumi.ComponentResource):
    """The onboarding site, scaled on CPU between min and max replicas."""

    deployment: Deployment
    service: Service
    service_name: pulumi.Output[str]
    service_port: int
    selector_labels: pulumi.Output[dict[str, str]]

    def __init__(
        self, name: str, args: WebAppArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("onboarding:platform:WebApp", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        labels = standard_labels(NAME, args.environment, "frontend", args.image)
        selector = {k: labels[k] for k in ("app.kubernetes.io/name", "app.kubernetes.io/instance")}

        def credential(key: str) -> EnvVarSourceArgs:
            return EnvVarSourceArgs(
                secret_key_ref=SecretKeySelectorArgs(name=args.couchdb.credentials_secret, key=key)
            )

        ca = args.couchdb.ca_secret_name
        ca_env = [EnvVarArgs(name=CA_FILE_ENV, value=CLIENT_CA_FILE)] if ca is not None else []
        ca_mounts = [ca_mount()] if ca is not None else []
        ca_volumes = [ca_volume(ca)] if ca is not None else []
        account = service_account(
            f"{name}-sa", name=NAME, namespace=args.namespace, labels=labels, parent=self
        )
        self.deployment = Deployment(
            f"{name}-deployment",
            metadata=ObjectMetaArgs(name=NAME, namespace=args.namespace, labels=labels),
            spec=DeploymentSpecArgs(
                # No replica count: the autoscaler owns it. Declaring one would make every
                # `pulumi up` reset a site scaled out for a campaign back to the minimum.
                revision_history_limit=5,
                selector=LabelSelectorArgs(match_labels=selector),
                strategy=DeploymentStrategyArgs(
                    type="RollingUpdate",
                    # Never below the current capacity during a rollout.
                    rolling_update=RollingUpdateDeploymentArgs(max_unavailable=0, max_surge="25%"),
                ),
                template=PodTemplateSpecArgs(
                    metadata=ObjectMetaArgs(
                        labels={**labels, **args.couchdb.client_labels},
                        # The credentials are env variables, read once at start: new ones
                        # roll the pods (never below the current capacity, see strategy).
                        annotations={
                            "checksum/couchdb-credentials": args.couchdb.credentials_digest
                        },
                    ),
                    spec=PodSpecArgs(
                        **args.scheduling.pod_fields(WEBAPP_RUN_AS, account.metadata.name),
                        affinity=AffinityArgs(node_affinity=args.scheduling.node_affinity),
                        topology_spread_constraints=[spread(HOSTNAME_LABEL, selector)],
                        containers=[
                            ContainerArgs(
                                name=NAME,
                                image=args.image,
                                ports=[
                                    ContainerPortArgs(name="http", container_port=args.port),
                                    ContainerPortArgs(
                                        name=MANAGEMENT_PORT_NAME,
                                        container_port=args.management_port,
                                    ),
                                ],
                                env=[
                                    EnvVarArgs(name="PORT", value=str(args.port)),
                                    EnvVarArgs(
                                        name="MANAGEMENT_PORT", value=str(args.management_port)
                                    ),
                                    EnvVarArgs(name="COUCHDB_URL", value=args.couchdb.url),
                                    *ca_env,
                                    EnvVarArgs(
                                        name="COUCHDB_DATABASE", value=args.couchdb.database
                                    ),
                                    EnvVarArgs(
                                        name="COUCHDB_USER", value_from=credential("username")
                                    ),
                                    EnvVarArgs(
                                        name="COUCHDB_PASSWORD", value_from=credential("password")
                                    ),
                                    EnvVarArgs(
                                        name="USER_PARTITION_SECRET",
                                        value_from=credential("partitionSecret"),
                                    ),
                                ],
                                resources=args.resources.to_args(),
                                security_context=restricted_container(),
                                readiness_probe=ProbeArgs(
                                    http_get=HTTPGetActionArgs(
                                        path=args.health_path, port=MANAGEMENT_PORT_NAME
                                    ),
                                    period_seconds=5,
                                    failure_threshold=3,
                                ),
                                liveness_probe=ProbeArgs(
                                    http_get=HTTPGetActionArgs(
                                        path=args.health_path, port=MANAGEMENT_PORT_NAME
                                    ),
                                    initial_delay_seconds=10,
                                    period_seconds=15,
                                    failure_threshold=4,
                                ),
                                volume_mounts=[
                                    VolumeMountArgs(name="tmp", mount_path="/tmp"),
                                    *ca_mounts,
                                ],
                            )
                        ],
                        volumes=[scratch_volume("tmp", TMP_SIZE_LIMIT), *ca_volumes],
                    ),
                ),
            ),
            opts=child,
        )
        # The plain labels, not the Deployment's output (known only once it is available): the
        # Service, the budget and the NetworkPolicy exist from the start (see CouchDBCluster).
        self.selector_labels = pulumi.Output.from_input(selector)

        self.service = Service(
            f"{name}-service",
            metadata=ObjectMetaArgs(name=NAME, namespace=args.namespace, labels=labels),
            spec=ServiceSpecArgs(
                type="ClusterIP",
                selector=self.selector_labels,
                ports=[ServicePortArgs(name="http", port=SERVICE_PORT, target_port="http")],
            ),
            opts=child,
        )
        self.service_name = self.service.metadata.name
        self.service_port = SERVICE_PORT

        HorizontalPodAutoscaler(
            f"{name}-hpa",
            metadata=ObjectMetaArgs(name=NAME, namespace=args.namespace, labels=labels),
            spec=HorizontalPodAutoscalerSpecArgs(
                scale_target_ref=CrossVersionObjectReferenceArgs(
                    api_version="apps/v1", kind="Deployment", name=self.deployment.metadata.name
                ),
                min_replicas=args.min_replicas,
                max_replicas=args.max_replicas,
                metrics=[
                    MetricSpecArgs(
                        type="Resource",
                        resource=ResourceMetricSourceArgs(
                            name="cpu",
                            target=MetricTargetArgs(
                                type="Utilization",
                                average_utilization=args.target_cpu_utilization,
                            ),
                        ),
                    )
                ],
                # Campaign launches arrive as bursts: scale up at once, down slowly.
                behavior=HorizontalPodAutoscalerBehaviorArgs(
                    scale_up=HPAScalingRulesArgs(
                        stabilization_window_seconds=0,
                        select_policy="Max",
                        policies=[
                            HPAScalingPolicyArgs(type="Percent", value=100, period_seconds=30),
                            HPAScalingPolicyArgs(type="Pods", value=4, period_seconds=30),
                        ],
                    ),
                    scale_down=HPAScalingRulesArgs(
                        stabilization_window_seconds=600,
                        policies=[
                            HPAScalingPolicyArgs(type="Percent", value=25, period_seconds=120)
                        ],
                    ),
                ),
            ),
            opts=child,
        )

        PodDisruptionBudget(
            f"{name}-pdb",
            metadata=ObjectMetaArgs(name=NAME, namespace=args.namespace, labels=labels),
            spec=PodDisruptionBudgetSpecArgs(
                max_unavailable=1,
                selector=LabelSelectorArgs(match_labels=self.selector_labels),
                unhealthy_pod_eviction_policy="AlwaysAllow",
            ),
            opts=child,
        )

        def from_namespace(namespace: str) -> NetworkPolicyPeerArgs:
            return NetworkPolicyPeerArgs(
                namespace_selector=LabelSelectorArgs(
                    match_labels={"kubernetes.io/metadata.name": namespace}
                )
            )

        NetworkPolicy(
            f"{name}-netpol",
            metadata=ObjectMetaArgs(name=NAME, namespace=args.namespace, labels=labels),
            spec=NetworkPolicySpecArgs(
                pod_selector=LabelSelectorArgs(match_labels=self.selector_labels),
                policy_types=["Ingress"],
                ingress=[
                    # The edge's proxies: the public port, never the management one.
                    NetworkPolicyIngressRuleArgs(
                        from_=[
                            NetworkPolicyPeerArgs(
                                namespace_selector=LabelSelectorArgs(
                                    match_labels={
                                        "kubernetes.io/metadata.name": args.ingress_namespace
                                    }
                                ),
                                pod_selector=LabelSelectorArgs(
                                    match_labels=dict(args.ingress_pod_labels)
                                ),
                            )
                        ],
                        ports=[NetworkPolicyPortArgs(protocol="TCP", port=args.port)],
                    ),
                    # Prometheus: the management port (metrics), never the public one.
                    NetworkPolicyIngressRuleArgs(
                        from_=[from_namespace(args.metrics_namespace)],
                        ports=[NetworkPolicyPortArgs(protocol="TCP", port=args.management_port)],
                    ),
                ],
            ),
            opts=child,
        )

        self._egress(name, args, labels)

        self.register_outputs(
            {"service_name": self.service_name, "selector_labels": self.selector_labels}
        )

    def _egress(self, name: str, args: WebAppArgs, labels: dict[str, str]) -> None:
        """One NetworkPolicy per external service of the allow-list, named after it: egress
        to its ranges and ports only (the namespace denies all other egress)."""
        for service in args.egress:
            NetworkPolicy(
                f"{name}-egress-{service.name}-netpol",
                metadata=ObjectMetaArgs(
                    name=f"{NAME}-egress-{service.name}",
                    namespace=args.namespace,
                    labels=labels,
                    annotations=(
                        {f"{DOMAIN}/external-host": service.host} if service.host else None
                    ),
                ),
                spec=NetworkPolicySpecArgs(
                    pod_selector=LabelSelectorArgs(match_labels=self.selector_labels),
                    policy_types=["Egress"],
                    egress=[
                        NetworkPolicyEgressRuleArgs(
                            to=[
                                NetworkPolicyPeerArgs(ip_block=IPBlockArgs(cidr=cidr))
                                for cidr in service.cidrs
                            ],
                            ports=[
                                NetworkPolicyPortArgs(protocol="TCP", port=port)
                                for port in service.ports
                            ],
                        )
                    ],
                ),
                opts=pulumi.ResourceOptions(parent=self),
            )
