"""The arithmetic of the deletion report (docs/deletion-report.md), on plain numbers: no I/O.

Times are integer milliseconds since the epoch, as Prometheus stores them.

couchops pushes each run's gauges to the Pushgateway, which serves them unchanged until the
next push of the same operation; Prometheus scrapes the same values again and again. A run is
therefore a change of `couchops_last_run_timestamp_seconds` (its value is the run's end), and
each gauge of that run is its value from the scrape that first showed the change. A push
replaces only the gauges it sends: a run that failed before counting sends none, and the
previous run's counts stay in place (see `runs_from_series`).
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

LabelKey = tuple[tuple[str, str], ...]
Samples = Sequence[tuple[int, float]]

LAST_RUN = "couchops_last_run_timestamp_seconds"
LAST_SUCCESS = "couchops_last_success_timestamp_seconds"
SUCCESS = "couchops_run_success"
DURATION = "couchops_run_duration_seconds"


def count_metric(operation: str, count: str) -> str:
    """The gauge couchops pushes for one count of a run (couchops/metrics.py)."""
    return f"couchops_{operation.replace('-', '_')}_{count}"


@dataclass(frozen=True)
class Run:
    """One run of a couchops operation, as the Pushgateway's series show it."""

    at: int  # end of the run: the value of couchops_last_run_timestamp_seconds
    seen: int  # the first scrape that showed it
    success: bool | None
    duration_ms: int | None
    # The counts this run pushed; empty when it pushed none (see `runs_from_series`).
    counts: Mapping[str, float] = field(default_factory=dict)

    @property
    def start(self) -> int:
        return self.at - (self.duration_ms or 0)

    @property
    def reported(self) -> bool:
        return bool(self.counts)

    def count(self, name: str) -> float | None:
        return self.counts.get(name)


def _source(key: LabelKey) -> tuple[str, LabelKey]:
    labels = dict(key)
    name = labels.pop("__name__", "")
    return name, tuple(sorted(labels.items()))


def _first_in(samples: Samples, lo: int, hi: int | None) -> float | None:
    """The first value of `samples` (sorted by time) at or after `lo` and before `hi`."""
    index = bisect.bisect_left(samples, (lo, float("-inf")))
    if index < len(samples) and (hi is None or samples[index][0] < hi):
        return samples[index][1]
    return None


def _segments(last_run: Samples) -> list[tuple[float, int, int | None]]:
    """(run end in seconds, first scrape showing it, first scrape showing the next run)."""
    changes: list[tuple[float, int]] = []
    for at, value in last_run:
        if not changes or value != changes[-1][0]:
            changes.append((value, at))
    return [
        (value, seen, changes[i + 1][1] if i + 1 < len(changes) else None)
        for i, (value, seen) in enumerate(changes)
    ]


def _source_runs(metrics: Mapping[str, Samples], counts: Mapping[str, str]) -> list[Run]:
    runs: list[Run] = []
    shown: dict[str, float] | None = None
    for value, seen, until in _segments(metrics.get(LAST_RUN, [])):
        success = _first_in(metrics.get(SUCCESS, []), seen, until)
        duration = _first_in(metrics.get(DURATION, []), seen, until)
        previous, shown = (
            shown,
            {
                name: found
                for name, metric in counts.items()
                if (found := _first_in(metrics.get(metric, []), seen, until)) is not None
            },
        )
        failed = success is not None and success < 1
        # A failed run showing exactly the counts shown with the previous run shows that
        # run's, left in place by a push that sent none (an error before counting). Counting
        # them again would report deletions twice; a failed run that really pushed the very
        # same counts is under-reported instead, which a deletion report may be, never over.
        pushed = {} if failed and shown == previous else shown
        runs.append(
            Run(
                at=round(value * 1000),
                seen=seen,
                success=None if success is None else success >= 1,
                duration_ms=None if duration is None else round(duration * 1000),
                counts=pushed,
            )
        )
    return runs


def runs_from_series(
    found: Mapping[LabelKey, Samples], operation: str, counts: Iterable[str]
) -> list[Run]:
    """The runs of `operation` in the raw samples of its gauges (any labels besides the
    metric name tell apart scrape sources, e.g. two Prometheus replicas), by end time."""
    by_source: dict[LabelKey, dict[str, Samples]] = {}
    for key, samples in found.items():
        name, source = _source(key)
        by_source.setdefault(source, {})[name] = sorted(samples)
    metrics = {count: count_metric(operation, count) for count in counts}
    runs: dict[int, Run] = {}
    for source_metrics in by_source.values():
        for run in _source_runs(source_metrics, metrics):
            if run.at not in runs or run.seen < runs[run.at].seen:
                runs[run.at] = run
    return [runs[at] for at in sorted(runs)]


@dataclass(frozen=True)
class Interval:
    start: int
    end: int
    # The condition held at the period's first / last instant: it began before / goes on.
    cut_at_start: bool = False
    cut_at_end: bool = False
    peak: float = 0.0

    @property
    def duration(self) -> int:
        return self.end - self.start


def held(series: Iterable[Samples], step_ms: int, start: int, end: int) -> list[Interval]:
    """When a condition held in [start, end), from its evaluations every `step_ms` (a point
    where the expression returned a value stands for the step that follows it). Points from
    one step before `start` tell whether it already held then."""
    points: dict[int, float] = {}
    for samples in series:
        for at, value in samples:
            if start - step_ms <= at < end:
                points[at] = max(value, points.get(at, value))
    runs: list[tuple[int, int, float]] = []
    for at in sorted(points):
        if runs and at <= runs[-1][1]:
            first, _, peak = runs[-1]
            runs[-1] = (first, at + step_ms, max(peak, points[at]))
        else:
            runs.append((at, at + step_ms, points[at]))
    return [
        Interval(
            max(first, start),
            min(last, end),
            cut_at_start=first < start,
            cut_at_end=last >= end,
            peak=peak,
        )
        for first, last, peak in runs
        if last > start
    ]


COPIES = ("databases", "backups")
OLDEST = {
    "databases": "oldest_database_data_age_seconds",
    "backups": "oldest_backup_data_age_seconds",
}


@dataclass(frozen=True)
class Exposure:
    """A stretch of time where personal data older than the budget was readable ("found"
    by an audit) or where nothing excludes it ("not proven")."""

    start: int
    end: int
    copy: str
    found: bool
    # The audit that found the data and the age it read; else why nothing excludes it.
    audit: Run | None = None
    age_ms: int | None = None
    reason: str = ""


def oldest_ms(run: Run, copy: str) -> int | None:
    value = run.count(OLDEST[copy])
    return None if value is None else round(value * 1000)


def found_exposures(audits: Sequence[Run], budget_ms: int, start: int, end: int) -> list[Exposure]:
    """For each audit that read data older than the budget in a copy: from when that data
    passed the budget until the next completed audit that found that copy within it."""
    exposures = []
    for index, audit in enumerate(audits):
        for copy in COPIES:
            age = oldest_ms(audit, copy)
            if age is None or age <= budget_ms:
                continue
            cleared = next(
                (
                    later.start
                    for later in audits[index + 1 :]
                    if later.success and (oldest_ms(later, copy) or 0) <= budget_ms
                ),
                end,
            )
            since = audit.start + budget_ms - age
            if since < end and cleared > start:
                exposures.append(
                    Exposure(max(since, start), min(cleared, end), copy, True, audit, age)
                )
        found = audit.count("findings") or 0
        if found and not any(e.audit is audit for e in exposures):
            exposures.extend(_findings_exposure(audits[index + 1 :], audit, found, start, end))
    return exposures


def _findings_exposure(
    later: Sequence[Run], audit: Run, found: float, start: int, end: int
) -> list[Exposure]:
    """An audit that found items past its limit whose age it could not read (rows an index
    kept of documents that exist nowhere): found, from that audit until the next completed
    audit that found nothing."""
    cleared = next(
        (run.start for run in later if run.success and not run.count("findings")),
        end,
    )
    if audit.start >= end or cleared <= start:
        return []
    copy = "databases" if not audit.count("backups") else "databases or backups"
    reason = f"the audit ending at that time found {found:.0f} items past its limit, of unknown age"
    return [Exposure(max(audit.start, start), min(cleared, end), copy, True, reason=reason)]


def purge_exposures(
    purges: Sequence[Run], slack_ms: int, start: int, end: int, reason: str
) -> list[Exposure]:
    """Where no successful purge started within `slack_ms` (the budget less the retention):
    a purge removes all data older than the retention as of its start, so data passes the
    budget `slack_ms` after the last successful start, until the next success ends."""
    successes = sorted((r for r in purges if r.success), key=lambda r: r.start)
    exposures = []
    for before, after in zip([None, *successes], [*successes, None], strict=True):
        unsafe_from = start if before is None else before.start + slack_ms
        lo, hi = max(unsafe_from, start), min(end if after is None else after.at, end)
        if lo < hi:
            exposures.append(Exposure(lo, hi, "databases", False, reason=reason))
    return exposures


def merge(exposures: Iterable[Exposure]) -> list[Exposure]:
    """Overlapping or touching stretches of the same copy and kind as one, by start."""
    merged: list[Exposure] = []
    for e in sorted(exposures, key=lambda e: (e.copy, e.found, e.start)):
        last = merged[-1] if merged else None
        if last and (last.copy, last.found) == (e.copy, e.found) and e.start <= last.end:
            merged[-1] = Exposure(
                last.start,
                max(last.end, e.end),
                e.copy,
                e.found,
                last.audit,
                last.age_ms,
                last.reason,
            )
        else:
            merged.append(e)
    return sorted(merged, key=lambda e: (e.start, e.copy))


def local_day(at: int, tz: ZoneInfo) -> date:
    return datetime.fromtimestamp(at / 1000, tz).date()


def days_of(start: int, end: int, tz: ZoneInfo) -> list[date]:
    """The local calendar days the period [start, end) touches."""
    first, last = local_day(start, tz), local_day(end - 1, tz)
    return [first + timedelta(days=n) for n in range((last - first).days + 1)]
