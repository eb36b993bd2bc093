"""`sla-report`: the SLA report of a period, from Prometheus, as docs/sla.md defines it.

    sla-report --prometheus-url http://127.0.0.1:9090 --environment prod \\
        --month 2026-10 --contract docs/contract.example.yaml --out reports/out/2026-10

Exit status: 0 report written (whether the SLA was met or not: see report.json), 2 bad
arguments or contract, 3 Prometheus unreachable or refusing, 4 no data for the period.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

from supervision.context import ENVIRONMENTS, default_context
from supervision.contract import Contract, ContractError, load_contract
from supervision.prometheus import PrometheusClient, PrometheusError
from supervision.report import (
    NoDataError,
    Period,
    PeriodError,
    build_report,
    fmt_duration,
    fmt_percent,
    resolve_period,
    write_report,
)

EXIT_USAGE, EXIT_PROMETHEUS, EXIT_NO_DATA = 2, 3, 4


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    """The arguments every report from Prometheus takes: where, which period, out where."""
    parser.add_argument("--prometheus-url", required=True, help="e.g. http://127.0.0.1:9090")
    parser.add_argument("--environment", required=True, choices=ENVIRONMENTS)
    parser.add_argument("--month", help="a calendar month in the contract's time zone: YYYY-MM")
    parser.add_argument("--start", help="ISO 8601 (local time of the contract if no offset)")
    parser.add_argument("--end", help="ISO 8601, or 'now'")
    parser.add_argument("--contract", required=True, type=Path, help="contract terms (YAML)")
    parser.add_argument("--out", required=True, type=Path, help="output directory")
    parser.add_argument("--timeout", type=float, default=30.0, help="per request, seconds")
    parser.add_argument(
        "--bearer-token-file",
        type=Path,
        help="token for a Prometheus behind an authenticating proxy (or PROMETHEUS_BEARER_TOKEN)",
    )


def contract_and_period(args: argparse.Namespace, now: datetime) -> tuple[Contract, Period]:
    contract = load_contract(args.contract)
    period = resolve_period(
        month=args.month, start=args.start, end=args.end, tz=contract.tz, now=now
    )
    return contract, period


def prometheus_client(args: argparse.Namespace) -> PrometheusClient:
    token = os.environ.get("PROMETHEUS_BEARER_TOKEN")
    if args.bearer_token_file:
        token = args.bearer_token_file.read_text(encoding="utf-8").strip()
    return PrometheusClient(args.prometheus_url, timeout_seconds=args.timeout, bearer_token=token)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sla-report",
        description="Availability, incidents, error budget and penalties of a period, from "
        "Prometheus; writes report.md, report.html, availability.png, report.json and a "
        "pre-filled incident-<n>.md per incident.",
    )
    add_common_arguments(parser)
    parser.add_argument("--public-url", help="probed URL, if not the environment's default")
    parser.add_argument("--probe-job", help="`job` label of the probe, if not 'blackbox'")
    parser.add_argument(
        "--probe-interval", type=float, help="seconds between probes (default: inferred)"
    )
    return parser


def main(argv: Sequence[str] | None = None, now: datetime | None = None) -> int:
    args = build_parser().parse_args(argv)
    now = now or datetime.now(UTC)
    try:
        contract, period = contract_and_period(args, now)
    except (ContractError, PeriodError) as exc:
        print(f"sla-report: {exc}", file=sys.stderr)
        return EXIT_USAGE
    ctx = default_context(args.environment)
    if args.public_url:
        ctx = replace(ctx, public_url=args.public_url)
    if args.probe_job:
        ctx = replace(ctx, probe_job=args.probe_job)
    try:
        client = prometheus_client(args)
        report = build_report(
            client, ctx, contract, period, now=now, probe_interval_seconds=args.probe_interval
        )
    except NoDataError as exc:
        print(f"sla-report: no data: {exc}", file=sys.stderr)
        return EXIT_NO_DATA
    except PrometheusError as exc:
        print(f"sla-report: {exc}", file=sys.stderr)
        return EXIT_PROMETHEUS
    written = write_report(report, args.out)
    figures = report.figures
    print(
        f"{ctx.environment} {report.period.label}: availability {fmt_percent(figures.ratio)} "
        f"(target {fmt_percent(figures.target, 1)}), SLA {'met' if figures.met else 'MISSED'}, "
        f"{len(report.incidents)} incident(s), down {fmt_duration(figures.down_ms)}, "
        f"no data {fmt_duration(figures.no_data_ms)}, budget spent "
        f"{figures.budget_spent * 100:.1f} %"
    )
    for warning in report.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    for path in written:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
