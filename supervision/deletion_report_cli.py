"""`deletion-report`: what the GDPR purge deleted in a period, what the audits found, the
backup expiries and the GDPR incidents, with a verdict for the data-protection officer
(docs/deletion-report.md).

    deletion-report --prometheus-url http://127.0.0.1:9090 --environment prod \\
        --month 2026-11 --contract docs/contract.example.yaml --out reports/out/deletion-2026-11

Exit status: 0 report written (whatever the verdict: see deletion-report.json), 2 bad
arguments or contract, 3 Prometheus unreachable or refusing, 4 no couchops data for the period.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from datetime import UTC, datetime

from supervision.context import default_context
from supervision.contract import ContractError
from supervision.deletion_report import build_deletion_report, fmt_count, write_deletion_report
from supervision.prometheus import PrometheusError
from supervision.report import NoDataError, PeriodError
from supervision.report_cli import (
    EXIT_NO_DATA,
    EXIT_PROMETHEUS,
    EXIT_USAGE,
    add_common_arguments,
    contract_and_period,
    prometheus_client,
)

PROG = "deletion-report"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="GDPR purge runs and deletions per day, audits and the oldest personal "
        "data they found, backup expiries, GDPR incidents and a verdict, from Prometheus; "
        "writes deletion-report.md, .html, .json and deletions.png.",
    )
    add_common_arguments(parser)
    return parser


def main(argv: Sequence[str] | None = None, now: datetime | None = None) -> int:
    args = build_parser().parse_args(argv)
    now = now or datetime.now(UTC)
    try:
        contract, period = contract_and_period(args, now)
    except (ContractError, PeriodError) as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    ctx = default_context(args.environment)
    try:
        report = build_deletion_report(prometheus_client(args), ctx, contract, period, now=now)
    except NoDataError as exc:
        print(f"{PROG}: no data: {exc}", file=sys.stderr)
        return EXIT_NO_DATA
    except PrometheusError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return EXIT_PROMETHEUS
    written = write_deletion_report(report, args.out)
    documents = sum(d.documents or 0 for d in report.days)
    print(
        f"{ctx.environment} {report.period.label}: {len(report.purges)} purge run(s), "
        f"{fmt_count(documents)} documents purged, {len(report.audits)} audit(s), "
        f"{len(report.audits_with_findings)} with findings, {len(report.incidents)} GDPR "
        f"incident(s)"
    )
    print(report.verdict)
    for warning in report.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    for path in written:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
