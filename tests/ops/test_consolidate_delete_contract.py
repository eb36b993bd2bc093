"""Contract tests for what pouchdb-server does not show of consolidate --delete-sources.

- `GET /{db}` on a CouchDB 3 cluster answers `update_seq` as `<number>-<opaque>`, the opaque
  part naming the shard copies that answered (docs.couchdb.org, "GET /{db}": "an opaque
  string"), so two reads of a database nobody writes to may differ; `GET
  /{db}/_changes?since=<that seq>` lists what was written after it. pouchdb-server answers an
  integer that moves only with a write.
"""

from __future__ import annotations

import pytest
import responses
from responses import matchers

from couchops.consolidate import consolidate
from couchops.couch import Couch
from couchops.partition import partition_key, userdb_name

pytestmark = pytest.mark.contract

BASE = "http://couchdb.test:5984"
USER = "ana@example.fr"
SOURCE = userdb_name(USER)
NEW_ID = f"{partition_key(USER, b'k')}:profile"
SEQ_AT_READ = "7-g1AAAACbeJzLYWBgYMpgTmHgz8tPSTV0MDQy1DMBQsMcINBsC"
SEQ_LATER = "7-g1AAAACbeJzLYWBgYMpgTmHgz8tPSTV0MDQy1DMBQsMcINBsD"


def mock_cluster(
    changes_since_read: list[dict[str, object]],
) -> tuple[responses.BaseResponse, responses.BaseResponse]:
    """A 3-node CouchDB whose source `SOURCE` answers `SEQ_AT_READ`, then `SEQ_LATER` (same
    counts), and lists `changes_since_read` after the first; answers the mocks of that
    changes feed and of the source's deletion."""
    responses.get(f"{BASE}/", json={"couchdb": "Welcome", "version": "3.5.2"})
    responses.get(
        f"{BASE}/onboarding",
        json={"db_name": "onboarding", "props": {"partitioned": True}, "cluster": {"n": 3}},
    )
    responses.get(f"{BASE}/_node/_local/_dbs/_all_docs", json={"rows": []})
    for seq in (SEQ_AT_READ, SEQ_LATER):
        responses.get(
            f"{BASE}/{SOURCE}",
            json={"db_name": SOURCE, "doc_count": 1, "doc_del_count": 0, "update_seq": seq},
        )
    responses.get(
        f"{BASE}/{SOURCE}/_all_docs",
        json={"rows": [{"id": "profile", "doc": {"_id": "profile", "_rev": "1-a"}}]},
    )
    responses.post(f"{BASE}/onboarding/_bulk_docs", status=201, json=[])
    responses.get(
        f"{BASE}/onboarding/_all_docs",
        json={"rows": [{"id": NEW_ID, "key": NEW_ID, "value": {"rev": "1-a"}}]},
    )
    feed = responses.get(
        f"{BASE}/{SOURCE}/_changes",
        match=[matchers.query_param_matcher({"since": SEQ_AT_READ, "limit": "1"})],
        json={"results": changes_since_read, "last_seq": SEQ_LATER},
    )
    delete = responses.delete(f"{BASE}/{SOURCE}", json={"ok": True})
    responses.get(f"{BASE}/_users", status=404, json={"error": "not_found"})
    responses.post(f"{BASE}/_users/_changes", json={"results": []})
    return feed, delete


@responses.activate
def test_an_update_seq_naming_other_copies_with_nothing_written_since_is_no_change() -> None:
    feed, delete = mock_cluster(changes_since_read=[])

    stats = consolidate(
        Couch(BASE, retries=0), "onboarding", b"k", delete_sources=True, only=[SOURCE]
    )

    assert stats.failures == [] and stats.sources_deleted == 1
    assert (feed.call_count, delete.call_count) == (1, 1)


@responses.activate
def test_an_update_seq_with_a_write_since_keeps_the_source_as_changed() -> None:
    feed, delete = mock_cluster(changes_since_read=[{"seq": SEQ_LATER, "id": "profile"}])

    stats = consolidate(
        Couch(BASE, retries=0), "onboarding", b"k", delete_sources=True, only=[SOURCE]
    )

    assert (stats.sources_deleted, stats.sources_changed) == (0, 1)
    assert stats.failures == [
        f"{SOURCE}: written to after it was read (its changes feed lists writes since "
        "update_seq 7): not deleted, left for the next run"
    ]
    assert (feed.call_count, delete.call_count) == (1, 0)
