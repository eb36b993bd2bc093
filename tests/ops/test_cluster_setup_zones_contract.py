"""Contract tests of `cluster-setup`'s zones on the documented CouchDB 3.5 API.

The fake answers as Apache CouchDB 3.5.2 answered on the real 3-node cluster (docs/
zone-placement.md): `GET /_node/{node}/_config/cluster/placement` (a JSON string, or 404
`unknown_config_value` while unset), each node's own copy of `_nodes` under
`/_node/{node}/_nodes/_all_docs` (documents `{"_id", "_rev", "zone"?...}`, replicated from
node to node some time after a write), `GET/PUT /_node/_local/_nodes/{node}` (409 `conflict`
on a stale `_rev`), shard maps in `/_node/_local/_dbs` (`by_range`), and database creation
under a placement: per zone, as many of its nodes as asked or as it has (CouchDB logs the
shortfall and makes fewer copies), 500 `no_nodes_in_zone` for a zone without a node.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import pytest
import responses

from couchops.cluster_setup import (
    MISPLACED_SHOWN,
    ZONES_SETTLE_SECONDS,
    SetupReport,
    cluster_setup,
)
from couchops.errors import OpsError
from couchops.pseudonym import pseudonym
from tests.ops.test_cluster_setup_contract import (
    BASE,
    NODES,
    Cluster,
    FakeClock,
    couch,
    settings,
)

pytestmark = pytest.mark.contract

FIRST_REV = "1-967a00dff5e02add41819138abb3284d"
ZONES = {NODES[0]: "a", NODES[1]: "b", NODES[2]: "c"}


def ranges(q: int) -> list[str]:
    step = 2**32 // q
    return [
        f"{i * step:08x}-{(i + 1) * step - 1 if i < q - 1 else 2**32 - 1:08x}" for i in range(q)
    ]


class ZonedCluster(Cluster):
    """The setup contract's cluster, with each node's copy of `_nodes`, its config's placement
    and the shard maps of `_dbs`."""

    def __init__(self, zones: dict[str, str | None], placement: str | None) -> None:
        super().__init__()
        self.placement: dict[str, str | None] = dict.fromkeys(NODES, placement)
        docs = {
            node: {"_id": node, "_rev": FIRST_REV, **({"zone": zone} if zone else {})}
            for node, zone in zones.items()
        }
        # Each node's own copy; writes land on the node this URL reaches, NODES[0].
        self.copies = {viewer: json.loads(json.dumps(docs)) for viewer in NODES}
        self.lag = 0
        """Reads of another node's copy before a write reaches it (mem3 replication)."""
        self.unsynced: dict[str, dict[str, Any]] = {}
        self.shard_maps: dict[str, dict[str, Any]] = {}

    def route(  # noqa: PLR0911 (one answer per endpoint)
        self, method: str, path: str, query: dict[str, str], body: Any
    ) -> tuple[int, Any]:
        parts = path.strip("/").split("/")
        if parts[0] == "_node" and parts[2:] == ["_config", "cluster", "placement"]:
            value = self.placement[parts[1]]
            if value is None:
                return 404, {"error": "not_found", "reason": "unknown_config_value"}
            return 200, value
        if parts[0] == "_node" and parts[2:] == ["_nodes", "_all_docs"]:
            return 200, self.all_nodes(NODES[0] if parts[1] == "_local" else parts[1])
        if parts[:3] == ["_node", "_local", "_nodes"] and parts[3] in self.copies[NODES[0]]:
            return self.node_doc(method, parts[3], body)
        if parts[:3] == ["_node", "_local", "_dbs"]:
            return 200, self.all_dbs(query)
        if method == "PUT" and len(parts) == 1 and not parts[0].startswith("_"):
            shard_map = self.shard_map(parts[0], query)
            if shard_map is None:
                return 500, {"error": "unknown_error", "reason": "no_nodes_in_zone", "ref": 1}
            self.shard_maps[parts[0]] = shard_map
        return super().route(method, path, query, body)

    def all_nodes(self, viewer: str) -> dict[str, Any]:
        if self.unsynced and viewer != NODES[0]:
            self.lag -= 1
            if self.lag <= 0:
                for copy in self.copies.values():
                    copy.update(json.loads(json.dumps(self.unsynced)))
                self.unsynced = {}
        docs = self.copies[viewer]
        rows = [{"id": n, "key": n, "value": {"rev": d["_rev"]}, "doc": d} for n, d in docs.items()]
        return {"total_rows": len(rows), "offset": 0, "rows": sorted(rows, key=lambda r: r["id"])}

    def node_doc(self, method: str, node: str, body: Any) -> tuple[int, Any]:
        doc = self.copies[NODES[0]][node]
        if method == "GET":
            return 200, doc
        if body.get("_rev") != doc["_rev"]:
            return 409, {"error": "conflict", "reason": "Document update conflict."}
        generation = int(doc["_rev"].split("-")[0]) + 1
        stored = {**body, "_rev": f"{generation}-{'0' * 32}"}
        self.copies[NODES[0]][node] = stored
        self.unsynced[node] = stored
        if self.lag <= 0:
            self.all_nodes(NODES[1])
        return 201, {"ok": True, "id": node, "rev": stored["_rev"]}

    def zone_of(self, node: str) -> str | None:
        zone = self.copies[NODES[0]][node].get("zone")
        return zone if isinstance(zone, str) else None

    def shard_map(self, db: str, query: dict[str, str]) -> dict[str, Any] | None:
        q = int(query.get("q", 2))
        rule = self.placement[NODES[0]]
        wanted = (
            {zone: int(n) for zone, n in (r.split(":") for r in rule.split(","))}
            if rule
            else {None: int(query.get("n", 3))}
        )
        by_range: dict[str, list[str]] = {}
        for i, shard_range in enumerate(ranges(q)):
            holders: list[str] = []
            for zone, count in wanted.items():
                members = [n for n in NODES if zone is None or self.zone_of(n) == zone]
                if not members:
                    return None
                rotated = members[i % len(members) :] + members[: i % len(members)]
                holders += rotated[:count]
            by_range[shard_range] = holders
        return {"_id": db, "_rev": FIRST_REV, "by_range": by_range}

    def all_dbs(self, query: dict[str, str]) -> dict[str, Any]:
        start = json.loads(query.get("startkey", '""'))
        rows = [
            {"id": name, "key": name, "value": {"rev": doc["_rev"]}, "doc": doc}
            for name, doc in sorted(self.shard_maps.items())
            if name >= start
        ][int(query.get("skip", 0)) :]
        return {"total_rows": len(self.shard_maps), "rows": rows[: int(query["limit"])]}


def zoned(zones: dict[str, str | None], placement: str | None) -> Iterator[ZonedCluster]:
    state = ZonedCluster(zones, placement)
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        for method in ("GET", "PUT", "POST"):
            mock.add_callback(method, re.compile(re.escape(BASE) + ".*"), callback=state.handle)
        yield state


@pytest.fixture
def placed() -> Iterator[ZonedCluster]:
    """Three nodes in zones a, b, c, and `[cluster] placement = a:1,b:1,c:1` on each."""
    yield from zoned(dict(ZONES), "a:1,b:1,c:1")


@pytest.fixture
def unzoned() -> Iterator[ZonedCluster]:
    """Three nodes whose documents have no zone yet, and no placement."""
    yield from zoned(dict.fromkeys(NODES), None)


def run(
    zones: dict[str, str] | None = None, clock: FakeClock | None = None, **env: str
) -> SetupReport:
    clock = clock or FakeClock()
    return cluster_setup(couch(), settings(**env), zones=zones, sleep=clock.sleep, clock=clock)


def writes(cluster: ZonedCluster) -> list[tuple[str, str, Any]]:
    return [c for c in cluster.calls if c[0] != "GET"]


def test_given_zones_are_written_into_each_nodes_document_keeping_its_rev_and_fields(
    unzoned: ZonedCluster,
) -> None:
    # A field CouchDB itself reads from node documents (mem3: `decom`) must survive.
    unzoned.copies[NODES[0]][NODES[1]]["decom"] = False
    report = run(zones=ZONES)
    for node, zone in ZONES.items():
        assert unzoned.copies[NODES[0]][node]["zone"] == zone
        assert unzoned.copies[NODES[0]][node]["_rev"].startswith("2-")
    assert unzoned.copies[NODES[0]][NODES[1]]["decom"] is False
    puts = [c for c in writes(unzoned) if c[1].startswith("/_node/_local/_nodes/")]
    assert [body for _, _, body in puts] == [
        {"_id": NODES[0], "_rev": FIRST_REV, "zone": "a"},
        {"_id": NODES[1], "_rev": FIRST_REV, "decom": False, "zone": "b"},
        {"_id": NODES[2], "_rev": FIRST_REV, "zone": "c"},
    ]
    assert [c for c in report.changes if "zone" in c] == [
        f"set the zone of node {node} to {zone}" for node, zone in ZONES.items()
    ]


def test_a_wrong_zone_is_corrected_and_a_second_run_changes_nothing(placed: ZonedCluster) -> None:
    for copy in placed.copies.values():
        copy[NODES[2]] = {"_id": NODES[2], "_rev": "3-abc", "zone": "b"}
    first = run(zones=ZONES)
    assert f"set the zone of node {NODES[2]} to c" in first.changes
    assert placed.copies[NODES[1]][NODES[2]]["zone"] == "c"
    assert placed.copies[NODES[1]][NODES[2]]["_rev"].startswith("4-")
    again = run(zones=ZONES)
    assert again.changes == []


def test_with_a_placement_a_node_without_a_zone_is_refused_before_any_database_is_created(
    placed: ZonedCluster,
) -> None:
    for copy in placed.copies.values():
        del copy[NODES[2]]["zone"]
    with pytest.raises(OpsError) as error:
        run()
    assert str(error.value) == (
        "[cluster] placement is a:1,b:1,c:1, but nodes without a zone in _nodes would get no "
        f"copy of any new database: {NODES[2]} (a CouchDB pod writes its zone from "
        "COUCHDB_ZONE when it starts; see docs/zone-placement.md)"
    )
    assert writes(placed) == []


def test_a_zone_with_fewer_nodes_than_its_copies_is_refused_naming_them(
    placed: ZonedCluster,
) -> None:
    placed.placement = dict.fromkeys(NODES, "a:2,b:1")
    for copy in placed.copies.values():
        copy[NODES[2]]["zone"] = "b"
    with pytest.raises(OpsError) as error:
        run()
    assert str(error.value) == (
        f"[cluster] placement a:2,b:1 wants more copies in a zone than it has nodes: a wants 2, "
        f"has 1 ({NODES[0]}) (CouchDB would make fewer copies, or fail to create the database)"
    )
    assert writes(placed) == []


def test_a_zone_without_any_node_is_refused_rather_than_failing_database_creation(
    placed: ZonedCluster,
) -> None:
    placed.placement = dict.fromkeys(NODES, "a:1,b:1,d:1")
    with pytest.raises(OpsError, match=r"d wants 1, has 0 \(no node\)"):
        run()
    assert writes(placed) == []


def test_nodes_that_disagree_on_the_placement_are_refused(placed: ZonedCluster) -> None:
    placed.placement[NODES[1]] = None
    with pytest.raises(OpsError) as error:
        run()
    assert str(error.value) == (
        f"the nodes disagree on [cluster] placement: {NODES[0]}: a:1,b:1,c:1, "
        f"{NODES[1]}: unset, {NODES[2]}: a:1,b:1,c:1"
    )


def test_it_waits_for_the_zones_to_reach_every_nodes_copy_of_nodes(
    unzoned: ZonedCluster,
) -> None:
    unzoned.placement = dict.fromkeys(NODES, "a:1,b:1,c:1")
    unzoned.lag = 6
    clock = FakeClock()
    run(zones=ZONES, clock=clock)
    assert unzoned.dbs["onboarding"]["n"] == 3
    assert 1 <= clock.now < ZONES_SETTLE_SECONDS
    for viewer in NODES:
        assert {n: d.get("zone") for n, d in unzoned.copies[viewer].items()} == ZONES


def test_copies_of_nodes_that_never_agree_are_refused_after_the_bound(
    placed: ZonedCluster,
) -> None:
    placed.copies[NODES[2]][NODES[1]]["zone"] = "c"
    with pytest.raises(OpsError) as error:
        run()
    assert str(error.value) == (
        "the nodes' copies of _nodes still disagree on zones after 60s: "
        f"{NODES[1]}: b on {NODES[0]}, b on {NODES[1]}, c on {NODES[2]}"
    )
    assert writes(placed) == []


def test_a_placement_making_other_than_the_settings_copies_is_refused(
    placed: ZonedCluster,
) -> None:
    with pytest.raises(OpsError) as error:
        run(COUCHDB_REPLICAS="2")
    assert str(error.value) == (
        "[cluster] placement a:1,b:1,c:1 makes 3 copies of each shard range, "
        "COUCHDB_REPLICAS says 2"
    )


def test_the_database_is_placed_by_zone_and_older_databases_breaking_the_rule_are_reported(
    placed: ZonedCluster,
) -> None:
    # Created before the placement: two copies of a range in zone a, or all three there.
    a2, a3 = "00000000-7fffffff", "80000000-ffffffff"
    fourth = "couchdb@couchdb-3.couchdb-headless.onboarding-prod.svc.cluster.local"
    placed.shard_maps["userdb-6a6f686e"] = {
        "_id": "userdb-6a6f686e",
        "_rev": FIRST_REV,
        "by_range": {a2: [NODES[0], NODES[0], NODES[1]], a3: [NODES[0], NODES[1], NODES[2]]},
    }
    placed.shard_maps["legacy-fine"] = {
        "_id": "legacy-fine",
        "_rev": FIRST_REV,
        "by_range": {a2: list(NODES), a3: list(NODES)},
    }
    # A copy on a node that has left the cluster counts in no zone.
    placed.shard_maps["gone"] = {
        "_id": "gone",
        "_rev": FIRST_REV,
        "by_range": {a2: [NODES[0], NODES[1], fourth]},
    }
    report = run()
    for shard_range, holders in placed.shard_maps["onboarding"]["by_range"].items():
        assert sorted(str(placed.zone_of(n)) for n in holders) == ["a", "b", "c"], shard_range
    alias = pseudonym("userdb-6a6f686e")
    assert report.warnings == [
        f"database {pseudonym('gone')}: 1 of its 1 shard ranges are not placed as [cluster] "
        f"placement a:1,b:1,c:1 says (e.g. {a2}: (no zone):1,a:1,b:1)",
        f"database {alias}: 1 of its 2 shard ranges are not placed as [cluster] placement "
        f"a:1,b:1,c:1 says (e.g. {a2}: a:2,b:1); losing zone a would leave range {a2} 1 of its "
        "3 copies, below its quorum of 2",
    ]


def test_nodes_in_a_zone_the_placement_leaves_out_are_reported(placed: ZonedCluster) -> None:
    placed.placement = dict.fromkeys(NODES, "a:1,b:1")
    report = run(COUCHDB_REPLICAS="2")
    assert report.warnings == [
        "nodes in a zone that [cluster] placement a:1,b:1 leaves out get no copy of any new "
        f"database: {NODES[2]} (c)"
    ]
    for holders in placed.shard_maps["onboarding"]["by_range"].values():
        assert NODES[2] not in holders


def test_zones_for_a_node_outside_the_cluster_are_refused(unzoned: ZonedCluster) -> None:
    with pytest.raises(OpsError, match=r"not cluster members: couchdb@elsewhere"):
        run(zones={**ZONES, "couchdb@elsewhere": "a"})
    assert writes(unzoned) == []


def test_without_a_placement_the_zones_are_neither_read_nor_required(
    unzoned: ZonedCluster,
) -> None:
    report = run()
    assert report.warnings == []
    assert not [c for c in unzoned.calls if "_nodes/_all_docs" in c[1] or "/_dbs/" in c[1]]
    assert len(unzoned.shard_maps["onboarding"]["by_range"]) == 4


def test_databases_past_those_named_are_counted_in_one_line(placed: ZonedCluster) -> None:
    for i in range(MISPLACED_SHOWN + 5):
        placed.shard_maps[f"old-{i:03}"] = {
            "_id": f"old-{i:03}",
            "_rev": FIRST_REV,
            "by_range": {"00000000-ffffffff": [NODES[0], NODES[1]]},
        }
    report = run()
    assert len(report.warnings) == MISPLACED_SHOWN + 1
    assert report.warnings[-1] == (
        f"{MISPLACED_SHOWN + 5} databases in all have shard ranges not placed as a:1,b:1,c:1"
    )
