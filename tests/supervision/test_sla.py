"""The SLA arithmetic on plain numbers (supervision/sla.py)."""

from __future__ import annotations

import itertools
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from supervision.sla import (
    Span,
    State,
    availability,
    combine,
    cumulative_unavailable,
    find_incidents,
    firings,
    nominal_interval,
    per_day,
    series_timeline,
)

S = 1000
STEP = 15 * S
UP, DOWN, NO_DATA = State.UP, State.DOWN, State.NO_DATA


def regular(start: int, values: str, step: int = STEP) -> list[tuple[int, bool]]:
    """Samples every `step` from `start`: '1' good, '0' bad, '.' missing."""
    return [(start + i * step, v == "1") for i, v in enumerate(values) if v != "."]


def test_each_result_stands_until_the_next_one() -> None:
    spans = series_timeline(regular(0, "11001"), 0, 75 * S, STEP)
    assert spans == [Span(0, 30 * S, UP), Span(30 * S, 60 * S, DOWN), Span(60 * S, 75 * S, UP)]


def test_one_lost_probe_is_tolerated_two_are_no_data() -> None:
    assert series_timeline(regular(0, "1.1"), 0, 45 * S, STEP) == [Span(0, 45 * S, UP)]
    assert series_timeline(regular(0, "1..1"), 0, 60 * S, STEP) == [
        Span(0, 15 * S, UP),
        Span(15 * S, 45 * S, NO_DATA),
        Span(45 * S, 60 * S, UP),
    ]


def test_the_result_before_the_period_gives_the_state_at_its_start() -> None:
    spans = series_timeline(regular(-10 * S, "01"), 0, 20 * S, STEP)
    assert spans == [Span(0, 5 * S, DOWN), Span(5 * S, 20 * S, UP)]


def test_no_sample_at_all_is_no_data_for_the_whole_period() -> None:
    assert series_timeline([], 0, 60 * S, STEP) == [Span(0, 60 * S, NO_DATA)]


def test_a_period_ending_before_it_starts_is_refused() -> None:
    with pytest.raises(ValueError, match="empty"):
        series_timeline([], 10, 10, STEP)


def test_several_probers_are_down_only_when_all_that_report_fail() -> None:
    a = [Span(0, 10, DOWN), Span(10, 20, UP), Span(20, 30, NO_DATA), Span(30, 40, DOWN)]
    b = [Span(0, 5, UP), Span(5, 25, DOWN), Span(25, 40, NO_DATA)]
    assert combine([a, b]) == [
        Span(0, 5, UP),
        Span(5, 10, DOWN),
        Span(10, 20, UP),
        Span(20, 25, DOWN),
        Span(25, 30, NO_DATA),
        Span(30, 40, DOWN),
    ]


def test_flapping_within_the_merge_gap_is_one_incident_counting_only_down_time() -> None:
    spans = [
        Span(0, 100 * S, UP),
        Span(100 * S, 160 * S, DOWN),
        Span(160 * S, 200 * S, UP),
        Span(200 * S, 230 * S, DOWN),
        Span(230 * S, 1000 * S, UP),
        Span(1000 * S, 1010 * S, DOWN),
        Span(1010 * S, 2000 * S, UP),
    ]
    incidents = find_incidents(spans, merge_gap_ms=300 * S, min_duration_ms=60 * S)
    assert [(i.start, i.end, i.down_ms) for i in incidents] == [(100 * S, 230 * S, 90 * S)]
    assert len(find_incidents(spans, merge_gap_ms=0)) == 3


def test_incidents_cut_by_the_period_are_flagged() -> None:
    spans = [Span(0, 10, DOWN), Span(10, 20, UP), Span(20, 30, DOWN)]
    first, last = find_incidents(spans, merge_gap_ms=0)
    assert first.cut_at_start and not first.cut_at_end
    assert last.cut_at_end and not last.cut_at_start


@pytest.mark.parametrize(
    ("missing", "counted", "ratio"),
    [
        ("unavailable", 30, 1 - 30 / 100),
        ("available", 10, 1 - 10 / 100),
        ("excluded", 10, 1 - 10 / 80),
    ],
)
def test_missing_data_counts_as_the_contract_says(missing: str, counted: int, ratio: float) -> None:
    spans = [Span(0, 70, UP), Span(70, 80, DOWN), Span(80, 100, NO_DATA)]
    figures = availability(spans, missing, 0.9)  # type: ignore[arg-type]
    assert figures.counted_unavailable_ms == counted
    assert figures.ratio == pytest.approx(ratio)


def test_nothing_measured_has_no_availability() -> None:
    figures = availability([Span(0, 100, NO_DATA)], "unavailable", 0.999)
    assert figures.ratio is None
    assert figures.met is None


def test_the_budget_is_43_2_minutes_per_30_days_and_met_is_exact() -> None:
    month = 30 * 86400 * S
    budget = round(0.001 * month)
    at_budget = availability(
        [Span(0, month - budget, UP), Span(month - budget, month, DOWN)], "unavailable", 0.999
    )
    assert at_budget.budget_ms == pytest.approx(43.2 * 60 * S)
    assert at_budget.met is True
    over = availability(
        [Span(0, month - budget - 1, UP), Span(month - budget - 1, month, DOWN)],
        "unavailable",
        0.999,
    )
    assert over.met is False


def test_days_follow_the_local_calendar_across_the_dst_change() -> None:
    paris = ZoneInfo("Europe/Paris")
    start = int(datetime(2026, 10, 24, tzinfo=paris).timestamp() * S)
    end = int(datetime(2026, 10, 26, tzinfo=paris).timestamp() * S)
    days = per_day([Span(start, end, UP)], paris)
    assert [(d.day.isoformat(), d.period_ms // (3600 * S)) for d in days] == [
        ("2026-10-24", 24),
        ("2026-10-25", 25),
    ]


def test_alert_samples_make_firings_split_on_gaps() -> None:
    key = (("alertname", "X"), ("severity", "page"))
    times = [0, 30 * S, 60 * S, 600 * S, 630 * S]
    result = firings({key: times}, period_end=10_000 * S)
    assert [(f.start, f.last_seen, f.resolved) for f in result] == [
        (0, 60 * S, 90 * S),
        (600 * S, 630 * S, 660 * S),
    ]
    assert result[0].name == "X" and result[0].severity == "page"
    still = firings({key: [9_990 * S]}, period_end=10_000 * S)
    assert still[0].resolved is None


def test_nominal_interval_is_the_median_gap() -> None:
    assert nominal_interval([0, 15, 30, 45, 100, 115]) == 15
    assert nominal_interval([7]) is None


# --- Properties ---------------------------------------------------------------------------

samples = st.lists(
    st.tuples(st.integers(min_value=-60, max_value=600), st.booleans()),
    max_size=80,
).map(lambda xs: sorted({t * S: ok for t, ok in xs}.items()))
periods = st.tuples(st.integers(0, 300), st.integers(1, 400)).map(
    lambda p: (p[0] * S, (p[0] + p[1]) * S)
)
intervals = st.sampled_from([5 * S, 15 * S, 30 * S])


@settings(max_examples=300, deadline=None)
@given(samples, periods, intervals)
def test_spans_tile_the_period_exactly(
    data: list[tuple[int, bool]], period: tuple[int, int], interval: int
) -> None:
    start, end = period
    spans = series_timeline(data, start, end, interval)
    assert spans[0].start == start and spans[-1].end == end
    for a, b in itertools.pairwise(spans):
        assert a.end == b.start and a.state is not b.state
    figures = availability(spans, "unavailable", 0.999)
    assert figures.up_ms + figures.down_ms + figures.no_data_ms == end - start


@settings(max_examples=300, deadline=None)
@given(st.lists(st.booleans(), min_size=1, max_size=200), intervals)
def test_regular_probes_make_down_time_the_failed_probes_times_the_interval(
    results: list[bool], interval: int
) -> None:
    data = [(i * interval, ok) for i, ok in enumerate(results)]
    spans = series_timeline(data, 0, len(results) * interval, interval)
    assert availability(spans, "unavailable", 0.999).down_ms == results.count(False) * interval
    assert availability(spans, "unavailable", 0.999).no_data_ms == 0


@settings(max_examples=300, deadline=None)
@given(samples, samples, periods)
def test_combining_never_invents_down_time(
    a: list[tuple[int, bool]], b: list[tuple[int, bool]], period: tuple[int, int]
) -> None:
    start, end = period
    ta, tb = (series_timeline(x, start, end, STEP) for x in (a, b))
    both = combine([ta, tb])
    assert both[0].start == start and both[-1].end == end
    down = availability(both, "excluded", 0.999).down_ms
    assert down <= min(
        availability(t, "excluded", 0.999).down_ms + availability(t, "excluded", 0.999).no_data_ms
        for t in (ta, tb)
    )
    assert combine([ta]) == ta


@settings(max_examples=300, deadline=None)
@given(samples, periods, st.integers(0, 200), st.integers(0, 60))
def test_incidents_are_ordered_disjoint_and_hold_all_down_time_when_unfiltered(
    data: list[tuple[int, bool]], period: tuple[int, int], gap: int, minimum: int
) -> None:
    start, end = period
    spans = series_timeline(data, start, end, STEP)
    total_down = availability(spans, "unavailable", 0.999).down_ms
    incidents = find_incidents(spans, gap * S, minimum * S)
    for a, b in itertools.pairwise(incidents):
        assert a.end <= b.start
    assert all(i.down_ms <= i.duration for i in incidents)
    assert sum(i.down_ms for i in incidents) <= total_down
    assert sum(i.down_ms for i in find_incidents(spans, gap * S)) == total_down


@settings(max_examples=100, deadline=None)
@given(samples, periods)
def test_days_and_cumulative_budget_add_up_to_the_totals(
    data: list[tuple[int, bool]], period: tuple[int, int]
) -> None:
    start, end = period
    spans = series_timeline(data, start, end, STEP)
    figures = availability(spans, "unavailable", 0.999)
    days = per_day(spans, ZoneInfo("Europe/Paris"))
    assert sum(d.down_ms for d in days) == figures.down_ms
    assert sum(d.no_data_ms for d in days) == figures.no_data_ms
    assert cumulative_unavailable(spans, "unavailable")[-1][1] == figures.counted_unavailable_ms
