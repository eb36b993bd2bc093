"""The SLA report against a real Prometheus loaded with a month of probes holding known
outages: the incidents it finds match the injected ones within one probe interval, and
the availability matches to the second.

The month is October 2026 in Europe/Paris: 31 days and one hour (the clocks go back on
the 25th), which a report counting 24-hour days would get wrong.
"""

from __future__ import annotations

import itertools
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml

from supervision.report_cli import main
from tests.supervision.prometheus_server import create_blocks, free_port, serve, write_openmetrics

pytestmark = [pytest.mark.prometheus, pytest.mark.slow]

STEP = 15  # seconds between probes
PROD_URL = "https://ouverture-compte.banque.example.fr/"
PREPROD_URL = "https://preprod.ouverture-compte.banque.example.fr/"
MONTH_START = datetime(2026, 9, 30, 22, 0, tzinfo=UTC)  # 2026-10-01 00:00 CEST
MONTH_END = datetime(2026, 10, 31, 23, 0, tzinfo=UTC)  # 2026-11-01 00:00 CET
DATA_START = datetime(2026, 9, 30, 20, 0, tzinfo=UTC)
DATA_END = datetime(2026, 11, 1, 1, 0, tzinfo=UTC)
NOW = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)


def ts(text: str) -> int:
    return int(datetime.fromisoformat(text).timestamp())


@dataclass(frozen=True)
class Outage:
    """The site really failed over [start, end) (unix seconds); probes inside it fail."""

    start: int
    end: int


OUTAGES = [
    Outage(ts("2026-10-07T01:12:00+00:00"), ts("2026-10-07T01:35:30+00:00")),  # on the grid
    Outage(ts("2026-10-10T12:00:00+00:00"), ts("2026-10-10T12:00:15+00:00")),  # one probe: a blip
    Outage(ts("2026-10-14T08:00:07+00:00"), ts("2026-10-14T08:04:52+00:00")),  # off the grid
    Outage(ts("2026-10-21T20:00:00+00:00"), ts("2026-10-21T20:02:00+00:00")),  # flapping...
    Outage(ts("2026-10-21T20:03:00+00:00"), ts("2026-10-21T20:05:00+00:00")),  # ...one incident
    Outage(
        ts("2026-10-25T00:50:00+00:00"), ts("2026-10-25T01:10:00+00:00")
    ),  # across the DST change
    Outage(
        ts("2026-10-31T22:55:00+00:00"), ts("2026-10-31T23:05:00+00:00")
    ),  # across the month end
]
# Prometheus (or the exporter) down: no probe result at all.
GAP = (ts("2026-10-28T11:00:00+00:00"), ts("2026-10-28T11:10:00+00:00"))

# What the report must find (merged flapping, the blip below the 60 s minimum left out,
# the last incident cut at the month's end).
EXPECTED_INCIDENTS = [
    (ts("2026-10-07T01:12:00+00:00"), ts("2026-10-07T01:35:30+00:00")),
    (ts("2026-10-14T08:00:07+00:00"), ts("2026-10-14T08:04:52+00:00")),
    (ts("2026-10-21T20:00:00+00:00"), ts("2026-10-21T20:05:00+00:00")),
    (ts("2026-10-25T00:50:00+00:00"), ts("2026-10-25T01:10:00+00:00")),
    (ts("2026-10-31T22:55:00+00:00"), int(MONTH_END.timestamp())),
]


def probe_times() -> list[int]:
    first, last = int(DATA_START.timestamp()), int(DATA_END.timestamp())
    return [t for t in range(first, last, STEP) if not GAP[0] <= t < GAP[1]]


def failed(at: int) -> bool:
    return any(o.start <= at < o.end for o in OUTAGES)


def expected_down_seconds(missing_data: str) -> int:
    """Counted unavailable time, from the samples by the definition of docs/sla.md."""
    start, end = int(MONTH_START.timestamp()), int(MONTH_END.timestamp())
    times = probe_times()
    down = sum(
        min(nxt, end) - max(at, start)
        for at, nxt in itertools.pairwise(times)
        if failed(at) and nxt > start and at < end
    )
    no_data = GAP[1] - GAP[0]
    return down + no_data if missing_data == "unavailable" else down


def alerts_series() -> list[tuple[dict[str, str], list[tuple[float, float]]]]:
    def firing(
        name: str, severity: str, env: str, start: str, end: str, *, state: str = "firing"
    ) -> tuple[dict[str, str], list[tuple[float, float]]]:
        labels = {
            "alertname": name,
            "alertstate": state,
            "severity": severity,
            "environment": env,
            "namespace": f"onboarding-{env}",
        }
        return labels, [(float(t), 1.0) for t in range(ts(start), ts(end), 30)]

    return [
        firing(
            "AvailabilityBudgetBurnFast",
            "page",
            "prod",
            "2026-10-07T01:14:00+00:00",
            "2026-10-07T01:37:00+00:00",
        ),
        firing(
            "CouchDBNodeDown",
            "page",
            "prod",
            "2026-10-25T00:47:00+00:00",
            "2026-10-25T01:12:00+00:00",
        ),
        firing(
            "BackupFailed",
            "ticket",
            "prod",
            "2026-10-12T01:20:00+00:00",
            "2026-10-12T09:00:00+00:00",
        ),
        # Not prod, or not firing: never in the prod report.
        firing(
            "CouchDBNodeDown",
            "page",
            "preprod",
            "2026-10-07T01:00:00+00:00",
            "2026-10-07T02:00:00+00:00",
        ),
        firing(
            "AvailabilityBudgetBurnFast",
            "page",
            "prod",
            "2026-10-07T01:13:00+00:00",
            "2026-10-07T01:14:00+00:00",
            state="pending",
        ),
    ]


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    root = tmp_path_factory.mktemp("prometheus")
    times = probe_times()
    prod = [(float(t), 0.0 if failed(t) else 1.0) for t in times]
    # preprod fails for a whole day: it must not leak into prod's figures.
    preprod_day = (ts("2026-10-07T00:00:00+00:00"), ts("2026-10-08T00:00:00+00:00"))
    preprod = [(float(t), 0.0) for t in times if preprod_day[0] <= t < preprod_day[1]]
    openmetrics = root / "series.om.txt"
    write_openmetrics(
        openmetrics,
        {
            "probe_success": [
                ({"job": "blackbox", "instance": PROD_URL}, prod),
                ({"job": "blackbox", "instance": PREPROD_URL}, preprod),
            ],
            "ALERTS": alerts_series(),
        },
    )
    data = root / "data"
    create_blocks(openmetrics, data)
    with serve(data, root / "prometheus.log") as url:
        yield url


@pytest.fixture
def contract(tmp_path: Path) -> Path:
    source = Path(__file__).resolve().parents[2] / "docs" / "contract.example.yaml"
    path = tmp_path / "contract.yaml"
    path.write_text(source.read_text(encoding="utf-8"), encoding="utf-8")
    return path


def run(prometheus: str, contract: Path, out: Path, *extra: str) -> int:
    return main(
        [
            "--prometheus-url",
            prometheus,
            "--environment",
            "prod",
            "--contract",
            str(contract),
            "--out",
            str(out),
            *extra,
        ],
        now=NOW,
    )


@pytest.fixture(scope="module")
def october(prometheus: str, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    # SLA_REPORT_EXAMPLE_OUT=docs/examples/sla-report-2026-10 regenerates the example.
    kept = os.environ.get("SLA_REPORT_EXAMPLE_OUT")
    out = Path(kept) if kept else tmp_path_factory.mktemp("report")
    contract = Path(__file__).resolve().parents[2] / "docs" / "contract.example.yaml"
    assert run(prometheus, contract, out, "--month", "2026-10") == 0
    return out, json.loads((out / "report.json").read_text())


def test_incidents_match_the_injected_outages_within_one_probe_interval(october) -> None:
    _, summary = october
    found = [
        (
            datetime.fromisoformat(i["start"]).timestamp(),
            datetime.fromisoformat(i["end"]).timestamp(),
        )
        for i in summary["incidents"]
    ]
    assert len(found) == len(EXPECTED_INCIDENTS), summary["incidents"]
    for (start, end), (exp_start, exp_end) in zip(found, EXPECTED_INCIDENTS, strict=True):
        assert 0 <= start - exp_start < STEP
        assert 0 <= end - exp_end < STEP


def test_availability_matches_to_the_second(october) -> None:
    _, summary = october
    period = int((MONTH_END - MONTH_START).total_seconds())
    assert period == 31 * 86400 + 3600
    counted = expected_down_seconds("unavailable")
    assert summary["seconds"]["period"] == period
    assert summary["seconds"]["no_data"] == GAP[1] - GAP[0]
    assert summary["seconds"]["counted_unavailable"] == counted
    assert summary["availability"] == pytest.approx(1 - counted / period, abs=1e-12)
    assert summary["probe_interval_seconds"] == STEP


def test_budget_sla_and_penalty_follow_the_contract(october) -> None:
    _, summary = october
    period = 31 * 86400 + 3600
    assert summary["seconds"]["error_budget"] == pytest.approx(0.001 * period)
    assert summary["error_budget_spent"] == pytest.approx(
        expected_down_seconds("unavailable") / (0.001 * period)
    )
    assert summary["sla_met"] is False
    # 99.85 %: below 99.9 %, not below 99.5 %: the 5 % tier of an 18,000 EUR fee.
    assert summary["penalty"] == {"percent_of_monthly_fee": 5, "amount": 900.0, "currency": "EUR"}


def test_alert_timeline_holds_only_this_environment_s_firing_alerts(october) -> None:
    _, summary = october
    names = [(a["alertname"], a["start"]) for a in summary["alerts"]]
    assert names == [
        ("AvailabilityBudgetBurnFast", "2026-10-07T01:14:00+00:00"),
        ("BackupFailed", "2026-10-12T01:20:00+00:00"),
        ("CouchDBNodeDown", "2026-10-25T00:47:00+00:00"),
    ]
    first_pages = [i["first_page"] for i in summary["incidents"]]
    assert first_pages == ["AvailabilityBudgetBurnFast", None, None, "CouchDBNodeDown", None]


def test_writes_markdown_html_chart_and_a_prefilled_incident_report_each(october) -> None:
    out, _ = october
    assert (out / "availability.png").read_bytes().startswith(b"\x89PNG")
    markdown = (out / "report.md").read_text()
    assert "**MISSED**" in markdown and "99.8490 %" in markdown
    assert "10 min 00 s" in markdown  # the data gap, listed
    html = (out / "report.html").read_text()
    assert "data:image/png;base64," in html and "MISSED" in html
    for number in range(1, len(EXPECTED_INCIDENTS) + 1):
        incident = (out / f"incident-{number}.md").read_text()
        for section in (
            "## Summary",
            "## Impact",
            "## Timeline",
            "## Detection",
            "## Resolution",
            "## Action items",
        ):
            assert section in incident
        assert "Personal data exposed: unknown, to confirm" in incident
        assert "SLA clock: report due" in incident
    dst = (out / "incident-4.md").read_text()
    # 00:50 UTC is 02:50 summer time; 01:10 UTC is 02:10 winter time, twenty minutes later.
    assert "2026-10-25 02:50:00 CEST" in dst and "2026-10-25 02:10:00 CET" in dst
    assert "| **SLA clock: report due** | **2026-10-27 01:50:00 CET** " in dst


def test_missing_data_excluded_counts_measured_time_only(prometheus, contract, tmp_path) -> None:
    terms = yaml.safe_load(contract.read_text())
    contract.write_text(yaml.safe_dump({**terms, "missing_data": "excluded"}))
    assert run(prometheus, contract, tmp_path, "--month", "2026-10") == 0
    summary = json.loads((tmp_path / "report.json").read_text())
    measured = 31 * 86400 + 3600 - (GAP[1] - GAP[0])
    down = expected_down_seconds("excluded")
    assert summary["seconds"]["counted_unavailable"] == down
    assert summary["availability"] == pytest.approx(1 - down / measured, abs=1e-12)
    assert any("left out of the availability" in w for w in summary["warnings"])


def test_a_period_without_data_is_an_error_not_100_percent(
    prometheus, contract, tmp_path, capsys
) -> None:
    assert run(prometheus, contract, tmp_path, "--month", "2026-08") == 4
    assert "no probe_success" in capsys.readouterr().err
    assert not (tmp_path / "report.md").exists()


def test_an_arbitrary_period_is_prorated(prometheus, contract, tmp_path) -> None:
    code = run(
        prometheus,
        contract,
        tmp_path,
        "--start",
        "2026-10-07T00:00:00",
        "--end",
        "2026-10-08T00:00:00",
    )
    assert code == 0
    summary = json.loads((tmp_path / "report.json").read_text())
    assert summary["seconds"]["period"] == 86400
    assert summary["seconds"]["counted_unavailable"] == 1410
    # 98.37 %: the 30 % tier, on one thirtieth of the monthly fee.
    assert summary["penalty"]["amount"] == pytest.approx(18000 / 30 * 0.30)


def test_an_unreachable_prometheus_is_named(contract, tmp_path, capsys) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    assert run(url, contract, tmp_path, "--month", "2026-10") == 3
    assert f"cannot reach Prometheus at {url}" in capsys.readouterr().err
