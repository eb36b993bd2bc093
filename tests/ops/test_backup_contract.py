"""Contract tests for the backup's reading of shard copies, which pouchdb-server lacks.

CouchDB 3 serves each node's own databases under `/_node/{node-name}/` (the node-local
interface that replaced port 5986; docs.couchdb.org, "/_node/{node-name}"). What couchops uses:

- `GET /_node/_local/_dbs/{db}` answers the database's shard map: `by_range` (range -> nodes
  holding a copy) and `shard_suffix` (the character codes of ".<creation time>").
- A copy is the database `shards/{range}/{db}{suffix}`, its name URL-escaped as one path
  segment: `GET /_node/{node}/{shard}` answers its info (`doc_count`, `doc_del_count`) and
  `GET /_node/{node}/{shard}/_all_docs` its rows, as for any database.

The same requests run against the real 3-node cluster whenever tests/ops/test_backup_server.py
is pointed at one (`COUCHDB_URL`); with pouchdb-server the backup reads the clustered
`_all_docs`, as the last test here checks.
"""

from __future__ import annotations

from urllib.parse import quote

import pytest
import responses
from responses import matchers

from couchops.backup import copies_to_read, read_database, read_ranges
from couchops.couch import Couch, parse_node_urls

pytestmark = pytest.mark.contract

BASE = "http://couchdb.test:5984"
NODES = ["couchdb@a", "couchdb@b", "couchdb@c"]
RANGES = ["00000000-7fffffff", "80000000-ffffffff"]
SUFFIX = ".1796179029"


def couch() -> Couch:
    return Couch(BASE, ("admin", "pw"), retries=0)


def copy_path(node: str, shard_range: str, db: str = "onboarding") -> str:
    return f"/_node/{node}/" + quote(f"shards/{shard_range}/{db}{SUFFIX}", safe="")


def shard_map(db: str = "onboarding") -> None:
    responses.get(f"{BASE}/", json={"couchdb": "Welcome", "version": "3.5.2"})
    responses.get(
        f"{BASE}/_node/_local/_dbs/{db}",
        json={
            "_id": db,
            "shard_suffix": [ord(c) for c in SUFFIX],
            "by_range": {r: NODES for r in RANGES},
            "by_node": {n: RANGES for n in NODES},
        },
    )


def copy_info(node: str, shard_range: str, docs: int, deleted: int = 0) -> None:
    responses.get(
        BASE + copy_path(node, shard_range), json={"doc_count": docs, "doc_del_count": deleted}
    )


@responses.activate
def test_a_copy_that_has_seen_fewer_documents_is_not_read_and_the_nodes_take_turns() -> None:
    shard_map()
    # first range: node a is behind (a write it has not received yet), b and c agree
    copy_info("couchdb@a", RANGES[0], 10)
    copy_info("couchdb@b", RANGES[0], 10, deleted=1)
    copy_info("couchdb@c", RANGES[0], 11)
    # second range: every copy agrees; b has already been given a range, so another is read
    for node in NODES:
        copy_info(node, RANGES[1], 7)

    copies = copies_to_read(couch(), "onboarding")

    assert copies is not None
    paths = [path for _, path in copies]
    assert paths[0] in {copy_path("couchdb@b", RANGES[0]), copy_path("couchdb@c", RANGES[0])}
    assert paths[1] == copy_path("couchdb@a", RANGES[1])


@responses.activate
def test_a_copy_that_does_not_answer_is_passed_over() -> None:
    shard_map()
    responses.get(
        BASE + copy_path("couchdb@a", RANGES[0]),
        status=500,
        json={"error": "nodedown", "reason": "couchdb@a"},
    )
    copy_info("couchdb@b", RANGES[0], 10)
    copy_info("couchdb@c", RANGES[0], 10)
    for node in NODES:
        copy_info(node, RANGES[1], 7)

    copies = copies_to_read(couch(), "onboarding")

    assert copies is not None
    assert copy_path("couchdb@a", RANGES[0]) not in [path for _, path in copies]
    assert len(copies) == len(RANGES)
    # a node that failed is not asked again for the next range
    asked = [c.request.url for c in responses.calls]
    assert BASE + copy_path("couchdb@a", RANGES[1]) not in asked
    assert BASE + copy_path("couchdb@b", RANGES[1]) in asked


@responses.activate
def test_the_documents_are_read_from_the_chosen_copies_page_by_page() -> None:
    shard_map()
    for shard_range in RANGES:
        for node in NODES:
            copy_info(node, shard_range, 3)
    served: dict[str, list[str]] = {
        copy_path("couchdb@a", RANGES[0]): ["a1", "a2", "a3"],
        copy_path("couchdb@b", RANGES[1]): ["b1", "b2", "b3"],
    }
    for path, ids in served.items():
        rows = [{"id": i, "key": i, "value": {"rev": "1-x"}, "doc": {"_id": i}} for i in ids]
        # a sample of its changes too small to cut the copy into ranges
        responses.get(f"{BASE}{path}/_changes", json={"results": [{"id": i} for i in ids]})
        # a page of two, then the rest from the last id (read again and skipped)
        responses.get(
            f"{BASE}{path}/_all_docs",
            match=[
                matchers.query_param_matcher(
                    {"include_docs": "true", "attachments": "true", "limit": "2"}
                )
            ],
            json={"rows": rows[:2]},
        )
        responses.get(
            f"{BASE}{path}/_all_docs",
            match=[
                matchers.query_param_matcher(
                    {
                        "include_docs": "true",
                        "attachments": "true",
                        "limit": "3",
                        "startkey": f'"{ids[1]}"',
                    }
                )
            ],
            json={"rows": rows[1:]},
        )

    pages = list(read_database(couch(), "onboarding", documents=6, page=2, concurrency=4))

    assert sorted(doc["_id"] for page in pages for doc in page) == sorted(
        i for ids in served.values() for i in ids
    )
    assert not any(c.request.url.startswith(f"{BASE}/onboarding/") for c in responses.calls)


@responses.activate
def test_each_copy_is_cut_into_id_ranges_so_that_several_are_read_at_once() -> None:
    """One stream per copy leaves the server idle while each page is parsed: with two copies
    and a concurrency of 8, each is cut in four at ids taken from a sample of its changes."""
    shard_map()
    for shard_range in RANGES:
        for node in NODES:
            copy_info(node, shard_range, 5000)
    chosen = [copy_path("couchdb@a", RANGES[0]), copy_path("couchdb@b", RANGES[1])]
    for path in chosen:
        sample = [{"id": f"{path[-12:]}-{n:03d}"} for n in range(100)]
        responses.get(f"{BASE}{path}/_changes", json={"results": sample})

    ranges = read_ranges(couch(), "onboarding", documents=10_000, page=1000, concurrency=8)

    assert [path for _, path, _, _ in ranges] == [chosen[0]] * 4 + [chosen[1]] * 4
    for k in (0, 4):
        bounds = [(first, end) for _, _, first, end in ranges[k : k + 4]]
        assert bounds[0][0] is None and bounds[-1][1] is None
        assert all(bounds[i][1] == bounds[i + 1][0] is not None for i in range(3))


@responses.activate
def test_without_node_local_access_the_clustered_all_docs_is_read() -> None:
    responses.get(f"{BASE}/", json={"couchdb": "Welcome", "version": "3.5.2"})
    responses.get(
        f"{BASE}/_node/_local/_dbs/onboarding",
        status=403,
        json={"error": "forbidden", "reason": "You are not a server admin."},
    )
    responses.get(f"{BASE}/onboarding/_changes", json={"results": []})
    rows = [{"id": i, "key": i, "value": {"rev": "1-x"}, "doc": {"_id": i}} for i in ("x", "y")]
    responses.get(f"{BASE}/onboarding/_all_docs", json={"rows": rows})

    # more documents than a page: the shard copies would be asked for, if the server allowed it
    pages = list(read_database(couch(), "onboarding", documents=5000, page=1000, concurrency=4))

    assert sorted(doc["_id"] for page in pages for doc in page) == ["x", "y"]


@responses.activate
def test_a_database_of_one_page_is_read_in_one_clustered_request() -> None:
    responses.get(f"{BASE}/onboarding/_changes", json={"results": []})
    rows = [{"id": "x", "key": "x", "value": {"rev": "1-x"}, "doc": {"_id": "x"}}]
    read = responses.get(f"{BASE}/onboarding/_all_docs", json={"rows": rows})

    pages = list(read_database(couch(), "onboarding", documents=1, page=1000, concurrency=4))

    assert [doc["_id"] for page in pages for doc in page] == ["x"]
    assert read.call_count == 1
    assert not any("/_node/" in c.request.url for c in responses.calls)


@responses.activate
def test_a_copy_is_read_from_its_node_directly_when_its_url_answers_as_that_node() -> None:
    """`GET /_node/_local` answers `{"name": <node>}`: a node URL from COUCHDB_NODE_URLS is
    used only when the node there is the one named; otherwise the copy is read through the
    cluster URL's node, as without the setting."""
    shard_map()
    for shard_range in RANGES:
        for node in NODES:
            copy_info(node, shard_range, 5)
    direct = {
        "couchdb@a": "http://couchdb-a.test:5984",
        "couchdb@b": "http://couchdb-b.test:5984",
    }
    responses.get(f"{direct['couchdb@a']}/_node/_local", json={"name": "couchdb@a"})
    # b's URL reaches another node (a wrong table): not used
    responses.get(f"{direct['couchdb@b']}/_node/_local", json={"name": "couchdb@c"})
    spec = ",".join(f"{node}={url}" for node, url in direct.items())
    client = Couch(BASE, ("admin", "pw"), retries=0, node_urls=spec)

    copies = copies_to_read(client, "onboarding")

    assert copies is not None
    (first_client, first_path), (second_client, second_path) = copies
    assert first_client.url == direct["couchdb@a"]
    assert first_path == "/_node/_local/" + quote(f"shards/{RANGES[0]}/onboarding{SUFFIX}", safe="")
    assert second_client is client
    assert second_path == copy_path("couchdb@b", RANGES[1])
    checks = [c for c in responses.calls if c.request.url.endswith("/_node/_local")]
    assert len(checks) == 2  # each node's URL checked once


@pytest.mark.parametrize(
    ("spec", "node", "url"),
    [
        (
            "http://{host}:5984",
            "couchdb@couchdb-0.couchdb.ns.svc.cluster.local",
            "http://couchdb-0.couchdb.ns.svc.cluster.local:5984",
        ),
        (
            "n1@127.0.0.1=http://127.0.0.1:15984, n2@127.0.0.1=http://127.0.0.1:25984/",
            "n2@127.0.0.1",
            "http://127.0.0.1:25984",
        ),
        ("n1@127.0.0.1=http://127.0.0.1:15984", "n3@127.0.0.1", None),
    ],
)
def test_node_urls_come_from_a_template_or_a_table(spec: str, node: str, url: str | None) -> None:
    assert parse_node_urls(spec)(node) == url
