"""The SLA report of one period: figures from Prometheus, by the definition of docs/sla.md,
written as Markdown, HTML, a chart, JSON, and one pre-filled incident report per incident.
"""

from __future__ import annotations

import base64
import json
import re
import statistics
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import jinja2

from supervision import templates
from supervision.chart import availability_chart
from supervision.context import MonitoringContext
from supervision.contract import Contract
from supervision.prometheus import PrometheusClient
from supervision.rules import probe_selector, selector
from supervision.sla import (
    Availability,
    Day,
    Firing,
    Incident,
    Span,
    State,
    availability,
    combine,
    find_incidents,
    firings,
    nominal_interval,
    per_day,
    series_timeline,
)

# Probe results this long before the period tell the state at its first instant.
LOOKBACK_MS = 10 * 60 * 1000
# Alerts that fired this long around an incident belong to its timeline.
ALERT_MARGIN_MS = 15 * 60 * 1000
# Data this recent may not be scraped yet: a period ending "now" stops this long before.
SETTLE_MS = 60 * 1000
_MONTH = re.compile(r"^(\d{4})-(\d{2})$")


class ReportError(RuntimeError):
    """The report cannot be produced; the message says why and what to do."""


class PeriodError(ReportError, ValueError):
    pass


class NoDataError(ReportError):
    pass


@dataclass(frozen=True)
class Period:
    start: datetime
    end: datetime
    # The period asked for ended in the future: the figures stop at `end`.
    partial: bool
    # A calendar month: the monthly fee applies as is, not prorated.
    calendar_month: bool

    @property
    def start_ms(self) -> int:
        return int(self.start.timestamp() * 1000)

    @property
    def end_ms(self) -> int:
        return int(self.end.timestamp() * 1000)

    @property
    def label(self) -> str:
        if self.calendar_month:
            return self.start.strftime("%B %Y") + (" (to date)" if self.partial else "")
        return f"{self.start:%Y-%m-%d %H:%M} to {self.end:%Y-%m-%d %H:%M %Z}"


def parse_time(text: str, tz: ZoneInfo, now: datetime) -> datetime:
    """ISO 8601 date or date-time; without an offset it is local time of the contract's
    zone. `now` is accepted too."""
    if text.strip().lower() == "now":
        return now.astimezone(tz)
    try:
        parsed = datetime.fromisoformat(text.strip())
    except ValueError as exc:
        raise PeriodError(
            f"'{text}' is not an ISO 8601 date or date-time (examples: 2026-10-01, "
            f"2026-10-01T00:00:00+02:00, now)"
        ) from exc
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=tz)
    return parsed.astimezone(tz)


def month_bounds(month: str, tz: ZoneInfo) -> tuple[datetime, datetime]:
    match = _MONTH.match(month.strip())
    if match is None or not 1 <= int(match.group(2)) <= 12:
        raise PeriodError(f"'{month}' is not a month (expected YYYY-MM, e.g. 2026-10)")
    year, number = int(match.group(1)), int(match.group(2))
    start = datetime(year, number, 1, tzinfo=tz)
    following = datetime(year + number // 12, number % 12 + 1, 1, tzinfo=tz)
    return start, following


def resolve_period(
    *,
    month: str | None,
    start: str | None,
    end: str | None,
    tz: ZoneInfo,
    now: datetime,
) -> Period:
    if month and (start or end):
        raise PeriodError("give either --month or --start/--end, not both")
    if month:
        first, last = month_bounds(month, tz)
        calendar_month = True
    elif start and end:
        first, last = parse_time(start, tz, now), parse_time(end, tz, now)
        calendar_month = False
    else:
        raise PeriodError("give a period: --month YYYY-MM, or --start and --end")
    if last <= first:
        raise PeriodError(
            f"the period ends ({last.isoformat()}) before it starts ({first.isoformat()})"
        )
    settled = (now - timedelta(milliseconds=SETTLE_MS)).astimezone(tz)
    if first >= settled:
        raise PeriodError(f"the period starts in the future ({first.isoformat()})")
    partial = last > settled
    return Period(first, min(last, settled), partial, calendar_month)


@dataclass(frozen=True)
class IncidentView:
    number: int
    id: str
    incident: Incident
    report_due: datetime
    alerts: list[Firing]
    first_page: Firing | None


@dataclass(frozen=True)
class SlaReport:
    ctx: MonitoringContext
    contract: Contract
    period: Period
    generated_at: datetime
    prometheus_url: str
    prometheus_version: str
    probe_selector: str
    probe_series: list[dict[str, str]]
    interval_ms: int
    spans: list[Span]
    figures: Availability
    incidents: list[IncidentView]
    alerts: list[Firing]
    days: list[Day]
    penalty_percent: float
    penalty_amount: float
    warnings: list[str] = field(default_factory=list)

    @property
    def tz(self) -> ZoneInfo:
        return self.contract.tz

    @property
    def no_data(self) -> list[Span]:
        return [s for s in self.spans if s.state is State.NO_DATA]


def _incident_id(environment: str, start_ms: int, tz: ZoneInfo, number: int) -> str:
    day = datetime.fromtimestamp(start_ms / 1000, tz)
    return f"INC-{environment}-{day:%Y%m%d}-{number}"


def _penalty(contract: Contract, period: Period, ratio: float | None) -> tuple[float, float]:
    tier = contract.penalty_tier(ratio)
    if tier is None:
        return 0.0, 0.0
    # A month's fee for a calendar month; prorated on 30 days for any other period.
    share = 1.0 if period.calendar_month else (period.end_ms - period.start_ms) / (30 * 86_400_000)
    return tier.percent_of_monthly_fee, round(
        contract.monthly_fee * share * tier.percent_of_monthly_fee / 100, 2
    )


def build_report(
    client: PrometheusClient,
    ctx: MonitoringContext,
    contract: Contract,
    period: Period,
    *,
    now: datetime,
    probe_interval_seconds: float | None = None,
) -> SlaReport:
    version = client.build_info().get("version", "unknown")
    probe = f"probe_success{probe_selector(ctx)}"
    found = client.samples(probe, period.start_ms - LOOKBACK_MS, period.end_ms)
    if not found:
        raise NoDataError(
            f"Prometheus at {client.url} holds no {probe} sample between "
            f"{period.start.isoformat()} and {period.end.isoformat()}: the availability cannot be "
            f"computed (it is not 100%). Check that the Probe's job label and target match "
            f"supervision/context.py, and that the retention covers the period."
        )
    if probe_interval_seconds is not None:
        interval = round(probe_interval_seconds * 1000)
    else:
        intervals = [nominal_interval([t for t, _ in s]) for s in found.values()]
        known = [i for i in intervals if i]
        if not known:
            raise NoDataError(
                f"only isolated {probe} samples in the period: the probe interval cannot be "
                f"inferred (pass --probe-interval)"
            )
        interval = int(statistics.median(known))
    timelines = [
        series_timeline([(t, v >= 1.0) for t, v in s], period.start_ms, period.end_ms, interval)
        for s in found.values()
    ]
    spans = combine(timelines)
    figures = availability(spans, contract.missing_data, contract.availability_target)
    if figures.ratio is None:
        raise NoDataError(
            f"no {probe} sample falls inside {period.start.isoformat()} .. "
            f"{period.end.isoformat()}: nothing was measured, the availability is unknown"
        )
    warnings = _warnings(period, figures, found, contract)
    alert_selector = "ALERTS" + selector(
        ("alertstate", "=", "firing"), ("environment", "=", ctx.environment)
    )
    alert_samples = client.samples(alert_selector, period.start_ms - ALERT_MARGIN_MS, period.end_ms)
    alerts = [
        f
        for f in firings({k: [t for t, _ in v] for k, v in alert_samples.items()}, period.end_ms)
        if f.last_seen >= period.start_ms
    ]
    incidents = []
    for number, incident in enumerate(
        find_incidents(
            spans,
            contract.incident_merge_gap_seconds * 1000,
            contract.incident_min_duration_seconds * 1000,
        ),
        start=1,
    ):
        nearby = [
            f
            for f in alerts
            if f.start <= incident.end + ALERT_MARGIN_MS
            and (f.resolved or period.end_ms) >= incident.start - ALERT_MARGIN_MS
        ]
        pages = [f for f in nearby if f.severity == "page" and f.start <= incident.end]
        # In UTC: aware datetimes add wall-clock hours, 48 h across a DST change is 49.
        start = datetime.fromtimestamp(incident.start / 1000, UTC)
        incidents.append(
            IncidentView(
                number=number,
                id=_incident_id(ctx.environment, incident.start, contract.tz, number),
                incident=incident,
                report_due=(
                    start + timedelta(hours=contract.incident_report_delay_hours)
                ).astimezone(contract.tz),
                alerts=nearby,
                first_page=min(pages, key=lambda f: f.start) if pages else None,
            )
        )
    percent, amount = _penalty(contract, period, figures.ratio)
    return SlaReport(
        ctx=ctx,
        contract=contract,
        period=period,
        generated_at=now.astimezone(contract.tz),
        prometheus_url=client.url,
        prometheus_version=version,
        probe_selector=probe,
        probe_series=[dict(key) for key in found],
        interval_ms=interval,
        spans=spans,
        figures=figures,
        incidents=incidents,
        alerts=alerts,
        days=per_day(spans, contract.tz),
        penalty_percent=percent,
        penalty_amount=amount,
        warnings=warnings,
    )


def _warnings(
    period: Period, figures: Availability, found: dict[Any, Any], contract: Contract
) -> list[str]:
    warnings = []
    if period.partial:
        warnings.append(
            f"The period is not over: figures stop at {period.end:%Y-%m-%d %H:%M %Z} "
            f"and will change."
        )
    if figures.no_data_ms:
        how = {
            "unavailable": "counted as unavailable",
            "excluded": "left out of the availability (measured time only)",
            "available": "counted as available",
        }[contract.missing_data]
        warnings.append(
            f"{fmt_duration(figures.no_data_ms)} without any probe result in the period, "
            f"{how} as the contract says (missing_data: {contract.missing_data})."
        )
    if len(found) > 1:
        warnings.append(
            f"{len(found)} probe series match: a moment counts as down only when every prober "
            f"that reported failed."
        )
    return warnings


# --- Formatting ------------------------------------------------------------------------


def fmt_duration(ms: float) -> str:
    seconds = round(ms / 1000)
    days, rest = divmod(seconds, 86_400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days} d {hours} h {minutes:02d} min"
    if hours:
        return f"{hours} h {minutes:02d} min {secs:02d} s"
    if minutes:
        return f"{minutes} min {secs:02d} s"
    return f"{secs} s"


def fmt_percent(ratio: float | None, digits: int = 4) -> str:
    return "unknown" if ratio is None else f"{ratio * 100:.{digits}f} %"


def _fmt_time(tz: ZoneInfo) -> Any:
    def fmt(value: int | datetime | None) -> str:
        if value is None:
            return "—"
        moment = value if isinstance(value, datetime) else datetime.fromtimestamp(value / 1000, UTC)
        return moment.astimezone(tz).strftime("%Y-%m-%d %H:%M:%S %Z")

    return fmt


def _fmt_day(value: date) -> str:
    return value.strftime("%a %d %b")


def jinja_environment(autoescape: bool, tz: ZoneInfo) -> jinja2.Environment:
    """The reports' Jinja2 environment and their filters (time, duration, percent, day, money)."""
    env = jinja2.Environment(
        # Markdown is not HTML: escaping would garble it. The HTML report escapes.
        autoescape=autoescape,  # noqa: S701
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(
        duration=fmt_duration,
        percent=fmt_percent,
        time=_fmt_time(tz),
        day=_fmt_day,
        money=lambda v: f"{v:,.2f}".replace(",", " "),
    )
    return env


def _timeline_events(report: SlaReport, view: IncidentView) -> list[tuple[int, str, str]]:
    """(time, event, source) of one incident, in order: probe transitions and alerts."""
    events: list[tuple[int, str, str]] = []
    downs = [
        s
        for s in report.spans
        if s.state is State.DOWN and view.incident.start <= s.start and s.end <= view.incident.end
    ]
    for index, span in enumerate(downs):
        first = "first failed probe: site unavailable" if index == 0 else "probes fail again"
        events.append((span.start, first.capitalize(), "blackbox probe"))
        last = index == len(downs) - 1
        back = "first successful probe: site available again" if last else "probes succeed"
        if not (last and view.incident.cut_at_end):
            events.append((span.end, back.capitalize(), "blackbox probe"))
    for alert in view.alerts:
        events.append(
            (
                alert.start,
                f"Alert {alert.name} firing ({alert.severity or 'no severity'})",
                "Prometheus",
            )
        )
        if alert.resolved is not None:
            events.append((alert.resolved, f"Alert {alert.name} resolved", "Prometheus"))
    return sorted(events, key=lambda e: e[0])


def _context(report: SlaReport) -> dict[str, Any]:
    figures = report.figures
    return {
        "r": report,
        "f": figures,
        "ctx": report.ctx,
        "contract": report.contract,
        "budget_remaining_ms": max(0.0, figures.budget_ms - figures.counted_unavailable_ms),
        "tier_percent": report.penalty_percent,
        "timeline": {v.number: _timeline_events(report, v) for v in report.incidents},
        "interval": fmt_duration(report.interval_ms),
    }


def render_markdown(report: SlaReport) -> str:
    env = jinja_environment(False, report.tz)
    return env.from_string(templates.REPORT_MD).render(**_context(report))


def render_html(report: SlaReport, chart_png: bytes) -> str:
    env = jinja_environment(True, report.tz)
    return env.from_string(templates.REPORT_HTML).render(
        **_context(report), chart=base64.b64encode(chart_png).decode("ascii")
    )


def render_incident(report: SlaReport, view: IncidentView) -> str:
    env = jinja_environment(False, report.tz)
    return env.from_string(templates.INCIDENT_MD).render(**_context(report), v=view)


def summary(report: SlaReport) -> dict[str, Any]:
    """The figures as JSON-friendly data (report.json), for tools and tests."""
    figures = report.figures
    return {
        "environment": report.ctx.environment,
        "period": {
            "start": report.period.start.isoformat(),
            "end": report.period.end.isoformat(),
            "partial": report.period.partial,
        },
        "probe_interval_seconds": report.interval_ms / 1000,
        "availability": figures.ratio,
        "target": figures.target,
        "sla_met": figures.met,
        "seconds": {
            "period": figures.period_ms / 1000,
            "up": figures.up_ms / 1000,
            "down": figures.down_ms / 1000,
            "no_data": figures.no_data_ms / 1000,
            "counted_unavailable": figures.counted_unavailable_ms / 1000,
            "error_budget": figures.budget_ms / 1000,
        },
        "error_budget_spent": figures.budget_spent,
        "missing_data": figures.missing_data,
        "penalty": {
            "percent_of_monthly_fee": report.penalty_percent,
            "amount": report.penalty_amount,
            "currency": report.contract.currency,
        },
        "incidents": [
            {
                "id": v.id,
                "start": datetime.fromtimestamp(v.incident.start / 1000, UTC).isoformat(),
                "end": datetime.fromtimestamp(v.incident.end / 1000, UTC).isoformat(),
                "duration_seconds": v.incident.duration / 1000,
                "down_seconds": v.incident.down_ms / 1000,
                "report_due": v.report_due.isoformat(),
                "first_page": v.first_page.name if v.first_page else None,
            }
            for v in report.incidents
        ],
        "alerts": [
            {
                "alertname": a.name,
                "severity": a.severity,
                "start": datetime.fromtimestamp(a.start / 1000, UTC).isoformat(),
                "resolved": (
                    datetime.fromtimestamp(a.resolved / 1000, UTC).isoformat()
                    if a.resolved
                    else None
                ),
            }
            for a in report.alerts
        ],
        "warnings": report.warnings,
    }


def write_report(report: SlaReport, out: Path) -> list[Path]:
    """Write report.md, report.html, availability.png, report.json and incident-<n>.md."""
    chart = availability_chart(report)
    outputs = {
        "availability.png": chart,
        "report.md": render_markdown(report).encode(),
        "report.html": render_html(report, chart).encode(),
        "report.json": (json.dumps(summary(report), indent=2) + "\n").encode(),
    }
    for view in report.incidents:
        outputs[f"incident-{view.number}.md"] = render_incident(report, view).encode()
    return write_files(out, outputs)


def write_files(out: Path, outputs: dict[str, bytes]) -> list[Path]:
    """Write each named content under `out` (made if missing); answers the paths."""
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, content in outputs.items():
        path = out / name
        path.write_bytes(content)
        written.append(path)
    return written
