"""Contract tests for what pouchdb-server lacks in consolidation and restore.

- `GET /{db}/{docid}?open_revs=["rev",...]` with `Accept: application/json` answers
  `[{"ok": {doc}}, ...]` (docs.couchdb.org, "GET /{db}/{docid}", open_revs): consolidation
  carries conflicting leaves over with it.
- `GET /{db}` answers `props.partitioned`: a target that is not partitioned is refused.
- `PUT /{db}?partitioned=true` creates a partitioned database: restore recreates one.
"""

from __future__ import annotations

import gzip
import hashlib
import json
from pathlib import Path
from urllib.parse import quote

import pytest
import responses
from responses import matchers

from couchops.backup import FORMAT, MANIFEST, restore
from couchops.consolidate import consolidate
from couchops.couch import Couch
from couchops.errors import OpsError
from couchops.partition import partition_key, userdb_name

pytestmark = pytest.mark.contract

BASE = "http://couchdb.test:5984"


def couch() -> Couch:
    return Couch(BASE, ("admin", "pw"), retries=0)


@responses.activate
def test_conflicting_leaves_are_read_with_open_revs_and_written_beside_the_winner() -> None:
    source = userdb_name("zoé@example.fr")
    new_id = f"{partition_key('zoé@example.fr', b'k')}:profile"
    responses.get(f"{BASE}/", json={"express-pouchdb": "Welcome"})  # read through the cluster
    responses.get(
        f"{BASE}/onboarding", json={"db_name": "onboarding", "props": {"partitioned": True}}
    )
    responses.get(f"{BASE}/_all_dbs", json=[source])
    responses.get(
        f"{BASE}/{source}/_all_docs",
        json={
            "rows": [
                {"id": "profile", "doc": {"_id": "profile", "_rev": "2-b", "_conflicts": ["2-a"]}}
            ]
        },
    )
    responses.get(
        f"{BASE}/{source}/profile",
        match=[
            matchers.query_param_matcher(
                {"open_revs": '["2-a"]', "attachments": "true", "latest": "true"}
            )
        ],
        json=[{"ok": {"_id": "profile", "_rev": "2-a", "step": "other"}}],
    )
    bulk = responses.post(f"{BASE}/onboarding/_bulk_docs", status=201, json=[])
    partition = new_id.split(":", maxsplit=1)[0]
    read_back = responses.get(
        f"{BASE}/onboarding/_all_docs",
        match=[
            matchers.query_param_matcher(
                {
                    "start_key": f'"{partition}:"',
                    "end_key": f'"{partition};"',
                    "inclusive_end": "false",
                    "limit": "5000",
                }
            )
        ],
        json={"rows": [{"key": new_id, "id": new_id, "value": {"rev": "2-b"}}]},
    )
    # A document of several leaves is looked up: every leaf, each with its history.
    leaves = responses.get(
        f"{BASE}/onboarding/{quote(new_id, safe='')}",
        match=[matchers.query_param_matcher({"open_revs": "all", "revs": "true"})],
        json=[
            {"ok": {"_id": new_id, "_rev": rev, "_revisions": {"start": 2, "ids": [rev[2:], "x"]}}}
            for rev in ("2-b", "2-a")
        ],
    )

    stats = consolidate(couch(), "onboarding", b"k")

    sent = json.loads(bulk.calls[0].request.body)
    assert sent["new_edits"] is False
    assert [(d["_id"], d["_rev"]) for d in sent["docs"]] == [(new_id, "2-b"), (new_id, "2-a")]
    assert stats.conflict_revisions_copied == 1 and stats.sources_verified == 1
    assert read_back.call_count == 1  # verified by one key range over the user's partition
    assert leaves.call_count == 1


@responses.activate
def test_each_source_is_read_from_one_copy_the_nodes_taking_turns() -> None:
    """CouchDB 3's node-local `_dbs` holds each database's shard map (`by_range`,
    `shard_suffix`); `/_node/{node}/shards%2F{range}%2F{db}{suffix}/_all_docs` reads one copy.
    A copy that fails is passed over for the clustered database. The target's three copies
    (`cluster.n`) each confirm the writes (`w=3`)."""
    nodes = ["couchdb@a", "couchdb@b", "couchdb@c"]
    users = ["ana@example.fr", "bo@example.fr", "cy@example.fr"]
    users.sort(key=lambda u: partition_key(u, b"k"))  # the order sources are taken in
    sources = [userdb_name(u) for u in users]
    responses.get(f"{BASE}/", json={"couchdb": "Welcome", "version": "3.5.2"})
    responses.get(
        f"{BASE}/onboarding",
        json={"db_name": "onboarding", "props": {"partitioned": True}, "cluster": {"n": 3}},
    )
    maps = [
        {
            "_id": name,
            "shard_suffix": [ord(c) for c in ".1796181406"],
            "by_range": {"00000000-ffffffff": nodes},
        }
        for name in sources
    ]
    responses.get(
        f"{BASE}/_node/_local/_dbs/_all_docs",
        json={"rows": [{"id": m["_id"], "doc": m} for m in maps]},
    )

    def copy(node: str, name: str) -> str:
        shard = quote(f"shards/00000000-ffffffff/{name}.1796181406", safe="")
        return f"{BASE}/_node/{node}/{shard}/_all_docs"

    rows = {"rows": [{"id": "profile", "doc": {"_id": "profile", "_rev": "1-a"}}]}
    first = responses.get(copy(nodes[0], sources[0]), json=rows)
    second = responses.get(copy(nodes[1], sources[1]), json=rows)
    failing = responses.get(
        copy(nodes[2], sources[2]), status=404, json={"error": "not_found", "reason": "no_db_file"}
    )
    clustered = responses.get(f"{BASE}/{sources[2]}/_all_docs", json=rows)
    bulk = responses.post(f"{BASE}/onboarding/_bulk_docs", status=201, json=[])
    new_ids = [f"{partition_key(u, b'k')}:profile" for u in users]
    responses.get(
        f"{BASE}/onboarding/_all_docs",
        json={"rows": [{"id": i, "key": i, "value": {"rev": "1-a"}} for i in new_ids]},
    )

    stats = consolidate(couch(), "onboarding", b"k", only=sources)

    assert (first.call_count, second.call_count, failing.call_count) == (1, 1, 1)
    assert clustered.call_count == 1
    assert not any(
        c.request.url.split("?")[0]
        in (f"{BASE}/{sources[0]}/_all_docs", f"{BASE}/{sources[1]}/_all_docs")
        for c in responses.calls
    )
    sent = json.loads(bulk.calls[0].request.body)["docs"]
    assert sorted(d["_id"] for d in sent) == sorted(new_ids)
    assert bulk.calls[0].request.params.get("w") == "3"
    assert stats.sources_verified == 3 and not stats.failures


@responses.activate
def test_with_node_urls_a_source_is_read_from_its_copy_s_node_directly() -> None:
    """COUCHDB_NODE_URLS: a copy is read at its own node (`/_node/_local/...`, the node's URL
    checked with `GET /_node/_local`) instead of being relayed by the cluster URL's node."""
    user = "ana@example.fr"
    source = userdb_name(user)
    node, url = "couchdb@a", "http://couchdb-a.test:5984"
    responses.get(f"{BASE}/", json={"couchdb": "Welcome", "version": "3.5.2"})
    responses.get(
        f"{BASE}/onboarding", json={"db_name": "onboarding", "props": {"partitioned": True}}
    )
    shard_map = {
        "_id": source,
        "shard_suffix": [ord(c) for c in ".1796181406"],
        "by_range": {"00000000-ffffffff": [node]},
    }
    responses.get(
        f"{BASE}/_node/_local/_dbs/_all_docs",
        json={"rows": [{"id": source, "doc": shard_map}]},
    )
    responses.get(f"{url}/_node/_local", json={"name": node})
    shard = quote(f"shards/00000000-ffffffff/{source}.1796181406", safe="")
    rows = {"rows": [{"id": "profile", "doc": {"_id": "profile", "_rev": "1-a"}}]}
    direct = responses.get(f"{url}/_node/_local/{shard}/_all_docs", json=rows)
    relayed = responses.get(f"{BASE}/_node/{node}/{shard}/_all_docs", json=rows)
    responses.post(f"{BASE}/onboarding/_bulk_docs", status=201, json=[])
    new_id = f"{partition_key(user, b'k')}:profile"
    responses.get(
        f"{BASE}/onboarding/_all_docs",
        json={"rows": [{"id": new_id, "key": new_id, "value": {"rev": "1-a"}}]},
    )
    client = Couch(BASE, ("admin", "pw"), retries=0, node_urls=f"{node}={url}")

    stats = consolidate(client, "onboarding", b"k", only=[source])

    assert (direct.call_count, relayed.call_count) == (1, 0)
    assert stats.sources_verified == 1 and not stats.failures


@responses.activate
def test_a_target_that_is_not_partitioned_is_refused() -> None:
    responses.get(f"{BASE}/onboarding", json={"db_name": "onboarding", "props": {}})
    with pytest.raises(OpsError, match="is not partitioned"):
        consolidate(couch(), "onboarding", b"k")


def restore_checkpoint() -> None:
    """The restore's checkpoint in the database it writes (`_local/couchops-restore`)."""
    path = f"{BASE}/onboarding/_local/couchops-restore"
    responses.get(path, status=404, json={"error": "not_found", "reason": "missing"})
    responses.put(
        path, status=201, json={"ok": True, "id": "_local/couchops-restore", "rev": "0-1"}
    )
    responses.delete(path, json={"ok": True})


@responses.activate
def test_restore_recreates_a_partitioned_database(tmp_path: Path) -> None:
    (tmp_path / "databases").mkdir()
    data = gzip.compress(b'{"_id":"u1:profile","_rev":"1-a"}\n')
    (tmp_path / "databases" / "00000-onboarding.jsonl.gz").write_bytes(data)
    manifest = {
        "format": FORMAT,
        "id": "20261128T000000Z",
        "created_at": "2026-11-28T00:00:00.000Z",
        "databases": [
            {
                "name": "onboarding",
                "file": "databases/00000-onboarding.jsonl.gz",
                "file_sha256": hashlib.sha256(data).hexdigest(),
                "documents": 1,
                "attachments": 0,
                "partitioned": True,
                "security": {},
            }
        ],
    }
    (tmp_path / MANIFEST).write_text(json.dumps(manifest))
    for _ in ("checked empty", "checked absent"):
        responses.get(f"{BASE}/onboarding", status=404, json={"error": "not_found"})
    create = responses.put(
        f"{BASE}/onboarding",
        match=[matchers.query_param_matcher({"q": "8", "partitioned": "true"})],
        status=201,
        json={"ok": True},
    )
    responses.post(f"{BASE}/onboarding/_bulk_docs", status=201, json=[])
    responses.get(f"{BASE}/onboarding", json={"doc_count": 1})
    restore_checkpoint()
    restore(couch(), tmp_path, q=8)
    assert create.call_count == 1


@responses.activate
def test_restore_writes_design_documents_after_every_other_document(tmp_path: Path) -> None:
    """CouchDB starts building an index as soon as its design document exists: written first,
    the index would be updated beside every batch of the restore, and written before the
    database counts the other documents, its build would compete with the copies catching up.
    Every copy confirms each batch (`w=n`), so none falls behind and none is waited for."""
    lines = [
        b'{"_id":"a","_rev":"1-a"}',
        b'{"_id":"_design/by-date","_rev":"1-d","views":{}}',
        b'{"_id":"b","_rev":"1-b","note":"\\"_id\\":\\"_design/not-one\\""}',
        b'{"_attachments":{},"_id":"_design/with-files","_rev":"1-e"}',
        b'{"_id":"c","_rev":"1-c"}',
    ]
    (tmp_path / "databases").mkdir()
    data = gzip.compress(b"\n".join(lines) + b"\n")
    (tmp_path / "databases" / "00000-onboarding.jsonl.gz").write_bytes(data)
    entry = {
        "name": "onboarding",
        "file": "databases/00000-onboarding.jsonl.gz",
        "file_sha256": hashlib.sha256(data).hexdigest(),
        "documents": len(lines),
        "attachments": 0,
        "partitioned": False,
        "security": {},
    }
    manifest = {
        "format": FORMAT,
        "id": "20261128T000000Z",
        "created_at": "2026-11-28T00:00:00.000Z",
        "databases": [entry],
    }
    (tmp_path / MANIFEST).write_text(json.dumps(manifest))
    for _ in ("checked empty", "checked absent"):
        responses.get(f"{BASE}/onboarding", status=404, json={"error": "not_found"})
    responses.put(f"{BASE}/onboarding", status=201, json={"ok": True})
    bulk = responses.post(f"{BASE}/onboarding/_bulk_docs", status=201, json=[])
    # Created with three copies, every one confirming each batch: the design documents follow
    # the last batch at once, and the count is read once all is written.
    responses.get(f"{BASE}/onboarding", json={"doc_count": 0, "cluster": {"q": 2, "n": 3}})
    responses.get(f"{BASE}/onboarding", json={"doc_count": 5})
    restore_checkpoint()
    # The target holds no design document of its own (cluster-setup's would be kept).
    responses.get(f"{BASE}/onboarding/_all_docs", json={"rows": []})

    restore(couch(), tmp_path, batch=2, concurrency=1, sleep=lambda _: None)

    batches = [[d["_id"] for d in json.loads(c.request.body)["docs"]] for c in bulk.calls]
    assert batches == [["a", "b"], ["c"], ["_design/by-date", "_design/with-files"]]
    requests = [
        (c.request.method, c.request.path_url.split("?")[0].rsplit("/", 1)[-1])
        for c in responses.calls
        if "/_local/" not in c.request.path_url
    ]
    assert {c.request.params.get("w") for c in bulk.calls} == {"3"}  # every copy confirms
    assert requests[-4:] == [
        ("POST", "_bulk_docs"),
        ("GET", "_all_docs"),
        ("POST", "_bulk_docs"),
        ("GET", "onboarding"),
    ]
