"""components/gdpr_purge.py: daily, 30 days at most, never two runs at once."""

from __future__ import annotations

from datetime import timedelta

import pulumi
import pytest

from components.gdpr_purge import GdprPurge, GdprPurgeArgs
from infra.settings import longest_gap
from tests.unit.harness import Recorded, RecordingMocks, one


def purge_job(stack: list[Recorded]) -> Recorded:
    return one(stack, "CronJob", "couchops-purge")


def test_purge_runs_at_least_daily_with_retention_at_most_30_days(stack: list[Recorded]) -> None:
    cron = purge_job(stack)
    assert longest_gap(cron.spec["schedule"]) <= timedelta(days=1)
    container = cron.spec["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert container["args"] == ["purge"]
    assert 1 <= int(env["PURGE_RETENTION_DAYS"]) <= 30
    assert env["COUCHDB_DATABASE"] == "onboarding"


def test_purge_never_overlaps_itself_and_is_bounded(stack: list[Recorded]) -> None:
    spec = purge_job(stack).spec
    assert spec["concurrencyPolicy"] == "Forbid"
    assert spec["startingDeadlineSeconds"] > 0
    assert 0 < spec["jobTemplate"]["spec"]["activeDeadlineSeconds"] < 24 * 3600


def test_purge_component_refuses_a_retention_beyond_30_days() -> None:
    pulumi.runtime.set_mocks(RecordingMocks(), project="p", stack="prod")
    with pytest.raises(ValueError, match=r"31 days is outside 1\.\.30"):
        GdprPurge(
            "purge",
            GdprPurgeArgs(
                namespace="ns", ops=None, database="db", schedule="0 2 * * *", retention_days=31
            ),  # type: ignore[arg-type]
        )
