"""Grafana dashboards of one environment, as JSON models for the Grafana sidecar.

`build_dashboards(ctx)` returns {file name: dashboard}; the monitoring component puts each
in a ConfigMap the sidecar loads. Metric names are the standard ones: cAdvisor
(container_*), kube-state-metrics (kube_*), kubelet (kubelet_volume_stats_*),
node-exporter (node_*, with `instance` relabelled to the node name as kube-prometheus-stack
does), blackbox (probe_*), CouchDB 3.5's own /_node/_local/_prometheus (couchdb_*), and the
couchops Pushgateway series (couchops_*).

"Per workload" is per container name: each workload of the platform runs one container
(couchdb, webapp, couchops). "Per node" joins pod series with kube_pod_info's `node`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from supervision.context import MonitoringContext
from supervision.rules import eq, probe_selector, selector, sli_record_name

DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
RATE = "$__rate_interval"


@dataclass(frozen=True)
class Query:
    expr: str
    legend: str = ""
    instant: bool = False


@dataclass
class _Layout:
    """Places panels left to right on Grafana's 24-column grid, wrapping lines."""

    panels: list[dict[str, Any]] = field(default_factory=list)
    x: int = 0
    y: int = 0
    row_height: int = 0

    def _next_id(self) -> int:
        return len(self.panels) + 1

    def row(self, title: str) -> None:
        self.y += self.row_height
        self.x, self.row_height = 0, 0
        self.panels.append(
            {
                "type": "row",
                "id": self._next_id(),
                "title": title,
                "collapsed": False,
                "gridPos": {"h": 1, "w": 24, "x": 0, "y": self.y},
                "panels": [],
            }
        )
        self.y += 1

    def add(
        self,
        title: str,
        queries: list[Query],
        *,
        unit: str = "short",
        kind: str = "timeseries",
        width: int = 12,
        height: int = 8,
        description: str = "",
        thresholds: list[tuple[float | None, str]] | None = None,
        decimals: int | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        if self.x + width > 24:
            self.y += self.row_height
            self.x, self.row_height = 0, 0
        steps = [{"value": v, "color": c} for v, c in (thresholds or [(None, "green")])]
        panel: dict[str, Any] = {
            "type": kind,
            "id": self._next_id(),
            "title": title,
            "description": description,
            "datasource": DATASOURCE,
            "gridPos": {"h": height, "w": width, "x": self.x, "y": self.y},
            "fieldConfig": {
                "defaults": {
                    "unit": unit,
                    "thresholds": {"mode": "absolute", "steps": steps},
                    **({"decimals": decimals} if decimals is not None else {}),
                },
                "overrides": [],
            },
            "targets": [
                {
                    "refId": chr(ord("A") + index),
                    "datasource": DATASOURCE,
                    "expr": query.expr,
                    "legendFormat": query.legend,
                    "instant": query.instant,
                    "range": not query.instant,
                    **({"format": "table"} if kind == "table" else {}),
                }
                for index, query in enumerate(queries)
            ],
            "options": _options(kind),
        }
        if extra:
            panel.update(extra)
        self.panels.append(panel)
        self.x += width
        self.row_height = max(self.row_height, height)


def _options(kind: str) -> dict[str, Any]:
    if kind == "timeseries":
        return {
            "legend": {
                "displayMode": "table",
                "placement": "bottom",
                "calcs": ["lastNotNull", "max"],
            },
            "tooltip": {"mode": "multi", "sort": "desc"},
        }
    if kind == "stat":
        return {
            "reduceOptions": {"calcs": ["lastNotNull"], "values": False},
            "colorMode": "background",
        }
    if kind == "state-timeline":
        return {"showValue": "never", "mergeValues": True}
    return {}


def _datasource_variable() -> dict[str, Any]:
    return {
        "name": "datasource",
        "label": "Data source",
        "type": "datasource",
        "query": "prometheus",
        "hide": 0,
        "current": {},
    }


def _query_variable(name: str, label: str, query: str) -> dict[str, Any]:
    return {
        "name": name,
        "label": label,
        "type": "query",
        "datasource": DATASOURCE,
        "query": {"query": query, "refId": name},
        "definition": query,
        "refresh": 2,
        "includeAll": True,
        "multi": True,
        "allValue": ".*",
        "current": {"text": "All", "value": "$__all"},
        "sort": 1,
    }


def _dashboard(
    ctx: MonitoringContext,
    slug: str,
    title: str,
    layout: _Layout,
    variables: list[dict[str, Any]],
) -> dict[str, Any]:
    alerts = "ALERTS" + selector(*eq(alertstate="firing", environment=ctx.environment))
    return {
        "uid": f"onb-{ctx.environment}-{slug}",
        "title": f"Onboarding {ctx.environment} / {title}",
        "tags": ["onboarding", ctx.environment],
        "timezone": "browser",
        "schemaVersion": 39,
        "version": 1,
        "editable": False,
        "graphTooltip": 1,
        "refresh": "1m",
        "time": {"from": "now-24h", "to": "now"},
        "templating": {"list": [_datasource_variable(), *variables]},
        "annotations": {
            "list": [
                {
                    "name": "Firing alerts",
                    "datasource": DATASOURCE,
                    "enable": True,
                    "iconColor": "red",
                    "expr": alerts,
                    "titleFormat": "{{alertname}}",
                    "textFormat": "{{severity}}",
                    "step": "60s",
                }
            ]
        },
        "links": [
            {
                "type": "dashboards",
                "title": "Onboarding dashboards",
                "tags": ["onboarding", ctx.environment],
                "asDropdown": True,
                "includeVars": True,
                "keepTime": True,
            }
        ],
        "panels": layout.panels,
    }


def _by_node(ctx: MonitoringContext, expr: str, *, keep: str = "node") -> str:
    """Sum a per-pod expression by node (or `keep`), joining kube_pod_info's node label."""
    info = f"kube_pod_info{selector(*eq(namespace=ctx.namespace))}"
    return (
        f"sum by ({keep}) (\n  {expr}\n  * on (namespace, pod) group_left (node)\n"
        f"  max by (namespace, pod, node) ({info})\n)"
    )


def _slo(ctx: MonitoringContext) -> dict[str, Any]:
    probe = f"probe_success{probe_selector(ctx)}"
    env = selector(*eq(environment=ctx.environment))
    budget = ctx.error_budget_ratio
    web = selector(*eq(job=ctx.webapp_job, namespace=ctx.namespace))
    requests = f"{ctx.webapp_requests_metric}{web}"
    errors = ctx.webapp_requests_metric + selector(
        *eq(job=ctx.webapp_job, namespace=ctx.namespace), (ctx.webapp_status_label, "=~", "5..")
    )
    buckets = f"{ctx.webapp_duration_histogram}_bucket{web}"
    target = [(None, "red"), (ctx.slo_target, "green")]
    layout = _Layout()
    layout.row(
        f"SLO: {ctx.slo_target * 100:g}% of the time, {ctx.public_url} answers (docs/sla.md)"
    )
    layout.add(
        "Availability, time range",
        [Query(f"max(avg_over_time({probe}[$__range]))", instant=True)],
        unit="percentunit",
        kind="stat",
        width=6,
        height=5,
        thresholds=target,
        decimals=3,
    )
    layout.add(
        "Availability, last 30 days",
        [Query(f"max(avg_over_time({probe}[30d]))", instant=True)],
        unit="percentunit",
        kind="stat",
        width=6,
        height=5,
        thresholds=target,
        decimals=3,
    )
    layout.add(
        "Error budget left, last 30 days",
        [Query(f"1 - (1 - max(avg_over_time({probe}[30d]))) / {budget}", instant=True)],
        unit="percentunit",
        kind="stat",
        width=6,
        height=5,
        thresholds=[(None, "red"), (0.25, "orange"), (0.5, "green")],
    )
    layout.add(
        "Certificate expires in",
        [Query(f"min(probe_ssl_earliest_cert_expiry{probe_selector(ctx)}) - time()", instant=True)],
        unit="s",
        kind="stat",
        width=6,
        height=5,
        thresholds=[
            (None, "red"),
            (ctx.cert_page_days * 86400, "orange"),
            (ctx.cert_ticket_days * 86400, "green"),
        ],
    )
    layout.add(
        "Probe result (1 up, 0 down)",
        [Query(probe, "{{instance}}")],
        kind="state-timeline",
        width=24,
        height=5,
        thresholds=[(None, "red"), (1, "green")],
    )
    layout.add(
        "Burn rate (1 = budget spent in exactly 30 days)",
        [Query(f"{sli_record_name(w)}{env} / {budget}", w) for w in ("5m", "1h", "6h", "3d")],
        width=12,
        description="Page at 14.4 (1h and 5m) and 6 (6h and 30m); ticket at 1 (3d and 6h).",
    )
    layout.add(
        "Probe duration by phase",
        [Query(f"probe_http_duration_seconds{probe_selector(ctx)}", "{{phase}}")],
        unit="s",
        width=12,
    )
    layout.row("Web app (real traffic)")
    layout.add(
        "Requests per second by status class",
        [
            Query(
                f'sum by (class) (label_replace(rate({requests}[{RATE}]), "class", "${{1}}xx", '
                f'"{ctx.webapp_status_label}", "([0-9]).."))',
                "{{class}}",
            )
        ],
        unit="reqps",
        width=8,
    )
    layout.add(
        "5xx ratio",
        [Query(f"sum(rate({errors}[{RATE}])) / sum(rate({requests}[{RATE}]))", "5xx")],
        unit="percentunit",
        width=8,
        thresholds=[(None, "green"), (ctx.error_ratio_threshold, "red")],
    )
    layout.add(
        "Latency",
        [
            Query(
                f"histogram_quantile({q}, sum by (le) (rate({buckets}[{RATE}])))",
                f"p{int(q * 100)}",
            )
            for q in (0.5, 0.95, 0.99)
        ],
        unit="s",
        width=8,
    )
    layout.row("Alerts")
    layout.add(
        "Firing alerts",
        [
            Query(
                "ALERTS" + selector(*eq(alertstate="firing", environment=ctx.environment)),
                instant=True,
            )
        ],
        kind="table",
        width=24,
        height=7,
    )
    return _dashboard(ctx, "slo", "SLO and availability", layout, [])


def _resources(ctx: MonitoringContext) -> dict[str, Any]:
    ns = ctx.namespace
    containers = selector(*eq(namespace=ns), ("container", "!=", ""), ("container", "!=", "POD"))
    cpu = f"rate(container_cpu_usage_seconds_total{containers}[{RATE}])"
    memory = f"container_memory_working_set_bytes{containers}"
    ksm = selector(*eq(namespace=ns))
    node_filter = selector(("instance", "=~", "$node"))
    fs = selector(("instance", "=~", "$node"), ("fstype", "!~", "tmpfs|overlay|squashfs|nsfs"))
    net = selector(
        ("instance", "=~", "$node"), ("device", "!~", "lo|veth.*|cali.*|cilium.*|flannel.*|cni.*")
    )
    pod_net = selector(*eq(namespace=ns))
    layout = _Layout()
    layout.row(f"Per workload in {ns} (container)")
    layout.add("CPU used (cores)", [Query(f"sum by (container) ({cpu})", "{{container}}")], width=8)
    layout.add(
        "CPU used / requested",
        [
            Query(
                f"sum by (container) ({cpu}) / sum by (container) "
                f'(kube_pod_container_resource_requests{{namespace="{ns}",resource="cpu"}})',
                "{{container}}",
            )
        ],
        unit="percentunit",
        width=8,
    )
    layout.add(
        "CPU throttled periods",
        [
            Query(
                f"sum by (container) (rate(container_cpu_cfs_throttled_periods_total"
                f"{containers}[{RATE}])) / sum by (container) "
                f"(rate(container_cpu_cfs_periods_total{containers}[{RATE}]))",
                "{{container}}",
            )
        ],
        unit="percentunit",
        width=8,
    )
    layout.add(
        "Memory working set",
        [Query(f"sum by (container) ({memory})", "{{container}}")],
        unit="bytes",
        width=8,
    )
    layout.add(
        "Memory used / limit (per pod, worst)",
        [
            Query(
                f"max by (container) ({memory} / on (namespace, pod, container) "
                f'kube_pod_container_resource_limits{{namespace="{ns}",resource="memory"}})',
                "{{container}}",
            )
        ],
        unit="percentunit",
        width=8,
        thresholds=[(None, "green"), (0.9, "red")],
    )
    layout.add(
        "Volumes used",
        [
            Query(
                f"1 - kubelet_volume_stats_available_bytes{ksm}"
                f" / kubelet_volume_stats_capacity_bytes{ksm}",
                "{{persistentvolumeclaim}}",
            )
        ],
        unit="percentunit",
        width=8,
        thresholds=[(None, "green"), (0.75, "orange"), (0.9, "red")],
    )
    layout.add(
        "Network received / sent per pod",
        [
            Query(
                f"sum by (pod) (rate(container_network_receive_bytes_total{pod_net}[{RATE}]))",
                "in {{pod}}",
            ),
            Query(
                f"-sum by (pod) (rate(container_network_transmit_bytes_total{pod_net}[{RATE}]))",
                "out {{pod}}",
            ),
        ],
        unit="Bps",
        width=12,
    )
    layout.add(
        "Replicas ready / desired",
        [
            Query(f"kube_deployment_status_replicas_available{ksm}", "{{deployment}} ready"),
            Query(f"kube_statefulset_status_replicas_ready{ksm}", "{{statefulset}} ready"),
            Query(
                f"kube_horizontalpodautoscaler_status_desired_replicas{ksm}",
                "{{horizontalpodautoscaler}} desired",
            ),
        ],
        width=12,
    )
    layout.row(f"Per node: what {ns} uses on each node")
    layout.add("CPU used by the environment", [Query(_by_node(ctx, cpu), "{{node}}")], width=8)
    layout.add(
        "Memory used by the environment",
        [Query(_by_node(ctx, memory), "{{node}}")],
        unit="bytes",
        width=8,
    )
    layout.add(
        "Pods of the environment",
        [Query(f"count by (node) (kube_pod_info{ksm})", "{{node}}")],
        width=8,
    )
    layout.row("Nodes (all environments; node-exporter)")
    layout.add(
        "CPU busy",
        [
            Query(
                "1 - avg by (instance) (rate(node_cpu_seconds_total"
                f'{{mode="idle",instance=~"$node"}}[{RATE}]))',
                "{{instance}}",
            )
        ],
        unit="percentunit",
        width=8,
    )
    layout.add(
        "Memory used",
        [
            Query(
                f"1 - node_memory_MemAvailable_bytes{node_filter}"
                f" / node_memory_MemTotal_bytes{node_filter}",
                "{{instance}}",
            )
        ],
        unit="percentunit",
        width=8,
    )
    layout.add(
        "Filesystems used",
        [
            Query(
                f"1 - node_filesystem_avail_bytes{fs} / node_filesystem_size_bytes{fs}",
                "{{instance}} {{mountpoint}}",
            )
        ],
        unit="percentunit",
        width=8,
    )
    layout.add(
        "Disk I/O time (busy share)",
        [
            Query(
                f"rate(node_disk_io_time_seconds_total{node_filter}[{RATE}])",
                "{{instance}} {{device}}",
            )
        ],
        unit="percentunit",
        width=12,
    )
    layout.add(
        "Network received / sent",
        [
            Query(
                f"sum by (instance) (rate(node_network_receive_bytes_total{net}[{RATE}]))",
                "in {{instance}}",
            ),
            Query(
                f"-sum by (instance) (rate(node_network_transmit_bytes_total{net}[{RATE}]))",
                "out {{instance}}",
            ),
        ],
        unit="Bps",
        width=12,
    )
    node_var = _query_variable("node", "Node", f"label_values(kube_pod_info{ksm}, node)")
    return _dashboard(ctx, "resources", "Resources per workload and node", layout, [node_var])


def _requests(ctx: MonitoringContext) -> dict[str, Any]:
    web = selector(*eq(job=ctx.webapp_job, namespace=ctx.namespace))
    requests = f"rate({ctx.webapp_requests_metric}{web}[{RATE}])"
    buckets = f"rate({ctx.webapp_duration_histogram}_bucket{web}[{RATE}])"
    couch = selector(*eq(job=ctx.couchdb_job, namespace=ctx.namespace))
    couch_requests = f"rate(couchdb_httpd_requests_total{couch}[{RATE}])"
    layout = _Layout()
    layout.row("Request rate")
    layout.add(
        "Web app, per pod", [Query(f"sum by (pod) ({requests})", "{{pod}}")], unit="reqps", width=8
    )
    layout.add(
        "Web app, per node", [Query(_by_node(ctx, requests), "{{node}}")], unit="reqps", width=8
    )
    layout.add(
        "CouchDB, per node",
        [Query(_by_node(ctx, couch_requests), "{{node}}")],
        unit="reqps",
        width=8,
    )
    layout.row("Latency")
    layout.add(
        "Web app p95, per pod",
        [Query(f"histogram_quantile(0.95, sum by (le, pod) ({buckets}))", "{{pod}}")],
        unit="s",
        width=8,
    )
    layout.add(
        "Web app p95, per node",
        [Query(f"histogram_quantile(0.95, {_by_node(ctx, buckets, keep='le, node')})", "{{node}}")],
        unit="s",
        width=8,
    )
    layout.add(
        "CouchDB p95, per node",
        [
            Query(
                "max by (node) (couchdb_request_time_seconds"
                + selector(*eq(job=ctx.couchdb_job, namespace=ctx.namespace, quantile="0.95"))
                + " * on (namespace, pod) group_left (node) max by (namespace, pod, node) "
                + f"(kube_pod_info{selector(*eq(namespace=ctx.namespace))}))",
                "{{node}}",
            )
        ],
        unit="s",
        width=8,
    )
    return _dashboard(ctx, "requests", "Request rate and latency per workload and node", layout, [])


def _couchdb(ctx: MonitoringContext) -> dict[str, Any]:
    base = (("job", "=", ctx.couchdb_job), ("namespace", "=", ctx.namespace), ("pod", "=~", "$pod"))
    sel = selector(*base)

    def metric(name: str, **labels: str) -> str:
        return name + selector(*base, *eq(**labels))

    layout = _Layout()
    layout.row(f"Cluster ({ctx.couchdb_replicas} nodes expected)")
    layout.add(
        "Nodes up",
        [Query(f"sum(up{selector(*base[:2])})", instant=True)],
        kind="stat",
        width=6,
        height=5,
        thresholds=[(None, "red"), (ctx.couchdb_replicas, "green")],
    )
    layout.add(
        "Membership per node",
        [
            Query(metric("couchdb_membership", nodes="cluster_nodes"), "{{pod}} members"),
            Query(metric("couchdb_membership", nodes="all_nodes"), "{{pod}} connected"),
        ],
        width=9,
        height=5,
        description="Every node must count all members (cluster_nodes) and see all of them "
        "(all_nodes).",
    )
    layout.add(
        "Disconnected peers",
        [Query(f"count by (pod) ({metric('couchdb_membership_nodes')} == 0)", "{{pod}}")],
        width=9,
        height=5,
    )
    layout.row("HTTP")
    layout.add(
        "Requests by method",
        [
            Query(
                f"sum by (method) (rate(couchdb_httpd_request_methods{sel}[{RATE}]))", "{{method}}"
            )
        ],
        unit="reqps",
        width=8,
    )
    layout.add(
        "Answers by status code",
        [Query(f"sum by (code) (rate(couchdb_httpd_status_codes{sel}[{RATE}]))", "{{code}}")],
        unit="reqps",
        width=8,
    )
    layout.add(
        "Request time per node",
        [
            Query(metric("couchdb_request_time_seconds", quantile=q), f"{{{{pod}}}} p{q[2:]}")
            for q in ("0.5", "0.95")
        ],
        unit="s",
        width=8,
    )
    layout.row("Databases")
    layout.add(
        "Document reads / writes",
        [
            Query(f"sum(rate(couchdb_database_reads_total{sel}[{RATE}]))", "reads"),
            Query(f"sum(rate(couchdb_database_writes_total{sel}[{RATE}]))", "writes"),
        ],
        unit="ops",
        width=8,
    )
    layout.add(
        "Open databases and files",
        [
            Query(f"couchdb_open_databases{sel}", "{{pod}} databases"),
            Query(f"couchdb_open_os_files{sel}", "{{pod}} files"),
        ],
        width=8,
    )
    layout.add(
        "Internal replication backlog",
        [Query(f"couchdb_internal_replication_jobs{sel}", "{{pod}}")],
        width=8,
        thresholds=[(None, "green"), (100, "orange")],
    )
    layout.row("Erlang VM")
    layout.add(
        "Memory by type",
        [Query(f"sum by (memory_type) (couchdb_erlang_memory_bytes{sel})", "{{memory_type}}")],
        unit="bytes",
        width=8,
    )
    layout.add(
        "Processes and message queues",
        [
            Query(f"couchdb_erlang_processes{sel}", "{{pod}} processes"),
            Query(f"couchdb_erlang_message_queues{sel}", "{{pod}} queued messages"),
        ],
        width=8,
    )
    layout.add(
        "Cluster traffic (Erlang distribution)",
        [
            Query(
                "sum by (pod) (rate(couchdb_erlang_distribution_send_oct_bytes_total"
                f"{sel}[{RATE}]))",
                "{{pod}} sent",
            ),
            Query(
                "-sum by (pod) (rate(couchdb_erlang_distribution_recv_oct_bytes_total"
                f"{sel}[{RATE}]))",
                "{{pod}} received",
            ),
        ],
        unit="Bps",
        width=8,
    )
    layout.add(
        "Uptime", [Query(f"couchdb_uptime_seconds{sel}", "{{pod}}")], unit="s", width=12, height=6
    )
    layout.add(
        "Data volumes used",
        [
            Query(
                "1 - kubelet_volume_stats_available_bytes"
                + selector(
                    ("namespace", "=", ctx.namespace),
                    ("persistentvolumeclaim", "=~", "data-couchdb-.*"),
                )
                + " / kubelet_volume_stats_capacity_bytes"
                + selector(
                    ("namespace", "=", ctx.namespace),
                    ("persistentvolumeclaim", "=~", "data-couchdb-.*"),
                ),
                "{{persistentvolumeclaim}}",
            )
        ],
        unit="percentunit",
        width=12,
        height=6,
        thresholds=[(None, "green"), (0.75, "orange"), (0.9, "red")],
    )
    pod_var = _query_variable("pod", "CouchDB pod", f"label_values(up{selector(*base[:2])}, pod)")
    return _dashboard(ctx, "couchdb", "CouchDB internals", layout, [pod_var])


def _jobs(ctx: MonitoringContext) -> dict[str, Any]:
    ops = selector(*eq(job=ctx.ops_job, environment=ctx.environment))

    def pushed(name: str, operation: str) -> str:
        return name + selector(
            *eq(job=ctx.ops_job, environment=ctx.environment, operation=operation)
        )

    ksm = selector(*eq(namespace=ctx.namespace))
    stale = max(ctx.purge_max_age_hours, ctx.backup_max_age_hours) * 3600
    layout = _Layout()
    layout.row("Outcome of the last run (couchops, pushed to the Pushgateway)")
    layout.add(
        "Time since the last success",
        [
            Query(
                f"time() - max by (operation) (couchops_last_success_timestamp_seconds{ops})",
                "{{operation}}",
                instant=True,
            )
        ],
        unit="s",
        kind="stat",
        width=12,
        height=5,
        thresholds=[(None, "green"), (stale, "red")],
    )
    layout.add(
        "Last run succeeded",
        [Query(f"max by (operation) (couchops_run_success{ops})", "{{operation}}", instant=True)],
        kind="stat",
        width=12,
        height=5,
        thresholds=[(None, "red"), (1, "green")],
    )
    layout.add(
        "Run duration",
        [Query(f"max by (operation) (couchops_run_duration_seconds{ops})", "{{operation}}")],
        unit="s",
        width=12,
    )
    layout.add(
        "Runs (end of each run)",
        [
            Query(
                f"max by (operation) (couchops_last_run_timestamp_seconds{ops}) * 1000",
                "{{operation}}",
            )
        ],
        unit="dateTimeAsIso",
        width=12,
    )
    layout.row("GDPR purge and backups")
    layout.add(
        "Purge: documents purged / without valid timestamp",
        [
            Query(pushed("couchops_purge_documents_purged", "purge"), "purged"),
            Query(
                pushed("couchops_purge_documents_invalid_timestamp", "purge"), "invalid timestamp"
            ),
        ],
        width=12,
    )
    layout.add(
        "Backup: documents and size",
        [
            Query(pushed("couchops_backup_documents", "backup"), "documents"),
            Query(pushed("couchops_backup_bytes", "backup"), "bytes"),
        ],
        width=12,
        extra={
            "fieldConfig": {
                "defaults": {"unit": "short"},
                "overrides": [
                    {
                        "matcher": {"id": "byName", "options": "bytes"},
                        "properties": [
                            {"id": "unit", "value": "bytes"},
                            {"id": "custom.axisPlacement", "value": "right"},
                        ],
                    }
                ],
            }
        },
    )
    layout.row("Kubernetes Jobs and CronJobs (kube-state-metrics)")
    layout.add(
        "Failed Jobs",
        [Query(f"kube_job_status_failed{ksm} > 0", "{{job_name}}")],
        width=8,
    )
    layout.add(
        "CronJob: time since last success",
        [Query(f"time() - kube_cronjob_status_last_successful_time{ksm}", "{{cronjob}}")],
        unit="s",
        width=8,
        thresholds=[(None, "green"), (stale, "red")],
    )
    layout.add(
        "CronJob suspended",
        [Query(f"kube_cronjob_spec_suspend{ksm}", "{{cronjob}}", instant=True)],
        kind="stat",
        width=8,
        thresholds=[(None, "green"), (1, "red")],
    )
    return _dashboard(ctx, "jobs", "Operations jobs", layout, [])


def build_dashboards(ctx: MonitoringContext) -> dict[str, dict[str, Any]]:
    """{ConfigMap file name: Grafana dashboard model} for one environment."""
    dashboards = [_slo(ctx), _resources(ctx), _requests(ctx), _couchdb(ctx), _jobs(ctx)]
    return {f"{d['uid']}.json": d for d in dashboards}
