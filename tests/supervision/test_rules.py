"""The rules as data: labels, annotations, runbooks, and the generated files kept current."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from supervision.context import ENVIRONMENTS, MonitoringContext, Retention, default_context
from supervision.export import files, stale
from supervision.rule_tests import missing_stories, render
from supervision.rules import SEVERITIES, alert_rules, build_rule_groups

ROOT = Path(__file__).resolve().parents[2]
CONTEXTS = [default_context(env) for env in ENVIRONMENTS]


def _alerts(ctx: MonitoringContext) -> list[dict[str, Any]]:
    return [dict(rule) for rule in alert_rules(build_rule_groups(ctx))]


@pytest.mark.parametrize("ctx", CONTEXTS, ids=ENVIRONMENTS)
def test_every_alert_has_severity_environment_and_the_three_annotations(
    ctx: MonitoringContext,
) -> None:
    for rule in _alerts(ctx):
        assert rule["labels"]["severity"] in SEVERITIES, rule["alert"]
        assert rule["labels"]["environment"] == ctx.environment, rule["alert"]
        assert set(rule["annotations"]) == {"summary", "description", "runbook_url"}
        assert all(rule["annotations"][key].strip() for key in ("summary", "description"))


@pytest.mark.parametrize("ctx", CONTEXTS, ids=ENVIRONMENTS)
def test_every_runbook_link_points_to_a_runbook_in_the_repository(ctx: MonitoringContext) -> None:
    for rule in _alerts(ctx):
        url = rule["annotations"]["runbook_url"]
        assert url == f"{ctx.runbook_base_url}/{rule['alert']}.md"
        page = ROOT / "runbooks" / f"{rule['alert']}.md"
        assert page.is_file(), f"{rule['alert']}: {page} is missing"
        text = page.read_text(encoding="utf-8")
        assert text.startswith(f"# {rule['alert']}\n"), page
        for section in ("## What it means", "## Impact", "## Diagnose", "## Mitigate"):
            assert section in text, f"{page}: no '{section}'"
        assert "## Escalate" in text, page


def test_runbooks_link_only_to_pages_that_exist() -> None:
    for page in (ROOT / "runbooks").glob("*.md"):
        for target in re.findall(r"\]\(([^)#:]+\.md)", page.read_text(encoding="utf-8")):
            assert (page.parent / target).resolve().is_file(), f"{page.name} -> {target}"


@pytest.mark.parametrize("ctx", CONTEXTS, ids=ENVIRONMENTS)
def test_alert_names_are_unique_and_camel_case(ctx: MonitoringContext) -> None:
    names = [rule["alert"] for rule in _alerts(ctx)]
    assert len(names) == len(set(names))
    assert all(re.fullmatch(r"[A-Z][A-Za-z0-9]+", name) for name in names)


@pytest.mark.parametrize("ctx", CONTEXTS, ids=ENVIRONMENTS)
def test_burn_rate_alerts_follow_the_workbook_table(ctx: MonitoringContext) -> None:
    rules = {rule["alert"]: rule for rule in _alerts(ctx)}
    env = f'{{environment="{ctx.environment}"}}'
    for name, long_w, short_w, threshold, severity in (
        ("AvailabilityBudgetBurnFast", "1h", "5m", "0.0144", "page"),
        ("AvailabilityBudgetBurnSustained", "6h", "30m", "0.006", "page"),
        ("AvailabilityBudgetBurnSlow", "3d", "6h", "0.001", "ticket"),
    ):
        expr = rules[name]["expr"]
        assert f"slo:sli_error:ratio_rate{long_w}{env} > {threshold}" in expr
        assert f"slo:sli_error:ratio_rate{short_w}{env} > {threshold}" in expr
        assert rules[name]["labels"]["severity"] == severity


def test_the_sli_windows_are_recorded_per_environment() -> None:
    ctx = default_context("prod")
    sli = build_rule_groups(ctx)[0]["rules"]
    assert [r["record"] for r in sli] == [
        f"slo:sli_error:ratio_rate{w}" for w in ("5m", "30m", "1h", "6h", "3d")
    ]
    assert all(ctx.public_url in r["expr"] and r["labels"]["environment"] == "prod" for r in sli)


def test_membership_alert_expects_the_environment_s_cluster_size() -> None:
    for env, size in (("prod", 5), ("preprod", 3)):
        rules = {r["alert"]: r for r in _alerts(default_context(env))}
        selector = f'{{job="couchdb",namespace="onboarding-{env}",nodes="cluster_nodes"}}'
        assert (
            f"couchdb_membership{selector} != {size}"
            in (rules["CouchDBMembershipMismatch"]["expr"])
        )


def test_label_values_are_escaped_in_selectors() -> None:
    ctx = MonitoringContext(
        environment="prod",
        namespace="onboarding-prod",
        couchdb_job="couchdb",
        couchdb_replicas=5,
        webapp_job="webapp",
        probe_job='odd"job',
        public_url="https://example.fr/a\\b",
        runbook_base_url="https://git.example/runbooks",
    )
    expr = build_rule_groups(ctx)[0]["rules"][0]["expr"]
    assert 'job="odd\\"job",instance="https://example.fr/a\\\\b"' in expr


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"environment": "dev"}, "environment 'dev' is unknown"),
        ({"slo_target": 1.0}, "slo_target"),
        ({"public_url": "http://x"}, "https://"),
        ({"runbook_base_url": "https://x/"}, "must not end with '/'"),
        ({"couchdb_replicas": 0}, "couchdb_replicas"),
        # 25 h between starts the night the clocks go back, then a 6 h run: 31 h is normal.
        ({"purge_max_age_hours": 31}, "would page on a normal day"),
        # 30 days of retention leave the late purge no time at all before the budget.
        ({"retention": Retention(purge_retention_days=30)}, "pages too late"),
        ({"backup_expire_max_age_hours": 0}, "backup_expire_max_age_hours"),
    ],
)
def test_a_bad_context_is_refused_with_the_field_named(
    change: dict[str, Any], message: str
) -> None:
    fields = {**default_context("prod").__dict__, **change}
    with pytest.raises(ValueError, match=re.escape(message)):
        MonitoringContext(**fields)


def test_the_committed_rule_and_test_files_are_up_to_date() -> None:
    outdated = stale(ROOT / "monitoring", CONTEXTS)
    assert not outdated, f"run `python -m supervision.export`: {outdated}"


@pytest.mark.parametrize("ctx", CONTEXTS, ids=ENVIRONMENTS)
def test_every_alert_has_a_firing_and_a_silent_promtool_case(ctx: MonitoringContext) -> None:
    test_files = [
        yaml.safe_load(content) for path, content in files(ctx).items() if path.startswith("tests/")
    ]
    names = [rule["alert"] for rule in _alerts(ctx)]
    assert missing_stories(names, test_files) == []


def test_missing_stories_are_reported_by_name() -> None:
    test_file = {
        "tests": [
            {"alert_rule_test": [{"alertname": "A", "exp_alerts": [{"exp_labels": {}}]}]},
            {"alert_rule_test": [{"alertname": "B", "exp_alerts": []}]},
        ]
    }
    assert missing_stories(["A", "B"], [test_file]) == [
        "A: no case where it stays silent",
        "B: no case where it fires",
    ]


@pytest.mark.parametrize(
    ("template", "value", "expected"),
    [
        ("{{ $value | humanizePercentage }}", 0.16393442622950818, "16.39%"),
        ("{{ $value | humanizeDuration }}", 97200, "1d 3h 0m 0s"),
        ("{{ $value | humanizeDuration }}", 61, "1m 1s"),
        ("{{ $value | humanizeDuration }}", 0.25, "250ms"),
        ("{{ $value | humanize1024 }}", 400000000, "381.5Mi"),
        ("{{ $value | humanize }}", 0.475, "475m"),
        ('{{ $value | printf "%.0f" }} on {{ $labels.pod }}', 4, "4 on couchdb-1"),
    ],
)
def test_annotation_rendering_matches_prometheus(
    template: str, value: float, expected: str
) -> None:
    assert render(template, {"pod": "couchdb-1"}, value) == expected
