"""Prometheus rule groups of one environment: the SLO burn-rate alerts and the rest.

`build_rule_groups(ctx)` returns the `spec.groups` of a PrometheusRule, which is also the
`groups` of a plain rules file, so promtool tests exactly what the cluster runs.

The SLI is the one of docs/sla.md: the share of the blackbox probes of the public URL that
failed. With probes at a fixed interval, `avg_over_time(probe_success[w])` is the share of
time the site answered during `w`; the SLA report integrates the same samples in time.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from supervision.context import MonitoringContext

# Multi-window, multi-burn-rate alerting for a 30-day SLO (SRE workbook, chapter 5): an
# alert fires while both its long and its short window burn faster than `burn_rate`; the
# short window makes it stop soon after the errors stop.
SLI_WINDOWS = ("5m", "30m", "1h", "6h", "3d")


@dataclass(frozen=True)
class BurnRateAlert:
    name: str
    long_window: str
    short_window: str
    burn_rate: float
    budget_spent: str
    severity: str
    for_: str


BURN_RATE_ALERTS = (
    BurnRateAlert("AvailabilityBudgetBurnFast", "1h", "5m", 14.4, "2%", "page", "2m"),
    BurnRateAlert("AvailabilityBudgetBurnSustained", "6h", "30m", 6.0, "5%", "page", "2m"),
    BurnRateAlert("AvailabilityBudgetBurnSlow", "3d", "6h", 1.0, "10%", "ticket", "30m"),
)

SEVERITIES = ("page", "ticket", "info")

# Go template snippets of the annotations (Prometheus renders them when the alert fires).
COUNT = '{{ $value | printf "%.0f" }}'
HUMAN = "{{ $value | humanize }}"
PERCENT = "{{ $value | humanizePercentage }}"
DURATION = "{{ $value | humanizeDuration }}"
BYTES = "{{ $value | humanize1024 }}B"


def label(name: str) -> str:
    return "{{ $labels." + name + " }}"


def number(value: float) -> str:
    """A threshold as PromQL reads it: 0.0144, not 0.014400000000000001."""
    return f"{value:.10g}"


def selector(*matchers: tuple[str, str, str]) -> str:
    """`{a="x",b=~"y"}` from (label, operator, value) triples, values escaped."""
    parts = []
    for name, operator, value in matchers:
        escaped = value.replace("\\", "\\\\").replace('"', '\\"')
        parts.append(f'{name}{operator}"{escaped}"')
    return "{" + ",".join(parts) + "}"


def eq(**labels: str) -> tuple[tuple[str, str, str], ...]:
    return tuple((name, "=", value) for name, value in labels.items())


def probe_selector(ctx: MonitoringContext) -> str:
    return selector(*eq(job=ctx.probe_job, instance=ctx.public_url))


def couchdb_selector(ctx: MonitoringContext, **extra: str) -> str:
    return selector(*eq(job=ctx.couchdb_job, namespace=ctx.namespace, **extra))


def ops_selector(ctx: MonitoringContext, operation: str) -> str:
    return selector(
        *eq(job=ctx.ops_job, environment=ctx.environment),
        ("operation", "=~" if "|" in operation else "=", operation),
    )


def sli_record_name(window: str) -> str:
    return f"slo:sli_error:ratio_rate{window}"


def sli_error_ratio_expr(ctx: MonitoringContext, window: str) -> str:
    """Share of failed probes over `window`. With several probers, the best one counts: the
    site is down only when every prober failed (docs/sla.md), so a prober's own network
    trouble does not page anyone."""
    return f"1 - max(avg_over_time(probe_success{probe_selector(ctx)}[{window}]))"


def _env_labels(ctx: MonitoringContext) -> dict[str, str]:
    return {"environment": ctx.environment, "namespace": ctx.namespace}


def _alert(
    ctx: MonitoringContext,
    name: str,
    expr: str,
    *,
    severity: str,
    summary: str,
    description: str,
    for_: str | None = None,
) -> dict[str, Any]:
    if severity not in SEVERITIES:
        raise ValueError(f"alert {name}: severity '{severity}' not in {SEVERITIES}")
    rule: dict[str, Any] = {"alert": name, "expr": expr}
    if for_:
        rule["for"] = for_
    rule["labels"] = {"severity": severity, **_env_labels(ctx)}
    rule["annotations"] = {
        "summary": summary,
        "description": description,
        "runbook_url": ctx.runbook_url(name),
    }
    return rule


def _group(ctx: MonitoringContext, topic: str, rules: list[dict[str, Any]]) -> dict[str, Any]:
    return {"name": f"onboarding-{ctx.environment}.{topic}", "rules": rules}


def _sli_recording_rules(ctx: MonitoringContext) -> list[dict[str, Any]]:
    return [
        {
            "record": sli_record_name(window),
            "expr": sli_error_ratio_expr(ctx, window),
            "labels": _env_labels(ctx),
        }
        for window in SLI_WINDOWS
    ]


def _slo_alerts(ctx: MonitoringContext) -> list[dict[str, Any]]:
    env = selector(*eq(environment=ctx.environment))
    target = f"{ctx.slo_target * 100:g}%"
    allowed = f"{ctx.error_budget_ratio * 100:g}%"
    rules = []
    for burn in BURN_RATE_ALERTS:
        threshold = number(burn.burn_rate * ctx.error_budget_ratio)
        expr = (
            f"{sli_record_name(burn.long_window)}{env} > {threshold}\n"
            f"and\n"
            f"{sli_record_name(burn.short_window)}{env} > {threshold}"
        )
        rules.append(
            _alert(
                ctx,
                burn.name,
                expr,
                severity=burn.severity,
                for_=burn.for_,
                summary=(
                    f"{ctx.environment}: the availability error budget burns "
                    f"{burn.burn_rate:g}x too fast"
                ),
                description=(
                    f"{PERCENT} of the probes of {ctx.public_url} failed over the last "
                    f"{burn.long_window} (and over the last {burn.short_window}), "
                    f"{burn.burn_rate:g} times the {allowed} that the {target} SLO allows. "
                    f"Kept up for {burn.long_window}, this spends {burn.budget_spent} of the "
                    f"30-day error budget. Prospects cannot open accounts."
                ),
            )
        )
    rules.append(
        _alert(
            ctx,
            "AvailabilitySLIDataMissing",
            f"absent_over_time(probe_success{probe_selector(ctx)}[10m])",
            severity="page",
            for_="5m",
            summary=f"{ctx.environment}: no probe result for the public URL, availability unknown",
            description=(
                f"Prometheus has no probe_success sample for {ctx.public_url} "
                f"(job {ctx.probe_job}) for 15 minutes. The SLO alerts are blind and, by the "
                f"contract, time without measurement may count as unavailable in the SLA report."
            ),
        )
    )
    return rules


def _couchdb_alerts(ctx: MonitoringContext) -> list[dict[str, Any]]:
    up = f"up{couchdb_selector(ctx)}"
    replicas = ctx.couchdb_replicas
    cluster_nodes = f"couchdb_membership{couchdb_selector(ctx, nodes='cluster_nodes')}"
    all_nodes = f"couchdb_membership{couchdb_selector(ctx, nodes='all_nodes')}"
    status = f"couchdb_httpd_status_codes{couchdb_selector(ctx)}"
    status_5xx = "couchdb_httpd_status_codes" + selector(
        *eq(job=ctx.couchdb_job, namespace=ctx.namespace), ("code", "=~", "5..")
    )
    latency = f"couchdb_request_time_seconds{couchdb_selector(ctx, quantile='0.95')}"
    backlog = f"couchdb_internal_replication_jobs{couchdb_selector(ctx)}"
    return [
        _alert(
            ctx,
            "CouchDBNodeDown",
            f"{up} == 0",
            severity="page",
            for_="5m",
            summary=f"{ctx.environment}: CouchDB pod {label('pod')} is down",
            description=(
                f"CouchDB pod {label('pod')} has not answered its metrics scrape for 5 "
                f"minutes. Each shard it held has one copy fewer: one more loss can make "
                f"reads and writes of those shards fail for lack of quorum."
            ),
        ),
        _alert(
            ctx,
            "CouchDBReplicasMissing",
            f"(count({up}) or vector(0)) < {replicas}",
            severity="page",
            for_="10m",
            summary=f"{ctx.environment}: only {COUNT} of {replicas} CouchDB pods are scraped",
            description=(
                f"Prometheus finds {COUNT} CouchDB targets in {ctx.namespace} instead of "
                f"{replicas}: pods are missing (Pending, deleted, StatefulSet scaled down) "
                f"or the ServiceMonitor no longer selects them."
            ),
        ),
        _alert(
            ctx,
            "CouchDBMembershipMismatch",
            (
                f"(\n  {cluster_nodes} != {replicas}\n"
                f"  or\n"
                f"  {all_nodes} != ignoring (nodes) group_left () {cluster_nodes}\n)\n"
                f"unless on () (count({up} == 1) < {replicas})"
            ),
            severity="page",
            for_="10m",
            summary=f"{ctx.environment}: CouchDB cluster membership mismatch on {label('pod')}",
            description=(
                f"CouchDB pod {label('pod')} reports "
                f'couchdb_membership{{nodes="{label("nodes")}"}} = {COUNT}, while all '
                f"{replicas} nodes must be cluster members (cluster_nodes) and connected to "
                f"each other (all_nodes) with every pod up. A node is missing from /_membership "
                f"or the Erlang distribution is partitioned: quorum reads and writes may fail."
            ),
        ),
        _alert(
            ctx,
            "CouchDBHighErrorRate",
            (
                f"(\n  sum(rate({status_5xx}[5m]))\n  /\n  sum(rate({status}[5m]))\n)"
                f" > {number(ctx.error_ratio_threshold)}\n"
                f"and on () sum(rate({status}[5m])) > {number(ctx.min_request_rate)}"
            ),
            severity="page",
            for_="10m",
            summary=f"{ctx.environment}: {PERCENT} of CouchDB requests fail with 5xx",
            description=(
                f"{PERCENT} of the HTTP requests served by CouchDB in {ctx.namespace} answered "
                f"5xx over 5 minutes (threshold "
                f"{ctx.error_ratio_threshold * 100:g}%). Account openings that write to "
                f"the database fail even when the home page answers."
            ),
        ),
        _alert(
            ctx,
            "CouchDBHighRequestLatency",
            f"max by (pod) ({latency}) > {number(ctx.couchdb_latency_p95_seconds)}",
            severity="ticket",
            for_="15m",
            summary=f"{ctx.environment}: CouchDB pod {label('pod')} is slow (p95 {HUMAN}s)",
            description=(
                f"The 95th percentile of request time on CouchDB pod {label('pod')} is "
                f"{HUMAN}s, above {ctx.couchdb_latency_p95_seconds:g}s for 15 minutes. "
                f"The web app's pages wait on it; peaks may turn into timeouts."
            ),
        ),
        _alert(
            ctx,
            "CouchDBInternalReplicationBacklog",
            f"{backlog} > 100",
            severity="ticket",
            for_="1h",
            summary=(
                f"{ctx.environment}: CouchDB pod {label('pod')} has a stuck internal "
                f"replication backlog"
            ),
            description=(
                f"{COUNT} changes wait for internal replication on CouchDB pod "
                f"{label('pod')} and the backlog has not drained for an hour: the copies of "
                f"some shards diverge, and losing a node now can lose recent writes."
            ),
        ),
    ]


def _storage_alerts(ctx: MonitoringContext) -> list[dict[str, Any]]:
    ns = selector(*eq(namespace=ctx.namespace))
    available = f"kubelet_volume_stats_available_bytes{ns}"
    ratio = f"(\n  {available}\n  /\n  kubelet_volume_stats_capacity_bytes{ns}\n)"
    claim = label("persistentvolumeclaim")
    return [
        _alert(
            ctx,
            "PersistentVolumeFillingUp",
            f"{ratio} < 0.25\nand\npredict_linear({available}[6h], 4 * 24 * 3600) < 0",
            severity="ticket",
            for_="1h",
            summary=f"{ctx.environment}: volume {claim} fills up within 4 days",
            description=(
                f"Volume {claim} in {ctx.namespace} has {PERCENT} free and, at the rate of "
                f"the last 6 hours, will be full within 4 days. CouchDB compaction needs free "
                f"space as large as the database file it rewrites."
            ),
        ),
        _alert(
            ctx,
            "PersistentVolumeAlmostFull",
            f"{ratio} < 0.1",
            severity="page",
            for_="5m",
            summary=f"{ctx.environment}: volume {claim} is almost full ({PERCENT} free)",
            description=(
                f"Volume {claim} in {ctx.namespace} has only {PERCENT} free. When it is full, "
                f"CouchDB stops accepting writes (or the backup fails) and compaction can no "
                f"longer free space."
            ),
        ),
    ]


def _stale_expr(ctx: MonitoringContext, operation: str, cronjob: str, max_age_hours: int) -> str:
    # The tool's own record of success first; the CronJob's if the Pushgateway lost it;
    # never a success at all counts as infinitely old.
    last_success = f"couchops_last_success_timestamp_seconds{ops_selector(ctx, operation)}"
    cron = selector(*eq(namespace=ctx.namespace, cronjob=cronjob))
    # The audit has two kinds of runs (`scope`: the databases after the purge, the backups
    # after the backup): the older of the two counts, so that neither hides the other.
    newest = (
        f"min(max by (scope) ({last_success}))" if operation == "audit" else f"max({last_success})"
    )
    return (
        f"time() - (\n"
        f"  {newest}\n"
        f"  or\n"
        f"  max(kube_cronjob_status_last_successful_time{cron})\n"
        f"  or\n"
        f"  vector(0)\n"
        f") > {max_age_hours} * 3600"
    )


def audit_gauge_query(ctx: MonitoringContext, gauge: str) -> str:
    """The last audit's `couchops_audit_<gauge>`, as an annotation asks Prometheus for it."""
    return f"max(couchops_audit_{gauge}{ops_selector(ctx, 'audit')})"


def _queried(expr: str, fmt: str) -> str:
    """An annotation snippet showing the value of `expr` at the alert's evaluation."""
    return (
        f"{{{{ with query `{expr}` }}}}{{{{ . | first | value | {fmt} }}}}"
        f"{{{{ else }}}}not reported{{{{ end }}}}"
    )


def gdpr_conditions(ctx: MonitoringContext) -> dict[str, str]:
    """The expression of each alert that says personal data may outlive its budget, by alert
    name: the rules alert on them and the deletion report finds when each held."""
    return {
        "GDPRAuditFindings": f"couchops_audit_findings{ops_selector(ctx, 'audit')} > 0",
        "GDPRPurgeFailed": f"couchops_run_success{ops_selector(ctx, 'purge')} == 0",
        "GDPRPurgeStale": _stale_expr(ctx, "purge", ctx.purge_cronjob, ctx.purge_max_age_hours),
        "GDPRAuditFailed": f"couchops_run_success{ops_selector(ctx, 'audit')} == 0",
        # The audit runs in the purge's Job, right after it: the same CronJob stands in.
        "GDPRAuditStale": _stale_expr(ctx, "audit", ctx.purge_cronjob, ctx.purge_max_age_hours),
        "BackupExpiryFailed": f"couchops_run_success{ops_selector(ctx, 'backup-expire')} == 0",
        "BackupExpiryStale": _stale_expr(
            ctx, "backup-expire", ctx.backup_expire_cronjob, ctx.backup_expire_max_age_hours
        ),
    }


def _gdpr_alerts(ctx: MonitoringContext) -> list[dict[str, Any]]:
    env = ctx.environment
    conditions = gdpr_conditions(ctx)
    never = "(decades means no success was ever recorded)"
    days = ctx.retention.budget_days
    oldest_db = _queried(
        audit_gauge_query(ctx, "oldest_database_data_age_seconds"), "humanizeDuration"
    )
    oldest_backup = _queried(
        audit_gauge_query(ctx, "oldest_backup_data_age_seconds"), "humanizeDuration"
    )
    cutoff = _queried(audit_gauge_query(ctx, "cutoff_age_seconds"), "humanizeDuration")
    return [
        _alert(
            ctx,
            "GDPRAuditFindings",
            conditions["GDPRAuditFindings"],
            severity="page",
            summary=f"{env}: {COUNT} readable items of personal data are past the audit's limit",
            description=(
                f"The last `couchops audit` in {env} found {COUNT} readable items older than its "
                f"limit of {cutoff}. Oldest personal data readable: {oldest_db} in the databases, "
                f"{oldest_backup} in the backups (0s: none). Data past {days} days in "
                f"either copy breaks the contract's GDPR clause: tell the DPO."
            ),
        ),
        _alert(
            ctx,
            "GDPRPurgeFailed",
            conditions["GDPRPurgeFailed"],
            severity="ticket",
            summary=f"{env}: the last GDPR purge failed",
            description=(
                f"The last `couchops purge` run in {env} reported a failure. Personal data "
                f"older than the {ctx.retention.purge_retention_days}-day retention may still "
                f"be readable; the next run is tomorrow and {ctx.purge_max_age_hours} hours "
                f"without a successful purge pages."
            ),
        ),
        _alert(
            ctx,
            "GDPRPurgeStale",
            conditions["GDPRPurgeStale"],
            severity="page",
            summary=f"{env}: no successful GDPR purge for over {ctx.purge_max_age_hours} hours",
            description=(
                f"The last successful GDPR purge in {env} was {DURATION} ago {never}. "
                f"Personal data may be {ctx.purge_page_margin_hours} hours or less from "
                f"being older than {days} days, which the contract forbids."
            ),
        ),
        _alert(
            ctx,
            "GDPRPurgeInvalidTimestamps",
            f"couchops_purge_documents_invalid_timestamp{ops_selector(ctx, 'purge')} > 0",
            severity="ticket",
            summary=f"{env}: {COUNT} documents cannot be dated by the GDPR purge",
            description=(
                f"The last purge found {COUNT} documents without a valid creation timestamp. "
                f"The purge cannot tell their age, so they may stay past {days} days."
            ),
        ),
        _alert(
            ctx,
            "GDPRAuditFailed",
            conditions["GDPRAuditFailed"],
            severity="ticket",
            summary=f"{env}: the last GDPR audit could not complete",
            description=(
                f"The last `couchops audit` run in {env} reported a failure: nothing shows "
                f"that every database and backup is free of personal data older than the "
                f"retention. {ctx.purge_max_age_hours} hours without a completed audit pages."
            ),
        ),
        _alert(
            ctx,
            "GDPRAuditStale",
            conditions["GDPRAuditStale"],
            severity="page",
            summary=f"{env}: no completed GDPR audit for over {ctx.purge_max_age_hours} hours",
            description=(
                f"The last completed GDPR audit in {env} was {DURATION} ago {never}. Nothing "
                f"proves that no personal data older than {days} days is readable in the "
                f"databases or the backups."
            ),
        ),
        _alert(
            ctx,
            "BackupExpiryFailed",
            conditions["BackupExpiryFailed"],
            severity="ticket",
            summary=f"{env}: the last backup expiry failed",
            description=(
                f"The last `couchops backup-expire` run in {env} reported a failure. A backup "
                f"past its expiry keeps personal data beyond its budget until a run succeeds; "
                f"the job runs hourly and {ctx.backup_expire_max_age_hours} hours without a "
                f"success pages."
            ),
        ),
        _alert(
            ctx,
            "BackupExpiryStale",
            conditions["BackupExpiryStale"],
            severity="page",
            summary=(
                f"{env}: no successful backup expiry for over "
                f"{ctx.backup_expire_max_age_hours} hours"
            ),
            description=(
                f"The last successful `couchops backup-expire` in {env} was {DURATION} ago "
                f"{never}. Backups past their expiry are still on the volume: the personal "
                f"data they hold may be older than {days} days."
            ),
        ),
    ]


def _job_alerts(ctx: MonitoringContext) -> list[dict[str, Any]]:
    ns = selector(*eq(namespace=ctx.namespace))
    backup_bytes = f"couchops_backup_bytes{ops_selector(ctx, 'backup')}"
    never = "(decades means no success was ever recorded)"
    return [
        _alert(
            ctx,
            "BackupFailed",
            f"couchops_run_success{ops_selector(ctx, 'backup')} == 0",
            severity="ticket",
            summary=f"{ctx.environment}: the last CouchDB backup failed",
            description=(
                f"The last `couchops backup` run in {ctx.environment} reported a failure. The "
                f"newest restorable backup is older than planned; "
                f"{ctx.backup_max_age_hours} hours without a successful backup pages."
            ),
        ),
        _alert(
            ctx,
            "BackupStale",
            _stale_expr(ctx, "backup", ctx.backup_cronjob, ctx.backup_max_age_hours),
            severity="page",
            summary=(
                f"{ctx.environment}: no successful backup for over {ctx.backup_max_age_hours} hours"
            ),
            description=(
                f"The last successful CouchDB backup in {ctx.environment} was {DURATION} ago "
                f"{never}. Losing the cluster now loses every account application since."
            ),
        ),
        _alert(
            ctx,
            "BackupSuspiciouslySmall",
            (
                f"couchops_backup_documents{ops_selector(ctx, 'backup')} == 0\n"
                f"or\n"
                f"{backup_bytes} < 0.5 * max_over_time({backup_bytes}[7d] offset 1d)"
            ),
            severity="ticket",
            summary=f"{ctx.environment}: the last backup is empty or half the usual size",
            description=(
                f"The last backup in {ctx.environment} holds no document, or less than half "
                f"the bytes of the largest backup of the week before (now {BYTES}). A backup can "
                f"succeed and still miss data (wrong database, credentials, filter)."
            ),
        ),
        _alert(
            ctx,
            "OpsOperationFailed",
            # couchops labels a run with its subcommand: cluster-setup (cluster_setup in older
            # pushes), consolidate, and verify (the weekly restore check of the backups).
            "couchops_run_success"
            + ops_selector(ctx, "cluster[-_]setup|consolidate|verify")
            + " == 0",
            severity="ticket",
            summary=f"{ctx.environment}: couchops {label('operation')} failed",
            description=(
                f"The last `couchops` {label('operation')} run in {ctx.environment} reported a "
                f"failure. A failed cluster-setup leaves the cluster or its databases "
                f"misconfigured; a failed consolidate leaves per-user data unmigrated; a failed "
                f"verify means the newest backup may not restore."
            ),
        ),
        _alert(
            ctx,
            "OpsJobFailed",
            (
                f"kube_job_status_failed{ns} > 0\n"
                f"unless on (namespace, job_name) kube_job_status_succeeded{ns} > 0\n"
                f"unless on (namespace, job_name) kube_job_status_active{ns} > 0"
            ),
            severity="ticket",
            summary=f"{ctx.environment}: Job {label('job_name')} failed",
            description=(
                f"Job {label('job_name')} in {ctx.namespace} failed and no longer retries "
                f"({COUNT} failed pods). It may have died before reporting any metric "
                f"(image pull, OOM kill, deadline). Delete the Job once understood to clear this."
            ),
        ),
    ]


def _certificate_alerts(ctx: MonitoringContext) -> list[dict[str, Any]]:
    expiry = f"probe_ssl_earliest_cert_expiry{probe_selector(ctx)} - time()"
    managed = selector(*eq(namespace=ctx.namespace))
    return [
        _alert(
            ctx,
            "CertificateExpiringSoon",
            f"{expiry} < {ctx.cert_ticket_days} * 86400",
            severity="ticket",
            for_="1h",
            summary=f"{ctx.environment}: the TLS certificate of the site expires in {DURATION}",
            description=(
                f"The certificate served at {ctx.public_url} expires in {DURATION}. "
                f"cert-manager renews 30 days before expiry, so renewal is failing."
            ),
        ),
        _alert(
            ctx,
            "CertificateExpiryCritical",
            f"{expiry} < {ctx.cert_page_days} * 86400",
            severity="page",
            for_="5m",
            summary=(
                f"{ctx.environment}: the TLS certificate of the site expires in {DURATION}, "
                f"renew it now"
            ),
            description=(
                f"The certificate served at {ctx.public_url} expires in {DURATION}. When it "
                f"does, browsers refuse the site: a full outage."
            ),
        ),
        # Every cert-manager Certificate of the namespace, the internal ones included (CouchDB's
        # HTTPS and Erlang distribution, runbooks/internal-tls.md), which no probe sees; from
        # cert-manager's own metrics, when the hosting provider's Prometheus scrapes them.
        _alert(
            ctx,
            "CertificateRenewalOverdue",
            f"time() - certmanager_certificate_renewal_timestamp_seconds{managed} > 86400",
            severity="ticket",
            for_="15m",
            summary=(
                f"{ctx.environment}: cert-manager has not renewed {label('name')} for {DURATION}"
            ),
            description=(
                f"Certificate {label('name')} in {ctx.namespace} was due for renewal "
                f"{DURATION} ago. An internal certificate (couchdb-tls) has 10 days between "
                f"its renewal time and its expiry; when it expires, CouchDB's clients and "
                f"nodes refuse it."
            ),
        ),
        _alert(
            ctx,
            "CertificateManagedExpiryCritical",
            # Three days left: a renewal failing for a week (couchdb-tls renews 10 days ahead).
            f"certmanager_certificate_expiration_timestamp_seconds{managed} - time() < 3 * 86400",
            severity="page",
            for_="5m",
            summary=f"{ctx.environment}: certificate {label('name')} expires in {DURATION}",
            description=(
                f"Certificate {label('name')} in {ctx.namespace} expires in {DURATION} and "
                f"cert-manager has not renewed it. For couchdb-tls: every client and every "
                f"CouchDB node refuses an expired certificate, a full outage of the database."
            ),
        ),
    ]


def _webapp_alerts(ctx: MonitoringContext) -> list[dict[str, Any]]:
    base = eq(job=ctx.webapp_job, namespace=ctx.namespace)
    requests = f"{ctx.webapp_requests_metric}{selector(*base)}"
    errors = ctx.webapp_requests_metric + selector(*base, (ctx.webapp_status_label, "=~", "5.."))
    buckets = f"{ctx.webapp_duration_histogram}_bucket{selector(*base)}"
    ns = selector(*eq(namespace=ctx.namespace))
    return [
        _alert(
            ctx,
            "WebappHighErrorRate",
            (
                f"(\n  sum(rate({errors}[5m]))\n  /\n  sum(rate({requests}[5m]))\n)"
                f" > {number(ctx.error_ratio_threshold)}\n"
                f"and on () sum(rate({requests}[5m])) > {number(ctx.min_request_rate)}"
            ),
            severity="page",
            for_="10m",
            summary=f"{ctx.environment}: {PERCENT} of the web app's requests fail with 5xx",
            description=(
                f"{PERCENT} of the requests served by the web app in {ctx.namespace} answered "
                f"5xx over 5 minutes. Some users fail to open accounts even if the probe of "
                f"the home page succeeds (a partial outage the SLI does not see)."
            ),
        ),
        _alert(
            ctx,
            "WebappHighLatency",
            (
                f"histogram_quantile(0.95, sum by (le) (rate({buckets}[5m])))"
                f" > {number(ctx.webapp_latency_p95_seconds)}"
            ),
            severity="ticket",
            for_="15m",
            summary=f"{ctx.environment}: the web app is slow (p95 {HUMAN}s)",
            description=(
                f"The 95th percentile of the web app's response time is {HUMAN}s, above "
                f"{ctx.webapp_latency_p95_seconds:g}s for 15 minutes."
            ),
        ),
        _alert(
            ctx,
            "WebappAutoscalerAtMaximum",
            (
                f"kube_horizontalpodautoscaler_status_current_replicas{ns}\n"
                f">= kube_horizontalpodautoscaler_spec_max_replicas{ns}"
            ),
            severity="ticket",
            for_="15m",
            summary=(
                f"{ctx.environment}: autoscaler {label('horizontalpodautoscaler')} is at its "
                f"maximum ({COUNT} replicas)"
            ),
            description=(
                f"{label('horizontalpodautoscaler')} in {ctx.namespace} has run at its maximum "
                f"of {COUNT} replicas for 15 minutes: a bigger campaign peak will not be "
                f"absorbed without raising the maximum (and checking node capacity)."
            ),
        ),
        _alert(
            ctx,
            "ContainerRestartingOften",
            f"increase(kube_pod_container_status_restarts_total{ns}[30m]) > 2",
            severity="ticket",
            for_="15m",
            summary=(
                f"{ctx.environment}: container {label('container')} of {label('pod')} "
                f"keeps restarting"
            ),
            description=(
                f"Container {label('container')} of pod {label('pod')} in {ctx.namespace} "
                f"restarted {COUNT} times in 30 minutes (crash loop, OOM kill or failing "
                f"liveness probe)."
            ),
        ),
    ]


def build_rule_groups(ctx: MonitoringContext) -> list[dict[str, Any]]:
    """The rule groups of one environment, in evaluation order (recording rules first)."""
    return [
        _group(ctx, "sli", _sli_recording_rules(ctx)),
        _group(ctx, "slo", _slo_alerts(ctx)),
        _group(ctx, "couchdb", _couchdb_alerts(ctx)),
        _group(ctx, "storage", _storage_alerts(ctx)),
        _group(ctx, "gdpr", _gdpr_alerts(ctx)),
        _group(ctx, "jobs", _job_alerts(ctx)),
        _group(ctx, "certificates", _certificate_alerts(ctx)),
        _group(ctx, "webapp", _webapp_alerts(ctx)),
    ]


def alert_rules(groups: list[dict[str, Any]]) -> list[Mapping[str, Any]]:
    """Every alerting rule of `groups`, in order."""
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]
