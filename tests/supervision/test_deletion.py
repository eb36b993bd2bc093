"""The deletion report's arithmetic on hand-written samples: cases a month of runs in the
real Prometheus does not show."""

from __future__ import annotations

from supervision.deletion import Run, found_exposures, held, merge, runs_from_series

MINUTE = 60_000


def _key(name: str, **labels: str) -> tuple[tuple[str, str], ...]:
    return tuple(sorted({"__name__": name, "operation": "purge", **labels}.items()))


def test_a_run_scraped_by_two_prometheus_replicas_is_one_run_seen_at_the_first_scrape() -> None:
    found = {}
    for replica, offset in (("a", 20_000), ("b", 5_000)):
        at = [offset + n * MINUTE for n in range(4)]
        found[_key("couchops_last_run_timestamp_seconds", replica=replica)] = [
            (at[0], 100.0),
            (at[1], 100.0),
            (at[2], 160.0),
            (at[3], 160.0),
        ]
        found[_key("couchops_run_success", replica=replica)] = [(t, 1.0) for t in at]
        found[_key("couchops_purge_documents_purged", replica=replica)] = [
            (at[0], 7.0),
            (at[1], 7.0),
            (at[2], 9.0),
            (at[3], 9.0),
        ]
    runs = runs_from_series(found, "purge", ["documents_purged"])
    assert [(r.at, r.seen, r.counts["documents_purged"]) for r in runs] == [
        (100_000, 5_000, 7.0),
        (160_000, 5_000 + 2 * MINUTE, 9.0),
    ]


def test_a_condition_holding_across_the_period_bounds_is_cut_and_flagged() -> None:
    start, end = 10 * MINUTE, 20 * MINUTE
    points = [(t * MINUTE, 1.0) for t in (9, 10, 11)] + [(t * MINUTE, 3.0) for t in (15, 19)]
    first, middle, last = held([points], MINUTE, start, end)
    assert (first.start, first.end, first.cut_at_start, first.cut_at_end) == (
        start,
        12 * MINUTE,
        True,
        False,
    )
    assert (middle.start, middle.end, middle.peak) == (15 * MINUTE, 16 * MINUTE, 3.0)
    assert (last.start, last.end, last.cut_at_end) == (19 * MINUTE, end, True)


def test_an_audit_with_findings_of_unknown_age_is_found_until_an_audit_finds_nothing() -> None:
    """Rows an index kept of documents that exist nowhere have no age the audit can read; the
    audit still failed with findings, so the report may not call the month clean."""
    hour = 60 * MINUTE
    audits = [
        Run(
            at=10 * hour,
            seen=10 * hour,
            success=False,
            duration_ms=MINUTE,
            counts={"findings": 3745.0, "oldest_database_data_age_seconds": 25 * 86400.0},
        ),
        Run(
            at=34 * hour,
            seen=34 * hour,
            success=False,
            duration_ms=MINUTE,
            counts={"findings": 12.0, "oldest_database_data_age_seconds": 25 * 86400.0},
        ),
        Run(
            at=58 * hour,
            seen=58 * hour,
            success=True,
            duration_ms=MINUTE,
            counts={"findings": 0.0, "oldest_database_data_age_seconds": 25 * 86400.0},
        ),
    ]
    exposures = merge(found_exposures(audits, 30 * 86400_000, 0, 100 * hour))
    assert [(e.start, e.end, e.copy, e.found) for e in exposures] == [
        (10 * hour - MINUTE, 58 * hour - MINUTE, "databases", True)
    ]
    assert "3745 items past its limit" in exposures[0].reason
