"""Supervision of one environment: scrapes, the public probe, SLO alerts, dashboards.

The rules and dashboards themselves are pure data built by `supervision/` (also exported
as files and tested with promtool); this component only hands them to the Prometheus
Operator and Grafana of the hosting provider's monitoring stack.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlparse

import pulumi
from pulumi_kubernetes.apiextensions import CustomResource
from pulumi_kubernetes.core.v1 import ConfigMap
from pulumi_kubernetes.meta.v1 import LabelSelectorArgs, ObjectMetaArgs
from pulumi_kubernetes.networking.v1 import (
    NetworkPolicy,
    NetworkPolicyEgressRuleArgs,
    NetworkPolicyPeerArgs,
    NetworkPolicyPortArgs,
    NetworkPolicySpecArgs,
)

from components.labels import PUSHES_METRICS_LABEL, standard_labels
from supervision.context import MonitoringContext, Retention
from supervision.dashboards import build_dashboards
from supervision.rules import build_rule_groups

MONITORING_API = "monitoring.coreos.com/v1"
# Prometheus' `job` label is read from this pod label, so it equals the workload's name.
JOB_LABEL = "app.kubernetes.io/name"


@dataclass(frozen=True)
class ScrapeTarget:
    """A workload to scrape: its pod selector and the named port serving /metrics."""

    job: str
    selector_labels: pulumi.Input[Mapping[str, str]]
    port: str
    path: str = "/metrics"


@dataclass(frozen=True)
class MonitoringArgs:
    environment: str
    namespace: pulumi.Input[str]
    namespace_name: str
    couchdb: ScrapeTarget
    couchdb_replicas: int
    webapp: ScrapeTarget
    public_url: str
    # Namespace of the hosting provider's Prometheus, Pushgateway and blackbox exporter.
    monitoring_namespace: str
    prometheus_release: str
    pushgateway_url: str
    blackbox_prober_url: str
    runbook_base_url: str
    grafana_dashboard_label: str
    probe_job: str = "blackbox"
    scrape_interval: str = "30s"
    probe_interval: str = "30s"
    # What the GDPR alerts' thresholds are checked against: the stack's budget and purge.
    retention: Retention = field(default_factory=Retention)


class Monitoring(pulumi.ComponentResource):
    """PodMonitors for CouchDB and the site, a blackbox Probe of the public URL,
    the PrometheusRule of SLO and operations alerts, and Grafana dashboards."""

    context: MonitoringContext
    rule: CustomResource
    dashboards: list[ConfigMap]

    def __init__(
        self, name: str, args: MonitoringArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("onboarding:platform:Monitoring", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        labels = {
            **standard_labels("monitoring", args.environment, "monitoring"),
            # The operator of the provider's stack only picks objects carrying its release.
            "release": args.prometheus_release,
        }
        self.context = MonitoringContext(
            environment=args.environment,
            namespace=args.namespace_name,
            couchdb_job=args.couchdb.job,
            couchdb_replicas=args.couchdb_replicas,
            webapp_job=args.webapp.job,
            probe_job=args.probe_job,
            public_url=args.public_url,
            runbook_base_url=args.runbook_base_url,
            retention=args.retention,
        )

        for target in (args.couchdb, args.webapp):
            CustomResource(
                f"{name}-{target.job}-podmonitor",
                api_version=MONITORING_API,
                kind="PodMonitor",
                metadata=ObjectMetaArgs(name=target.job, namespace=args.namespace, labels=labels),
                spec={
                    "jobLabel": JOB_LABEL,
                    "selector": {"matchLabels": target.selector_labels},
                    "podMetricsEndpoints": [
                        {
                            "port": target.port,
                            "path": target.path,
                            "interval": args.scrape_interval,
                        }
                    ],
                },
                opts=child,
            )

        CustomResource(
            f"{name}-probe",
            api_version=MONITORING_API,
            kind="Probe",
            metadata=ObjectMetaArgs(name="public-site", namespace=args.namespace, labels=labels),
            spec={
                "jobName": args.probe_job,
                "interval": args.probe_interval,
                "module": "http_2xx",
                "prober": {"url": args.blackbox_prober_url},
                "targets": {"staticConfig": {"static": [args.public_url]}},
            },
            opts=child,
        )

        self.rule = CustomResource(
            f"{name}-rules",
            api_version=MONITORING_API,
            kind="PrometheusRule",
            metadata=ObjectMetaArgs(
                name="onboarding-slo-and-operations", namespace=args.namespace, labels=labels
            ),
            spec={"groups": build_rule_groups(self.context)},
            opts=child,
        )

        self.dashboards = [
            ConfigMap(
                f"{name}-dashboard-{file_name.removesuffix('.json')}",
                metadata=ObjectMetaArgs(
                    name=f"dashboard-{file_name.removesuffix('.json')}",
                    namespace=args.namespace,
                    labels={**labels, args.grafana_dashboard_label: "1"},
                ),
                data={file_name: json.dumps(dashboard, indent=1, sort_keys=True)},
                opts=child,
            )
            for file_name, dashboard in sorted(build_dashboards(self.context).items())
        ]

        pushgateway_port = urlparse(args.pushgateway_url).port or 9091
        NetworkPolicy(
            f"{name}-push-netpol",
            metadata=ObjectMetaArgs(
                name="allow-metrics-push", namespace=args.namespace, labels=labels
            ),
            spec=NetworkPolicySpecArgs(
                pod_selector=LabelSelectorArgs(match_labels={PUSHES_METRICS_LABEL: "true"}),
                policy_types=["Egress"],
                egress=[
                    NetworkPolicyEgressRuleArgs(
                        to=[
                            NetworkPolicyPeerArgs(
                                namespace_selector=LabelSelectorArgs(
                                    match_labels={
                                        "kubernetes.io/metadata.name": args.monitoring_namespace
                                    }
                                )
                            )
                        ],
                        ports=[NetworkPolicyPortArgs(protocol="TCP", port=pushgateway_port)],
                    )
                ],
            ),
            opts=child,
        )

        self.register_outputs({"rule": "onboarding-slo-and-operations"})
