"""infra/settings.py: every rule of the stack config, with the message an engineer reads."""

from __future__ import annotations

import copy
from typing import Any

import pulumi
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from infra.settings import (
    FRENCH_REGIONS,
    SettingsError,
    parse_settings,
    quantity_value,
)
from tests.unit.harness import ROOT, raw_stack, run_program


def with_change(stack: str, path: str, value: Any) -> dict[str, Any]:
    raw = copy.deepcopy(raw_stack(stack))
    node: Any = raw
    *parents, last = path.split(".")
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node[part]
    if isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value
    return raw


@pytest.mark.parametrize("stack", ["prod", "preprod"])
def test_both_stack_files_are_valid(stack: str) -> None:
    settings = parse_settings(raw_stack(stack))
    assert settings.environment == stack
    assert settings.namespace == f"onboarding-{stack}"


# (stack, key path, bad value, fragments the message must contain)
INVALID = [
    ("prod", "couchdb.replicas", 2, ["onboarding:couchdb.replicas = 2", "at least 3"]),
    (
        "preprod",
        "couchdb.replicas",
        6,
        ["onboarding:couchdb.replicas = 6", "less than or equal to 5"],
    ),
    ("prod", "couchdb.shardCopies", 2, ["onboarding:couchdb.shardCopies = 2", "at least 3"]),
    ("preprod", "couchdb.shardCopies", 4, ["couchdb.shardCopies = 4", "shardCopies <= replicas"]),
    ("prod", "purge.retentionDays", 31, ["onboarding:purge.retentionDays = 31", "30"]),
    ("prod", "purge.retentionDays", 0, ["onboarding:purge.retentionDays = 0", "1"]),
    ("prod", "backup.retentionDays", 45, ["onboarding:backup.retentionDays = 45", "30"]),
    ("prod", "purge.schedule", "0 3 * * 1", ["onboarding:purge.schedule", "at most 25 hours"]),
    ("prod", "purge.schedule", "every day", ["onboarding:purge.schedule", "5 cron fields"]),
    ("prod", "gdpr.maxAgeDays", 31, ["onboarding:gdpr.maxAgeDays = 31", "30"]),
    ("prod", "gdpr.maxAgeDays", 0, ["onboarding:gdpr.maxAgeDays = 0", "1"]),
    ("prod", "purge.deadlineHours", 24, ["onboarding:purge.deadlineHours = 24", "23"]),
    ("prod", "nodePool.nodes.2.region", "eu-west-1", ["nodePool.nodes[2].region", "fr-par"]),
    ("prod", "couchdb.image", "couchdb:latest", ["onboarding:couchdb.image", "latest"]),
    ("prod", "webapp.image", "registry.example.fr/web", ["onboarding:webapp.image", "pinned"]),
    ("prod", "ops.image", "Not An Image", ["onboarding:ops.image", "image reference"]),
    (
        "prod",
        "couchdb.resources",
        {"cpuRequest": "1", "memoryRequest": "4Gi", "memoryLimit": "1Gi"},
        ["onboarding:couchdb.resources.memoryLimit = '1Gi'", "limit >= request"],
    ),
    ("prod", "couchdb.storageSize", "lots", ["onboarding:couchdb.storageSize", "quantity"]),
    ("prod", "webapp.minReplicas", 1, ["onboarding:webapp.minReplicas = 1", "at least 2"]),
    ("preprod", "webapp.maxReplicas", 0, ["onboarding:webapp.maxReplicas = 0"]),
    ("prod", "kubernetesVersion", "1.20.0", ["onboarding:kubernetesVersion", "1.30.0"]),
    ("prod", "environment", "staging", ["onboarding:environment = 'staging'", "prod"]),
    ("prod", "ingress.host", "not a host", ["onboarding:ingress.host"]),
    ("prod", "couchdb.shards", 0, ["onboarding:couchdb.shards = 0"]),
]


@pytest.mark.parametrize(("stack", "path", "value", "fragments"), INVALID)
def test_invalid_setting_is_rejected_with_key_value_and_allowed(
    stack: str, path: str, value: Any, fragments: list[str]
) -> None:
    with pytest.raises(SettingsError) as error:
        parse_settings(with_change(stack, path, value))
    for fragment in fragments:
        assert fragment in str(error.value)


def test_repeated_node_names_are_rejected() -> None:
    raw = raw_stack("prod")
    raw["nodePool"]["nodes"][1]["name"] = raw["nodePool"]["nodes"][0]["name"]
    with pytest.raises(SettingsError, match=r"nodePool.nodes: .*repeat: onb-node-1"):
        parse_settings(raw)


def test_misspelt_key_is_rejected_not_ignored() -> None:
    raw = raw_stack("prod")
    raw["purge"]["retentionDay"] = 10
    with pytest.raises(SettingsError, match=r"onboarding:purge.retentionDay: is not a known"):
        parse_settings(raw)


def test_missing_required_setting_is_named() -> None:
    raw = raw_stack("prod")
    del raw["ingress"]
    with pytest.raises(SettingsError, match=r"onboarding:ingress: is required"):
        parse_settings(raw)


def test_more_than_five_dedicated_nodes_is_rejected() -> None:
    raw = raw_stack("prod")
    raw["nodePool"]["nodes"].append({"name": "onb-node-6", "region": "fr-par", "zone": "z"})
    with pytest.raises(SettingsError, match=r"onboarding:nodePool.nodes"):
        parse_settings(raw)


# No deadline: each case validates settings whose schedules are checked over two years.
@settings(deadline=None)
@given(st.integers(min_value=-1000, max_value=1000))
def test_purge_retention_is_accepted_exactly_within_one_to_twenty_eight_days(days: int) -> None:
    # The stacks' daily purge leaves up to 25 hours between runs and may run 6 hours: 28 days
    # is the most that keeps the database within 30 days.
    raw = with_change("prod", "purge.retentionDays", days)
    if 1 <= days <= 28:
        assert parse_settings(raw).purge.retention_days == days
    else:
        with pytest.raises(SettingsError):
            parse_settings(raw)


@settings(deadline=None)
@given(st.text(alphabet="abcdefghijklmnopqrstuvwxyz-", min_size=2, max_size=12))
def test_only_french_regions_are_accepted(region: str) -> None:
    raw = with_change("prod", "nodePool.nodes.0.region", region)
    if region in FRENCH_REGIONS:
        parse_settings(raw)
    else:
        with pytest.raises(SettingsError, match="outside France"):
            parse_settings(raw)


@pytest.mark.parametrize(
    ("quantity", "value"), [("500m", 0.5), ("2", 2.0), ("1Gi", 2.0**30), ("10M", 1e7)]
)
def test_quantities_parse_like_kubernetes(quantity: str, value: float) -> None:
    assert quantity_value(quantity) == value


def test_bad_setting_stops_the_program_before_any_resource() -> None:
    with pytest.raises(pulumi.RunError) as error:
        run_program("prod", {"onboarding:couchdb": {**raw_stack("prod")["couchdb"], "replicas": 1}})
    assert "onboarding:couchdb.replicas = 1" in str(error.value)


def test_unknown_top_level_key_stops_the_program() -> None:
    with pytest.raises(pulumi.RunError, match="onboarding:purgeRetention: is not a known"):
        run_program("prod", {"onboarding:purgeRetention": "40"})


def test_stack_files_hold_no_secret() -> None:
    for stack in ("prod", "preprod"):
        text = (ROOT / f"Pulumi.{stack}.yaml").read_text()
        assert "secure:" not in text
        assert "password" not in text.lower()
