"""The monthly deletion report for the bank's data-protection officer: what the GDPR purge
deleted, what the audits found, the backup expiries, the GDPR incidents and a verdict, from
the couchops series in Prometheus (docs/deletion-report.md). Markdown, HTML, a chart, JSON.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import jinja2

from supervision import deletion_templates
from supervision.chart import deletion_chart
from supervision.context import MonitoringContext
from supervision.contract import Contract
from supervision.deletion import (
    COPIES,
    DURATION,
    LAST_RUN,
    LAST_SUCCESS,
    SUCCESS,
    Exposure,
    Interval,
    Run,
    count_metric,
    days_of,
    found_exposures,
    held,
    local_day,
    merge,
    oldest_ms,
    purge_exposures,
    runs_from_series,
)
from supervision.prometheus import PrometheusClient
from supervision.report import (
    NoDataError,
    Period,
    fmt_duration,
    jinja_environment,
    write_files,
)
from supervision.rules import alert_rules, build_rule_groups, eq, gdpr_conditions, selector

PURGE_COUNTS = ("documents_purged", "revisions_purged", "databases", "databases_failed")
AUDIT_COUNTS = (
    "findings",
    "databases",
    "backups",
    "oldest_database_data_age_seconds",
    "oldest_backup_data_age_seconds",
    "cutoff_age_seconds",
)
EXPIRY_COUNTS = ("expired_deleted", "backups_kept")
OPERATIONS = {"purge": PURGE_COUNTS, "audit": AUDIT_COUNTS, "backup-expire": EXPIRY_COUNTS}
# Runs this long before the period: the last successful purge and audit before it (a day
# and a half apart at most when all is well) say what held at its first instant.
LOOKBACK_MS = 3 * 86_400_000
# The alert conditions are evaluated this often, as the rules are (to the minute).
CONDITION_STEP_SECONDS = 60
HOUR_MS = 3_600_000
DAY_MS = 86_400_000


@dataclass(frozen=True)
class DayRow:
    day: date
    purges: list[Run]
    audits: list[Run]
    expiries: list[Run]

    @staticmethod
    def total(runs: Sequence[Run], count: str) -> float | None:
        """The sum over the runs that reported `count`; None when none did."""
        reported = [value for r in runs if (value := r.count(count)) is not None]
        return sum(reported) if reported else None

    @property
    def documents(self) -> float | None:
        return self.total(self.purges, "documents_purged")

    @property
    def revisions(self) -> float | None:
        return self.total(self.purges, "revisions_purged")

    @property
    def databases_failed(self) -> float | None:
        return self.total(self.purges, "databases_failed")

    @property
    def backups_expired(self) -> float | None:
        return self.total(self.expiries, "expired_deleted")


@dataclass(frozen=True)
class Incident:
    alert: str
    severity: str
    interval: Interval
    detail: str


@dataclass(frozen=True)
class Oldest:
    """The oldest personal data the period's audits found readable in one copy."""

    copy: str
    age_ms: int
    audit: Run


@dataclass(frozen=True)
class DeletionReport:
    ctx: MonitoringContext
    contract: Contract
    period: Period
    generated_at: datetime
    prometheus_url: str
    prometheus_version: str
    purges: list[Run]
    audits: list[Run]
    expiries: list[Run]
    days: list[DayRow]
    incidents: list[Incident]
    exposures: list[Exposure]
    warnings: list[str] = field(default_factory=list)

    @property
    def tz(self) -> ZoneInfo:
        return self.contract.tz

    @property
    def budget_ms(self) -> int:
        return self.ctx.retention.budget_days * DAY_MS

    def oldest(self, copy: str) -> Oldest | None:
        found = [(age, a) for a in self.audits if (age := oldest_ms(a, copy)) is not None]
        if not found:
            return None
        age, audit = max(found, key=lambda f: f[0])
        return Oldest(copy, age, audit)

    @property
    def audits_with_findings(self) -> list[Run]:
        return [a for a in self.audits if (a.count("findings") or 0) > 0]

    @property
    def days_without_purge(self) -> list[date]:
        return [d.day for d in self.days if not d.purges]

    @property
    def verdict(self) -> str:
        return _verdict(self)


def _ops_selector(ctx: MonitoringContext, operation: str) -> str:
    names = [LAST_RUN, LAST_SUCCESS, SUCCESS, DURATION]
    names += [count_metric(operation, c) for c in OPERATIONS[operation]]
    return selector(
        ("__name__", "=~", "|".join(names)),
        *eq(job=ctx.ops_job, environment=ctx.environment, operation=operation),
    )


def _earliest_success(found: dict[Any, Any], runs: list[Run], deadline_ms: int) -> list[Run]:
    """The success that couchops_last_success_timestamp_seconds shows before every run seen
    (pushed before the look-back, then followed by failures). Its start unknown, it is taken
    as early as the deadline allows, which can only make the report stricter."""
    values = [
        value
        for key, samples in found.items()
        if dict(key).get("__name__") == LAST_SUCCESS
        for _, value in samples
    ]
    if not values:
        return []
    at = round(min(values) * 1000)
    if any(r.at == at for r in runs):
        return []
    return [Run(at=at, seen=at, success=True, duration_ms=deadline_ms)]


def _read_runs(
    client: PrometheusClient, ctx: MonitoringContext, period: Period
) -> dict[str, list[Run]]:
    """Every run of each operation seen from the look-back to the end of the period."""
    runs: dict[str, list[Run]] = {}
    for operation, counts in OPERATIONS.items():
        found = client.samples(
            _ops_selector(ctx, operation), period.start_ms - LOOKBACK_MS, period.end_ms
        )
        runs[operation] = runs_from_series(found, operation, counts)
        if operation == "purge":
            deadline = ctx.retention.purge_deadline_hours * HOUR_MS
            runs[operation] += _earliest_success(found, runs[operation], deadline)
    return runs


def _detail(alert: str, interval: Interval) -> str:
    if alert == "GDPRAuditFindings":
        return f"up to {interval.peak:.0f} readable items past the audit's limit"
    if alert.endswith("Stale"):
        # The rules count from the epoch when no success was ever recorded.
        if interval.peak > 10 * 365 * 86_400:
            return "no success recorded at all"
        return f"last success up to {fmt_duration(interval.peak * 1000)} earlier"
    return "the last run reported a failure"


def _incidents(client: PrometheusClient, ctx: MonitoringContext, period: Period) -> list[Incident]:
    """When each GDPR alert's condition held, evaluated as the rules evaluate it."""
    severities = {
        str(r["alert"]): str(r["labels"]["severity"]) for r in alert_rules(build_rule_groups(ctx))
    }
    step_ms = CONDITION_STEP_SECONDS * 1000
    incidents = []
    for alert, expr in gdpr_conditions(ctx).items():
        found = client.samples(
            expr, period.start_ms - step_ms, period.end_ms, step_seconds=CONDITION_STEP_SECONDS
        )
        for interval in held(found.values(), step_ms, period.start_ms, period.end_ms):
            incidents.append(Incident(alert, severities[alert], interval, _detail(alert, interval)))
    return sorted(incidents, key=lambda i: (i.interval.start, i.alert))


def _exposures(
    ctx: MonitoringContext, period: Period, runs: dict[str, list[Run]], incidents: list[Incident]
) -> list[Exposure]:
    r = ctx.retention
    start, end = period.start_ms, period.end_ms
    slack_h = (r.budget_days - r.purge_retention_days) * 24
    exposures = found_exposures(runs["audit"], r.budget_days * DAY_MS, start, end)
    exposures += purge_exposures(
        runs["purge"],
        slack_h * HOUR_MS,
        start,
        end,
        f"no successful purge started in the {slack_h} h before: data older than the "
        f"{r.purge_retention_days}-day retention may have reached {r.budget_days} days",
    )
    exposures += [
        Exposure(
            i.interval.start,
            i.interval.end,
            "backups",
            False,
            reason=(
                f"no successful backup expiry for over {ctx.backup_expire_max_age_hours} h "
                f"(BackupExpiryStale): expired backups may have kept their data"
            ),
        )
        for i in incidents
        if i.alert == "BackupExpiryStale"
    ]
    return merge(exposures)


def build_deletion_report(
    client: PrometheusClient,
    ctx: MonitoringContext,
    contract: Contract,
    period: Period,
    *,
    now: datetime,
) -> DeletionReport:
    version = client.build_info().get("version", "unknown")
    runs = _read_runs(client, ctx, period)
    if not any(runs.values()):
        raise NoDataError(
            f"Prometheus at {client.url} holds no couchops series of {ctx.environment} "
            f"(job {ctx.ops_job}: purge, audit, backup-expire) between "
            f"{period.start.isoformat()} and {period.end.isoformat()}: check the environment, "
            f"that the Pushgateway is scraped with honor_labels, and the retention."
        )
    incidents = _incidents(client, ctx, period)

    def within(operation: str) -> list[Run]:
        return [r for r in runs[operation] if period.start_ms <= r.at < period.end_ms]

    purges, audits, expiries = within("purge"), within("audit"), within("backup-expire")
    tz = contract.tz

    def on(day: date, rows: list[Run]) -> list[Run]:
        return [r for r in rows if local_day(r.at, tz) == day]

    days = [
        DayRow(day, on(day, purges), on(day, audits), on(day, expiries))
        for day in days_of(period.start_ms, period.end_ms, tz)
    ]
    return DeletionReport(
        ctx=ctx,
        contract=contract,
        period=period,
        generated_at=now.astimezone(tz),
        prometheus_url=client.url,
        prometheus_version=version,
        purges=purges,
        audits=audits,
        expiries=expiries,
        days=days,
        incidents=incidents,
        exposures=_exposures(ctx, period, runs, incidents),
        warnings=_warnings(period, runs, purges, audits, expiries),
    )


def _warnings(
    period: Period,
    runs: dict[str, list[Run]],
    purges: list[Run],
    audits: list[Run],
    expiries: list[Run],
) -> list[str]:
    warnings = []
    if period.partial:
        warnings.append(
            f"The period is not over: figures stop at {period.end:%Y-%m-%d %H:%M %Z} "
            f"and will change."
        )
    for operation, seen in runs.items():
        if not seen:
            warnings.append(
                f"No run of `couchops {operation}` at all in Prometheus for the period and the "
                f"3 days before: it never ran, or its metrics never reached Prometheus."
            )
    silent = [r for r in (*purges, *audits, *expiries) if r.success is False and not r.reported]
    if silent:
        warnings.append(
            f"{len(silent)} failed run(s) pushed no counts (they stopped before counting): "
            f"what they deleted is unknown and counted as 0."
        )
    return warnings


# --- Verdict -----------------------------------------------------------------------------


def _verdict(report: DeletionReport) -> str:
    fmt = _fmt_ms(report.tz)
    budget = report.ctx.retention.budget_days
    month = report.period.label
    found = [e for e in report.exposures if e.found]
    if any(e.audit for e in found):
        where = "; ".join(
            f"in the {e.copy} from {fmt(e.start)} to {fmt(e.end)}"
            + (f" (found by the audit of {fmt(e.audit.at)})" if e.audit else f" ({e.reason})")
            for e in found
        )
        return f"Personal data older than {budget} days WAS readable during {month}: {where}."
    if found:
        # Findings whose age the audit could not read: past its limit, which is at most the
        # budget (the purge's own cutoff after a purge), so "older than the budget" would be
        # more than the audit knows.
        where = "; ".join(
            f"in the {e.copy} from {fmt(e.start)} to {fmt(e.end)} ({e.reason})" for e in found
        )
        return (
            f"Audits found personal data readable past their limit (the purge's cutoff, at "
            f"most {budget} days) during {month}: {where}."
        )
    if report.exposures:
        where = "; ".join(
            f"in the {e.copy} from {fmt(e.start)} to {fmt(e.end)} ({e.reason})"
            for e in report.exposures
        )
        return (
            f"No audit found personal data older than {budget} days during {month}, but it "
            f"cannot be excluded {where}."
        )
    completed = sum(1 for a in report.audits if a.success)
    return (
        f"No personal data older than {budget} days was readable during {month}: "
        f"{completed} completed audits found none, and the purge and the backup expiry never "
        f"fell far enough behind for any to pass {budget} days."
    )


# --- Formatting ------------------------------------------------------------------------


def _fmt_ms(tz: ZoneInfo) -> Callable[[int], str]:
    def fmt(at: int) -> str:
        return datetime.fromtimestamp(at / 1000, tz).strftime("%Y-%m-%d %H:%M %Z")

    return fmt


def fmt_count(value: float | None) -> str:
    return "—" if value is None else f"{value:,.0f}".replace(",", " ")


def _outcome(run: Run) -> str:
    if run.success is None:
        return "unknown"
    return "succeeded" if run.success else "FAILED"


def _context(report: DeletionReport) -> dict[str, Any]:
    completed = [a for a in report.audits if a.success]
    return {
        "r": report,
        "ctx": report.ctx,
        "contract": report.contract,
        "budget_days": report.ctx.retention.budget_days,
        "oldest": {copy: report.oldest(copy) for copy in COPIES},
        "completed_audits": completed,
        "purge_successes": sum(1 for p in report.purges if p.success),
        "expiry_successes": sum(1 for e in report.expiries if e.success),
        "documents": sum(d.documents or 0 for d in report.days),
        "revisions": sum(d.revisions or 0 for d in report.days),
        "databases_failed": sum(d.databases_failed or 0 for d in report.days),
        "backups_expired": sum(d.backups_expired or 0 for d in report.days),
        "outcome": _outcome,
    }


def _environment(autoescape: bool, tz: ZoneInfo) -> jinja2.Environment:
    env = jinja_environment(autoescape, tz)
    env.filters.update(
        count=fmt_count,
        seconds=lambda s: "—" if s is None else fmt_duration(s * 1000),
        clock=lambda at: datetime.fromtimestamp(at / 1000, tz).strftime("%H:%M:%S"),
    )
    return env


def render_markdown(report: DeletionReport) -> str:
    env = _environment(False, report.tz)
    return env.from_string(deletion_templates.REPORT_MD).render(**_context(report))


def render_html(report: DeletionReport, chart_png: bytes) -> str:
    env = _environment(True, report.tz)
    return env.from_string(deletion_templates.REPORT_HTML).render(
        **_context(report), chart=base64.b64encode(chart_png).decode("ascii")
    )


def _iso(at: int | None) -> str | None:
    return None if at is None else datetime.fromtimestamp(at / 1000, UTC).isoformat()


def _run_json(run: Run) -> dict[str, Any]:
    return {
        "end": _iso(run.at),
        "start": _iso(run.start) if run.duration_ms is not None else None,
        "success": run.success,
        "counts": dict(run.counts) if run.reported else None,
    }


def _verdict_json(report: DeletionReport) -> dict[str, Any]:
    return {
        "clean": not report.exposures,
        "found": any(e.found for e in report.exposures),
        "text": report.verdict,
        "exposures": [
            {
                "copy": e.copy,
                "found": e.found,
                "start": _iso(e.start),
                "end": _iso(e.end),
                "audit_end": _iso(e.audit.at) if e.audit else None,
                "reason": e.reason or None,
            }
            for e in report.exposures
        ],
    }


def _days_json(report: DeletionReport) -> list[dict[str, Any]]:
    return [
        {
            "day": d.day.isoformat(),
            "purge_runs": len(d.purges),
            "purge_failures": sum(1 for p in d.purges if p.success is False),
            "documents_purged": d.documents,
            "revisions_purged": d.revisions,
            "databases_failed": d.databases_failed,
            "backups_expired": d.backups_expired,
        }
        for d in report.days
    ]


def _incidents_json(report: DeletionReport) -> list[dict[str, Any]]:
    return [
        {
            "alert": i.alert,
            "severity": i.severity,
            "start": _iso(i.interval.start),
            "end": _iso(i.interval.end),
            "duration_seconds": i.interval.duration / 1000,
            "began_before_period": i.interval.cut_at_start,
            "ongoing_at_period_end": i.interval.cut_at_end,
            "detail": i.detail,
        }
        for i in report.incidents
    ]


def summary(report: DeletionReport) -> dict[str, Any]:
    """The figures as JSON-friendly data (deletion-report.json), for tools and tests."""
    context = _context(report)
    oldest = {
        copy: (
            {"age_seconds": o.age_ms / 1000, "audit_end": _iso(o.audit.at)}
            if (o := context["oldest"][copy])
            else None
        )
        for copy in COPIES
    }
    return {
        "environment": report.ctx.environment,
        "period": {
            "start": report.period.start.isoformat(),
            "end": report.period.end.isoformat(),
            "partial": report.period.partial,
        },
        "budget_days": report.ctx.retention.budget_days,
        "verdict": _verdict_json(report),
        "purge": {
            "runs": len(report.purges),
            "successes": context["purge_successes"],
            "failures": sum(1 for p in report.purges if p.success is False),
            "documents_purged": context["documents"],
            "revisions_purged": context["revisions"],
            "databases_failed": context["databases_failed"],
            "days_without_run": [d.isoformat() for d in report.days_without_purge],
            "list": [_run_json(p) for p in report.purges],
        },
        "days": _days_json(report),
        "audits": {
            "runs": len(report.audits),
            "completed": len(context["completed_audits"]),
            "failed": sum(1 for a in report.audits if a.success is False),
            "with_findings": [_run_json(a) for a in report.audits_with_findings],
            "oldest": oldest,
            "list": [_run_json(a) for a in report.audits],
        },
        "backup_expiry": {
            "runs": len(report.expiries),
            "successes": context["expiry_successes"],
            "failures": sum(1 for e in report.expiries if e.success is False),
            "expired_deleted": context["backups_expired"],
            "failed_runs": [_iso(e.at) for e in report.expiries if e.success is False],
        },
        "incidents": _incidents_json(report),
        "warnings": report.warnings,
    }


def write_deletion_report(report: DeletionReport, out: Path) -> list[Path]:
    """Write deletion-report.md, .html, .json and deletions.png under `out`."""
    chart = deletion_chart(report)
    outputs = {
        "deletions.png": chart,
        "deletion-report.md": render_markdown(report).encode(),
        "deletion-report.html": render_html(report, chart).encode(),
        "deletion-report.json": (json.dumps(summary(report), indent=2) + "\n").encode(),
    }
    return write_files(out, outputs)
