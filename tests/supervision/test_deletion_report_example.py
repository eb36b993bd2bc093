"""The sample deletion report (docs/examples/deletion-report-2026-11): November 2026 of an
ordinary month, by the real CLI from a real Prometheus, which must come out clean.

    DELETION_REPORT_EXAMPLE_OUT=docs/examples/deletion-report-2026-11 \\
        pytest tests/supervision/test_deletion_report_example.py

writes the sample. Its runs are synthetic unless DELETION_REPORT_RUNS names a JSON-lines file
of real couchops runs (tests/supervision/pushgateway.py:load_runs): each scheduled run of the
month then takes the counts, duration and outcome of a real run of the same operation, in
turn; only the times follow the schedule.
"""

from __future__ import annotations

import itertools
import json
import os
import random
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from supervision.deletion_report_cli import main
from tests.supervision.prometheus_server import create_blocks, serve, write_openmetrics
from tests.supervision.pushgateway import Push, by_operation, load_runs, scraped

pytestmark = [pytest.mark.prometheus, pytest.mark.slow]

PARIS = ZoneInfo("Europe/Paris")
HOUR, DAY = 3600, 86400
SCRAPE = 120
CONTRACT = Path(__file__).resolve().parents[2] / "docs" / "contract.example.yaml"
NOW = datetime(2026, 12, 2, 9, 0, tzinfo=UTC)
DATA_START = datetime(2026, 10, 28, 0, 0, tzinfo=UTC)
DATA_END = datetime(2026, 12, 1, 1, 0, tzinfo=UTC)
BACKUP_WINDOW = 30 * DAY - 7 * DAY - HOUR  # what a backup may copy (couchops/retention.py)
# One expiry run fails (the volume remounted), the next one catches up.
EXPIRY_FAILS = datetime(2026, 11, 17, 14, 7, tzinfo=PARIS).timestamp()


def _synthetic_day(day: date, rng: random.Random) -> list[Push]:
    start = datetime(day.year, day.month, day.day, 3, 30, tzinfo=PARIS).timestamp()
    # Sign-ups 28 days earlier: fewer at weekends.
    signups = day - timedelta(days=28)
    documents = rng.randint(40, 90) if signups.weekday() >= 5 else rng.randint(120, 220)
    duration = rng.uniform(95, 260)
    purge = Push(
        "purge",
        start + duration,
        duration=duration,
        counts={
            "documents_purged": documents,
            "revisions_purged": round(documents * rng.uniform(1.4, 2.1)),
            "databases": 1,
            "databases_failed": 0,
        },
    )
    audit_start = purge.end + 15
    audit_duration = rng.uniform(40, 120)
    # The newest backup older than six days was taken at 01:15 with data up to the window.
    backup_taken = datetime(day.year, day.month, day.day, 1, 15, tzinfo=PARIS).timestamp() - 6 * DAY
    audit = Push(
        "audit",
        audit_start + audit_duration,
        duration=audit_duration,
        counts={
            "findings": 0,
            "databases": 1,
            "backups": 7,
            "oldest_database_data_age_seconds": 28 * DAY
            + (audit_start - start)
            - rng.uniform(0, 300),
            "oldest_backup_data_age_seconds": BACKUP_WINDOW + audit_start - backup_taken,
            "cutoff_age_seconds": 30 * DAY,
        },
    )
    return [purge, audit]


def _synthetic_expiries() -> list[Push]:
    pushes = []
    hour = DATA_START
    while hour < DATA_END:
        start = hour.timestamp() + 7 * 60
        local = datetime.fromtimestamp(start, PARIS)
        if start == EXPIRY_FAILS:
            pushes.append(Push("backup-expire", start + 2, success=False, duration=2))
        else:
            due = local.hour == 2
            counts = {"expired_deleted": 1.0 if due else 0.0, "backups_kept": 7.0}
            pushes.append(Push("backup-expire", start + 2, duration=2, counts=counts))
        hour += timedelta(hours=1)
    return pushes


def synthetic_pushes() -> list[Push]:
    rng = random.Random(202611)
    days = [DATA_START.date() + timedelta(days=n) for n in range(34)]
    return [p for day in days for p in _synthetic_day(day, rng)] + _synthetic_expiries()


def from_real_runs(path: Path) -> list[Push]:
    """The synthetic schedule, each run taking a real run's outcome, duration and counts."""
    real = {op: itertools.cycle(runs) for op, runs in by_operation(load_runs(path)).items()}
    pushes = []
    for scheduled in synthetic_pushes():
        if scheduled.operation not in real:
            pushes.append(scheduled)
            continue
        run = next(real[scheduled.operation])
        start = scheduled.start
        pushes.append(
            Push(run.operation, start + run.duration, run.success, run.duration, run.counts)
        )
    return pushes


RUNS_FILE = os.environ.get("DELETION_REPORT_RUNS")
PUSHES = from_real_runs(Path(RUNS_FILE)) if RUNS_FILE else synthetic_pushes()


@pytest.fixture(scope="module")
def november(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, dict[str, Any]]]:
    root = tmp_path_factory.mktemp("prometheus")
    openmetrics = root / "series.om.txt"
    write_openmetrics(
        openmetrics, scraped(PUSHES, "prod", DATA_START.timestamp(), DATA_END.timestamp(), SCRAPE)
    )
    create_blocks(openmetrics, root / "data")
    kept = os.environ.get("DELETION_REPORT_EXAMPLE_OUT")
    out = Path(kept) if kept else tmp_path_factory.mktemp("november")
    with serve(root / "data", root / "prometheus.log") as url:
        code = main(
            [
                "--prometheus-url",
                url,
                "--environment",
                "prod",
                "--month",
                "2026-11",
                "--contract",
                str(CONTRACT),
                "--out",
                str(out),
            ],
            now=NOW,
        )
    assert code == 0
    yield out, json.loads((out / "deletion-report.json").read_text())


@pytest.mark.skipif(bool(RUNS_FILE), reason="real runs decide their own outcome")
def test_an_ordinary_month_is_clean(november) -> None:
    _, summary = november
    assert summary["verdict"]["clean"], summary["verdict"]
    assert summary["verdict"]["text"].startswith(
        "No personal data older than 30 days was readable during November 2026: 30 completed "
        "audits found none"
    )
    assert (summary["purge"]["runs"], summary["purge"]["failures"]) == (30, 0)
    month = [
        p
        for p in PUSHES
        if p.operation == "purge"
        and datetime(2026, 11, 1, tzinfo=PARIS).timestamp()
        <= p.end
        < datetime(2026, 12, 1, tzinfo=PARIS).timestamp()
    ]
    assert summary["purge"]["documents_purged"] == sum(p.counts["documents_purged"] for p in month)
    # The one failed expiry run is a ticket for an hour, not a threat to the budget.
    assert [i["alert"] for i in summary["incidents"]] == ["BackupExpiryFailed"]


def test_the_sample_holds_every_output(november) -> None:
    out, _ = november
    names = {p.name for p in out.iterdir()}
    assert {
        "deletion-report.md",
        "deletion-report.html",
        "deletion-report.json",
        "deletions.png",
    } <= names
