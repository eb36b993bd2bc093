"""promtool unit tests of the rules of one environment: for every alert, a story where it
fires and one where it must stay silent.

The stories are written once, in terms of the context, so that prod (5 CouchDB nodes) and
preprod (3) are each tested against their own thresholds. Expected annotations are
rendered here from the rule's own templates, with the few Go template functions the rules
use; promtool then checks the labels, the annotations and the timing together.
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from supervision.context import MonitoringContext
from supervision.rules import (
    alert_rules,
    audit_gauge_query,
    build_rule_groups,
    eq,
    probe_selector,
    selector,
    sli_record_name,
)


def _go_g4(value: float) -> str:
    """Go's `%.4g` (same as C's and Python's for finite values)."""
    return f"{value:.4g}"


def _humanize(value: float) -> str:
    if value == 0 or math.isnan(value) or math.isinf(value):
        return _go_g4(value)
    prefix = ""
    if abs(value) >= 1:
        for step in ("k", "M", "G", "T", "P", "E", "Z", "Y"):
            if abs(value) < 1000:
                break
            prefix, value = step, value / 1000
        return _go_g4(value) + prefix
    for step in ("m", "u", "n", "p", "f", "a", "z", "y"):
        if abs(value) >= 1:
            break
        prefix, value = step, value * 1000
    return _go_g4(value) + prefix


def _humanize1024(value: float) -> str:
    if abs(value) <= 1 or math.isnan(value) or math.isinf(value):
        return _go_g4(value)
    prefix = ""
    for step in ("ki", "Mi", "Gi", "Ti", "Pi", "Ei", "Zi", "Yi"):
        if abs(value) < 1024:
            break
        prefix, value = step, value / 1024
    return _go_g4(value) + prefix


def _humanize_duration(value: float) -> str:
    if math.isnan(value) or math.isinf(value):
        return _go_g4(value)
    if value == 0:
        return "0s"
    if abs(value) < 1:
        prefix = ""
        for step in ("m", "u", "n", "p", "f", "a", "z", "y"):
            if abs(value) >= 1:
                break
            prefix, value = step, value * 1000
        return f"{_go_g4(value)}{prefix}s"
    sign = "-" if value < 0 else ""
    whole = int(abs(value))
    units = [(whole // 86400, "d"), ((whole // 3600) % 24, "h"), ((whole // 60) % 60, "m")]
    # From the largest unit that is not zero down to whole seconds, as Prometheus prints.
    for index, (amount, _) in enumerate(units):
        if amount:
            shown = " ".join(f"{n}{unit}" for n, unit in units[index:])
            return f"{sign}{shown} {whole % 60}s"
    return f"{sign}{_go_g4(abs(value))}s"


_VALUE_FORMATS: Mapping[str, Callable[[float], str]] = {
    '$value | printf "%.0f"': lambda v: f"{v:.0f}",
    "$value | humanize": _humanize,
    "$value | humanize1024": _humanize1024,
    "$value | humanizeDuration": _humanize_duration,
    "$value | humanizePercentage": lambda v: _go_g4(v * 100) + "%",
}
_ACTION = re.compile(r"\{\{\s*(.*?)\s*\}\}")
# `{{ with query `EXPR` }}{{ . | first | value | FORMAT }}{{ else }}TEXT{{ end }}`: the value
# of another expression at the alert's evaluation, as supervision.rules._queried writes it.
_QUERY = re.compile(
    r"\{\{ with query `(?P<expr>[^`]*)` \}\}\{\{ \. \| first \| value \| (?P<fmt>[\w ]+) \}\}"
    r"\{\{ else \}\}(?P<absent>[^{]*)\{\{ end \}\}"
)


def render(
    template: str,
    labels: Mapping[str, str],
    value: float,
    queries: Mapping[str, float] | None = None,
) -> str:
    """Render an annotation template as Prometheus would, for the functions used here;
    `queries` holds what the expressions queried by the template return (none: absent)."""
    answers = queries or {}

    def query(match: re.Match[str]) -> str:
        expr = match.group("expr")
        if expr not in answers:
            return match.group("absent")
        return _VALUE_FORMATS[f"$value | {match.group('fmt')}"](answers[expr])

    def action(match: re.Match[str]) -> str:
        body = match.group(1)
        if body.startswith("$labels."):
            return labels.get(body.removeprefix("$labels."), "")
        if body in _VALUE_FORMATS:
            return _VALUE_FORMATS[body](value)
        raise ValueError(f"template action '{{{{ {body} }}}}' is not supported by the tests")

    return _ACTION.sub(action, _QUERY.sub(query, template))


@dataclass(frozen=True)
class Expect:
    """One alert expected to fire: the labels its expression yields, and its value."""

    labels: Mapping[str, str]
    value: float
    # What the expressions the annotations query return at the evaluation.
    queries: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Story:
    alert: str
    name: str
    series: Mapping[str, str]
    eval_time: str
    fires: Sequence[Expect] = ()
    interval: str = "1m"
    # Stories that span days are evaluated every 15 minutes (in a file of their own), or
    # promtool would spend minutes stepping through them minute by minute.
    long: bool = False
    # Extra checks of recorded series: (expression, eval_time, [(labels, value)]).
    samples: Sequence[tuple[str, str, Sequence[tuple[str, float]]]] = field(default=())


def _pattern(length: int, every: int) -> str:
    """`length` probe results where one in `every` fails, the first failure at `every`-1."""
    return " ".join("0" if (i + 1) % every == 0 else "1" for i in range(length))


def _counter(per_minute: float, minutes: int) -> str:
    return f"0+{per_minute:g}x{minutes}"


def _stories(ctx: MonitoringContext) -> list[Story]:
    env, ns = ctx.environment, ctx.namespace
    probe = f"probe_success{probe_selector(ctx)}"
    probe_labels = {"job": ctx.probe_job, "instance": ctx.public_url}
    cert = {"name": "couchdb-tls", "namespace": ns, "issuer_name": "couchdb-ca"}
    renewal = "certmanager_certificate_renewal_timestamp_seconds" + selector(*eq(**cert))
    expiration = "certmanager_certificate_expiration_timestamp_seconds" + selector(*eq(**cert))
    elsewhere = "certmanager_certificate_expiration_timestamp_seconds" + selector(
        *eq(**{**cert, "namespace": "onboarding-other"})
    )
    env_labels = {"environment": env, "namespace": ns}
    couch = {"job": ctx.couchdb_job, "namespace": ns}
    pods = [f"couchdb-{i}" for i in range(ctx.couchdb_replicas)]

    def series(name: str, **labels: str) -> str:
        return name + selector(*((k, "=", v) for k, v in labels.items()))

    def up(pod: str) -> str:
        return series("up", **couch, pod=pod)

    def ops(operation: str) -> dict[str, str]:
        return {"job": ctx.ops_job, "environment": env, "operation": operation}

    stories: list[Story] = [
        # --- SLO: probes of the public URL -------------------------------------------
        Story(
            "AvailabilityBudgetBurnFast",
            "a full outage pages within minutes",
            {probe: "1x120 0x20"},
            "130m",
            [Expect(env_labels, 10 / 61)],
            samples=[
                (
                    f'{sli_record_name("5m")}{{environment="{env}"}}',
                    "130m",
                    [(f'{sli_record_name("5m")}{{environment="{env}",namespace="{ns}"}}', 1.0)],
                )
            ],
        ),
        Story(
            "AvailabilityBudgetBurnFast",
            "one failed probe twenty minutes ago does not page",
            {probe: "1x60 0 1x60"},
            "80m",
        ),
        Story(
            "AvailabilityBudgetBurnSustained",
            "one failed probe in twenty for hours pages",
            {probe: _pattern(421, 20)},
            "420m",
            [Expect(env_labels, 18 / 361)],
        ),
        Story(
            "AvailabilityBudgetBurnSustained",
            "one failed probe in two hundred stays under six times the budget",
            {probe: _pattern(421, 200)},
            "420m",
        ),
        Story(
            "AvailabilityBudgetBurnSlow",
            "one failed probe in fifty for three days opens a ticket",
            {probe: _pattern(900, 50)},
            "73h",
            [Expect(env_labels, 17 / 865)],
            interval="5m",
            long=True,
        ),
        Story(
            "AvailabilityBudgetBurnSlow",
            "a thirty-minute outage two days ago no longer tickets once six hours are clean",
            {probe: "1x300 0x5 1x600"},
            "73h",
            interval="5m",
            long=True,
        ),
        Story(
            "AvailabilitySLIDataMissing",
            "probe results that stop for fifteen minutes page",
            {probe: "1x10"},
            "30m",
            [Expect(probe_labels, 1)],
        ),
        Story(
            "AvailabilitySLIDataMissing",
            "a steady stream of probe results is silent",
            {probe: "1x40"},
            "30m",
        ),
        # --- CouchDB -------------------------------------------------------------------
        Story(
            "CouchDBNodeDown",
            "a pod that stops answering for five minutes pages",
            {up(pods[-1]): "1x5 0x15", **{up(p): "1x20" for p in pods[:-1]}},
            "15m",
            [Expect({**couch, "pod": pods[-1]}, 0)],
        ),
        Story(
            "CouchDBNodeDown",
            "a three-minute restart (rolling update) does not page",
            {up(pods[-1]): "1x5 0x3 1x12", **{up(p): "1x20" for p in pods[:-1]}},
            "15m",
        ),
        Story(
            "CouchDBReplicasMissing",
            "one scrape target fewer than the expected cluster size pages",
            {up(p): "1x20" for p in pods[:-1]},
            "15m",
            [Expect({}, len(pods) - 1)],
        ),
        Story(
            "CouchDBReplicasMissing",
            "every expected pod scraped is silent",
            {up(p): "1x20" for p in pods},
            "15m",
        ),
        Story(
            "CouchDBMembershipMismatch",
            "a partitioned node, up but cut off from its peers, pages on every node",
            {
                **{up(p): "1x20" for p in pods},
                **{
                    series("couchdb_membership", **couch, pod=p, nodes="cluster_nodes"): (
                        f"{len(pods)}x20"
                    )
                    for p in pods
                },
                **{
                    series("couchdb_membership", **couch, pod=p, nodes="all_nodes"): (
                        f"{1 if p == pods[-1] else len(pods) - 1}x20"
                    )
                    for p in pods
                },
            },
            "15m",
            [
                Expect(
                    {**couch, "pod": p, "nodes": "all_nodes"},
                    1 if p == pods[-1] else len(pods) - 1,
                )
                for p in pods
            ],
        ),
        Story(
            "CouchDBMembershipMismatch",
            "peers missing a node that is down is left to CouchDBNodeDown",
            {
                **{up(p): ("0x20" if p == pods[-1] else "1x20") for p in pods},
                **{
                    series("couchdb_membership", **couch, pod=p, nodes="cluster_nodes"): (
                        f"{len(pods)}x20"
                    )
                    for p in pods[:-1]
                },
                **{
                    series("couchdb_membership", **couch, pod=p, nodes="all_nodes"): (
                        f"{len(pods) - 1}x20"
                    )
                    for p in pods[:-1]
                },
            },
            "15m",
        ),
        Story(
            "CouchDBHighErrorRate",
            "ten percent of 5xx answers for ten minutes pages",
            {
                series("couchdb_httpd_status_codes", **couch, pod=pods[0], code="200"): _counter(
                    540, 30
                ),
                series("couchdb_httpd_status_codes", **couch, pod=pods[0], code="500"): _counter(
                    60, 30
                ),
            },
            "20m",
            [Expect(env_labels, 0.1)],
        ),
        Story(
            "CouchDBHighErrorRate",
            "one percent of 5xx answers is silent",
            {
                series("couchdb_httpd_status_codes", **couch, pod=pods[0], code="200"): _counter(
                    594, 30
                ),
                series("couchdb_httpd_status_codes", **couch, pod=pods[0], code="503"): _counter(
                    6, 30
                ),
            },
            "20m",
        ),
        Story(
            "CouchDBHighRequestLatency",
            "a p95 of two seconds for fifteen minutes opens a ticket",
            {series("couchdb_request_time_seconds", **couch, pod=pods[1], quantile="0.95"): "2x30"},
            "20m",
            [Expect({"pod": pods[1], **env_labels}, 2)],
        ),
        Story(
            "CouchDBHighRequestLatency",
            "a p95 of 200 ms is silent",
            {
                series("couchdb_request_time_seconds", **couch, pod=pods[1], quantile="0.95"): (
                    "0.2x30"
                )
            },
            "20m",
        ),
        Story(
            "CouchDBInternalReplicationBacklog",
            "a backlog that has not drained for an hour opens a ticket",
            {series("couchdb_internal_replication_jobs", **couch, pod=pods[2]): "5000x90"},
            "80m",
            [Expect({**couch, "pod": pods[2]}, 5000)],
        ),
        Story(
            "CouchDBInternalReplicationBacklog",
            "a backlog that drains after a node rejoins is silent",
            {series("couchdb_internal_replication_jobs", **couch, pod=pods[2]): "5000x30 0x60"},
            "80m",
        ),
        # --- Storage -------------------------------------------------------------------
        Story(
            "PersistentVolumeFillingUp",
            "a volume at 16% free losing 10 MiB a minute opens a ticket",
            {
                series(
                    "kubelet_volume_stats_capacity_bytes",
                    namespace=ns,
                    persistentvolumeclaim="data-couchdb-0",
                ): f"{100 * 2**30}x450",
                series(
                    "kubelet_volume_stats_available_bytes",
                    namespace=ns,
                    persistentvolumeclaim="data-couchdb-0",
                ): f"{20 * 2**30}-{10 * 2**20}x450",
            },
            "420m",
            [
                Expect(
                    {"namespace": ns, "persistentvolumeclaim": "data-couchdb-0"},
                    (20 * 2**30 - 420 * 10 * 2**20) / (100 * 2**30),
                )
            ],
        ),
        Story(
            "PersistentVolumeFillingUp",
            "a volume at 20% free that does not grow is silent",
            {
                series(
                    "kubelet_volume_stats_capacity_bytes",
                    namespace=ns,
                    persistentvolumeclaim="data-couchdb-0",
                ): f"{100 * 2**30}x450",
                series(
                    "kubelet_volume_stats_available_bytes",
                    namespace=ns,
                    persistentvolumeclaim="data-couchdb-0",
                ): f"{20 * 2**30}x450",
            },
            "420m",
        ),
        Story(
            "PersistentVolumeAlmostFull",
            "a volume at 5% free pages",
            {
                series(
                    "kubelet_volume_stats_capacity_bytes",
                    namespace=ns,
                    persistentvolumeclaim="couchdb-backups",
                ): f"{200 * 2**30}x20",
                series(
                    "kubelet_volume_stats_available_bytes",
                    namespace=ns,
                    persistentvolumeclaim="couchdb-backups",
                ): f"{10 * 2**30}x20",
            },
            "10m",
            [Expect({"namespace": ns, "persistentvolumeclaim": "couchdb-backups"}, 0.05)],
        ),
        Story(
            "PersistentVolumeAlmostFull",
            "a volume at 20% free does not page",
            {
                series(
                    "kubelet_volume_stats_capacity_bytes",
                    namespace=ns,
                    persistentvolumeclaim="couchdb-backups",
                ): f"{200 * 2**30}x20",
                series(
                    "kubelet_volume_stats_available_bytes",
                    namespace=ns,
                    persistentvolumeclaim="couchdb-backups",
                ): f"{40 * 2**30}x20",
            },
            "10m",
        ),
    ]
    stories += _job_stories(ctx, ops, series)
    stories += [
        # --- Certificates ----------------------------------------------------------------
        Story(
            "CertificateExpiringSoon",
            "a certificate ten days from expiry opens a ticket",
            {f"probe_ssl_earliest_cert_expiry{probe_selector(ctx)}": f"{10 * 86400}x150"},
            "2h",
            [Expect(probe_labels, 10 * 86400 - 7200)],
        ),
        Story(
            "CertificateExpiringSoon",
            "a certificate sixty days from expiry is silent",
            {f"probe_ssl_earliest_cert_expiry{probe_selector(ctx)}": f"{60 * 86400}x150"},
            "2h",
        ),
        Story(
            "CertificateExpiryCritical",
            "a certificate three days from expiry pages",
            {f"probe_ssl_earliest_cert_expiry{probe_selector(ctx)}": f"{3 * 86400}x20"},
            "10m",
            [Expect(probe_labels, 3 * 86400 - 600)],
        ),
        Story(
            "CertificateExpiryCritical",
            "a certificate ten days from expiry does not page",
            {f"probe_ssl_earliest_cert_expiry{probe_selector(ctx)}": f"{10 * 86400}x20"},
            "10m",
        ),
        Story(
            "CertificateRenewalOverdue",
            "couchdb-tls due for renewal for two days opens a ticket",
            {renewal: "0x200"},
            "2d",
            [Expect(cert, 2 * 86400)],
            interval="15m",
            long=True,
        ),
        Story(
            "CertificateRenewalOverdue",
            "couchdb-tls due for renewal in a week is silent",
            {renewal: f"{7 * 86400}x20"},
            "1h",
        ),
        Story(
            "CertificateManagedExpiryCritical",
            "couchdb-tls two days from expiry pages",
            {expiration: f"{2 * 86400}x20"},
            "10m",
            [Expect(cert, 2 * 86400 - 600)],
        ),
        Story(
            "CertificateManagedExpiryCritical",
            "couchdb-tls ten days from expiry does not page",
            {expiration: f"{10 * 86400}x20"},
            "10m",
        ),
        Story(
            "CertificateManagedExpiryCritical",
            "a certificate of another namespace does not page here",
            {elsewhere: f"{2 * 86400}x20"},
            "10m",
        ),
    ]
    stories += _webapp_stories(ctx, series)
    return stories


@dataclass(frozen=True)
class _Scheduled:
    """An operation run on a schedule, with its failure ticket and its staleness page."""

    operation: str
    failed: str
    stale: str
    cronjob: str
    max_age_hours: int
    every_hours: int


def _held(values: Sequence[float]) -> str:
    """promtool's notation for one sample per interval: runs of a value as `v x(n-1)`."""
    parts = []
    for value, run in itertools.groupby(values):
        count = len(list(run))
        parts.append(f"{value:g}x{count - 1}" if count > 1 else f"{value:g}")
    return " ".join(parts)


def _scheduled_stories(
    ctx: MonitoringContext, job: _Scheduled, ops: Callable[[str], dict[str, str]]
) -> list[Story]:
    hour, step = 3600, 600
    operation, max_age = job.operation, job.max_age_hours
    late = (max_age + 1) * hour

    def metric(name: str) -> str:
        return name + selector(*((k, "=", v) for k, v in ops(operation).items()))

    last_success = metric("couchops_last_success_timestamp_seconds")
    cron = "kube_cronjob_status_last_successful_time" + selector(
        ("namespace", "=", ctx.namespace), ("cronjob", "=", job.cronjob)
    )
    every = job.every_hours * hour
    on_time = [(t // every) * every for t in range(0, late + step, step)]
    return [
        Story(
            job.failed,
            f"a {operation} run that reports failure opens a ticket",
            {metric("couchops_run_success"): "0x10"},
            "5m",
            [Expect(ops(operation), 0)],
        ),
        Story(
            job.failed,
            f"a {operation} run that reports success is silent",
            {metric("couchops_run_success"): "1x10"},
            "5m",
        ),
        Story(
            job.stale,
            f"no {operation} success for {max_age + 1} hours pages",
            {last_success: f"0x{late // step}"},
            f"{max_age + 1}h",
            [Expect({}, late)],
            interval="10m",
            long=True,
        ),
        Story(
            job.stale,
            f"a {operation} success every {job.every_hours} h is silent",
            {last_success: _held(on_time)},
            f"{max_age + 1}h",
            interval="10m",
            long=True,
        ),
        Story(
            job.stale,
            f"the CronJob's last success stands in when the Pushgateway lost the {operation}",
            {cron: f"{late - 2 * hour}x{late // step}"},
            f"{max_age + 1}h",
            interval="10m",
            long=True,
        ),
        Story(
            job.stale,
            f"no {operation} ever recorded, anywhere, pages once {max_age} hours passed",
            {"up" + selector(("job", "=", ctx.ops_job)): f"1x{late // step}"},
            f"{max_age + 1}h",
            [Expect({}, late)],
            interval="10m",
            long=True,
        ),
    ]


def _dst_stories(ctx: MonitoringContext, ops: Callable[[str], dict[str, str]]) -> list[Story]:
    """The night the clocks go back, a quick run and then one that lasts its whole deadline
    end `longest gap + deadline` apart: neither the purge nor the audit after it may page."""
    step = 900
    gap, run = ctx.retention.purge_longest_gap_hours, ctx.retention.purge_deadline_hours
    apart = (gap + run) * 3600
    stories = []
    for operation, stale in (("purge", "GDPRPurgeStale"), ("audit", "GDPRAuditStale")):
        name = "couchops_last_success_timestamp_seconds" + selector(
            *((k, "=", v) for k, v in ops(operation).items())
        )
        stories.append(
            Story(
                stale,
                f"{operation} successes {gap} h + a {run} h run apart (clocks going back) "
                f"do not page",
                {name: f"0x{apart // step - 1} {apart}x4"},
                # The last evaluation before the second success is scraped: the oldest the
                # first one ever looks.
                f"{(apart - step) // 60}m",
                interval="15m",
                long=True,
            )
        )
    return stories


def _audit_stories(ctx: MonitoringContext, ops: Callable[[str], dict[str, str]]) -> list[Story]:
    day = 86400

    def metric(gauge: str) -> str:
        return f"couchops_audit_{gauge}" + selector(*((k, "=", v) for k, v in ops("audit").items()))

    def last_success(labels: dict[str, str]) -> str:
        return "couchops_last_success_timestamp_seconds" + selector(
            *((k, "=", v) for k, v in labels.items())
        )

    ages = {
        "oldest_database_data_age_seconds": 28 * day + 1800,
        "oldest_backup_data_age_seconds": 30 * day + 3 * 3600,
        "cutoff_age_seconds": 28 * day,
    }
    return [
        Story(
            "GDPRAuditFindings",
            "an audit reading data past the retention pages, naming each copy's oldest data",
            {metric("findings"): "3x10", **{metric(g): f"{v}x10" for g, v in ages.items()}},
            "5m",
            [
                Expect(
                    ops("audit"),
                    3,
                    queries={audit_gauge_query(ctx, g): v for g, v in ages.items()},
                )
            ],
        ),
        Story(
            "GDPRAuditFindings",
            "findings page even when the audit did not report the ages",
            {metric("findings"): "1x10"},
            "5m",
            [Expect(ops("audit"), 1)],
        ),
        Story(
            "GDPRAuditStale",
            "a fresh audit of the backups does not hide a stale audit of the databases",
            {
                last_success(ops("audit")): "3600x40",
                last_success({**ops("audit"), "scope": "backups"}): "118800x40",
            },
            "34h",
            [Expect({}, 33 * 3600)],
            interval="1h",
        ),
        Story(
            "GDPRAuditFindings",
            "a clean audit is silent, however old the data it saw under the limit",
            {
                metric("findings"): "0x10",
                metric("oldest_database_data_age_seconds"): f"{28 * day - 60}x10",
                metric("cutoff_age_seconds"): f"{28 * day}x10",
            },
            "5m",
        ),
    ]


def _job_stories(
    ctx: MonitoringContext,
    ops: Callable[[str], dict[str, str]],
    series: Callable[..., str],
) -> list[Story]:
    ns = ctx.namespace

    def metric(name: str, operation: str) -> str:
        return name + selector(*((k, "=", v) for k, v in ops(operation).items()))

    scheduled = (
        _Scheduled(
            "purge",
            "GDPRPurgeFailed",
            "GDPRPurgeStale",
            ctx.purge_cronjob,
            ctx.purge_max_age_hours,
            24,
        ),
        _Scheduled(
            "audit",
            "GDPRAuditFailed",
            "GDPRAuditStale",
            ctx.purge_cronjob,
            ctx.purge_max_age_hours,
            24,
        ),
        _Scheduled(
            "backup",
            "BackupFailed",
            "BackupStale",
            ctx.backup_cronjob,
            ctx.backup_max_age_hours,
            24,
        ),
        _Scheduled(
            "backup-expire",
            "BackupExpiryFailed",
            "BackupExpiryStale",
            ctx.backup_expire_cronjob,
            ctx.backup_expire_max_age_hours,
            1,
        ),
    )
    stories: list[Story] = []
    for job in scheduled:
        stories += _scheduled_stories(ctx, job, ops)
    stories += _dst_stories(ctx, ops)
    stories += _audit_stories(ctx, ops)
    stories += [
        Story(
            "GDPRPurgeInvalidTimestamps",
            "documents the purge cannot date open a ticket",
            {metric("couchops_purge_documents_invalid_timestamp", "purge"): "12x10"},
            "5m",
            [Expect(ops("purge"), 12)],
        ),
        Story(
            "GDPRPurgeInvalidTimestamps",
            "a purge where every document has a timestamp is silent",
            {metric("couchops_purge_documents_invalid_timestamp", "purge"): "0x10"},
            "5m",
        ),
        Story(
            "BackupSuspiciouslySmall",
            "a backup at 40% of last week's size opens a ticket",
            {
                metric("couchops_backup_bytes", "backup"): "1000000000x190 400000000x5",
                metric("couchops_backup_documents", "backup"): "60000x195",
            },
            "192h",
            [Expect(ops("backup"), 400000000)],
            interval="1h",
            long=True,
        ),
        Story(
            "BackupSuspiciouslySmall",
            "a backup of zero documents opens a ticket",
            {
                metric("couchops_backup_bytes", "backup"): "1000000000x195",
                metric("couchops_backup_documents", "backup"): "60000x190 0x5",
            },
            "192h",
            [Expect(ops("backup"), 0)],
            interval="1h",
            long=True,
        ),
        Story(
            "BackupSuspiciouslySmall",
            "a backup that shrinks by a tenth after the purge is silent",
            {
                metric("couchops_backup_bytes", "backup"): "1000000000x190 900000000x5",
                metric("couchops_backup_documents", "backup"): "60000x190 54000x5",
            },
            "192h",
            interval="1h",
            long=True,
        ),
        Story(
            "OpsOperationFailed",
            "a failed cluster setup opens a ticket",
            {metric("couchops_run_success", "cluster-setup"): "0x10"},
            "5m",
            [Expect(ops("cluster-setup"), 0)],
        ),
        Story(
            "OpsOperationFailed",
            "a successful consolidation is silent (and the purge is not its business)",
            {
                metric("couchops_run_success", "consolidate"): "1x10",
                metric("couchops_run_success", "purge"): "0x10",
            },
            "5m",
        ),
        Story(
            "OpsJobFailed",
            "a Job whose every attempt failed opens a ticket",
            {
                series(
                    "kube_job_status_failed", namespace=ns, job_name="couchops-backup-1"
                ): "3x10",
                series("kube_job_status_succeeded", namespace=ns, job_name="couchops-backup-1"): (
                    "0x10"
                ),
                series("kube_job_status_active", namespace=ns, job_name="couchops-backup-1"): (
                    "0x10"
                ),
            },
            "5m",
            [Expect({"namespace": ns, "job_name": "couchops-backup-1"}, 3)],
        ),
        Story(
            "OpsJobFailed",
            "a Job that failed once then succeeded on retry is silent",
            {
                series("kube_job_status_failed", namespace=ns, job_name="couchops-purge-1"): "1x10",
                series("kube_job_status_succeeded", namespace=ns, job_name="couchops-purge-1"): (
                    "1x10"
                ),
                series("kube_job_status_active", namespace=ns, job_name="couchops-purge-1"): "0x10",
            },
            "5m",
        ),
    ]
    return stories


def _webapp_stories(ctx: MonitoringContext, series: Callable[..., str]) -> list[Story]:
    ns = ctx.namespace
    web = {"job": ctx.webapp_job, "namespace": ns}
    status = ctx.webapp_status_label
    requests = ctx.webapp_requests_metric
    bucket = f"{ctx.webapp_duration_histogram}_bucket"
    env_labels = {"environment": ctx.environment, "namespace": ns}
    pod = "webapp-5d8f7c9b6d-x2x4k"

    def req(code: str) -> str:
        return series(requests, **web, pod=pod, **{status: code})

    def buckets(counts: Mapping[str, float]) -> dict[str, str]:
        return {series(bucket, **web, pod=pod, le=le): _counter(n, 30) for le, n in counts.items()}

    hpa = {"namespace": ns, "horizontalpodautoscaler": "webapp"}
    restarts = {"namespace": ns, "pod": pod, "container": "webapp"}
    return [
        Story(
            "WebappHighErrorRate",
            "one request in five failing with 5xx for ten minutes pages",
            {req("200"): _counter(480, 30), req("502"): _counter(120, 30)},
            "20m",
            [Expect(env_labels, 0.2)],
        ),
        Story(
            "WebappHighErrorRate",
            "a handful of 5xx at night, under the minimum traffic, is silent",
            {req("200"): _counter(3, 30), req("500"): _counter(1, 30)},
            "20m",
        ),
        Story(
            "WebappHighLatency",
            "a p95 of 2.5 s for fifteen minutes opens a ticket",
            {**buckets({"0.5": 0, "1": 0, "2.5": 600, "+Inf": 600})},
            "20m",
            [Expect(env_labels, 1 + 1.5 * 0.95)],
        ),
        Story(
            "WebappHighLatency",
            "answers under half a second are silent",
            {**buckets({"0.5": 600, "1": 600, "2.5": 600, "+Inf": 600})},
            "20m",
        ),
        Story(
            "WebappAutoscalerAtMaximum",
            "the autoscaler at its maximum for fifteen minutes opens a ticket",
            {
                series("kube_horizontalpodautoscaler_status_current_replicas", **hpa): "20x30",
                series("kube_horizontalpodautoscaler_spec_max_replicas", **hpa): "20x30",
            },
            "20m",
            [Expect(hpa, 20)],
        ),
        Story(
            "WebappAutoscalerAtMaximum",
            "the autoscaler with room left is silent",
            {
                series("kube_horizontalpodautoscaler_status_current_replicas", **hpa): "12x30",
                series("kube_horizontalpodautoscaler_spec_max_replicas", **hpa): "20x30",
            },
            "20m",
        ),
        Story(
            "ContainerRestartingOften",
            "a container restarting every minute opens a ticket",
            {series("kube_pod_container_status_restarts_total", **restarts): "0+1x60"},
            "50m",
            [Expect(restarts, 30)],
        ),
        Story(
            "ContainerRestartingOften",
            "a single restart is silent",
            {series("kube_pod_container_status_restarts_total", **restarts): "0x20 1x40"},
            "50m",
        ),
    ]


def _expected_alert(rule: Mapping[str, Any], expect: Expect) -> dict[str, Any]:
    labels = {**expect.labels, **rule["labels"]}
    annotations = {
        key: render(str(template), labels, expect.value, expect.queries)
        for key, template in rule["annotations"].items()
    }
    return {"exp_labels": labels, "exp_annotations": annotations}


def _test_group(story: Story, rules: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    rule = rules[story.alert]
    group: dict[str, Any] = {
        "name": f"{story.alert} {'fires' if story.fires else 'stays silent'}: {story.name}",
        "interval": story.interval,
        "input_series": [
            {"series": name, "values": values} for name, values in story.series.items()
        ],
        "alert_rule_test": [
            {
                "eval_time": story.eval_time,
                "alertname": story.alert,
                "exp_alerts": [_expected_alert(rule, e) for e in story.fires],
            }
        ],
    }
    if story.samples:
        group["promql_expr_test"] = [
            {
                "expr": expr,
                "eval_time": eval_time,
                "exp_samples": [{"labels": labels, "value": value} for labels, value in expected],
            }
            for expr, eval_time, expected in story.samples
        ]
    return group


LONG_EVALUATION_INTERVAL = "15m"


def build_rule_tests(ctx: MonitoringContext, rule_file: str) -> dict[str, dict[str, Any]]:
    """promtool test files for the rules of `ctx`, read from `rule_file` (a path relative to
    the test files): {"": stories evaluated every minute, "long": those spanning days}."""
    groups = build_rule_groups(ctx)
    rules = {str(rule["alert"]): rule for rule in alert_rules(groups)}
    order = [str(group["name"]) for group in groups]
    stories = _stories(ctx)
    unknown = sorted({s.alert for s in stories} - rules.keys())
    if unknown:
        raise ValueError(f"stories for alerts that do not exist: {', '.join(unknown)}")
    return {
        kind: {
            "rule_files": [rule_file],
            "evaluation_interval": LONG_EVALUATION_INTERVAL if kind else "1m",
            # promtool otherwise picks the order of the groups at random (a Go map): the SLO
            # alerts would read the SLI recorded at this evaluation, or at the one before.
            "group_eval_order": order,
            "tests": [_test_group(s, rules) for s in stories if s.long == bool(kind)],
        }
        for kind in ("", "long")
    }


def coverage(test_files: Iterable[Mapping[str, Any]]) -> tuple[set[str], set[str]]:
    """The alerts promtool test files show firing, and those they show silent."""
    firing: set[str] = set()
    silent: set[str] = set()
    for test_file in test_files:
        for group in test_file.get("tests", []):
            for check in group.get("alert_rule_test", []):
                (firing if check.get("exp_alerts") else silent).add(str(check["alertname"]))
    return firing, silent


def missing_stories(alerts: Iterable[str], test_files: Iterable[Mapping[str, Any]]) -> list[str]:
    """`<alert>: no case where it ...` for every alert lacking one of its two stories."""
    firing, silent = coverage(test_files)
    missing = []
    for alert in alerts:
        if alert not in firing:
            missing.append(f"{alert}: no case where it fires")
        if alert not in silent:
            missing.append(f"{alert}: no case where it stays silent")
    return missing
