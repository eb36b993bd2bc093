"""Contract tests for the backup's reading of shard copies, which pouchdb-server lacks.

CouchDB 3 serves each node's own databases under `/_node/{node-name}/` (the node-local
interface that replaced port 5986; docs.couchdb.org, "/_node/{node-name}"). What couchops uses:

- `GET /_node/_local/_dbs/{db}` answers the database's shard map: `by_range` (range -> nodes
  holding a copy) and `shard_suffix` (the character codes of ".<creation time>").
- A copy is the database `shards/{range}/{db}{suffix}`, its name URL-escaped as one path
  segment: `GET /_node/{node}/{shard}` answers its info (`doc_count`, `doc_del_count`, an
  integer `update_seq`) and `GET /_node/{node}/{shard}/_changes` its feed (integer
  sequences, unlike the clustered feed's opaque ones), as for any database.

The same requests run against the real 3-node cluster whenever tests/ops/test_backup_server.py
is pointed at one (`COUCHDB_URL`); with pouchdb-server the backup reads the clustered
`_changes`, as a test here checks.
"""

from __future__ import annotations

from urllib.parse import quote

import pytest
import responses
from responses import matchers

from couchops.backup import changes_ranges, copies_to_read, read_database
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


def copy_info(
    node: str, shard_range: str, docs: int, deleted: int = 0, update_seq: int = 0
) -> None:
    responses.get(
        BASE + copy_path(node, shard_range),
        json={"doc_count": docs, "doc_del_count": deleted, "update_seq": update_seq},
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


def change(doc_id: str, seq: object, leaves: int = 1, **extra: object) -> dict[str, object]:
    """A row of `_changes?style=all_docs&include_docs=true`: every leaf's revision, the
    winning one's document."""
    revs = [{"rev": f"{n + 1}-{doc_id}"} for n in range(leaves)]
    return {
        "seq": seq,
        "id": doc_id,
        "changes": revs,
        "doc": {"_id": doc_id, "_rev": revs[-1]["rev"]},
        **extra,
    }


def changes_page(path: str, rows: list[dict[str, object]], since: object, limit: int) -> None:
    responses.get(
        f"{BASE}{path}/_changes",
        match=[
            matchers.query_param_matcher(
                {
                    "style": "all_docs",
                    "include_docs": "true",
                    "attachments": "true",
                    "limit": str(limit),
                    "since": str(since),
                }
            )
        ],
        json={"results": rows, "last_seq": rows[-1]["seq"] if rows else since},
    )


def read_ids(**kwargs: int) -> list[str]:
    return [c.id for chunk in read_database(couch(), "onboarding", **kwargs) for c in chunk]


@responses.activate
def test_the_documents_are_read_from_the_chosen_copies_changes_page_by_page() -> None:
    """Each chosen copy's changes feed is read in pages (`since` the last sequence); the
    documents with several leaves are completed by one clustered `_bulk_get` (a leaf it does
    not find yet is read with `open_revs=all` from the copy that listed it), and a deleted one
    (its winner deleted: every leaf is) is left out."""
    shard_map()
    for shard_range in RANGES:
        for node in NODES:
            copy_info(node, shard_range, 3)
    a = copy_path("couchdb@a", RANGES[0])
    b = copy_path("couchdb@b", RANGES[1])
    changes_page(a, [change("a1", 1), change("a2", 2)], 0, 2)
    changes_page(a, [change("a3", 3, leaves=2), change("a4", 4, leaves=2)], 2, 2)
    changes_page(a, [], 4, 2)
    changes_page(b, [change("b1", 1), change("gone", 2, deleted=True)], 0, 2)
    changes_page(b, [], 2, 2)
    history = {"start": 2, "ids": ["a3", "x"]}
    bulk_get = responses.post(
        f"{BASE}/onboarding/_bulk_get",
        match=[
            matchers.query_param_matcher({"revs": "true", "attachments": "true"}),
            matchers.json_params_matcher(
                {
                    "docs": [
                        {"id": "a3", "rev": "1-a3"},
                        {"id": "a3", "rev": "2-a3"},
                        {"id": "a4", "rev": "1-a4"},
                        {"id": "a4", "rev": "2-a4"},
                    ]
                }
            ),
        ],
        json={
            "results": [
                {"id": "a3", "docs": [{"ok": {"_id": "a3", "_rev": "1-a3", "_deleted": True}}]},
                {
                    "id": "a3",
                    "docs": [{"ok": {"_id": "a3", "_rev": "2-a3", "_revisions": history}}],
                },
                {"id": "a4", "docs": [{"ok": {"_id": "a4", "_rev": "1-a4"}}]},
                {
                    "id": "a4",
                    "docs": [{"error": {"id": "a4", "rev": "2-a4", "error": "not_found"}}],
                },
            ]
        },
    )
    from_copy = responses.get(
        f"{BASE}{a}/a4",
        match=[
            matchers.query_param_matcher(
                {"open_revs": "all", "revs": "true", "attachments": "true"}
            )
        ],
        json=[{"ok": {"_id": "a4", "_rev": "2-a4"}}, {"ok": {"_id": "a4", "_rev": "1-a4"}}],
    )

    chunks = list(read_database(couch(), "onboarding", documents=6, page=2, concurrency=4))

    changes = {c.id: c for chunk in chunks for c in chunk}
    assert sorted(changes) == ["a1", "a2", "a3", "a4", "b1"]
    assert bulk_get.call_count == 1  # every document of several leaves in one request
    assert from_copy.call_count == 1
    assert [leaf["_rev"] for leaf in changes["a3"].revisions()] == ["2-a3", "1-a3"]
    assert [leaf["_rev"] for leaf in changes["a4"].revisions()] == ["2-a4", "1-a4"]
    assert changes["a1"].leaves is None
    clustered = [c.request.url for c in responses.calls if "/onboarding/" in c.request.url]
    assert [url.split("?")[0] for url in clustered] == [f"{BASE}/onboarding/_bulk_get"]


@responses.activate
def test_each_copy_is_cut_into_stretches_of_sequence_so_that_several_are_read_at_once() -> None:
    """One stream per copy leaves the server idle while each page is parsed: with two copies
    and a concurrency of 8, each copy's feed (sequences 1..8000) is cut in four; the last
    stretch stays open to the end of the feed."""
    shard_map()
    for shard_range in RANGES:
        for node in NODES:
            copy_info(node, shard_range, 5000, update_seq=8000)

    ranges = changes_ranges(couch(), "onboarding", documents=10_000, page=1000, concurrency=8)

    chosen = [copy_path("couchdb@a", RANGES[0]), copy_path("couchdb@b", RANGES[1])]
    assert [path for _, path, _, _ in ranges] == [chosen[0]] * 4 + [chosen[1]] * 4
    for k in (0, 4):
        assert [(since, until) for _, _, since, until in ranges[k : k + 4]] == [
            (0, 2000),
            (2000, 4000),
            (4000, 6000),
            (6000, None),
        ]


@responses.activate
def test_a_stretch_stops_past_its_last_sequence_and_a_moved_document_is_read_once() -> None:
    """A write during the backup moves a document to the end of the feed: the stretch that
    had it may have read it already, the last stretch reads it again, the first reading is
    kept."""
    shard_map()
    for shard_range in RANGES:
        for node in NODES:
            copy_info(node, shard_range, 2, update_seq=4)
    a = copy_path("couchdb@a", RANGES[0])
    b = copy_path("couchdb@b", RANGES[1])
    changes_page(a, [change("x", 1), change("y", 2), change("z", 3)], 0, 3)  # 3 > 2: not its
    changes_page(a, [change("z", 3), change("x", 5)], 2, 3)  # x was written again meanwhile
    changes_page(b, [change("p", 1), change("q", 3)], 0, 3)
    changes_page(b, [change("q", 3)], 2, 3)

    ids = read_ids(documents=10, page=3, concurrency=4)

    assert sorted(ids) == ["p", "q", "x", "y", "z"]
    since = [c.request.params.get("since") for c in responses.calls if "_changes" in c.request.url]
    assert sorted(since) == ["0", "0", "2", "2"]


@responses.activate
def test_without_node_local_access_the_clustered_changes_feed_is_read() -> None:
    responses.get(f"{BASE}/", json={"couchdb": "Welcome", "version": "3.5.2"})
    responses.get(
        f"{BASE}/_node/_local/_dbs/onboarding",
        status=403,
        json={"error": "forbidden", "reason": "You are not a server admin."},
    )
    opaque = "2-g1AAAABzeJzLYWBgYMpgTmHgz8tPSTV0MDQy1zMAQsMckEQiQ1L9____sxIZcCrJYwGSDA1A6j9IZQ"
    changes_page("/onboarding", [change("x", "1-g1AA"), change("y", opaque)], 0, 1000)

    # more documents than a page: the shard copies would be asked for, if the server allowed it
    assert sorted(read_ids(documents=5000, page=1000, concurrency=4)) == ["x", "y"]


@responses.activate
def test_a_database_of_one_page_is_read_in_one_clustered_request() -> None:
    changes_page("/onboarding", [change("x", 1)], 0, 1000)

    assert read_ids(documents=1, page=1000, concurrency=4) == ["x"]
    assert len(responses.calls) == 1
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
