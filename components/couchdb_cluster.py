"""The clustered CouchDB: StatefulSet, services, secrets, config, PDB, network policy and
the setup Job that forms the cluster and creates the consolidated database."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field

import pulumi
import pulumi_random as random
from pulumi_kubernetes.apps.v1 import (
    StatefulSet,
    StatefulSetPersistentVolumeClaimRetentionPolicyArgs,
    StatefulSetSpecArgs,
    StatefulSetUpdateStrategyArgs,
)
from pulumi_kubernetes.batch.v1 import Job, JobSpecArgs
from pulumi_kubernetes.core.v1 import (
    AffinityArgs,
    ConfigMap,
    ConfigMapVolumeSourceArgs,
    ContainerArgs,
    ContainerPortArgs,
    EnvVarArgs,
    EnvVarSourceArgs,
    HTTPGetActionArgs,
    KeyToPathArgs,
    ObjectFieldSelectorArgs,
    PersistentVolumeClaimArgs,
    PersistentVolumeClaimSpecArgs,
    PodAffinityTermArgs,
    PodAntiAffinityArgs,
    PodSpecArgs,
    PodTemplateSpecArgs,
    ProbeArgs,
    Secret,
    SecretVolumeSourceArgs,
    Service,
    ServicePortArgs,
    ServiceSpecArgs,
    TCPSocketActionArgs,
    VolumeArgs,
    VolumeMountArgs,
    VolumeResourceRequirementsArgs,
)
from pulumi_kubernetes.meta.v1 import LabelSelectorArgs, ObjectMetaArgs
from pulumi_kubernetes.networking.v1 import (
    NetworkPolicy,
    NetworkPolicyEgressRuleArgs,
    NetworkPolicyIngressRuleArgs,
    NetworkPolicyPeerArgs,
    NetworkPolicyPortArgs,
    NetworkPolicySpecArgs,
)
from pulumi_kubernetes.policy.v1 import PodDisruptionBudget, PodDisruptionBudgetSpecArgs
from pyrage import encrypt, x25519  # type: ignore[import-untyped]

from components.couchdb_config import (
    DIST_PORT,
    EPMD_PORT,
    HTTPS_PORT,
    KUBERNETES_NODE_ENV,
    METRICS_PORT,
    NODE_ZONES_ENV,
    SSL_DIST_OPTFILE,
    TLS_DIR,
    ClusterIni,
    admin_password_hash,
    dist_tls_flags,
    node_names,
    node_zones_value,
    render_cluster_ini,
    render_secret_ini,
    render_ssl_dist_optfile,
    zone_start_script,
)
from components.couchdb_runtime import (
    init_container,
    runtime_env,
    runtime_mounts,
    runtime_volumes,
)
from components.labels import COUCHDB_CLIENT_LABEL, standard_labels
from components.node_pool import HOSTNAME_LABEL, ZONE_LABEL
from components.ops_job import OpsJobTemplate
from components.tls import InternalTls, InternalTlsArgs, serving_dns_names
from components.workload import (
    ContainerResources,
    RunAs,
    Scheduling,
    restricted_container,
    service_account,
    spread,
)
from infra.settings import ESCROW_FORMAT

NAME = "couchdb"
HEADLESS = f"{NAME}-headless"
DATA_DIR = "/opt/couchdb/data"
LOCAL_D = "/opt/couchdb/etc/local.d"
# The official image's `couchdb` user.
COUCHDB_RUN_AS = RunAs(user=5984, group=5984)


@dataclass(frozen=True)
class ClusterKeys:
    """The keys that give the data and the cluster their identity. Each one given (taken
    back from the key escrow) is used as is; each one left None is generated once, kept in
    the encrypted state and protected from deletion (runbooks/state-safety.md)."""

    # Key of the users' pseudonymous partitions: lost, every user's data is orphaned.
    partition_secret: pulumi.Input[str] | None = None
    # Erlang cookie, `couchdb/uuid` and `chttpd_auth/secret`: the cluster's identity.
    erlang_cookie: pulumi.Input[str] | None = None
    uuid: pulumi.Input[str] | None = None
    auth_secret: pulumi.Input[str] | None = None


@dataclass(frozen=True)
class PasswordGenerations:
    """Raising a generation replaces that password, and everything using it follows."""

    admin: int = 0
    app: int = 0


@dataclass(frozen=True)
class CouchDBClusterArgs:
    environment: str
    namespace: pulumi.Input[str]
    # Plain namespace name: it is part of every Erlang node name, known before deploy.
    namespace_name: str
    image: str
    replicas: int
    shards: int
    shard_copies: int
    database: str
    storage_size: str
    resources: ContainerResources
    scheduling: Scheduling
    # The operations tool's image and resources; the cluster hands the jobs its own URL,
    # credentials and client labels through the `ops` output.
    ops_image: str
    ops_resources: ContainerResources
    pushgateway_url: str
    # Namespace of the Prometheus that scrapes the metrics port.
    metrics_namespace: str
    storage_class: str | None = None
    max_document_size_bytes: int = 8 * 2**20
    purged_infos_limit: int = 100_000
    # Zone -> copies of each shard range of a new database (`[cluster] placement`, from
    # infra/settings.py), and the zone of each dedicated node by name: each pod starts CouchDB
    # with its node's zone. Empty: CouchDB places copies without knowing the zones.
    placement: Mapping[str, int] = field(default_factory=dict)
    node_zones: Mapping[str, str] = field(default_factory=dict)
    admin_username: str = "admin"
    app_username: str = "onboarding-app"
    setup_timeout_seconds: int = 600
    restored_keys: ClusterKeys = field(default_factory=ClusterKeys)
    password_generations: PasswordGenerations = field(default_factory=PasswordGenerations)
    # The age X25519 public key the `key_escrow` output is encrypted to; None: no escrow.
    escrow_recipient: str | None = None


class CouchDBCluster(pulumi.ComponentResource):
    """A CouchDB cluster of `replicas` nodes, one per dedicated node, formed by a Job."""

    statefulset: StatefulSet
    client_service: Service
    headless_service: Service
    setup_job: Job
    selector_labels: pulumi.Output[dict[str, str]]
    client_labels: dict[str, str]
    service_name: pulumi.Output[str]
    url: pulumi.Output[str]
    port: int
    metrics_port: int
    admin_secret_name: pulumi.Output[str]
    app_secret_name: pulumi.Output[str]
    app_secret: Secret
    admin_password: pulumi.Output[str]
    # Changes exactly when the app Secret's content does: pods reading it at start roll.
    app_credentials_digest: pulumi.Output[str]
    # The keys, age-encrypted (armored) to `escrow_recipient`; None without a recipient.
    key_escrow: pulumi.Output[str] | None
    node_names: list[str]
    ops: OpsJobTemplate
    tls: InternalTls

    def __init__(
        self, name: str, args: CouchDBClusterArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("onboarding:platform:CouchDBCluster", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        labels = standard_labels(NAME, args.environment, "database", args.image)
        selector = {k: labels[k] for k in ("app.kubernetes.io/name", "app.kubernetes.io/instance")}
        self.port = HTTPS_PORT
        self.metrics_port = METRICS_PORT
        self.client_labels = {COUCHDB_CLIENT_LABEL: "true"}
        self.node_names = node_names(NAME, HEADLESS, args.namespace_name, args.replicas)

        keys = self._keys(name, args.restored_keys)
        # Passwords are not protected: rotating one replaces it (its keepers change), and a
        # lost one is only replaced, the setup Job setting the new one on its user.
        admin_password = _password(f"{name}-admin-password", args.password_generations.admin, child)
        app_password = _password(f"{name}-app-password", args.password_generations.app, child)
        # RandomPassword, not RandomId: only its result is a secret in the state. The salt is
        # 32 hex digits derived from it, so it stays secret too; a new salt only re-hashes.
        hash_salt = _hex32(
            random.RandomPassword(f"{name}-admin-salt", length=32, special=False, opts=child).result
        )
        self.admin_password = admin_password.result

        admin_hash = pulumi.Output.all(admin_password.result, hash_salt).apply(
            lambda values: admin_password_hash(values[0], values[1])
        )
        secret_ini = pulumi.Output.all(admin_hash, keys.uuid, keys.auth_secret).apply(
            lambda values: render_secret_ini(args.admin_username, values[0], values[1], values[2])
        )
        # Deleting or replacing a Secret that holds keys would take the keys with it.
        keep = pulumi.ResourceOptions(parent=self, protect=True)

        server_secret = Secret(
            f"{name}-server-secret",
            metadata=ObjectMetaArgs(name=f"{NAME}-server", namespace=args.namespace, labels=labels),
            type="Opaque",
            string_data={
                "erlangCookie": keys.erlang_cookie,
                "20-secrets.ini": secret_ini,
            },
            opts=keep,
        )
        admin_secret = Secret(
            f"{name}-admin-secret",
            metadata=ObjectMetaArgs(name=f"{NAME}-admin", namespace=args.namespace, labels=labels),
            type="Opaque",
            string_data={
                "adminUsername": args.admin_username,
                "adminPassword": admin_password.result,
            },
            opts=child,
        )
        app_secret = Secret(
            f"{name}-app-secret",
            metadata=ObjectMetaArgs(name=f"{NAME}-app", namespace=args.namespace, labels=labels),
            type="Opaque",
            string_data={
                "username": args.app_username,
                "password": app_password.result,
                "partitionSecret": keys.partition_secret,
            },
            opts=keep,
        )
        self.admin_secret_name = admin_secret.metadata.name
        self.app_secret_name = app_secret.metadata.name
        self.app_secret = app_secret
        self.app_credentials_digest = _digest(
            args.app_username, app_password.result, keys.partition_secret
        )
        self.key_escrow = None
        if args.escrow_recipient is not None:
            recipient = args.escrow_recipient
            self.key_escrow = pulumi.Output.secret(
                pulumi.Output.all(
                    keys.partition_secret, keys.erlang_cookie, keys.uuid, keys.auth_secret
                ).apply(lambda values: _escrow(args.environment, recipient, values))
            )

        cluster_ini = render_cluster_ini(
            ClusterIni(
                node_names=self.node_names,
                shards=args.shards,
                shard_copies=args.shard_copies,
                max_document_size_bytes=args.max_document_size_bytes,
                placement=args.placement,
            )
        )
        ssl_dist_conf = render_ssl_dist_optfile()
        # The CA and the certificate CouchDB serves on HTTPS and presents to its peers on the
        # Erlang distribution (components/tls.py).
        self.tls = InternalTls(
            f"{name}-tls",
            InternalTlsArgs(
                environment=args.environment,
                namespace=args.namespace,
                labels=labels,
                name=NAME,
                dns_names=serving_dns_names(
                    NAME, HEADLESS, args.namespace_name, NAME, args.replicas
                ),
            ),
            opts=child,
        )
        config_map = ConfigMap(
            f"{name}-config",
            metadata=ObjectMetaArgs(name=f"{NAME}-config", namespace=args.namespace, labels=labels),
            data={"10-cluster.ini": cluster_ini, "ssl_dist.conf": ssl_dist_conf},
            opts=child,
        )

        self.headless_service = Service(
            f"{name}-headless",
            metadata=ObjectMetaArgs(name=HEADLESS, namespace=args.namespace, labels=labels),
            spec=ServiceSpecArgs(
                cluster_ip="None",
                # Peers must resolve each other before they are ready: readiness itself
                # waits for the cluster to sync.
                publish_not_ready_addresses=True,
                selector=selector,
                ports=[
                    ServicePortArgs(name="https", port=HTTPS_PORT, target_port="https"),
                    ServicePortArgs(name="epmd", port=EPMD_PORT, target_port="epmd"),
                    ServicePortArgs(name="dist", port=DIST_PORT, target_port="dist"),
                ],
            ),
            opts=child,
        )

        pod_labels = {**labels, **self.client_labels}
        self.statefulset = StatefulSet(
            f"{name}-statefulset",
            metadata=ObjectMetaArgs(name=NAME, namespace=args.namespace, labels=labels),
            spec=StatefulSetSpecArgs(
                replicas=args.replicas,
                service_name=self.headless_service.metadata.name,
                # Nodes find each other through the seedlist; starting them one by one
                # would only delay the cluster, never order anything.
                pod_management_policy="Parallel",
                update_strategy=StatefulSetUpdateStrategyArgs(type="RollingUpdate"),
                persistent_volume_claim_retention_policy=(
                    StatefulSetPersistentVolumeClaimRetentionPolicyArgs(
                        when_deleted="Retain", when_scaled="Retain"
                    )
                ),
                selector=LabelSelectorArgs(match_labels=selector),
                template=PodTemplateSpecArgs(
                    metadata=ObjectMetaArgs(
                        labels=pod_labels,
                        annotations={
                            # A config or secret change rolls the pods, one at a time: the
                            # ini files are mounted by subPath and the cookie copied at
                            # start, so a running pod never sees either change. (A digest,
                            # not a secret: the key avoids the word "secret", which makes
                            # secret scanners take any high-entropy value for one.)
                            "checksum/config": _sha256(cluster_ini + ssl_dist_conf),
                            "checksum/server-keys": _digest(keys.erlang_cookie, secret_ini),
                        },
                    ),
                    spec=self._pod_spec(
                        args,
                        selector,
                        config_map,
                        server_secret,
                        service_account(
                            f"{name}-sa",
                            name=NAME,
                            namespace=args.namespace,
                            labels=labels,
                            parent=self,
                        ).metadata.name,
                    ),
                ),
                volume_claim_templates=[
                    PersistentVolumeClaimArgs(
                        metadata=ObjectMetaArgs(name="data", labels=labels),
                        spec=PersistentVolumeClaimSpecArgs(
                            access_modes=["ReadWriteOnce"],
                            storage_class_name=args.storage_class,
                            resources=VolumeResourceRequirementsArgs(
                                requests={"storage": args.storage_size}
                            ),
                        ),
                    )
                ],
            ),
            # The claims it creates hold the data and outlive it (Retain above); protected
            # so that no `pulumi up` replaces it nor `pulumi destroy` deletes it by the way.
            opts=keep,
        )
        # The plain labels, not the StatefulSet's output: an output of it is known only once
        # every pod is Ready, and the pods' readiness (/_up) needs the peer traffic the
        # NetworkPolicies below allow. Built from the output, the policies (and the Service, the
        # disruption budget) waited for the StatefulSet, which under an enforcing CNI never
        # became Ready (found on real pods, tests/realpods; KWOK marks pods Ready regardless).
        self.selector_labels = pulumi.Output.from_input(selector)

        self.client_service = Service(
            f"{name}-client",
            metadata=ObjectMetaArgs(name=NAME, namespace=args.namespace, labels=labels),
            spec=ServiceSpecArgs(
                type="ClusterIP",
                selector=self.selector_labels,
                ports=[
                    ServicePortArgs(name="https", port=HTTPS_PORT, target_port="https"),
                    ServicePortArgs(name="metrics", port=METRICS_PORT, target_port="metrics"),
                ],
            ),
            opts=child,
        )
        self.service_name = self.client_service.metadata.name
        self.url = pulumi.Output.concat(
            "https://",
            self.service_name,
            ".",
            args.namespace_name,
            ".svc.cluster.local:",
            str(HTTPS_PORT),
        )

        PodDisruptionBudget(
            f"{name}-pdb",
            metadata=ObjectMetaArgs(name=NAME, namespace=args.namespace, labels=labels),
            spec=PodDisruptionBudgetSpecArgs(
                max_unavailable=1,
                selector=LabelSelectorArgs(match_labels=self.selector_labels),
                # A pod that is not ready yet does not count: a stuck node can still drain.
                unhealthy_pod_eviction_policy="AlwaysAllow",
            ),
            opts=child,
        )

        self.ops = OpsJobTemplate(
            environment=args.environment,
            image=args.ops_image,
            resources=args.ops_resources,
            couchdb_url=self.url,
            ca_secret_name=self.tls.secret_name,
            admin_secret_name=self.admin_secret_name,
            client_labels=self.client_labels,
            scheduling=args.scheduling,
            pushgateway_url=args.pushgateway_url,
        )
        self._network_policies(name, args, labels)
        self.setup_job = self._setup_job(name, args, labels, cluster_ini, app_secret)

        self.register_outputs(
            {
                "service_name": self.service_name,
                "url": self.url,
                "selector_labels": self.selector_labels,
                "admin_secret_name": self.admin_secret_name,
                "app_secret_name": self.app_secret_name,
            }
        )

    def _pod_spec(
        self,
        args: CouchDBClusterArgs,
        selector: dict[str, str],
        config_map: ConfigMap,
        server_secret: Secret,
        account: pulumi.Input[str],
    ) -> PodSpecArgs:
        return PodSpecArgs(
            **args.scheduling.pod_fields(COUCHDB_RUN_AS, account),
            termination_grace_period_seconds=60,
            affinity=AffinityArgs(
                node_affinity=args.scheduling.node_affinity,
                # One CouchDB pod per node, never two: a node loss costs one replica.
                pod_anti_affinity=PodAntiAffinityArgs(
                    required_during_scheduling_ignored_during_execution=[
                        PodAffinityTermArgs(
                            label_selector=LabelSelectorArgs(match_labels=selector),
                            topology_key=HOSTNAME_LABEL,
                        )
                    ]
                ),
            ),
            topology_spread_constraints=[spread(ZONE_LABEL, selector)],
            # The root filesystem is read-only; this fills the few volumes CouchDB and the
            # image's entrypoint write to (components/couchdb_runtime.py).
            init_containers=[init_container(args.image, args.resources)],
            containers=[
                ContainerArgs(
                    name=NAME,
                    image=args.image,
                    ports=[
                        ContainerPortArgs(name="https", container_port=HTTPS_PORT),
                        ContainerPortArgs(name="epmd", container_port=EPMD_PORT),
                        ContainerPortArgs(name="dist", container_port=DIST_PORT),
                        ContainerPortArgs(name="metrics", container_port=METRICS_PORT),
                    ],
                    env=[
                        EnvVarArgs(
                            name="POD_NAME",
                            value_from=EnvVarSourceArgs(
                                field_ref=ObjectFieldSelectorArgs(field_path="metadata.name")
                            ),
                        ),
                        # The image's entrypoint turns this into `-name couchdb@...`. The
                        # cookie is a file the init container copied (never an env value
                        # nor on a command line).
                        EnvVarArgs(
                            name="NODENAME",
                            value=f"$(POD_NAME).{HEADLESS}.{args.namespace_name}.svc.cluster.local",
                        ),
                        *runtime_env(),
                        # The Erlang distribution over TLS (components/couchdb_config.py).
                        EnvVarArgs(name="ERL_FLAGS", value=dist_tls_flags()),
                        *_zone_env(args.node_zones),
                    ],
                    # The image's entrypoint runs this as it is, then the script starts the
                    # image's own start with COUCHDB_ZONE.
                    args=["/bin/sh", "-c", zone_start_script()] if args.node_zones else None,
                    resources=args.resources.to_args(),
                    security_context=restricted_container(),
                    startup_probe=ProbeArgs(
                        tcp_socket=TCPSocketActionArgs(port="https"),
                        period_seconds=5,
                        failure_threshold=60,
                    ),
                    readiness_probe=ProbeArgs(
                        # The kubelet does not verify a probe's certificate.
                        http_get=HTTPGetActionArgs(path="/_up", port="https", scheme="HTTPS"),
                        period_seconds=10,
                        timeout_seconds=5,
                        failure_threshold=3,
                    ),
                    # Liveness stays on the socket: /_up turns 404 while a node re-syncs,
                    # and restarting it then would only make the sync start over.
                    liveness_probe=ProbeArgs(
                        tcp_socket=TCPSocketActionArgs(port="https"),
                        period_seconds=20,
                        timeout_seconds=5,
                        failure_threshold=6,
                    ),
                    volume_mounts=[
                        VolumeMountArgs(name="data", mount_path=DATA_DIR),
                        # etc first: the ini files below are mounted on top of its copy.
                        *runtime_mounts(),
                        VolumeMountArgs(
                            name="config",
                            mount_path=f"{LOCAL_D}/10-cluster.ini",
                            sub_path="10-cluster.ini",
                            read_only=True,
                        ),
                        VolumeMountArgs(
                            name="server-secret",
                            mount_path=f"{LOCAL_D}/20-secrets.ini",
                            sub_path="20-secrets.ini",
                            read_only=True,
                        ),
                        VolumeMountArgs(
                            name="config",
                            mount_path=SSL_DIST_OPTFILE,
                            sub_path="ssl_dist.conf",
                            read_only=True,
                        ),
                        # A directory, never subPath: a renewed certificate reaches the pod.
                        VolumeMountArgs(name="tls", mount_path=TLS_DIR, read_only=True),
                    ],
                )
            ],
            volumes=[
                *runtime_volumes(server_secret.metadata.name),
                VolumeArgs(
                    name="tls",
                    secret=SecretVolumeSourceArgs(
                        secret_name=self.tls.secret_name, default_mode=0o440
                    ),
                ),
                VolumeArgs(
                    name="config",
                    config_map=ConfigMapVolumeSourceArgs(name=config_map.metadata.name),
                ),
                VolumeArgs(
                    name="server-secret",
                    secret=SecretVolumeSourceArgs(
                        secret_name=server_secret.metadata.name,
                        default_mode=0o440,
                        items=[KeyToPathArgs(key="20-secrets.ini", path="20-secrets.ini")],
                    ),
                ),
            ],
        )

    def _network_policies(
        self, name: str, args: CouchDBClusterArgs, labels: dict[str, str]
    ) -> None:
        peers = NetworkPolicyPeerArgs(
            pod_selector=LabelSelectorArgs(match_labels=self.selector_labels)
        )
        clients = NetworkPolicyPeerArgs(
            pod_selector=LabelSelectorArgs(match_labels=self.client_labels)
        )
        scraper = NetworkPolicyPeerArgs(
            namespace_selector=LabelSelectorArgs(
                match_labels={"kubernetes.io/metadata.name": args.metrics_namespace}
            )
        )
        erlang_ports = [
            NetworkPolicyPortArgs(protocol="TCP", port=EPMD_PORT),
            NetworkPolicyPortArgs(protocol="TCP", port=DIST_PORT),
        ]
        NetworkPolicy(
            f"{name}-netpol",
            metadata=ObjectMetaArgs(name=NAME, namespace=args.namespace, labels=labels),
            spec=NetworkPolicySpecArgs(
                pod_selector=LabelSelectorArgs(match_labels=self.selector_labels),
                policy_types=["Ingress", "Egress"],
                ingress=[
                    NetworkPolicyIngressRuleArgs(
                        from_=[clients],
                        ports=[NetworkPolicyPortArgs(protocol="TCP", port=HTTPS_PORT)],
                    ),
                    NetworkPolicyIngressRuleArgs(from_=[peers], ports=erlang_ports),
                    NetworkPolicyIngressRuleArgs(
                        from_=[scraper],
                        ports=[NetworkPolicyPortArgs(protocol="TCP", port=METRICS_PORT)],
                    ),
                ],
                egress=[NetworkPolicyEgressRuleArgs(to=[peers], ports=erlang_ports)],
            ),
            opts=pulumi.ResourceOptions(parent=self),
        )
        NetworkPolicy(
            f"{name}-clients-netpol",
            metadata=ObjectMetaArgs(
                name=f"{NAME}-clients", namespace=args.namespace, labels=labels
            ),
            spec=NetworkPolicySpecArgs(
                pod_selector=LabelSelectorArgs(match_labels=self.client_labels),
                policy_types=["Egress"],
                egress=[
                    NetworkPolicyEgressRuleArgs(
                        to=[peers], ports=[NetworkPolicyPortArgs(protocol="TCP", port=HTTPS_PORT)]
                    )
                ],
            ),
            opts=pulumi.ResourceOptions(parent=self),
        )

    def _setup_job(
        self,
        name: str,
        args: CouchDBClusterArgs,
        labels: dict[str, str],
        cluster_ini: str,
        app_secret: Secret,
    ) -> Job:
        settings: dict[str, str] = {
            "COUCHDB_NODES": ",".join(self.node_names),
            "COUCHDB_DATABASE": args.database,
            "COUCHDB_SHARDS": str(args.shards),
            "COUCHDB_REPLICAS": str(args.shard_copies),
            "COUCHDB_PURGED_INFOS_LIMIT": str(args.purged_infos_limit),
            "COUCHDB_SETUP_TIMEOUT_SECONDS": str(args.setup_timeout_seconds),
            "COUCHDB_APP_USER_FILE": "/var/run/secrets/couchdb-app/username",
            "COUCHDB_APP_PASSWORD_FILE": "/var/run/secrets/couchdb-app/password",
        }
        # The Job is immutable; naming it after everything it depends on makes every change
        # of the cluster's spec run a new setup, and an unchanged spec run none. The app
        # Secret's content counts: a rotated app password is set on the user by a new run.
        spec = json.dumps(
            {"ini": cluster_ini, "image": args.image, "ops": args.ops_image, **settings},
            sort_keys=True,
        )
        job_name = self.app_credentials_digest.apply(
            lambda credentials: f"{NAME}-setup-{_sha256(spec + credentials)[:10]}"
        )
        template = self.ops.pod_template(
            "cluster-setup",
            ["cluster-setup"],
            env=settings,
            service_account=self.ops.service_account(
                f"{name}-setup-sa", self, args.namespace, "cluster-setup"
            ),
            # The app user's name and password, which it sets on the user; never the
            # partition key the same Secret holds for the site.
            volumes=[
                VolumeArgs(
                    name="couchdb-app",
                    secret=SecretVolumeSourceArgs(
                        secret_name=app_secret.metadata.name,
                        default_mode=0o440,
                        items=[
                            KeyToPathArgs(key="username", path="username"),
                            KeyToPathArgs(key="password", path="password"),
                        ],
                    ),
                )
            ],
            mounts=[
                VolumeMountArgs(
                    name="couchdb-app", mount_path="/var/run/secrets/couchdb-app", read_only=True
                )
            ],
        )
        return Job(
            f"{name}-setup",
            metadata=ObjectMetaArgs(
                name=job_name,
                namespace=args.namespace,
                labels={**labels, "app.kubernetes.io/component": "cluster-setup"},
            ),
            spec=JobSpecArgs(
                backoff_limit=4,
                active_deadline_seconds=args.setup_timeout_seconds + 300,
                template=template,
            ),
            opts=pulumi.ResourceOptions(
                parent=self,
                depends_on=[self.statefulset, self.client_service],
            ),
        )

    def _keys(self, name: str, restored: ClusterKeys) -> _Keys:
        """The keys: each restored one as given, the others generated once and protected, so
        that neither a rename nor `pulumi destroy` can take them (runbooks/state-safety.md)."""
        keep = pulumi.ResourceOptions(parent=self, protect=True)

        def key(suffix: str, length: int, given: pulumi.Input[str] | None) -> pulumi.Output[str]:
            if given is not None:
                return pulumi.Output.secret(given)
            return random.RandomPassword(
                f"{name}-{suffix}", length=length, special=False, opts=keep
            ).result

        # A generated uuid is 32 hex digits derived from a RandomPassword (whose result, unlike
        # RandomId's, is a secret in the state); a restored one is already that.
        uuid = (
            pulumi.Output.secret(restored.uuid)
            if restored.uuid is not None
            else _hex32(key("uuid", 32, None))
        )
        keys = _Keys(
            # Key of the pseudonymous partition of each user (`u` + HMAC of the user name):
            # shared by the site and the consolidation so ids never carry a user name.
            partition_secret=key("partition-secret", 64, restored.partition_secret),
            erlang_cookie=key("erlang-cookie", 64, restored.erlang_cookie),
            uuid=uuid,
            auth_secret=key("auth-secret", 64, restored.auth_secret),
        )
        # With Secrets updated in place (stacks/provider.py), their protection no longer
        # stops a change of the keys they hold; this does, whatever the keys' source: its
        # keepers are the keys' digest, so other keys (restoredKeys dropped, another escrow)
        # mean replacing it, which the engine refuses.
        random.RandomId(
            f"{name}-keys-pin",
            byte_length=8,
            keepers={
                "keys": _digest(
                    keys.partition_secret, keys.erlang_cookie, keys.uuid, keys.auth_secret
                )
            },
            opts=keep,
        )
        return keys


@dataclass(frozen=True)
class _Keys:
    partition_secret: pulumi.Output[str]
    erlang_cookie: pulumi.Output[str]
    uuid: pulumi.Output[str]
    auth_secret: pulumi.Output[str]


def _password(
    resource_name: str, generation: int, opts: pulumi.ResourceOptions
) -> random.RandomPassword:
    # Generation 0 has no keepers, as the passwords had before rotation existed: adding an
    # empty rotation setting to a live stack replaces nothing.
    keepers = {"generation": str(generation)} if generation else None
    return random.RandomPassword(
        resource_name, length=40, special=False, keepers=keepers, opts=opts
    )


def _escrow(environment: str, recipient: str, values: list[str]) -> str:
    """The keys as JSON (the `restoredKeys` setting takes it back as is), age-encrypted to
    the escrow recipient, armored so that it travels as text and `age -d` opens it."""
    partition_secret, erlang_cookie, uuid, auth_secret = values
    plain = json.dumps(
        {
            "format": ESCROW_FORMAT,
            "environment": environment,
            "partitionSecret": partition_secret,
            "erlangCookie": erlang_cookie,
            "uuid": uuid,
            "authSecret": auth_secret,
        },
        indent=2,
    )
    sealed: bytes = encrypt(plain.encode(), [x25519.Recipient.from_str(recipient)], armored=True)
    return sealed.decode()


def _digest(*values: pulumi.Input[str]) -> pulumi.Output[str]:
    """A SHA-256 of secret values, not secret itself (it reveals nothing of 40- to 64-character
    random values): an annotation or a name that changes exactly when they do."""
    return pulumi.Output.unsecret(
        pulumi.Output.all(*values).apply(lambda parts: _sha256(json.dumps(parts)))
    )


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _hex32(secret: pulumi.Output[str]) -> pulumi.Output[str]:
    return secret.apply(lambda value: _sha256(value)[:32])


def _zone_env(node_zones: Mapping[str, str]) -> list[EnvVarArgs]:
    """What `zone_start_script` reads: the pod's node (its labels are out of a pod's reach)
    and the zone of every node."""
    if not node_zones:
        return []
    return [
        EnvVarArgs(
            name=KUBERNETES_NODE_ENV,
            value_from=EnvVarSourceArgs(
                field_ref=ObjectFieldSelectorArgs(field_path="spec.nodeName")
            ),
        ),
        EnvVarArgs(name=NODE_ZONES_ENV, value=node_zones_value(node_zones)),
    ]
