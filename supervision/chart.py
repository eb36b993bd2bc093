"""The reports' charts: unavailable minutes per day and the error budget spent over time
(SLA report); documents purged per day and the oldest data the audits found (deletion
report)."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

import matplotlib

# No display in jobs and CI: render to files only, chosen before pyplot loads.
matplotlib.use("Agg")

import matplotlib.dates as mdates
import matplotlib.pyplot as plt

from supervision.deletion import oldest_ms
from supervision.sla import cumulative_unavailable

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from supervision.deletion_report import DeletionReport
    from supervision.report import SlaReport

DOWN = "#c0392b"
NO_DATA = "#95a5a6"
BUDGET = "#2c3e50"
AGE_BACKUPS = "#e67e22"
DAY_MS = 86_400_000


def availability_chart(report: SlaReport) -> bytes:
    """A PNG of the period: bars of unavailable minutes per local day (down, and no data),
    the daily budget line, and the cumulative share of the period's error budget spent."""
    tz = report.tz
    figures = report.figures
    days = report.days
    labels = [datetime(d.day.year, d.day.month, d.day.day, 12, tzinfo=tz) for d in days]
    down = [d.down_ms / 60_000 for d in days]
    nodata = [d.no_data_ms / 60_000 for d in days]

    fig, (bars, budget) = plt.subplots(
        2, 1, figsize=(11, 6.5), sharex=True, gridspec_kw={"height_ratios": [3, 2]}
    )
    title = (
        f"{report.ctx.environment} - {report.period.label}: availability "
        f"{(figures.ratio or 0) * 100:.4f} % (target {figures.target * 100:g} %)"
    )
    fig.suptitle(title, fontsize=12)
    bars.bar(labels, down, width=0.8, color=DOWN, label="down (probe failed)")
    bars.bar(labels, nodata, width=0.8, bottom=down, color=NO_DATA, label="no data")
    daily_budget = (1 - figures.target) * 86_400 / 60
    bars.axhline(daily_budget, color=BUDGET, linestyle="--", linewidth=1)
    bars.text(
        labels[0] if labels else 0,
        daily_budget,
        " daily share of the budget",
        va="bottom",
        fontsize=8,
    )
    tallest = max((a + b for a, b in zip(down, nodata, strict=True)), default=0.0)
    bars.set_ylim(0, max(tallest, daily_budget) * 1.15)
    bars.set_ylabel("unavailable minutes per day")
    bars.legend(loc="upper right", fontsize=8)
    bars.grid(axis="y", alpha=0.3)

    points = cumulative_unavailable(report.spans, figures.missing_data)
    times = [datetime.fromtimestamp(t / 1000, UTC) for t, _ in points]
    spent = [100 * ms / figures.budget_ms if figures.budget_ms else 0 for _, ms in points]
    budget.step(times, spent, where="post", color=BUDGET)
    budget.axhline(100, color=DOWN, linestyle="--", linewidth=1)
    budget.set_ylabel("error budget spent (%)")
    budget.set_ylim(0, max(110.0, max(spent, default=0) * 1.1))
    budget.grid(alpha=0.3)
    for view in report.incidents:
        for axis in (bars, budget):
            axis.axvspan(
                datetime.fromtimestamp(view.incident.start / 1000, UTC),
                datetime.fromtimestamp(
                    max(view.incident.end, view.incident.start + 600_000) / 1000, UTC
                ),
                color=DOWN,
                alpha=0.15,
            )
    return _png(fig, budget, tz)


def _png(fig: Figure, bottom: Any, tz: ZoneInfo) -> bytes:
    """The figure as PNG bytes, dates of the shared x axis in the report's zone."""
    bottom.xaxis.set_major_formatter(mdates.DateFormatter("%d %b", tz=tz))  # type: ignore[no-untyped-call]
    fig.autofmt_xdate()
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    return buffer.getvalue()


def _moment(at: int) -> datetime:
    return datetime.fromtimestamp(at / 1000, UTC)


def deletion_chart(report: DeletionReport) -> bytes:
    """A PNG of the period: documents and revisions purged per local day (days without a
    purge shaded, failed purges marked), and the age of the oldest personal data each audit
    found in the databases and in the backups, against the retention and the budget, with
    the stretches where data past the budget was found (dark) or is not excluded (light)."""
    tz = report.tz
    fig, (bars, ages) = plt.subplots(
        2, 1, figsize=(11, 6.5), sharex=True, gridspec_kw={"height_ratios": [3, 2]}
    )
    verdict = (
        "data past the budget found"
        if any(e.found for e in report.exposures)
        else "not excluded at times"
        if report.exposures
        else "budget kept"
    )
    fig.suptitle(
        f"{report.ctx.environment} - {report.period.label}: GDPR deletions ({verdict})",
        fontsize=12,
    )
    _purged_per_day(bars, report)
    _oldest_found(ages, report)
    return _png(fig, ages, tz)


def _purged_per_day(axis: Any, report: DeletionReport) -> None:
    days = report.days
    noon = [datetime(d.day.year, d.day.month, d.day.day, 12, tzinfo=report.tz) for d in days]
    half = timedelta(hours=5)
    documents = [d.documents or 0 for d in days]
    revisions = [d.revisions or 0 for d in days]
    axis.bar([t - half for t in noon], documents, width=0.4, color=BUDGET, label="documents purged")
    axis.bar(
        [t + half for t in noon], revisions, width=0.4, color=NO_DATA, label="revisions purged"
    )
    for day, moment in zip(days, noon, strict=True):
        if not day.purges:
            axis.axvspan(moment - 2 * half, moment + 2 * half, color=DOWN, alpha=0.12)
        elif any(p.success is False for p in day.purges):
            axis.plot([moment], [0], marker="x", color=DOWN, markersize=9, linestyle="none")
    axis.plot([], [], marker="x", color=DOWN, linestyle="none", label="purge failed")
    axis.fill_between([], [], color=DOWN, alpha=0.12, label="no purge run")
    axis.set_ylabel("purged per day")
    axis.legend(loc="upper right", fontsize=8)
    axis.grid(axis="y", alpha=0.3)
    if noon:
        axis.set_xlim(noon[0] - 2 * half, noon[-1] + 2 * half)


def _oldest_found(axis: Any, report: DeletionReport) -> None:
    budget = report.ctx.retention.budget_days
    retention = report.ctx.retention.purge_retention_days
    shown_ages = [float(retention - 2), budget + 1.5]
    for copy, colour in (("databases", BUDGET), ("backups", AGE_BACKUPS)):
        points = [(a.at, oldest_ms(a, copy)) for a in report.audits]
        shown = [(_moment(at), age / DAY_MS) for at, age in points if age is not None]
        shown_ages += [v for _, v in shown]
        axis.plot(
            [t for t, _ in shown],
            [v for _, v in shown],
            marker="o",
            markersize=3,
            color=colour,
            label=f"oldest in the {copy}",
        )
    axis.axhline(budget, color=DOWN, linestyle="--", linewidth=1, label=f"budget ({budget} d)")
    axis.axhline(retention, color=NO_DATA, linestyle=":", linewidth=1, label="purge retention")
    for exposure in report.exposures:
        axis.axvspan(
            _moment(exposure.start),
            _moment(max(exposure.end, exposure.start + 3_600_000)),
            color=DOWN,
            alpha=0.35 if exposure.found else 0.12,
        )
    axis.fill_between([], [], color=DOWN, alpha=0.35, label="past the budget: found")
    axis.fill_between([], [], color=DOWN, alpha=0.12, label="not excluded")
    axis.set_ylabel("oldest data found (days)")
    axis.set_ylim(min(shown_ages) - 0.5, max(shown_ages) + 0.5)
    axis.legend(loc="lower left", fontsize=7, ncol=3)
    axis.grid(alpha=0.3)
