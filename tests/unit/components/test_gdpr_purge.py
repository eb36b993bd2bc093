"""components/gdpr_purge.py: daily in Paris time, within the GDPR budget, never two runs at once."""

from __future__ import annotations

from datetime import timedelta

import pulumi
import pytest

from infra.schedules import longest_gap
from tests.unit.harness import Recorded, one, raw_stack, run_program


def purge_job(stack: list[Recorded]) -> Recorded:
    return one(stack, "CronJob", "couchops-purge")


def purge_env(stack: list[Recorded]) -> dict[str, str]:
    container = purge_job(stack).spec["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]
    assert container["args"] == ["purge"]
    return {e["name"]: e.get("value") for e in container["env"]}


def test_purge_runs_daily_at_0330_paris_time_with_28_days_retention(
    stack: list[Recorded],
) -> None:
    spec = purge_job(stack).spec
    assert (spec["schedule"], spec["timeZone"]) == ("30 3 * * *", "Europe/Paris")
    env = purge_env(stack)
    assert env["PURGE_RETENTION_DAYS"] == "28"
    assert env["GDPR_MAX_AGE_DAYS"] == "30"
    assert env["COUCHDB_DATABASE"] == "onboarding"


def test_purged_data_is_never_older_than_29_days_and_7_hours(stack: list[Recorded]) -> None:
    """What the rendered CronJob gives, read as the controller reads it: the retention, the
    longest wait between two runs in its zone (25 h when the clocks go back), one run."""
    spec = purge_job(stack).spec
    retention = timedelta(days=int(purge_env(stack)["PURGE_RETENTION_DAYS"]))
    gap = longest_gap(spec["schedule"], spec["timeZone"]).length
    run = timedelta(seconds=spec["jobTemplate"]["spec"]["activeDeadlineSeconds"])
    assert (gap, run) == (timedelta(hours=25), timedelta(hours=6))
    assert retention + gap + run == timedelta(days=29, hours=7)


def test_purge_never_overlaps_itself_and_is_bounded(stack: list[Recorded]) -> None:
    spec = purge_job(stack).spec
    assert spec["concurrencyPolicy"] == "Forbid"
    assert spec["startingDeadlineSeconds"] > 0
    assert spec["jobTemplate"]["spec"]["activeDeadlineSeconds"] == 6 * 3600


def test_a_retention_over_the_budget_stops_the_program_before_the_purge() -> None:
    purge = {**raw_stack("prod")["purge"], "retentionDays": 29}
    with pytest.raises(pulumi.RunError, match=r"onboarding:purge.retentionDays = 29: the database"):
        run_program("prod", {"onboarding:purge": purge})
