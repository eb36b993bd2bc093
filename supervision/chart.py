"""The report's chart: unavailable minutes per day, and the error budget spent over time."""

from __future__ import annotations

import io
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import matplotlib

# No display in jobs and CI: render to files only, chosen before pyplot loads.
matplotlib.use("Agg")

import matplotlib.dates as mdates
import matplotlib.pyplot as plt

from supervision.sla import cumulative_unavailable

if TYPE_CHECKING:
    from supervision.report import SlaReport

DOWN = "#c0392b"
NO_DATA = "#95a5a6"
BUDGET = "#2c3e50"


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
    budget.xaxis.set_major_formatter(mdates.DateFormatter("%d %b", tz=tz))  # type: ignore[no-untyped-call]
    fig.autofmt_xdate()
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    return buffer.getvalue()
