"""Contract tests of `cluster-setup` on the documented CouchDB cluster API.

pouchdb-server is a single node without `/_up`, `_cluster_setup` actions, node management or
partitioned databases, so these tests answer couchops as docs.couchdb.org documents for
CouchDB 3.5: `GET /_up` (200 `{"status":"ok"}`, 404 `{"status":"seeding"}` while a node syncs
its seedlist), `GET /_membership` (`all_nodes`, `cluster_nodes`), `PUT
/_node/_local/_nodes/{node}` (adds a node), `GET/POST /_cluster_setup` (`{"state":
"cluster_finished"}`, `{"action": "finish_cluster"}`), `PUT /{db}?partitioned=true&q=&n=`,
`GET /{db}` (`props.partitioned`, `cluster.q/n`), `GET/PUT /{db}/_purged_infos_limit`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import pytest
import requests
import responses

from couchops.cluster_setup import SetupReport, cluster_setup, wait_for_cluster
from couchops.couch import Couch
from couchops.errors import OpsError
from couchops.settings import load_settings

pytestmark = pytest.mark.contract

BASE = "http://couchdb.test:5984"
NODES = [
    f"couchdb@couchdb-{i}.couchdb-headless.onboarding-prod.svc.cluster.local" for i in range(3)
]


class Cluster:
    def __init__(self) -> None:
        self.members = list(NODES)
        self.connected = list(NODES)
        self.up: list[tuple[int, dict[str, Any]]] = []
        self.state = "cluster_enabled"
        self.dbs: dict[str, dict[str, Any]] = {"_users": {}, "_replicator": {}}
        self.indexes: list[dict[str, Any]] = []
        self.security: dict[str, Any] = {}
        self.calls: list[tuple[str, str, Any]] = []

    def handle(self, request: requests.PreparedRequest) -> tuple[int, dict[str, str], str]:
        url = urlsplit(str(request.url))
        path = unquote(url.path)
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        body = json.loads(request.body) if request.body else None
        self.calls.append((str(request.method), path, query or body))
        status, payload = self.route(str(request.method), path, query, body)
        return status, {"Content-Type": "application/json"}, json.dumps(payload)

    def route(  # noqa: PLR0911, PLR0912 (one answer per endpoint)
        self, method: str, path: str, query: dict[str, str], body: Any
    ) -> tuple[int, Any]:
        if path == "/_up":
            return self.up.pop(0) if self.up else (200, {"status": "ok", "seeds": {}})
        if path == "/_membership":
            return 200, {"all_nodes": self.connected, "cluster_nodes": self.members}
        if path.startswith("/_node/_local/_nodes/"):
            self.members.append(path.rsplit("/", 1)[1])
            return 201, {"ok": True}
        if path == "/_cluster_setup":
            if method == "GET":
                return 200, {"state": self.state}
            if self.state == "cluster_finished":
                return 400, {"error": "bad_request", "reason": "Cluster is already finished"}
            self.state = "cluster_finished"
            return 201, {"ok": True}
        name, _, rest = path.strip("/").partition("/")
        if not rest:
            if method == "PUT":
                self.dbs[name] = {
                    "q": int(query["q"]),
                    "n": int(query["n"]),
                    "partitioned": query.get("partitioned") == "true",
                }
                return 201, {"ok": True}
            db = self.dbs.get(name)
            if db is None:
                return 404, {"error": "not_found", "reason": "Database does not exist."}
            return 200, {
                "db_name": name,
                "props": {"partitioned": True} if db.get("partitioned") else {},
                "cluster": {"q": db.get("q", 2), "n": db.get("n", 3), "w": 2, "r": 2},
            }
        if rest == "_purged_infos_limit":
            if method == "PUT":
                self.dbs[name]["purged_infos_limit"] = body
                return 200, {"ok": True}
            return 200, self.dbs[name].get("purged_infos_limit", 1000)
        if rest == "_index":
            if method == "POST":
                # As CouchDB: the index is (re)defined under its design document and name.
                entry = {
                    "ddoc": f"_design/{body['ddoc']}",
                    "name": body["name"],
                    "partitioned": body.get("partitioned"),
                    "def": {"fields": [{f: "asc"} for f in body["index"]["fields"]]},
                }
                self.indexes = [
                    ix
                    for ix in self.indexes
                    if (ix["ddoc"], ix["name"]) != (entry["ddoc"], entry["name"])
                ] + [entry]
                return 200, {
                    "result": "created",
                    "id": f"_design/{body['ddoc']}",
                    "name": body["name"],
                }
            return 200, {"total_rows": len(self.indexes), "indexes": self.indexes}
        if rest == "_security":
            if method == "PUT":
                self.security = body
                return 200, {"ok": True}
            return 200, self.security
        return 404, {"error": "not_found", "reason": "missing"}


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    state = Cluster()
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        for method in ("GET", "PUT", "POST"):
            mock.add_callback(method, re.compile(re.escape(BASE) + ".*"), callback=state.handle)
        yield state


def settings(**env: str) -> Any:
    base = {
        "COUCHDB_URL": BASE,
        "COUCHDB_NODES": ",".join(NODES),
        "COUCHDB_DATABASE": "onboarding",
        "COUCHDB_SHARDS": "4",
        "COUCHDB_REPLICAS": "3",
        "COUCHDB_PURGED_INFOS_LIMIT": "100000",
        "COUCHDB_SETUP_TIMEOUT_SECONDS": "30",
    }
    return load_settings(base | env)


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def couch() -> Couch:
    return Couch(BASE, ("admin", "pw"), retries=0)


def test_first_run_finishes_the_cluster_and_creates_a_partitioned_database(
    cluster: Cluster,
) -> None:
    clock = FakeClock()
    report = cluster_setup(couch(), settings(), sleep=clock.sleep, clock=clock)
    assert cluster.state == "cluster_finished"
    assert cluster.dbs["onboarding"] == {
        "q": 4,
        "n": 3,
        "partitioned": True,
        "purged_infos_limit": 100000,
    }
    assert [c for c in cluster.calls if c[0] == "PUT" and c[1] == "/onboarding"] == [
        ("PUT", "/onboarding", {"partitioned": "true", "q": "4", "n": "3"})
    ]
    partitioned = {ix["name"]: ix["partitioned"] for ix in cluster.indexes}
    assert partitioned == {
        "by-createdAt": False,
        "untimed-createdAt": False,
        "by-createdAt-in-partition": True,
    }
    assert cluster.security["members"] == {"names": [], "roles": ["_admin"]}
    assert len(report.changes) == 7

    again = cluster_setup(couch(), settings(), sleep=clock.sleep, clock=clock)
    assert again.changes == []
    assert not [c for c in cluster.calls[-12:] if c[0] != "GET"]


def test_it_waits_for_seeding_and_for_every_node_then_adds_missing_members(
    cluster: Cluster,
) -> None:
    cluster.up = [(404, {"status": "seeding", "seeds": {}})] * 3
    cluster.members = NODES[:2]
    cluster.connected = NODES[:2]
    clock = FakeClock()
    report = SetupReport()
    calls = {"n": 0}
    original = cluster.route

    def route(method: str, path: str, query: dict[str, str], body: Any) -> tuple[int, Any]:
        if path == "/_membership":
            calls["n"] += 1
            if calls["n"] == 6:
                cluster.connected = list(NODES)
        return original(method, path, query, body)

    cluster.route = route  # type: ignore[method-assign]
    nodes = wait_for_cluster(couch(), settings(), report, sleep=clock.sleep, clock=clock)
    assert nodes == sorted(NODES)
    assert report.changes == [f"added node {NODES[2]} to the cluster"]
    assert ("PUT", f"/_node/_local/_nodes/{NODES[2]}", {}) in cluster.calls


def test_it_gives_up_within_the_bound_naming_the_silent_node(cluster: Cluster) -> None:
    cluster.connected = NODES[:2]
    clock = FakeClock()
    with pytest.raises(
        OpsError, match=rf"cluster not ready after 30s: member nodes not answering: {NODES[2]}"
    ):
        wait_for_cluster(couch(), settings(), SetupReport(), sleep=clock.sleep, clock=clock)
    assert 30 <= clock.now <= 33


def test_an_existing_database_that_is_not_partitioned_is_refused(cluster: Cluster) -> None:
    cluster.dbs["onboarding"] = {"q": 2, "n": 3, "partitioned": False}
    clock = FakeClock()
    with pytest.raises(OpsError, match="exists but is not partitioned"):
        cluster_setup(couch(), settings(), sleep=clock.sleep, clock=clock)


def test_shards_that_differ_from_the_settings_are_reported_not_changed(cluster: Cluster) -> None:
    cluster.dbs["onboarding"] = {"q": 2, "n": 3, "partitioned": True}
    clock = FakeClock()
    report = cluster_setup(couch(), settings(), sleep=clock.sleep, clock=clock)
    assert any("q=2 n=3, settings say q=4 n=3" in w for w in report.warnings)


def test_an_already_finished_cluster_is_not_finished_again(cluster: Cluster) -> None:
    cluster.state = "cluster_finished"
    clock = FakeClock()
    cluster_setup(couch(), settings(), sleep=clock.sleep, clock=clock)
    assert not [c for c in cluster.calls if c[0] == "POST" and c[1] == "/_cluster_setup"]


def test_an_index_defined_otherwise_is_redefined_once(cluster: Cluster) -> None:
    """A purge index from an earlier definition (without `_rev`) is posted again, which makes
    CouchDB replace it; the run after that changes nothing."""
    clock = FakeClock()
    cluster_setup(couch(), settings(), sleep=clock.sleep, clock=clock)
    for index in cluster.indexes:
        index["def"]["fields"] = [f for f in index["def"]["fields"] if "_rev" not in f]
    report = cluster_setup(couch(), settings(), sleep=clock.sleep, clock=clock)
    assert "redefined index by-createdAt on onboarding" in report.changes
    assert "redefined index untimed-createdAt on onboarding" in report.changes
    assert cluster_setup(couch(), settings(), sleep=clock.sleep, clock=clock).changes == []
