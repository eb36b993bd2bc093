"""The deletion report against a real Prometheus holding a month of couchops runs as the
Pushgateway serves them: every figure is checked against the injected runs.

October 2026 in Europe/Paris, with the clocks going back on the 25th. Purge at 03:30 (2.5
min), the audit after it (1.5 min), the backup expiry hourly at :07 (4 s), and:

- 6th: the purge fails before counting (no counts pushed), no audit;
- 12th: the purge fails for one database of three (counts pushed); the audit finds the
  databases' oldest data 28 d 23 h old (inside the budget);
- 18th: the Job never runs: no purge, no audit;
- 19th 23:07 to 20th 06:07: eight expiry runs fail (no counts); the audit of the 20th finds
  2 items in the backups, the oldest 30 d 2 h 30 min old; an audit on demand at 11:15 finds
  them gone;
- 25th (25 h after the 24th's start): the purge lasts 5 h;
- 27th: the audit fails before counting.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from supervision.deletion_report_cli import main
from tests.supervision.prometheus_server import create_blocks, serve, write_openmetrics
from tests.supervision.pushgateway import Push, scraped

pytestmark = [pytest.mark.prometheus, pytest.mark.slow]

PARIS = ZoneInfo("Europe/Paris")
HOUR, DAY = 3600, 86400
SCRAPE = 120  # seconds between scrapes of the Pushgateway
STEP = 60  # the report evaluates the alert conditions every minute
CONTRACT = Path(__file__).resolve().parents[2] / "docs" / "contract.example.yaml"
NOW = datetime(2026, 12, 2, 9, 0, tzinfo=UTC)
DATA_START = datetime(2026, 9, 27, 0, 0, tzinfo=UTC)
DATA_END = datetime(2026, 11, 1, 1, 0, tzinfo=UTC)

OLDEST_DB = 27 * DAY + 23 * HOUR
OLDEST_BACKUP = 29 * DAY + HOUR
LIMIT = 30 * DAY


def local(text: str) -> float:
    """Unix seconds of a wall-clock time in Paris."""
    return datetime.fromisoformat(text).replace(tzinfo=PARIS).timestamp()


def iso(text: str) -> str:
    """The report's JSON form (UTC) of a wall-clock time in Paris."""
    return datetime.fromtimestamp(local(text), UTC).isoformat()


def purge_counts(day: date) -> dict[str, float]:
    documents = 40 + 3 * day.day
    return {
        "documents_purged": documents,
        "revisions_purged": 2 * documents + 1,
        "databases": 3,
        "databases_failed": 0,
    }


def audit_counts(db: float = OLDEST_DB, backup: float = OLDEST_BACKUP, findings: float = 0) -> Any:
    return {
        "findings": findings,
        "databases": 3,
        "backups": 7,
        "oldest_database_data_age_seconds": db,
        "oldest_backup_data_age_seconds": backup,
        "cutoff_age_seconds": LIMIT,
    }


def day_pushes(day: date) -> list[Push]:
    if day == date(2026, 10, 18):
        return []
    start = local(f"{day}T03:30:00")
    if day == date(2026, 10, 6):
        return [Push("purge", start + 40, success=False, duration=40)]
    duration = 5 * HOUR if day == date(2026, 10, 25) else 150
    counts = purge_counts(day)
    if day == date(2026, 10, 12):
        counts = {
            "documents_purged": 812,
            "revisions_purged": 1700,
            "databases": 3,
            "databases_failed": 1,
        }
    purge = Push("purge", start + duration, success=day != date(2026, 10, 12), duration=duration)
    purge = Push(purge.operation, purge.end, purge.success, purge.duration, counts)
    audit_start = purge.end + 20
    if day == date(2026, 10, 27):
        return [purge, Push("audit", audit_start + 30, success=False, duration=30)]
    audit = audit_counts()
    if day == date(2026, 10, 12):
        audit = audit_counts(db=28 * DAY + 23 * HOUR)
    if day == date(2026, 10, 20):
        audit = audit_counts(backup=30 * DAY + 2 * HOUR + 1800, findings=2)
    pushes = [purge, Push("audit", audit_start + 90, duration=90, counts=audit)]
    if day == date(2026, 10, 20):
        on_demand = audit_counts(db=28 * DAY + 7 * HOUR, backup=23 * DAY)
        pushes.append(Push("audit", local(f"{day}T11:16:30"), duration=90, counts=on_demand))
    return pushes


EXPIRY_DOWN = (local("2026-10-19T23:00:00"), local("2026-10-20T06:30:00"))


def expiry_pushes() -> list[Push]:
    pushes = []
    hour = DATA_START
    while hour < DATA_END:
        start = hour.timestamp() + 7 * 60
        if EXPIRY_DOWN[0] <= start < EXPIRY_DOWN[1]:
            pushes.append(Push("backup-expire", start + 4, success=False, duration=4))
        else:
            # The day's oldest backup expires just after midnight UTC; on the 20th the first
            # run that succeeds deletes it.
            due = hour.hour == 0 or start == local("2026-10-20T07:07:00")
            counts = {"expired_deleted": 1.0 if due else 0.0, "backups_kept": 7.0}
            pushes.append(Push("backup-expire", start + 4, duration=4, counts=counts))
        hour += timedelta(hours=1)
    return pushes


def october_pushes() -> list[Push]:
    days = [date(2026, 9, 27) + timedelta(days=n) for n in range(35)]
    return [p for day in days for p in day_pushes(day)] + expiry_pushes()


PUSHES = october_pushes()
MONTH = (local("2026-10-01T00:00:00"), local("2026-11-01T00:00:00"))


def in_month(operation: str) -> list[Push]:
    return [p for p in PUSHES if p.operation == operation and MONTH[0] <= p.end < MONTH[1]]


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    root = tmp_path_factory.mktemp("prometheus")
    openmetrics = root / "series.om.txt"
    families = scraped(PUSHES, "prod", DATA_START.timestamp(), DATA_END.timestamp(), SCRAPE)
    # preprod's purge never runs in October: nothing of it may reach prod's report.
    families["couchops_run_success"].append(
        (
            {"job": "couchops", "operation": "purge", "environment": "preprod"},
            [(local("2026-10-10T00:00:00") + n * SCRAPE, 0.0) for n in range(100)],
        )
    )
    write_openmetrics(openmetrics, families)
    data = root / "data"
    create_blocks(openmetrics, data)
    with serve(data, root / "prometheus.log") as url:
        yield url


def run(prometheus: str, out: Path, *period: str) -> int:
    return main(
        [
            "--prometheus-url",
            prometheus,
            "--environment",
            "prod",
            "--contract",
            str(CONTRACT),
            "--out",
            str(out),
            *period,
        ],
        now=NOW,
    )


@pytest.fixture(scope="module")
def october(
    prometheus: str, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, dict[str, Any]]:
    out = tmp_path_factory.mktemp("october")
    assert run(prometheus, out, "--month", "2026-10") == 0
    return out, json.loads((out / "deletion-report.json").read_text())


def within(found: str, expected: str, late: int) -> bool:
    """A time the report derived from scrapes: no earlier than the truth, at most `late`
    seconds after it (a scrape interval and an evaluation step)."""
    delay = datetime.fromisoformat(found).timestamp() - local(expected)
    return 0 <= delay <= late


# (alert, from, to) in Paris time, from the runs above: a failure holds from its push to the
# next run's; a staleness from the last success + 32 h (3 h for the expiry) to the next one.
EXPECTED_INCIDENTS = [
    ("GDPRPurgeFailed", "2026-10-06T03:30:40", "2026-10-07T03:32:30"),
    ("GDPRPurgeStale", "2026-10-06T11:32:30", "2026-10-07T03:32:30"),
    ("GDPRAuditStale", "2026-10-06T11:34:20", "2026-10-07T03:34:20"),
    ("GDPRPurgeFailed", "2026-10-12T03:32:30", "2026-10-13T03:32:30"),
    ("GDPRPurgeStale", "2026-10-12T11:32:30", "2026-10-13T03:32:30"),
    ("GDPRPurgeStale", "2026-10-18T11:32:30", "2026-10-19T03:32:30"),
    ("GDPRAuditStale", "2026-10-18T11:34:20", "2026-10-19T03:34:20"),
    ("BackupExpiryFailed", "2026-10-19T23:07:04", "2026-10-20T07:07:04"),
    ("BackupExpiryStale", "2026-10-20T01:07:04", "2026-10-20T07:07:04"),
    ("GDPRAuditFindings", "2026-10-20T03:34:20", "2026-10-20T11:16:30"),
    ("GDPRAuditFailed", "2026-10-27T03:33:20", "2026-10-28T03:34:20"),
    ("GDPRAuditStale", "2026-10-27T11:34:20", "2026-10-28T03:34:20"),
]


def test_incidents_are_when_each_gdpr_alert_condition_held(october) -> None:
    _, summary = october
    found = summary["incidents"]
    assert [i["alert"] for i in found] == [alert for alert, _, _ in EXPECTED_INCIDENTS], found
    for incident, (alert, start, end) in zip(found, EXPECTED_INCIDENTS, strict=True):
        assert within(incident["start"], start, SCRAPE + STEP), (alert, incident)
        assert within(incident["end"], end, SCRAPE + STEP), (alert, incident)
        assert not incident["began_before_period"] and not incident["ongoing_at_period_end"]


def test_the_night_the_clocks_go_back_a_5_hour_purge_is_no_incident(october) -> None:
    _, summary = october
    # The 24th's purge ended 01:32:30 UTC, the 25th's 07:30 UTC: 29 h 57 min 30 s apart,
    # over the 26 h the staleness alert used to allow, under its 32 h.
    ends = [
        p.end for p in in_month("purge") if date(2026, 10, 24) <= _day(p.end) <= date(2026, 10, 25)
    ]
    assert ends[1] - ends[0] == 29 * HOUR + 57 * 60 + 30
    assert not [
        i for i in summary["incidents"] if "2026-10-25" in i["start"] or "2026-10-25" in i["end"]
    ]
    day = next(d for d in summary["days"] if d["day"] == "2026-10-25")
    assert day["purge_runs"] == 1 and day["purge_failures"] == 0


def _day(at: float) -> date:
    return datetime.fromtimestamp(at, PARIS).date()


def test_purge_runs_and_deletions_per_day_are_the_pushed_counts(october) -> None:
    _, summary = october
    purges = in_month("purge")
    purge = summary["purge"]
    assert (purge["runs"], purge["successes"], purge["failures"]) == (30, 28, 2)
    assert purge["days_without_run"] == ["2026-10-18"]
    assert [r["end"] for r in purge["list"]] == [
        datetime.fromtimestamp(p.end, UTC).isoformat() for p in purges
    ]
    # The 6th pushed no counts: the 5th's are still on the Pushgateway, never the 6th's.
    sixth = next(r for r in purge["list"] if r["end"].startswith("2026-10-06"))
    assert sixth["success"] is False and sixth["counts"] is None
    assert purge["documents_purged"] == sum(p.counts.get("documents_purged", 0) for p in purges)
    assert purge["revisions_purged"] == sum(p.counts.get("revisions_purged", 0) for p in purges)
    assert purge["databases_failed"] == 1
    for row in summary["days"]:
        that_day = [p for p in purges if _day(p.end).isoformat() == row["day"]]
        reported = [p for p in that_day if p.counts]
        assert row["purge_runs"] == len(that_day), row
        for count in ("documents_purged", "revisions_purged"):
            expected = sum(p.counts[count] for p in reported) if reported else None
            assert row[count] == expected, (row, count)
    # Nothing reported on the 6th (failed before counting) nor the 18th (no run).
    assert [d["day"] for d in summary["days"] if d["documents_purged"] is None] == [
        "2026-10-06",
        "2026-10-18",
    ]
    twelfth = next(d for d in summary["days"] if d["day"] == "2026-10-12")
    assert (twelfth["documents_purged"], twelfth["databases_failed"]) == (812, 1)
    assert len(summary["days"]) == 31


def test_audits_their_findings_and_the_oldest_data_of_each_copy(october) -> None:
    _, summary = october
    audits = summary["audits"]
    assert (audits["runs"], audits["completed"], audits["failed"]) == (30, 29, 1)
    assert [a["end"] for a in audits["with_findings"]] == [iso("2026-10-20T03:34:20")]
    assert audits["with_findings"][0]["counts"]["findings"] == 2
    assert audits["oldest"] == {
        "databases": {"age_seconds": 28 * DAY + 23 * HOUR, "audit_end": iso("2026-10-12T03:34:20")},
        "backups": {"age_seconds": 30 * DAY + 2.5 * HOUR, "audit_end": iso("2026-10-20T03:34:20")},
    }


def test_backup_expiries_count_only_what_the_runs_that_succeeded_deleted(october) -> None:
    _, summary = october
    expiry = summary["backup_expiry"]
    runs = in_month("backup-expire")
    assert len(runs) == 31 * 24 + 1  # hourly, and the hour the clocks went back
    assert (expiry["runs"], expiry["failures"]) == (len(runs), 8)
    assert expiry["expired_deleted"] == sum(p.counts.get("expired_deleted", 0) for p in runs) == 31
    twentieth = next(d for d in summary["days"] if d["day"] == "2026-10-20")
    assert twentieth["backups_expired"] == 1
    assert any("10 failed run(s) pushed no counts" in w for w in summary["warnings"])


def test_the_verdict_says_when_data_past_30_days_was_readable(october) -> None:
    _, summary = october
    verdict = summary["verdict"]
    assert verdict["found"] and not verdict["clean"]
    found = [e for e in verdict["exposures"] if e["found"]]
    # The audit started 03:32:50 and read backup data 30 d 2 h 30 min old: it passed 30 days
    # at 01:02:50; the audit on demand, started 11:15:00, found it gone.
    assert found == [
        {
            "copy": "backups",
            "found": True,
            "start": iso("2026-10-20T01:02:50"),
            "end": iso("2026-10-20T11:15:00"),
            "audit_end": iso("2026-10-20T03:34:20"),
            "reason": None,
        }
    ]
    assert verdict["text"].startswith(
        "Personal data older than 30 days WAS readable during October 2026: in the backups "
        "from 2026-10-20 01:02 CEST to 2026-10-20 11:15 CEST"
    )


def test_a_missed_purge_leaves_the_data_unproven_for_the_next_run_s_length(october) -> None:
    _, summary = october
    unproven = [e for e in summary["verdict"]["exposures"] if not e["found"]]
    # 28 days of retention leave 48 h from a successful purge's start: after a day without a
    # success, the data may pass 30 days until the next purge has ended (2.5 min).
    databases = [(e["start"], e["end"]) for e in unproven if e["copy"] == "databases"]
    assert databases == [
        (iso(f"2026-10-{day:02d}T03:30:00"), iso(f"2026-10-{day:02d}T03:32:30"))
        for day in (7, 13, 19)
    ]
    (backups,) = [e for e in unproven if e["copy"] == "backups"]
    assert within(backups["start"], "2026-10-20T01:07:04", SCRAPE + STEP)
    assert within(backups["end"], "2026-10-20T07:07:04", SCRAPE + STEP)


def test_a_period_without_finding_is_declared_clean(prometheus, tmp_path) -> None:
    assert run(prometheus, tmp_path, "--start", "2026-10-01", "--end", "2026-10-06") == 0
    summary = json.loads((tmp_path / "deletion-report.json").read_text())
    assert summary["verdict"]["clean"]
    assert summary["verdict"]["text"].startswith(
        "No personal data older than 30 days was readable during 2026-10-01 00:00 to "
        "2026-10-06 00:00 CEST: 5 completed audits found none"
    )
    assert summary["purge"]["runs"] == 5 and summary["incidents"] == []


def test_writes_markdown_html_and_the_chart(october) -> None:
    out, summary = october
    assert (out / "deletions.png").read_bytes().startswith(b"\x89PNG")
    markdown = (out / "deletion-report.md").read_text()
    assert f"**{summary['verdict']['text']}**" in markdown
    assert "| Sun 18 Oct | **no purge run** |" in markdown
    assert "not reported" in markdown
    html = (out / "deletion-report.html").read_text()
    assert "data:image/png;base64," in html and "WAS readable" in html


def test_a_month_without_couchops_data_is_an_error(prometheus, tmp_path, capsys) -> None:
    assert run(prometheus, tmp_path, "--month", "2026-08") == 4
    assert "no couchops series of prod" in capsys.readouterr().err
