"""couchops runs as Prometheus would have scraped them from the Pushgateway, for backfilling.

Each run's gauges are built by couchops itself (`couchops.metrics.build_registry`); the
Pushgateway keeps one group per (job, operation, environment) and a push replaces only the
gauges it sends (`pushadd`), so a run that failed before counting leaves the previous counts
in place; Prometheus scrapes every group's current values at a fixed interval. Nothing here
comes from `supervision/`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from couchops.metrics import JOB, build_registry

Families = dict[str, list[tuple[dict[str, str], list[tuple[float, float]]]]]


@dataclass(frozen=True)
class Push:
    """One couchops run: its end (unix seconds), outcome, duration and the counts it pushed
    (none when it failed before counting)."""

    operation: str
    end: float
    success: bool = True
    duration: float = 60.0
    counts: Mapping[str, float] = field(default_factory=dict)

    @property
    def start(self) -> float:
        return self.end - self.duration


def _gauges(push: Push) -> dict[str, float]:
    registry = build_registry(
        push.operation,
        success=push.success,
        duration_seconds=push.duration,
        counts=push.counts,
        now=push.end,
    )
    return {s.name: s.value for metric in registry.collect() for s in metric.samples}


def scraped(
    pushes: Iterable[Push], environment: str, start: float, end: float, interval: float
) -> Families:
    """metric -> [(labels, [(time, value)])]: every scrape in [start, end) of the groups'
    values as the pushes (sorted by end) left them."""
    ordered = sorted(pushes, key=lambda p: p.end)
    groups: dict[str, dict[str, float]] = {}
    series: dict[tuple[str, str], list[tuple[float, float]]] = {}
    index = 0
    at = start
    while at < end:
        while index < len(ordered) and ordered[index].end <= at:
            push = ordered[index]
            groups.setdefault(push.operation, {}).update(_gauges(push))
            index += 1
        for operation, gauges in groups.items():
            for name, value in gauges.items():
                series.setdefault((name, operation), []).append((at, value))
        at += interval
    families: Families = {}
    for (name, operation), samples in series.items():
        labels = {"job": JOB, "operation": operation, "environment": environment}
        families.setdefault(name, []).append((labels, samples))
    return families


_NOT_COUNTS = {"operation", "ok", "success", "timestamp", "time", "duration_seconds", "counts"}


def load_runs(path: Path) -> list[Push]:
    """Runs recorded from real couchops runs, one JSON object a line: `operation`,
    `timestamp` (unix seconds or ISO 8601), `ok` or `success`, `duration_seconds`, and the
    counts either under `counts` or beside the rest (couchops' own result line)."""
    runs = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        record = json.loads(line)
        stamp = record.get("timestamp", record.get("time", 0))
        end = datetime.fromisoformat(stamp).timestamp() if isinstance(stamp, str) else stamp
        counts = record.get("counts") or {
            k: v
            for k, v in record.items()
            if k not in _NOT_COUNTS and isinstance(v, int | float) and not isinstance(v, bool)
        }
        runs.append(
            Push(
                operation=str(record["operation"]),
                end=float(end),
                success=bool(record.get("ok", record.get("success", True))),
                duration=float(record.get("duration_seconds", 60.0)),
                counts={k: float(v) for k, v in counts.items()},
            )
        )
    return runs


def by_operation(runs: Sequence[Push]) -> dict[str, list[Push]]:
    found: dict[str, list[Push]] = {}
    for run in runs:
        found.setdefault(run.operation, []).append(run)
    return found
