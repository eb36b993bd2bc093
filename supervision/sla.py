"""The SLA arithmetic of docs/sla.md, on plain numbers: no I/O, no clock.

Times are integer milliseconds since the epoch (Prometheus' own resolution), so that sums
of durations are exact and "to the second" means what it says.

- A probe result at t_i stands for [t_i, t_(i+1)) when the next result comes within two
  nominal intervals (one lost probe is tolerated), else for [t_i, t_i + interval); the rest
  is "no data".
- With several probers, a moment is down only when every prober that reported failed, and
  no data only when none reported.
- An incident is a run of down time; runs less than `merge_gap` apart are one incident.
"""

from __future__ import annotations

import enum
import itertools
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Literal
from zoneinfo import ZoneInfo

MissingData = Literal["unavailable", "excluded", "available"]


class State(enum.Enum):
    UP = "up"
    DOWN = "down"
    NO_DATA = "no data"


@dataclass(frozen=True)
class Span:
    start: int
    end: int
    state: State

    @property
    def duration(self) -> int:
        return self.end - self.start


def nominal_interval(timestamps: Sequence[int]) -> int | None:
    """The usual spacing of samples: the median gap, robust to a few missed probes."""
    gaps = [b - a for a, b in itertools.pairwise(timestamps) if b > a]
    return int(statistics.median(gaps)) if gaps else None


def _merge_adjacent(spans: Iterable[Span]) -> list[Span]:
    merged: list[Span] = []
    for span in spans:
        if span.duration <= 0:
            continue
        if merged and merged[-1].state is span.state and merged[-1].end == span.start:
            merged[-1] = Span(merged[-1].start, span.end, span.state)
        else:
            merged.append(span)
    return merged


def series_timeline(
    samples: Sequence[tuple[int, bool]], start: int, end: int, interval: int
) -> list[Span]:
    """The states of one probe series over [start, end), from its samples sorted by time
    (samples before `start` tell the state at `start`)."""
    if end <= start:
        raise ValueError("the period is empty")
    if interval <= 0:
        raise ValueError("the probe interval must be positive")
    spans: list[Span] = []
    cursor = start
    for index, (at, ok) in enumerate(samples):
        following = samples[index + 1][0] if index + 1 < len(samples) else None
        if following is not None and following - at <= 2 * interval:
            valid_until = following
        else:
            valid_until = at + interval
        seg_start, seg_end = max(at, cursor), min(valid_until, end)
        if seg_end <= seg_start:
            continue
        if seg_start > cursor:
            spans.append(Span(cursor, seg_start, State.NO_DATA))
        spans.append(Span(seg_start, seg_end, State.UP if ok else State.DOWN))
        cursor = seg_end
    if cursor < end:
        spans.append(Span(cursor, end, State.NO_DATA))
    return _merge_adjacent(spans)


def _combined_state(states: Iterable[State]) -> State:
    seen = set(states)
    if State.UP in seen:
        return State.UP
    if State.DOWN in seen:
        return State.DOWN
    return State.NO_DATA


def combine(timelines: Sequence[Sequence[Span]]) -> list[Span]:
    """One timeline from several probers' timelines over the same period."""
    if not timelines:
        raise ValueError("no timeline to combine")
    if len(timelines) == 1:
        return list(timelines[0])
    bounds = sorted({b for spans in timelines for s in spans for b in (s.start, s.end)})
    positions = [0] * len(timelines)
    combined = []
    for seg_start, seg_end in itertools.pairwise(bounds):
        states = []
        for i, spans in enumerate(timelines):
            while positions[i] < len(spans) and spans[positions[i]].end <= seg_start:
                positions[i] += 1
            if positions[i] < len(spans) and spans[positions[i]].start <= seg_start:
                states.append(spans[positions[i]].state)
        combined.append(Span(seg_start, seg_end, _combined_state(states)))
    return _merge_adjacent(combined)


def total(spans: Iterable[Span], state: State) -> int:
    return sum(s.duration for s in spans if s.state is state)


@dataclass(frozen=True)
class Availability:
    """The period's figures. `ratio` is None when nothing was measured at all."""

    period_ms: int
    up_ms: int
    down_ms: int
    no_data_ms: int
    missing_data: MissingData
    target: float

    @property
    def measured_ms(self) -> int:
        return self.up_ms + self.down_ms

    @property
    def counted_unavailable_ms(self) -> int:
        """Unavailable time as the SLA counts it (no data included or not, per contract)."""
        if self.missing_data == "unavailable":
            return self.down_ms + self.no_data_ms
        return self.down_ms

    @property
    def reference_ms(self) -> int:
        """The time the ratio and the budget are taken over."""
        return self.measured_ms if self.missing_data == "excluded" else self.period_ms

    @property
    def ratio(self) -> float | None:
        if self.measured_ms == 0 or self.reference_ms == 0:
            return None
        return 1.0 - self.counted_unavailable_ms / self.reference_ms

    @property
    def budget_ms(self) -> float:
        """Allowed unavailable time: 43.2 minutes per 30 days at 99.9%, prorated."""
        return (1.0 - self.target) * self.reference_ms

    @property
    def budget_spent(self) -> float:
        return self.counted_unavailable_ms / self.budget_ms if self.budget_ms else float("inf")

    @property
    def met(self) -> bool | None:
        ratio = self.ratio
        # Compare the integers behind the ratio: no float rounding decides a penalty.
        return None if ratio is None else self.counted_unavailable_ms <= self.budget_ms


def availability(spans: Sequence[Span], missing_data: MissingData, target: float) -> Availability:
    if not spans:
        raise ValueError("no spans")
    return Availability(
        period_ms=spans[-1].end - spans[0].start,
        up_ms=total(spans, State.UP),
        down_ms=total(spans, State.DOWN),
        no_data_ms=total(spans, State.NO_DATA),
        missing_data=missing_data,
        target=target,
    )


@dataclass(frozen=True)
class Incident:
    start: int
    end: int
    down_ms: int
    # The down time began at or before the period's start / lasted to its end: the
    # incident is cut there, and belongs to the neighbouring period's report too.
    cut_at_start: bool
    cut_at_end: bool

    @property
    def duration(self) -> int:
        return self.end - self.start


def find_incidents(
    spans: Sequence[Span], merge_gap_ms: int, min_duration_ms: int = 0
) -> list[Incident]:
    """Runs of down time, merged when less than `merge_gap_ms` apart, at least
    `min_duration_ms` long (shorter blips still count in the availability)."""
    if not spans:
        return []
    period_start, period_end = spans[0].start, spans[-1].end
    groups: list[list[Span]] = []
    for span in spans:
        if span.state is not State.DOWN:
            continue
        if groups and span.start - groups[-1][-1].end < merge_gap_ms:
            groups[-1].append(span)
        else:
            groups.append([span])
    incidents = [
        Incident(
            start=group[0].start,
            end=group[-1].end,
            down_ms=sum(s.duration for s in group),
            cut_at_start=group[0].start == period_start,
            cut_at_end=group[-1].end == period_end,
        )
        for group in groups
    ]
    return [i for i in incidents if i.duration >= min_duration_ms]


@dataclass(frozen=True)
class Day:
    day: date
    period_ms: int
    down_ms: int
    no_data_ms: int


def per_day(spans: Sequence[Span], tz: ZoneInfo) -> list[Day]:
    """Down and no-data time per local calendar day (days of 23 or 25 hours at DST)."""
    if not spans:
        return []
    start, end = spans[0].start, spans[-1].end
    first = datetime.fromtimestamp(start / 1000, tz).date()
    days = []
    current = first
    while True:
        day_start = _local_midnight(current, tz)
        day_end = _local_midnight(current + timedelta(days=1), tz)
        lo, hi = max(day_start, start), min(day_end, end)
        if lo >= end:
            break
        down = nodata = 0
        for s in spans:
            overlap = min(s.end, hi) - max(s.start, lo)
            if overlap <= 0:
                continue
            if s.state is State.DOWN:
                down += overlap
            elif s.state is State.NO_DATA:
                nodata += overlap
        days.append(Day(current, hi - lo, down, nodata))
        current += timedelta(days=1)
    return days


def _local_midnight(day: date, tz: ZoneInfo) -> int:
    return int(datetime(day.year, day.month, day.day, tzinfo=tz).timestamp() * 1000)


def cumulative_unavailable(
    spans: Sequence[Span], missing_data: MissingData
) -> list[tuple[int, int]]:
    """(time, counted unavailable ms so far) at every span boundary, for the budget chart."""
    counted = {State.DOWN} | ({State.NO_DATA} if missing_data == "unavailable" else set())
    points = [(spans[0].start, 0)] if spans else []
    running = 0
    for span in spans:
        if span.state in counted:
            running += span.duration
        points.append((span.end, running))
    return points


@dataclass(frozen=True)
class Firing:
    """One alert firing: from its first to its last `ALERTS{alertstate="firing"}` sample."""

    name: str
    severity: str
    labels: Mapping[str, str]
    start: int
    last_seen: int
    # When the rule was evaluated again without it: the last sample plus one interval.
    resolved: int | None


DEFAULT_EVALUATION_MS = 60_000


def firings(
    series: Mapping[tuple[tuple[str, str], ...], Sequence[int]], period_end: int
) -> list[Firing]:
    """Firing intervals from the sample times of each ALERTS series (labels as sorted
    pairs). Samples further apart than three evaluation intervals start a new firing."""
    result = []
    for key, times in series.items():
        labels = dict(key)
        ordered = sorted(set(times))
        if not ordered:
            continue
        step = nominal_interval(ordered) or DEFAULT_EVALUATION_MS
        runs: list[list[int]] = [[ordered[0]]]
        for at in ordered[1:]:
            if at - runs[-1][-1] > 3 * step:
                runs.append([at])
            else:
                runs[-1].append(at)
        for run in runs:
            resolved = run[-1] + step
            result.append(
                Firing(
                    name=labels.get("alertname", "?"),
                    severity=labels.get("severity", ""),
                    labels={k: v for k, v in labels.items() if k not in {"__name__"}},
                    start=run[0],
                    last_seen=run[-1],
                    resolved=None if resolved >= period_end else resolved,
                )
            )
    return sorted(result, key=lambda f: (f.start, f.name))
