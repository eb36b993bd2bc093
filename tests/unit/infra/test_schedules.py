"""infra/schedules.py: run times exactly as the Kubernetes 1.34 CronJob controller computes them.

The reference is the real library: tests/unit/infra/vectors/robfig_cron_v3.0.1.json holds the
run times that github.com/robfig/cron/v3 v3.0.1 (`cron.ParseStandard("TZ=<zone> <schedule>")`
then `SpecSchedule.Next`, chained from each run as the controller does) gave for each case, and
which expressions its parser refuses. Regenerate it with Go (module proxy access only):

    cd scripts/cron-vectors && go run . > ../../tests/unit/infra/vectors/robfig_cron_v3.0.1.json

The cases are listed in scripts/cron-vectors/main.go; each carries a `why`.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from infra.schedules import CronError, NoGap, longest_gap, next_run, parse, run_times

VECTORS = json.loads(
    (Path(__file__).parent / "vectors" / "robfig_cron_v3.0.1.json").read_text(encoding="utf-8")
)
PARIS = "Europe/Paris"


def instant(text: str) -> datetime:
    return datetime.fromisoformat(text)


def same_moment(found: datetime, expected: datetime) -> bool:
    # Compared in UTC and offset: Python never finds a repeated wall time equal to a time of
    # another zone (PEP 495), and the offset says which of the two passes it is.
    return (
        found.astimezone(UTC) == expected.astimezone(UTC)
        and found.utcoffset() == expected.utcoffset()
    )


@pytest.mark.parametrize("case", VECTORS["runs"], ids=lambda case: case["why"])
def test_run_times_are_those_of_robfig_cron(case: dict[str, Any]) -> None:
    runs = run_times(case["expression"], case["timeZone"], instant(case["start"]))
    found = [run for run, _ in zip(runs, range(case["count"]), strict=False)]
    expected = [instant(run["local"]) for run in case["runs"]]
    assert [r.isoformat() for r in found] == [e.isoformat() for e in expected]
    assert all(same_moment(f, e) for f, e in zip(found, expected, strict=True))
    assert [f.astimezone(UTC) for f in found] == [instant(run["utc"]) for run in case["runs"]]


@pytest.mark.parametrize("case", VECTORS["parse"], ids=lambda case: case["expression"])
def test_expressions_are_refused_as_robfig_cron_refuses_them(case: dict[str, Any]) -> None:
    if case["expression"].startswith("@"):
        # Descriptors parse upstream; here a schedule is always written as its 5 fields.
        with pytest.raises(CronError, match="descriptors"):
            parse(case["expression"])
    elif case["error"] is None:
        parse(case["expression"])
    else:
        with pytest.raises(CronError) as error:
            parse(case["expression"])
        assert str(error.value) == case["error"]


def test_a_schedule_naming_its_time_zone_is_refused() -> None:
    with pytest.raises(CronError, match="timeZone"):
        parse("CRON_TZ=Europe/Paris 30 3 * * *")


def vector(why: str) -> dict[str, Any]:
    return next(case for case in VECTORS["runs"] if case["why"] == why)


DAILY_0230 = "daily in the hour that is skipped in spring and repeated in autumn"


def test_0230_in_paris_leaves_47_hours_across_the_2027_spring_change() -> None:
    """02:30 does not exist on 2027-03-28: robfig/cron goes from the 27th to the 29th."""
    gap = longest_gap("30 2 * * *", PARIS)
    runs = vector(f"{DAILY_0230}, 2027 spring forward")["runs"]
    assert (gap.before.astimezone(UTC), gap.after.astimezone(UTC)) == (
        instant(runs[2]["utc"]),
        instant(runs[3]["utc"]),
    )
    assert gap.length == timedelta(hours=47)
    assert gap.where() == "skips 2027-03-28 in Europe/Paris (02:30 does not exist that day)"


def test_0230_in_paris_runs_twice_on_the_autumn_change() -> None:
    runs = vector(f"{DAILY_0230}, 2027 fall back")["runs"]
    assert [r["local"] for r in runs[3:5]] == [
        "2027-10-31T02:30:00+02:00",
        "2027-10-31T02:30:00+01:00",
    ]
    after = next_run("30 2 * * *", PARIS, instant(runs[3]["local"]))
    assert after is not None
    assert same_moment(after, instant("2027-10-31T02:30:00+01:00"))


@pytest.mark.parametrize(
    ("schedule", "length", "before"),
    [
        # 03:30 exists once every day: 23 hours in spring, 25 in autumn.
        ("30 3 * * *", timedelta(hours=25), "2027-10-30T03:30:00+02:00"),
        ("15 1 * * *", timedelta(hours=25), "2027-10-31T01:15:00+02:00"),
        ("7 * * * *", timedelta(hours=1), "2027-01-01T00:07:00+01:00"),
        ("*/15 * * * *", timedelta(minutes=15), "2027-01-01T00:00:00+01:00"),
        ("0 9 * * 0", timedelta(days=7, hours=1), "2027-10-24T09:00:00+02:00"),
        ("30 2 * * 0", timedelta(days=14, hours=-1), "2027-03-21T02:30:00+01:00"),
        ("0 3 * * 1-5", timedelta(days=3, hours=1), "2027-10-29T03:00:00+02:00"),
        ("0 0 1 * *", timedelta(days=31, hours=1), "2027-10-01T00:00:00+02:00"),
        ("0 0 29 2 *", timedelta(days=4 * 365 + 1), "2028-02-29T00:00:00+01:00"),
    ],
)
def test_longest_gap_is_counted_in_elapsed_time(
    schedule: str, length: timedelta, before: str
) -> None:
    gap = longest_gap(schedule, PARIS)
    assert gap.length == length
    assert same_moment(gap.before, instant(before))


def test_a_gap_without_a_missing_time_names_its_two_runs() -> None:
    assert longest_gap("30 3 * * *", PARIS).where() == (
        "runs at 2027-10-30 03:30 then not before 2027-10-31 03:30 in Europe/Paris"
    )


def test_several_missing_times_are_summed_up() -> None:
    gap = longest_gap("*/15 2 * * *", PARIS)
    assert gap.length == timedelta(hours=46, minutes=15)
    assert gap.where() == (
        "skips 2027-03-28 in Europe/Paris (4 times from 02:00 to 02:45 do not exist that day)"
    )


def test_a_schedule_that_never_comes_has_no_gap() -> None:
    with pytest.raises(NoGap, match="never runs"):
        longest_gap("0 0 31 2 *", PARIS)


def test_a_time_without_a_zone_is_refused() -> None:
    with pytest.raises(ValueError, match="no time zone"):
        next_run("30 3 * * *", PARIS, datetime(2027, 3, 28))


# An oracle that shares nothing with the implementation: every whole minute after `after`, read
# on the zone's clock. In Europe/Paris, whose clock changes by whole hours, robfig/cron's run is
# the first minute whose wall time matches the schedule.
def first_matching_minute(fields: tuple[set[int], set[int], set[int]], after: datetime) -> datetime:
    minutes, hours, weekdays = fields
    moment = after.astimezone(UTC).replace(second=0, microsecond=0)
    zone = ZoneInfo(PARIS)
    while True:
        moment += timedelta(minutes=1)
        local = moment.astimezone(zone)
        if local.minute in minutes and local.hour in hours and local.isoweekday() % 7 in weekdays:
            return local


def cron_list(values: set[int]) -> str:
    return ",".join(str(v) for v in sorted(values))


@settings(deadline=None, max_examples=40)
@given(
    minutes=st.sets(st.integers(0, 59), min_size=1, max_size=4),
    hours=st.sets(st.integers(0, 23), min_size=1, max_size=4),
    weekdays=st.sets(st.integers(0, 6), min_size=1, max_size=7),
    change=st.sampled_from(["2027-03-28", "2027-10-31", "2028-03-26", "2028-10-29"]),
    offset_minutes=st.integers(-8 * 24 * 60, 2 * 24 * 60),
)
def test_each_run_is_the_first_minute_whose_paris_wall_time_matches(
    minutes: set[int], hours: set[int], weekdays: set[int], change: str, offset_minutes: int
) -> None:
    expression = f"{cron_list(minutes)} {cron_list(hours)} * * {cron_list(weekdays)}"
    after = datetime.fromisoformat(f"{change}T01:00:00+00:00") + timedelta(minutes=offset_minutes)
    found = next_run(expression, PARIS, after)
    assert found is not None
    assert same_moment(found, first_matching_minute((minutes, hours, weekdays), after))
