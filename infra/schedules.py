"""When a CronJob runs, in its own time zone, exactly as the Kubernetes 1.34 controller decides.

The CronJob controller (k8s.io/kubernetes v1.34.2, pkg/controller/cronjob) parses
"TZ=<spec.timeZone> <spec.schedule>" with github.com/robfig/cron/v3 v3.0.1's `ParseStandard`
and finds each run with `SpecSchedule.Next(status.lastScheduleTime)`. `Next` walks the
schedule's fields in local time but steps through *absolute* time (an hour, a minute, a
second at a time), so around a clock change:

- a wall time that does not exist (spring forward: 02:30 in Europe/Paris on the last Sunday
  of March) is never shown by the local clock and is skipped: a daily job at 02:30 does not
  run that day, and runs 47 hours after the previous one;
- a wall time that happens twice (fall back: 02:30 on the last Sunday of October) matches
  twice: a daily job at 02:30 runs at 02:30 summer time and again an hour later at 02:30
  winter time.

This module is our own Python rendering of that algorithm (zoneinfo for the zone rules), kept
step for step so that its quirks come along; tests/unit/infra/test_schedules.py compares it with
run times recorded from the real library (scripts/cron-vectors). Pure: no Pulumi, no I/O
beyond reading the zone database.
"""

from __future__ import annotations

import calendar
import functools
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

# Two whole years (one of them a leap year) with every kind of clock change in them: the gaps
# of a schedule repeat from one year to the next, so what is true here is true every year
# under today's zone rules.
HORIZON = (datetime(2027, 1, 1), datetime(2029, 1, 1))

_STAR = 1 << 63  # set when a field was written `*` or `?` (robfig/cron's starBit)
_MONTHS = {
    name: number
    for number, name in enumerate(
        ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"), 1
    )
}
_WEEKDAYS = {
    name: number for number, name in enumerate(("sun", "mon", "tue", "wed", "thu", "fri", "sat"))
}
_INT = re.compile(r"^[+-]?[0-9]+$")  # what Go's strconv.Atoi accepts
_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()
_VALUES_0_59 = (1 << 60) - 1


class CronError(ValueError):
    """A schedule the CronJob controller would refuse (the reason is robfig/cron's)."""


@dataclass(frozen=True)
class _Field:
    low: int
    high: int
    names: dict[str, int] | None = None


_MINUTE, _HOUR, _DOM = _Field(0, 59), _Field(0, 23), _Field(1, 31)
_MONTH, _DOW = _Field(1, 12, _MONTHS), _Field(0, 6, _WEEKDAYS)


@dataclass(frozen=True)
class CronSchedule:
    """A parsed 5-field schedule: one bit per allowed value of each field."""

    expression: str
    minute: int
    hour: int
    dom: int
    month: int
    dow: int

    def day_matches(self, day: date) -> bool:
        # Both restricted: either may match (cron's historic rule); either written `*`: both.
        dom = bool(self.dom >> day.day & 1)
        dow = bool(self.dow >> (day.isoweekday() % 7) & 1)
        if self.dom & _STAR or self.dow & _STAR:
            return dom and dow
        return dom or dow

    def wall_times(self, day: date) -> Iterator[tuple[int, int]]:
        """The (hour, minute) pairs the schedule names on `day`, whether or not they exist."""
        if self.month >> day.month & 1 and self.day_matches(day):
            for hour in range(24):
                if self.hour >> hour & 1:
                    for minute in range(60):
                        if self.minute >> minute & 1:
                            yield hour, minute


def _atoi(text: str) -> int:
    if not _INT.match(text):
        raise CronError(
            f'failed to parse int from {text}: strconv.Atoi: parsing "{text}": invalid syntax'
        )
    number = int(text)
    if number < 0:
        raise CronError(f"negative number ({number}) not allowed: {text}")
    return number


def _value(text: str, field: _Field) -> int:
    if field.names is not None and text.lower() in field.names:
        return field.names[text.lower()]
    return _atoi(text)


def _range_bits(expr: str, field: _Field) -> int:
    range_and_step = expr.split("/")
    low_and_high = range_and_step[0].split("-")
    extra = 0
    if low_and_high[0] in ("*", "?"):
        # Whatever follows a `*` before the step is ignored, as robfig/cron does ("*-5" is "*").
        start, end, extra = field.low, field.high, _STAR
    else:
        start = _value(low_and_high[0], field)
        if len(low_and_high) > 2:
            raise CronError(f"too many hyphens: {expr}")
        end = _value(low_and_high[1], field) if len(low_and_high) == 2 else start
    step = 1
    if len(range_and_step) > 2:
        raise CronError(f"too many slashes: {expr}")
    if len(range_and_step) == 2:
        step = _atoi(range_and_step[1])
        if len(low_and_high) == 1:
            end = field.high  # "N/step" runs from N to the end of the range
        if step > 1:
            extra = 0  # "*/2" is no longer "every value": day-of-month/week rules change
    if start < field.low:
        raise CronError(f"beginning of range ({start}) below minimum ({field.low}): {expr}")
    if end > field.high:
        raise CronError(f"end of range ({end}) above maximum ({field.high}): {expr}")
    if start > end:
        raise CronError(f"beginning of range ({start}) beyond end of range ({end}): {expr}")
    if step == 0:
        raise CronError(f"step of range should be a positive number: {expr}")
    return sum(1 << value for value in range(start, end + 1, step)) | extra


def _field_bits(text: str, field: _Field) -> int:
    bits = 0
    # Empty items are dropped, as Go's strings.FieldsFunc does: "1,,2" is "1,2", "," is nothing.
    for expr in filter(None, text.split(",")):
        bits |= _range_bits(expr, field)
    return bits


def parse(expression: str) -> CronSchedule:
    """The schedule of a 5-field cron expression, refused where `cron.ParseStandard` refuses it.

    Two refusals of our own: the time zone belongs in the CronJob's `timeZone` (the API server
    refuses "TZ" in a schedule that has one), and descriptors such as "@daily" are not used.
    """
    if not expression:
        raise CronError("empty spec string")
    if "TZ" in expression:
        raise CronError("the time zone is the CronJob's timeZone, not part of its schedule")
    if expression.startswith("@"):
        raise CronError("descriptors such as @daily are not used here: write the 5 fields")
    fields = expression.split()
    if len(fields) != 5:
        raise CronError(f"expected exactly 5 fields, found {len(fields)}: [{' '.join(fields)}]")
    minute, hour, dom, month, dow = (
        _field_bits(text, field)
        for text, field in zip(fields, (_MINUTE, _HOUR, _DOM, _MONTH, _DOW), strict=True)
    )
    return CronSchedule(expression, minute, hour, dom, month, dow)


class _Zone:
    """Go's view of a time zone: local fields of an instant, and `time.Date`.

    Instants are whole Unix seconds; the schedule never needs less.
    """

    def __init__(self, name: str) -> None:
        self.info = ZoneInfo(name)

    def local(self, instant: int) -> datetime:
        return datetime.fromtimestamp(instant, self.info)

    def offset(self, instant: int) -> timedelta | None:
        return self.local(instant).utcoffset()

    def _seconds_east(self, instant: int) -> int:
        offset = self.offset(instant)
        assert offset is not None
        return int(offset.total_seconds())

    def date(
        self, year: int, month: int, day: int, *, hour: int = 0, minute: int = 0, second: int = 0
    ) -> int:
        """Go's `time.Date(...)` in this zone, out-of-range months and days carried over.

        A wall time that does not exist, or exists twice, gets the offset in force at the
        wall time read as UTC, unless that offset puts it outside its own period; then the
        offset in force at the instant it gives (Go's time.Date and Location.lookup). In
        Europe/Paris, 02:30 on a spring-forward day is 03:30 summer time; on a fall-back day
        it is the second 02:30, winter time.
        """
        year, month = year + (month - 1) // 12, (month - 1) % 12 + 1
        days = date(year, month, 1).toordinal() + day - 1 - _EPOCH_ORDINAL
        wall = days * 86400 + hour * 3600 + minute * 60 + second
        return wall - self._seconds_east(wall - self._seconds_east(wall))

    def add_date(self, instant: int, months: int, days: int) -> int:
        """Go's `t.AddDate(0, months, days)`: the same wall clock on another day."""
        t = self.local(instant)
        return self.date(
            t.year, t.month + months, t.day + days, hour=t.hour, minute=t.minute, second=t.second
        )


def _advance(
    zone: _Zone, instant: int, step: int, allowed: int, unit: Callable[[datetime], int]
) -> tuple[int, bool]:
    """Next's minute or second loop: add `step` seconds until the local minute (or second) is
    allowed, or wraps to 0. Answers the instant and whether it wrapped.

    Where the zone's offset is the same at both ends, the local value moves by one per step,
    so the loop's end is computed instead of walked (zones change their offset at most once
    within an hour); otherwise it is walked one step at a time, as Go does.
    """
    start = zone.local(instant)
    value = unit(start)
    later = allowed & _VALUES_0_59 & ~((2 << value) - 1)
    target_value = (later & -later).bit_length() - 1 if later else 60
    target = instant + (target_value - value) * step
    if zone.offset(target) == start.utcoffset():
        return target, target_value == 60
    while True:
        instant += step
        value = unit(zone.local(instant))
        if value == 0:
            return instant, True
        if allowed >> value & 1:
            return instant, False


class _Cursor:
    """The time `Next` moves forward, and whether it was moved yet (`added`): after the
    first move the lower fields are no longer reset."""

    def __init__(self, zone: _Zone, instant: int) -> None:
        self.zone, self.added = zone, False
        self.instant = instant

    @property
    def instant(self) -> int:
        return self._instant

    @instant.setter
    def instant(self, value: int) -> None:
        self._instant, self.t = value, self.zone.local(value)

    def start_moving(self, reset: Callable[[datetime], int]) -> None:
        if not self.added:
            self.added, self.instant = True, reset(self.t)


def _month_wraps(spec: CronSchedule, c: _Cursor) -> bool:
    if spec.month >> c.t.month & 1:
        return False
    c.start_moving(lambda t: c.zone.date(t.year, t.month, 1))
    while True:
        c.instant = c.zone.add_date(c.instant, 1, 0)
        if c.t.month == 1:
            return True
        if spec.month >> c.t.month & 1:
            return False


def _day_wraps(spec: CronSchedule, c: _Cursor) -> bool:
    if spec.day_matches(c.t.date()):
        return False
    c.start_moving(lambda t: c.zone.date(t.year, t.month, t.day))
    while True:
        c.instant = c.zone.add_date(c.instant, 0, 1)
        hour = c.t.hour
        if hour != 0:
            # Midnight skipped by a clock change: back to the day's first hour.
            c.instant += (24 - hour if hour > 12 else -hour) * 3600
        if c.t.day == 1:
            return True
        if spec.day_matches(c.t.date()):
            return False


def _hour_wraps(spec: CronSchedule, c: _Cursor) -> bool:
    if spec.hour >> c.t.hour & 1:
        return False
    c.start_moving(lambda t: c.zone.date(t.year, t.month, t.day, hour=t.hour))
    while True:
        c.instant += 3600
        hour = c.t.hour
        if hour == 0:
            return True
        if spec.hour >> hour & 1:
            return False


def _minute_wraps(spec: CronSchedule, c: _Cursor) -> bool:
    if spec.minute >> c.t.minute & 1:
        return False
    c.start_moving(lambda _: c.instant - c.instant % 60)  # Go's Truncate(time.Minute)
    c.instant, wrapped = _advance(c.zone, c.instant, 60, spec.minute, lambda t: t.minute)
    return wrapped


def _second_wraps(c: _Cursor) -> bool:
    # The seconds field of a 5-field schedule is "0": this loop only ever ends by wrapping.
    if c.t.second == 0:
        return False
    c.start_moving(lambda _: c.instant)
    c.instant, wrapped = _advance(c.zone, c.instant, 1, 1, lambda t: t.second)
    return wrapped


def _next_instant(spec: CronSchedule, zone: _Zone, after: int) -> int | None:
    """robfig/cron v3.0.1 `SpecSchedule.Next` (spec.go), on whole Unix seconds.

    Each field, month down to second, is moved forward until it matches; a field that wraps
    (month to January, day to the 1st, hour, minute or second to 0) sends the search back to
    the month, as the library's `goto WRAP` does.
    """
    c = _Cursor(zone, after + 1)  # the upcoming second
    year_limit = c.t.year + 5  # no run within five years: the library's zero time
    while c.t.year <= year_limit:
        if (
            _month_wraps(spec, c)
            or _day_wraps(spec, c)
            or _hour_wraps(spec, c)
            or _minute_wraps(spec, c)
            or _second_wraps(c)
        ):
            continue
        return c.instant
    return None


def _whole_seconds(moment: datetime) -> int:
    if moment.tzinfo is None:
        raise ValueError(f"{moment.isoformat()} has no time zone: say which instant it is")
    return calendar.timegm(moment.astimezone(UTC).timetuple())


def next_run(schedule: str | CronSchedule, time_zone: str, after: datetime) -> datetime | None:
    """The first run strictly after `after`, in `time_zone`; None if none within five years."""
    spec = parse(schedule) if isinstance(schedule, str) else schedule
    zone = _Zone(time_zone)
    found = _next_instant(spec, zone, _whole_seconds(after))
    return None if found is None else zone.local(found)


def run_times(schedule: str | CronSchedule, time_zone: str, after: datetime) -> Iterator[datetime]:
    """Every run after `after`, as the controller chains them: each from the previous one."""
    spec = parse(schedule) if isinstance(schedule, str) else schedule
    zone = _Zone(time_zone)
    found = _next_instant(spec, zone, _whole_seconds(after))
    while found is not None:
        yield zone.local(found)
        found = _next_instant(spec, zone, found)


@dataclass(frozen=True)
class Gap:
    """The longest interval between two consecutive runs, and where it happens."""

    schedule: CronSchedule
    time_zone: str
    before: datetime
    after: datetime

    @property
    def length(self) -> timedelta:
        # In UTC: Python subtracts two datetimes of the same zone by their wall clocks, which
        # would count the hour a clock change removes.
        return self.after.astimezone(UTC) - self.before.astimezone(UTC)

    def skipped_times(self) -> list[tuple[date, list[str]]]:
        """Days inside the gap on which the schedule names a wall time that does not exist."""
        zone, skipped = _Zone(self.time_zone), []
        first, last = self.before.replace(tzinfo=None), self.after.replace(tzinfo=None)
        for ordinal in range(first.toordinal(), last.toordinal() + 1):
            day = date.fromordinal(ordinal)
            missing = [
                f"{hour:02}:{minute:02}"
                for hour, minute in self.schedule.wall_times(day)
                if first < datetime(day.year, day.month, day.day, hour, minute) < last
                and _wall_time_missing(zone, day, hour, minute)
            ]
            if missing:
                skipped.append((day, missing))
        return skipped

    def where(self) -> str:
        """Where the gap is, for a message: the day skipped and why, or the two runs."""
        skipped = self.skipped_times()
        if skipped:
            day, times = skipped[0]
            return f"skips {day.isoformat()} in {self.time_zone} ({_missing_text(times)} that day)"
        return (
            f"runs at {self.before:%Y-%m-%d %H:%M} then not before {self.after:%Y-%m-%d %H:%M} "
            f"in {self.time_zone}"
        )


def _wall_time_missing(zone: _Zone, day: date, hour: int, minute: int) -> bool:
    t = zone.local(zone.date(day.year, day.month, day.day, hour=hour, minute=minute))
    return (t.date(), t.hour, t.minute) != (day, hour, minute)


def _missing_text(times: list[str]) -> str:
    if len(times) == 1:
        return f"{times[0]} does not exist"
    if len(times) <= 3:
        return f"{', '.join(times[:-1])} and {times[-1]} do not exist"
    return f"{len(times)} times from {times[0]} to {times[-1]} do not exist"


class NoGap(ValueError):
    """The schedule runs fewer than twice from the horizon's start on: it has no interval."""


@functools.cache
def longest_gap(schedule: str, time_zone: str) -> Gap:
    """The longest interval between two consecutive runs over HORIZON (local dates), in
    absolute time: what a clock change adds or removes is counted."""
    spec, zone = parse(schedule), _Zone(time_zone)
    start, end = (zone.date(m.year, m.month, m.day) for m in HORIZON)
    previous = _next_instant(spec, zone, start - 1)
    if previous is None:
        raise NoGap(f"never runs (no day matches it within five years of {HORIZON[0]:%Y-%m-%d})")
    worst: tuple[int, int] | None = None
    while previous < end:
        current = _next_instant(spec, zone, previous)
        if current is None:
            raise NoGap(f"runs on {zone.local(previous):%Y-%m-%d %H:%M} and then never again")
        if worst is None or current - previous > worst[1] - worst[0]:
            worst = (previous, current)
        previous = current
    if worst is None:
        raise NoGap(f"runs first on {zone.local(previous):%Y-%m-%d %H:%M}, after the horizon")
    return Gap(spec, time_zone, zone.local(worst[0]), zone.local(worst[1]))
