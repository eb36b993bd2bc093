"""Grafana dashboards: the layout Grafana needs, and every query valid PromQL."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from supervision.context import ENVIRONMENTS, MonitoringContext, default_context
from supervision.dashboards import build_dashboards
from tests.supervision.prometheus_server import require

CONTEXTS = [default_context(env) for env in ENVIRONMENTS]
# What Grafana substitutes before sending a query.
GRAFANA_VARIABLES = {"$__rate_interval": "5m", "$__range": "1d", "$node": ".*", "$pod": ".*"}


def _panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    return [p for p in dashboard["panels"] if p["type"] != "row"]


def _queries(ctx: MonitoringContext) -> list[str]:
    exprs = []
    for dashboard in build_dashboards(ctx).values():
        exprs += [t["expr"] for p in _panels(dashboard) for t in p["targets"]]
        exprs += [a["expr"] for a in dashboard["annotations"]["list"]]
    return exprs


@pytest.mark.parametrize("ctx", CONTEXTS, ids=ENVIRONMENTS)
def test_dashboards_cover_resources_requests_couchdb_jobs_and_the_slo(
    ctx: MonitoringContext,
) -> None:
    dashboards = build_dashboards(ctx)
    assert set(dashboards) == {
        f"onb-{ctx.environment}-{slug}.json"
        for slug in ("slo", "resources", "requests", "couchdb", "jobs")
    }
    text = json.dumps(dashboards)
    for metric in (
        "container_cpu_usage_seconds_total",
        "container_memory_working_set_bytes",
        "kubelet_volume_stats_available_bytes",
        "node_cpu_seconds_total",
        "node_filesystem_avail_bytes",
        "couchdb_httpd_request_methods",
        "couchdb_request_time_seconds",
        "couchdb_membership",
        "couchops_last_success_timestamp_seconds",
        "kube_cronjob_status_last_successful_time",
        "probe_success",
    ):
        assert metric in text, metric


@pytest.mark.parametrize("ctx", CONTEXTS, ids=ENVIRONMENTS)
def test_panels_fit_the_grid_with_unique_ids_and_stable_uids(ctx: MonitoringContext) -> None:
    for name, dashboard in build_dashboards(ctx).items():
        assert name == f"{dashboard['uid']}.json" and len(dashboard["uid"]) <= 40
        ids = [p["id"] for p in dashboard["panels"]]
        assert len(ids) == len(set(ids)), name
        for panel in dashboard["panels"]:
            grid = panel["gridPos"]
            assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24, (name, panel["title"])
            assert panel["type"] == "row" or panel["targets"], (name, panel["title"])
        json.dumps(dashboard)  # a ConfigMap value must serialise


def test_every_query_selects_this_environment() -> None:
    for ctx in CONTEXTS:
        other = "onboarding-preprod" if ctx.environment == "prod" else "onboarding-prod"
        for expr in _queries(ctx):
            assert other not in expr
            scoped = (
                ctx.namespace,
                ctx.public_url,
                f'environment="{ctx.environment}"',
                '=~"$node"',
            )
            assert any(s in expr for s in scoped), expr


@pytest.mark.prometheus
@pytest.mark.parametrize("ctx", CONTEXTS, ids=ENVIRONMENTS)
def test_every_query_is_valid_promql(ctx: MonitoringContext, tmp_path: Path) -> None:
    rules = []
    for index, query in enumerate(_queries(ctx)):
        expr = query
        for variable, value in GRAFANA_VARIABLES.items():
            expr = expr.replace(variable, value)
        assert not re.search(r"\$\w", expr.replace("${1}", "")), f"unsubstituted variable: {expr}"
        rules.append({"record": f"dashboard:query:{index}", "expr": expr})
    path = tmp_path / "queries.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboards", "rules": rules}]}))
    result = subprocess.run(
        [require("promtool"), "check", "rules", str(path)],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
