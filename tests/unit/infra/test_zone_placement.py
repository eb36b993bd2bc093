"""infra/settings.py: CouchDB's `[cluster] placement`, derived from the nodes' zones, and the
topologies refused because losing one zone would lose the quorum of some shard range.

The quorum of n copies is CouchDB's default r and w (docs.couchdb.org, "Theory": for n=3, two
copies answer); the table below is that rule written out, not the code's formula.
"""

from __future__ import annotations

import copy
import itertools
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from infra.settings import (
    SettingsError,
    couchdb_pods_per_zone,
    parse_settings,
    zone_placement,
)
from tests.unit.harness import raw_stack

QUORUM = {1: 1, 2: 2, 3: 2, 4: 3, 5: 3, 6: 4, 7: 4}


def topology(stack: str, zones: list[str] | None = None, **couchdb: int) -> dict[str, Any]:
    """The stack's settings with the nodes in `zones` (one node each, in order) and CouchDB
    settings changed."""
    raw = copy.deepcopy(raw_stack(stack))
    if zones is not None:
        raw["nodePool"]["nodes"] = [
            {"name": f"onb-node-{i}", "region": "fr-par", "zone": zone}
            for i, zone in enumerate(zones, start=1)
        ]
    raw["couchdb"].update(couchdb)
    return raw


def refusal(raw: dict[str, Any]) -> str:
    with pytest.raises(SettingsError) as error:
        parse_settings(raw)
    return str(error.value).removeprefix("invalid stack settings:\n  ")


@pytest.mark.parametrize("stack", ["prod", "preprod"])
def test_both_stacks_put_one_copy_of_every_range_in_each_of_their_three_zones(stack: str) -> None:
    # prod: 5 pods on nodes in zones 2/2/1; preprod: 3 pods, one per zone. n=3 in both.
    settings = parse_settings(raw_stack(stack))
    assert settings.couchdb_placement == {"fr-par-1": 1, "fr-par-2": 1, "fr-par-3": 1}


def test_five_copies_on_zones_of_two_two_and_one_nodes_go_two_two_one() -> None:
    settings = parse_settings(topology("prod", shardCopies=5))
    # Losing a zone of two copies leaves three of five: the quorum.
    assert settings.couchdb_placement == {"fr-par-1": 2, "fr-par-2": 2, "fr-par-3": 1}


@pytest.mark.parametrize(
    ("zones", "replicas", "pods"),
    [
        (["a", "a", "b", "b", "c"], 5, {"a": 2, "b": 2, "c": 1}),
        (["a", "a", "b", "b", "c"], 3, {"a": 1, "b": 1, "c": 1}),
        # The fourth pod lands in a or b, which one is the scheduler's choice: neither counts.
        (["a", "a", "b", "b", "c"], 4, {"a": 1, "b": 1, "c": 1}),
        (["a", "b", "c", "d", "d"], 3, {"a": 0, "b": 0, "c": 0, "d": 0}),
        (["a", "a", "a", "b", "c"], 4, {"a": 2, "b": 1, "c": 1}),
    ],
)
def test_pods_counted_in_a_zone_are_those_an_even_spread_puts_there_whatever_nodes_it_picks(
    zones: list[str], replicas: int, pods: dict[str, int]
) -> None:
    nodes = {zone: zones.count(zone) for zone in sorted(set(zones))}
    assert couchdb_pods_per_zone(nodes, replicas) == pods


def test_fewer_pods_than_nodes_are_placed_by_the_zones_they_surely_fill() -> None:
    # Three pods over zones of 3/1/1 nodes: one in each zone.
    settings = parse_settings(
        topology("preprod", ["fr-par-1", "fr-par-1", "fr-par-1", "fr-par-2", "fr-par-3"])
    )
    assert settings.couchdb_placement == {"fr-par-1": 1, "fr-par-2": 1, "fr-par-3": 1}


def test_two_zones_cannot_hold_three_copies_without_a_zone_taking_the_quorum() -> None:
    raw = topology("prod", ["fr-par-1", "fr-par-1", "fr-par-2", "fr-par-2", "fr-par-2"])
    assert refusal(raw) == (
        "onboarding:couchdb.shardCopies = 3: losing one zone would lose the quorum of some "
        "shard range: a zone may hold at most 1 of the 3 copies of a shard range, so that "
        "losing it leaves a quorum of 2, and no more than its CouchDB pods; fr-par-1 (2 nodes, "
        "2 CouchDB pods: room for 1), fr-par-2 (3 nodes, 3 CouchDB pods: room for 1) (allowed: "
        "none with these zones: the nodes must span at least 3 zones)"
    )


def test_four_copies_over_three_zones_are_refused_naming_the_counts_that_fit() -> None:
    assert refusal(topology("prod", shardCopies=4)) == (
        "onboarding:couchdb.shardCopies = 4: losing one zone would lose the quorum of some "
        "shard range: a zone may hold at most 1 of the 4 copies of a shard range, so that "
        "losing it leaves a quorum of 3, and no more than its CouchDB pods; fr-par-1 (2 nodes, "
        "2 CouchDB pods: room for 1), fr-par-2 (2 nodes, 2 CouchDB pods: room for 1), fr-par-3 "
        "(1 node, 1 CouchDB pod: room for 1) (allowed: 3 or 5 with these zones and 5 CouchDB "
        "pods)"
    )


def test_a_zone_is_never_given_more_copies_than_it_has_nodes() -> None:
    # Five copies may put two in a zone, but two zones have one node each: 2 + 1 + 1 < 5.
    raw = topology("prod", ["fr-par-1", "fr-par-1", "fr-par-1", "fr-par-2", "fr-par-3"])
    raw["couchdb"]["shardCopies"] = 5
    assert refusal(raw) == (
        "onboarding:couchdb.shardCopies = 5: losing one zone would lose the quorum of some "
        "shard range: a zone may hold at most 2 of the 5 copies of a shard range, so that "
        "losing it leaves a quorum of 3, and no more than its CouchDB pods; fr-par-1 (3 nodes, "
        "3 CouchDB pods: room for 2), fr-par-2 (1 node, 1 CouchDB pod: room for 1), fr-par-3 "
        "(1 node, 1 CouchDB pod: room for 1) (allowed: 3 with these zones and 5 CouchDB pods)"
    )


def test_pods_that_cannot_be_counted_on_in_every_zone_are_refused_naming_the_replicas() -> None:
    # Three pods over four zones: which zone goes without is the scheduler's choice.
    raw = topology("preprod", ["fr-par-1", "fr-par-2", "fr-par-3", "fr-par-4", "fr-par-4"])
    assert refusal(raw) == (
        "onboarding:couchdb.replicas = 3: spread evenly over the zones of nodePool.nodes, 3 "
        "CouchDB pods leave too little room for couchdb.shardCopies 3: a zone may hold at most "
        "1 of the 3 copies of a shard range, so that losing it leaves a quorum of 2, and no more "
        "than its CouchDB pods; fr-par-1 (1 node, 0 CouchDB pods: room for 0), fr-par-2 (1 node, "
        "0 CouchDB pods: room for 0), fr-par-3 (1 node, 0 CouchDB pods: room for 0), fr-par-4 "
        "(2 nodes, 0 CouchDB pods: room for 0) (allowed: 4 or 5)"
    )


@pytest.mark.parametrize("copies", [1, 2])
def test_fewer_than_three_copies_lose_the_quorum_with_any_zone_holding_one(copies: int) -> None:
    unit = "copy" if copies == 1 else "copies"
    assert refusal(topology("preprod", shardCopies=copies)) == (
        f"onboarding:couchdb.shardCopies = {copies}: with {copies} {unit} of each shard range "
        f"the quorum is {copies}, so losing any zone that holds one loses the quorum of every "
        "range (allowed: at least 3, in at least 3 zones)"
    )


def _safe_placements(nodes: dict[str, int], copies: int) -> list[dict[str, int]]:
    """Every way of putting `copies` copies in the zones, at most one per node, such that
    losing any one zone leaves a quorum: found by trying them all."""
    found = []
    for counts in itertools.product(*(range(n + 1) for n in nodes.values())):
        if sum(counts) == copies and all(copies - c >= QUORUM[copies] for c in counts):
            found.append(dict(zip(nodes, counts, strict=True)))
    return found


@given(
    st.lists(st.sampled_from("abcde"), min_size=1, max_size=8),
    st.integers(min_value=1, max_value=7),
)
def test_a_placement_is_found_exactly_when_one_survives_every_zone_loss_and_is_the_most_even(
    zones: list[str], copies: int
) -> None:
    """Every node holds a pod (replicas = nodes), so the pods' zones are the nodes' zones. Up
    to 8 nodes, beyond the 5 of the contract: with 5, the quorum alone leaves one way."""
    nodes = {zone: zones.count(zone) for zone in sorted(set(zones))}
    copies = min(copies, len(zones))
    safe = _safe_placements(nodes, copies)
    placement = zone_placement(nodes, len(zones), copies)
    if not safe:
        assert placement is None
        return
    assert placement is not None
    complete = {zone: placement.get(zone, 0) for zone in nodes}
    assert complete in safe
    # The most even: the smallest sum of squares (2+1+1+1 over four zones, not 2+2+1+0).
    assert sum(c * c for c in complete.values()) == min(
        sum(c * c for c in p.values()) for p in safe
    )
