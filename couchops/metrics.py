"""Run metrics pushed to the Prometheus Pushgateway at the end of every run.

Grouping key: job ``couchops``, ``operation`` and ``environment``. A run pushes with
``pushadd`` (HTTP POST), which replaces only the metrics it sends: a failed run sends no
``couchops_last_success_timestamp_seconds``, so the previous success's value survives and the
"no success for too long" alert keeps counting from it.
"""

from __future__ import annotations

import time
from collections.abc import Mapping

from prometheus_client import CollectorRegistry, Gauge, pushadd_to_gateway
from prometheus_client.exposition import generate_latest

from couchops.log import logger

JOB = "couchops"


def metric_prefix(operation: str) -> str:
    return "couchops_" + operation.replace("-", "_")


def build_registry(
    operation: str,
    *,
    success: bool,
    duration_seconds: float,
    counts: Mapping[str, float],
    now: float | None = None,
) -> CollectorRegistry:
    """The gauges one run reports (the success timestamp only when the run succeeded)."""
    finished = time.time() if now is None else now
    registry = CollectorRegistry()

    def gauge(name: str, doc: str, value: float) -> None:
        Gauge(name, doc, registry=registry).set(value)

    gauge("couchops_last_run_timestamp_seconds", "End of the last run, success or not.", finished)
    if success:
        gauge(
            "couchops_last_success_timestamp_seconds", "End of the last successful run.", finished
        )
    gauge("couchops_run_success", "1 if the last run succeeded, else 0.", 1.0 if success else 0.0)
    gauge("couchops_run_duration_seconds", "Duration of the last run.", duration_seconds)
    prefix = metric_prefix(operation)
    for name, value in sorted(counts.items()):
        gauge(f"{prefix}_{name}", f"{operation}: {name.replace('_', ' ')} in the last run.", value)
    return registry


def push(
    pushgateway_url: str | None,
    operation: str,
    environment: str,
    registry: CollectorRegistry,
    *,
    timeout: float = 10.0,
    scope: str | None = None,
) -> bool:
    """Push the run's metrics; a failed push is logged, never fatal (the run's outcome stands).
    `scope` tells apart two kinds of runs of one operation (the audit of the databases after
    the purge, and of the backups after the backup), each then keeping its own series."""
    log = logger()
    if not pushgateway_url:
        log.debug("metrics.not_pushed", reason="PUSHGATEWAY_URL is not set")
        return False
    try:
        pushadd_to_gateway(
            pushgateway_url,
            job=JOB,
            registry=registry,
            grouping_key={
                "operation": operation,
                "environment": environment,
                **({"scope": scope} if scope else {}),
            },
            timeout=timeout,
        )
    except OSError as exc:
        log.error("metrics.push_failed", pushgateway=pushgateway_url, error=str(exc)[:200])
        return False
    log.info("metrics.pushed", pushgateway=pushgateway_url)
    return True


def exposition(registry: CollectorRegistry) -> str:
    return generate_latest(registry).decode("utf-8")
