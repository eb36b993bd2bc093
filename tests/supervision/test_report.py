"""The report's edges without a server: periods, contracts, the HTTP client's errors, and a
report built from canned samples."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import responses
import yaml

from supervision.context import default_context
from supervision.contract import Contract, ContractError, load_contract
from supervision.prometheus import PrometheusClient, PrometheusError, PrometheusUnreachable
from supervision.report import (
    NoDataError,
    PeriodError,
    build_report,
    fmt_duration,
    month_bounds,
    resolve_period,
    write_report,
)
from supervision.report_cli import main

ROOT = Path(__file__).resolve().parents[2]
PARIS = ZoneInfo("Europe/Paris")
NOW = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
URL = "http://127.0.0.1:9"


def period(**kwargs: Any) -> Any:
    return resolve_period(
        month=kwargs.get("month"),
        start=kwargs.get("start"),
        end=kwargs.get("end"),
        tz=PARIS,
        now=kwargs.get("now", NOW),
    )


def test_a_month_is_the_calendar_month_in_the_contract_zone() -> None:
    p = period(month="2026-10")
    assert p.start.isoformat() == "2026-10-01T00:00:00+02:00"
    assert p.end.isoformat() == "2026-11-01T00:00:00+01:00"
    assert p.calendar_month and not p.partial
    assert month_bounds("2026-12", PARIS)[1].isoformat() == "2027-01-01T00:00:00+01:00"


def test_a_month_not_over_is_partial_and_stops_before_now() -> None:
    p = period(month="2026-11")
    assert p.partial
    assert p.end == datetime(2026, 11, 2, 8, 59, tzinfo=UTC)


def test_times_without_offset_are_local_and_now_is_accepted() -> None:
    p = period(start="2026-10-07", end="now")
    assert p.start.isoformat() == "2026-10-07T00:00:00+02:00"
    assert p.partial and not p.calendar_month


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"month": "2026-13"}, "is not a month"),
        ({"month": "October"}, "is not a month"),
        ({"start": "2026-10-08", "end": "2026-10-07"}, "ends"),
        ({"start": "yesterday", "end": "now"}, "is not an ISO 8601"),
        ({"start": "2026-10-01"}, "give a period"),
        ({"month": "2026-10", "start": "2026-10-01"}, "either --month"),
        ({"month": "2027-01"}, "starts in the future"),
    ],
)
def test_bad_periods_are_refused_with_a_reason(kwargs: dict[str, str], message: str) -> None:
    with pytest.raises(PeriodError, match=message):
        period(**kwargs)


def test_the_example_contract_loads() -> None:
    contract = load_contract(ROOT / "docs" / "contract.example.yaml")
    assert contract.availability_target == 0.999
    assert contract.penalty_tier(0.9995) is None
    assert contract.penalty_tier(0.9985).percent_of_monthly_fee == 5  # type: ignore[union-attr]
    assert contract.penalty_tier(0.993).percent_of_monthly_fee == 15  # type: ignore[union-attr]
    assert contract.penalty_tier(0.5).percent_of_monthly_fee == 30  # type: ignore[union-attr]
    assert contract.penalty_tier(None) is None


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"missing_data": "ignored"}, "missing_data"),
        ({"timezone": "Mars/Olympus"}, "unknown time zone"),
        (
            {
                "penalties": [
                    {"below": 0.99, "percent_of_monthly_fee": 5},
                    {"below": 0.995, "percent_of_monthly_fee": 9},
                ]
            },
            "decreasing",
        ),
        ({"availability_target": 1.5}, "availability_target"),
        ({"surprise": 1}, "surprise"),
    ],
)
def test_a_bad_contract_names_the_key(tmp_path: Path, change: dict[str, Any], message: str) -> None:
    terms = yaml.safe_load((ROOT / "docs" / "contract.example.yaml").read_text())
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({**terms, **change}))
    with pytest.raises(ContractError, match=message):
        load_contract(path)


def test_a_missing_contract_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ContractError, match="cannot read the contract"):
        load_contract(tmp_path / "none.yaml")


@responses.activate
def test_prometheus_errors_are_reported_with_their_reason() -> None:
    client = PrometheusClient(URL, retries=0)
    responses.post(
        f"{URL}/api/v1/query",
        json={"status": "error", "errorType": "bad_data", "error": "parse error"},
        status=400,
    )
    with pytest.raises(PrometheusError, match="HTTP 400: bad_data parse error"):
        client.samples("up", 0, 1000)
    responses.replace(responses.POST, f"{URL}/api/v1/query", body="<html>login</html>", status=200)
    with pytest.raises(PrometheusError, match="without JSON"):
        client.samples("up", 0, 1000)


@responses.activate
def test_transient_server_errors_are_retried() -> None:
    ok = {"status": "success", "data": {"resultType": "matrix", "result": []}}
    responses.post(f"{URL}/api/v1/query", status=503, json={})
    responses.post(f"{URL}/api/v1/query", json=ok)
    assert PrometheusClient(URL, retries=2).samples("up", 0, 1000) == {}
    assert len(responses.calls) == 2


@responses.activate
def test_samples_are_read_in_chunks_without_duplicates_nor_nan() -> None:
    def answer(request: Any) -> tuple[int, dict[str, str], str]:
        values = [[0.0, "1"], [30.0, "NaN"], [60.0, "0"], [60.0, "0"], [86400.0, "1"]]
        body = {
            "status": "success",
            "data": {
                "resultType": "matrix",
                "result": [{"metric": {"job": "b"}, "values": values}],
            },
        }
        return 200, {}, json.dumps(body)

    responses.add_callback(responses.POST, f"{URL}/api/v1/query", callback=answer)
    found = PrometheusClient(URL, chunk_seconds=43_200).samples("x", 0, 86_400_000)
    assert found == {(("job", "b"),): [(0, 1.0), (60_000, 0.0), (86_400_000, 1.0)]}
    assert len(responses.calls) == 2
    assert "x%5B43200000ms%5D" in str(responses.calls[0].request.body)


def test_an_unreachable_prometheus_is_named() -> None:
    with pytest.raises(PrometheusUnreachable, match=f"cannot reach Prometheus at {URL}"):
        PrometheusClient(URL, retries=0, timeout_seconds=2).build_info()


def test_a_url_without_scheme_is_refused() -> None:
    with pytest.raises(PrometheusError, match="must start with http"):
        PrometheusClient("prometheus:9090")


class CannedPrometheus:
    """Stands in for PrometheusClient: fixed samples per selector prefix."""

    url = "http://canned"

    def __init__(self, probes: dict[tuple[tuple[str, str], ...], list[tuple[int, float]]]) -> None:
        self.probes = probes

    def build_info(self) -> dict[str, str]:
        return {"version": "canned"}

    def samples(
        self, selector: str, start_ms: int, end_ms: int
    ) -> dict[Any, list[tuple[int, float]]]:
        if selector.startswith("probe_success"):
            return {
                k: [(t, v) for t, v in s if start_ms <= t <= end_ms] for k, s in self.probes.items()
            }
        return {}


def _contract() -> Contract:
    return load_contract(ROOT / "docs" / "contract.example.yaml")


def test_a_quiet_day_is_met_without_incident_and_renders(tmp_path: Path) -> None:
    p = period(start="2026-10-02", end="2026-10-03")
    probes = [(p.start_ms - 15_000 + i * 15_000, 1.0) for i in range(86400 // 15 + 2)]
    client = CannedPrometheus({(("instance", "x"),): probes})
    report = build_report(client, default_context("prod"), _contract(), p, now=NOW)  # type: ignore[arg-type]
    assert report.figures.ratio == 1.0 and report.figures.met
    assert report.incidents == [] and report.penalty_amount == 0
    names = {path.name for path in write_report(report, tmp_path)}
    assert names == {"report.md", "report.html", "report.json", "availability.png"}
    assert "No incident in the period" in (tmp_path / "report.md").read_text()


def test_probe_samples_only_before_the_period_are_no_data_not_100_percent() -> None:
    p = period(start="2026-10-02", end="2026-10-03")
    client = CannedPrometheus(
        {(("instance", "x"),): [(p.start_ms - 600_000, 1.0), (p.start_ms - 585_000, 1.0)]}
    )
    with pytest.raises(NoDataError, match="nothing was measured"):
        build_report(client, default_context("prod"), _contract(), p, now=NOW)  # type: ignore[arg-type]


def test_the_cli_refuses_bad_dates_before_asking_prometheus(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(
        [
            "--prometheus-url",
            URL,
            "--environment",
            "prod",
            "--month",
            "2026-13",
            "--contract",
            str(ROOT / "docs" / "contract.example.yaml"),
            "--out",
            str(tmp_path),
        ],
        now=NOW,
    )
    assert code == 2
    assert "is not a month" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("ms", "text"),
    [
        (0, "0 s"),
        (59_400, "59 s"),
        (61_000, "1 min 01 s"),
        (3_725_000, "1 h 02 min 05 s"),
        (2_682_000_000, "31 d 1 h 00 min"),
    ],
)
def test_durations_read_naturally(ms: int, text: str) -> None:
    assert fmt_duration(ms) == text
