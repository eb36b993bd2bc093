"""infra/settings.py: every copy of personal data stays within onboarding:gdpr.maxAgeDays, with
schedules read in the time zone their CronJobs run in.

The figures come from the real clock changes of Europe/Paris (tests/unit/infra/test_schedules.py
proves the gaps against robfig/cron): a daily purge at 03:30 waits up to 25 hours, an hourly
expiry job up to 1 hour, a purge at 02:30 47 hours across 2027-03-28.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from infra.settings import SettingsError, parse_settings
from tests.unit.infra.test_settings import with_change


def refusal(raw: dict[str, Any]) -> str:
    with pytest.raises(SettingsError) as error:
        parse_settings(raw)
    return str(error.value).removeprefix("invalid stack settings:\n  ")


def changed(stack: str, *changes: tuple[str, Any]) -> dict[str, Any]:
    raw = with_change(stack, *changes[0])
    for path, value in changes[1:]:
        node: Any = raw
        *parents, last = path.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    return raw


@pytest.mark.parametrize("stack", ["prod", "preprod"])
def test_the_stacks_keep_every_copy_within_thirty_days(stack: str) -> None:
    settings = parse_settings(with_change(stack, "gdpr.maxAgeDays", 30))
    assert settings.time_zone == "Europe/Paris"
    assert (settings.purge.schedule, settings.purge.retention_days) == ("30 3 * * *", 28)
    assert settings.backup.retention_days == 7
    assert settings.backup_expiry_interval_hours == 1


def test_a_purge_at_0230_is_refused_for_the_day_it_skips() -> None:
    assert refusal(with_change("prod", "purge.schedule", "30 2 * * *")) == (
        "onboarding:purge.schedule = '30 2 * * *': skips 2027-03-28 in Europe/Paris "
        "(02:30 does not exist that day), leaving 47:00:00 between purges "
        "(allowed: at most 25 hours)"
    )


def test_the_same_purge_schedule_is_judged_in_the_stack_time_zone() -> None:
    assert parse_settings(changed("prod", ("purge.schedule", "30 2 * * *"), ("timeZone", "UTC")))
    assert refusal(
        changed("prod", ("purge.schedule", "30 2 * * *"), ("timeZone", "America/New_York"))
    ) == (
        "onboarding:purge.schedule = '30 2 * * *': skips 2027-03-14 in America/New_York "
        "(02:30 does not exist that day), leaving 47:00:00 between purges "
        "(allowed: at most 25 hours)"
    )


def test_a_weekly_purge_is_refused_with_its_two_runs() -> None:
    assert refusal(with_change("prod", "purge.schedule", "0 3 * * 1")) == (
        "onboarding:purge.schedule = '0 3 * * 1': runs at 2027-10-25 03:00 then not before "
        "2027-11-01 03:00 in Europe/Paris, leaving 169:00:00 between purges "
        "(allowed: at most 25 hours)"
    )


def test_a_purge_twice_a_day_leaves_room_for_29_days() -> None:
    # 03:30 and 15:30: up to 13 hours apart (autumn), so 29 days + 13 h + 6 h fit in 30 days.
    raw = changed("prod", ("purge.schedule", "30 3,15 * * *"), ("purge.retentionDays", 29))
    assert parse_settings(raw).purge.retention_days == 29


def test_twenty_nine_days_of_database_retention_are_refused() -> None:
    assert refusal(with_change("prod", "purge.retentionDays", 29)) == (
        "onboarding:purge.retentionDays = 29: the database would keep personal data up to "
        "30 days 07:00:00 (29 days retention + up to 25:00:00 between purges in Europe/Paris "
        "+ a run of up to 6:00:00), over the 30-day budget onboarding:gdpr.maxAgeDays "
        "(allowed: at most 28)"
    )


def test_a_lower_budget_lowers_the_database_retention_allowed() -> None:
    assert refusal(changed("prod", ("gdpr.maxAgeDays", 20), ("backup.retentionDays", 7))) == (
        "onboarding:purge.retentionDays = 28: the database would keep personal data up to "
        "29 days 07:00:00 (28 days retention + up to 25:00:00 between purges in Europe/Paris "
        "+ a run of up to 6:00:00), over the 20-day budget onboarding:gdpr.maxAgeDays "
        "(allowed: at most 18)"
    )


def test_a_budget_too_small_for_the_purge_allows_no_retention() -> None:
    raw = changed("prod", ("gdpr.maxAgeDays", 1), ("purge.retentionDays", 1))
    assert refusal(raw) == (
        "onboarding:purge.retentionDays = 1: the database would keep personal data up to "
        "2 days 07:00:00 (1 days retention + up to 25:00:00 between purges in Europe/Paris "
        "+ a run of up to 6:00:00), over the 1-day budget onboarding:gdpr.maxAgeDays "
        "(allowed: none, whatever the retention)"
    )


def test_a_purge_deadline_counts_in_the_database_budget() -> None:
    # 28 days + 25 h + 23 h is exactly 30 days: the budget is reached, not exceeded.
    assert parse_settings(with_change("prod", "purge.deadlineHours", 23))
    raw = changed("prod", ("purge.deadlineHours", 23), ("gdpr.maxAgeDays", 29))
    assert refusal(raw) == (
        "onboarding:purge.retentionDays = 28: the database would keep personal data up to "
        "30 days 00:00:00 (28 days retention + up to 25:00:00 between purges in Europe/Paris "
        "+ a run of up to 23:00:00), over the 29-day budget onboarding:gdpr.maxAgeDays "
        "(allowed: at most 27)"
    )


def test_thirty_days_of_backups_are_refused() -> None:
    assert refusal(with_change("prod", "backup.retentionDays", 30)) == (
        "onboarding:backup.retentionDays = 30: backups would keep what they hold up to "
        "30 days 01:00:00 (30 days retention + up to 1:00:00 between expiry runs in "
        "Europe/Paris), leaving no data young enough to back up under the 30-day budget "
        "onboarding:gdpr.maxAgeDays (allowed: at most 29)"
    )


def test_twenty_nine_days_of_backups_leave_23_hours_of_data() -> None:
    assert parse_settings(with_change("prod", "backup.retentionDays", 29))


def test_a_slower_expiry_job_shortens_the_backups_allowed() -> None:
    # In UTC a daily expiry job waits exactly 24 hours, the most couchops accepts.
    raw = changed(
        "prod",
        ("backup.expirySchedule", "7 3 * * *"),
        ("timeZone", "UTC"),
        ("backup.retentionDays", 29),
    )
    assert refusal(raw) == (
        "onboarding:backup.retentionDays = 29: backups would keep what they hold up to "
        "30 days 00:00:00 (29 days retention + up to 24:00:00 between expiry runs in "
        "UTC), leaving no data young enough to back up under the 30-day budget "
        "onboarding:gdpr.maxAgeDays (allowed: at most 28)"
    )


def test_a_daily_expiry_job_is_refused_for_its_autumn_day() -> None:
    assert refusal(with_change("prod", "backup.expirySchedule", "7 3 * * *")) == (
        "onboarding:backup.expirySchedule = '7 3 * * *': runs at 2027-10-30 03:07 then not "
        "before 2027-10-31 03:07 in Europe/Paris, leaving 25:00:00 between expiry runs "
        "(allowed: at most 24 hours)"
    )


@pytest.mark.parametrize(
    "key", ["backup.schedule", "backup.verifySchedule", "backup.expirySchedule", "purge.schedule"]
)
def test_a_cronjob_schedule_that_never_runs_is_refused(key: str) -> None:
    assert refusal(with_change("prod", key, "0 9 31 2 *")) == (
        f"onboarding:{key} = '0 9 31 2 *': never runs (no day matches it within five years "
        "of 2027-01-01) in Europe/Paris (allowed: a schedule that runs)"
    )


def test_a_schedule_the_controller_refuses_is_refused_with_its_reason() -> None:
    assert refusal(with_change("prod", "backup.verifySchedule", "0 9 * * 7")) == (
        "onboarding:backup.verifySchedule = '0 9 * * 7': '0 9 * * 7' is not a schedule the "
        "CronJob controller accepts: end of range (7) above maximum (6): 7 "
        "(allowed: 5 cron fields, e.g. '30 3 * * *')"
    )


@pytest.mark.parametrize("zone", ["Europe/Pariss", "Local", "../etc/passwd", "", "Paris"])
def test_an_unknown_time_zone_is_refused(zone: str) -> None:
    assert refusal(with_change("prod", "timeZone", zone)) == (
        f"onboarding:timeZone = {zone!r}: '{zone}' is not an IANA time zone name (allowed: "
        "e.g. Europe/Paris, as in the zone database that CronJob timeZone uses)"
    )


# No deadline: each example validates settings whose schedules are checked over two years.
@settings(deadline=None, max_examples=60)
@given(budget=st.integers(1, 30), retention=st.integers(1, 30))
def test_the_database_retention_may_reach_the_budget_less_two_days(
    budget: int, retention: int
) -> None:
    # Daily at 03:30 in Europe/Paris with a 6-hour run: 25 h + 6 h = 31 h, so 2 days short.
    raw = changed(
        "prod",
        ("gdpr.maxAgeDays", budget),
        ("purge.retentionDays", retention),
        ("backup.retentionDays", 1),
    )
    if retention <= budget - 2:
        parse_settings(raw)
    else:
        assert "onboarding:purge.retentionDays" in refusal(raw)


@settings(deadline=None, max_examples=60)
@given(budget=st.integers(3, 30), retention=st.integers(1, 30))
def test_backups_may_be_kept_up_to_the_budget_less_one_day(budget: int, retention: int) -> None:
    # Hourly expiry: a backup lives its retention plus up to an hour, so one day short.
    raw = changed(
        "prod",
        ("gdpr.maxAgeDays", budget),
        ("purge.retentionDays", 1),
        ("backup.retentionDays", retention),
    )
    if retention <= budget - 1:
        parse_settings(raw)
    else:
        assert "onboarding:backup.retentionDays" in refusal(raw)
