"""Contract tests of `purge` on the documented CouchDB `_purge` API.

pouchdb-server does not implement `POST /{db}/_purge` (it answers 400 only_multipart_accepted),
so these tests run couchops against a stand-in that answers as docs.couchdb.org documents for
CouchDB 3.5: `POST /{db}/_purge` with `{"docid": ["rev", ...]}`, at most 100 ids and 1000
revisions per request, 201 Created (202 Accepted without quorum) and `{"purge_seq": null,
"purged": {...}}`. The same behaviours are tested for real in test_purge_server.py against
Apache CouchDB (COUCHDB_URL).
"""

from __future__ import annotations

import io
import json
from collections import Counter
from collections.abc import Iterator
from datetime import timedelta

import pytest
import responses
from hypothesis import given, settings
from hypothesis import strategies as st

from couchops.couch import Couch, shard_hash, shard_locator
from couchops.errors import PartialFailure
from couchops.pseudonym import pseudonym
from couchops.purge import LEDGER_ID, Candidate, PurgeOptions, batches, in_id_order, purge
from tests.ops.fake_couch import BASE, FakeCouch, FakeDb  # noqa: F401
from tests.ops.helpers import NOW, days_ago, onboarding_doc

pytestmark = pytest.mark.contract


@pytest.fixture(
    params=[(False, True), (True, True), (True, False)],
    ids=["full-scan", "through-index-views", "through-find"],
)
def fake(request: pytest.FixtureRequest) -> Iterator[FakeCouch]:
    """Every way a purge finds what to remove: a scan of every document, or (when the
    database has the purge's Mango indexes) reads of the indexes' views, or `_find` queries
    when the server refuses those, plus the tombstones' changes."""
    indexed, views = request.param
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        yield FakeCouch(mock, indexed=indexed, views=views)


def options(**kw: object) -> PurgeOptions:
    base: dict[str, object] = {"retention_days": 30, "now": NOW, "listing": io.StringIO()}
    base.update(kw)
    return PurgeOptions(**base)  # type: ignore[arg-type]


def client() -> Couch:
    return Couch(BASE, ("admin", "pw"), retries=0)


def test_only_documents_strictly_older_than_the_cutoff_are_purged(fake: FakeCouch) -> None:
    """Contract test (no _purge in pouchdb-server): the boundary, to the millisecond."""
    db = fake.new_db("onboarding")
    cutoff = NOW - timedelta(days=30)
    db.put(onboarding_doc("p1:older", days_ago(30, NOW - timedelta(milliseconds=1))))
    db.put(onboarding_doc("p1:at-cutoff", days_ago(30)))
    db.put(onboarding_doc("p1:younger", days_ago(30, NOW + timedelta(milliseconds=1))))
    # 13:00+02:00 on the cutoff day is 11:00 UTC, an hour before the cutoff.
    local = (cutoff + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%S+02:00")
    db.put(onboarding_doc("p1:offset", local))
    db.put(onboarding_doc("p2:today", days_ago(0)))
    stats = purge(client(), options())
    assert sorted(db.docs) == ["p1:at-cutoff", "p1:younger", "p2:today"]
    assert stats.documents_purged == 2
    if fake.indexed:
        # Only what may go is read: a range below the cutoff (and one in the future) on the
        # timestamp index, and the partial index of documents without a well-formed date.
        finds = fake.requests_to("/_find")
        # Both indexes updated first, then queried without updating them between purges;
        # once the purges are in the indexes, a second round finds nothing left.
        updates = [("by-createdAt", True), ("untimed-createdAt", True)]
        reads = [("by-createdAt", False), ("by-createdAt", False), ("untimed-createdAt", False)]
        if fake.views:
            assert [(f["use_index"][1], f.get("update", True)) for f in finds] == updates * 2
            # The views read alone, the ranges by key: below the cutoff (a day's margin for
            # offsets), from the future onwards, and the whole partial index.
            assert [(ddoc, q.get("update"), q.get("stable")) for ddoc, q in fake.view_reads] == [
                (f"couchops-{name}", "false", "true") for name, _ in reads
            ] * 2
            upper = days_ago(29, NOW)
            assert [
                (json.loads(q.get("startkey", "null")), json.loads(q.get("endkey", "null")))
                for _, q in fake.view_reads[:3]
            ] == [(None, [upper]), ([days_ago(-(1 / 24 - 13 / 24), NOW)], None), (None, None)]
        else:
            assert [(f["use_index"][1], f.get("update", True)) for f in finds] == (
                updates + reads
            ) * 2
            # Each query asks for what the index holds alone (a covering index: no document
            # read).
            assert [f["fields"] for f in finds if f.get("update") is False] == [
                ["_id", "_rev", "createdAt"],
                ["_id", "_rev", "createdAt"],
                ["_id", "_rev"],
            ] * 2
        assert fake.requests_to("/_changes") == []
    else:
        scan = fake.requests_to("/_changes")[0]
        assert "$or" in scan["selector"]


def test_every_leaf_revision_is_purged_conflicts_and_deleted_leaves_included(
    fake: FakeCouch,
) -> None:
    """Contract test (no _purge in pouchdb-server): the request names all leaves."""
    db = fake.new_db("onboarding")
    doc = onboarding_doc("p:conflicted", days_ago(40))
    db.put(doc, rev="3-bbb")
    db.put(doc, rev="3-aaa")
    db.put(doc, rev="2-ccc", deleted=True)
    purge(client(), options())
    sent = [rev for body in fake.requests_to("/_purge") for rev in body["p:conflicted"]]
    assert sorted(sent) == ["2-ccc", "3-aaa", "3-bbb"]
    assert db.docs == {}


def test_requests_stay_within_the_purge_limits(fake: FakeCouch) -> None:
    """Contract test: CouchDB 3.5 refuses more than 100 ids or 1000 revisions per request."""
    db = fake.new_db("onboarding")
    for i in range(250):
        db.put(onboarding_doc(f"p:{i:04d}", days_ago(45)))
    many = onboarding_doc("p:many-leaves", days_ago(45))
    for r in range(1500):
        db.put(many, rev=f"1-{r:05d}")
    stats = purge(client(), options())
    bodies = fake.requests_to("/_purge")
    assert all(len(b) <= 100 and sum(map(len, b.values())) <= 1000 for b in bodies)
    assert db.docs == {}
    assert stats.documents_purged == 251 and stats.revisions_purged == 1750


@settings(deadline=None, max_examples=60)
@given(
    st.lists(st.integers(min_value=1, max_value=2500), min_size=0, max_size=300),
    st.integers(min_value=1, max_value=100),
    st.integers(min_value=1, max_value=1000),
)
def test_batches_never_exceed_the_limits_and_carry_every_revision(
    leaf_counts: list[int], max_ids: int, max_revs: int
) -> None:
    cands = [
        Candidate(f"d{i}", tuple(f"1-{j}" for j in range(n)), "old", None)
        for i, n in enumerate(leaf_counts)
    ]
    seen: dict[str, list[str]] = {}
    counted = 0
    for body, continued in batches(iter(cands), max_ids, max_revs):
        counted += len(set(body) - continued)
        assert 0 < len(body) <= max_ids
        assert sum(map(len, body.values())) <= max_revs
        for doc_id, revs in body.items():
            seen.setdefault(doc_id, []).extend(revs)
    assert seen == {c.doc_id: list(c.revs) for c in cands}
    assert counted == len(cands)


def test_a_run_stopped_after_k_batches_is_finished_by_the_next_run(fake: FakeCouch) -> None:
    """Contract test: resumable; young documents survive both runs."""
    db = fake.new_db("onboarding")
    for i in range(95):
        db.put(onboarding_doc(f"old:{i:03d}", days_ago(31 + i % 5)))
        db.put(onboarding_doc(f"new:{i:03d}", days_ago(i % 29)))
    first = purge(client(), options(max_ids=10, max_batches=3))
    assert not first.complete
    assert first.documents_purged == 30
    second = purge(client(), options(max_ids=10))
    assert second.complete
    assert second.documents_purged == 65
    assert sorted(db.docs) == sorted(f"new:{i:03d}" for i in range(95))


def test_documents_without_a_valid_timestamp_are_reported_then_purged_after_the_retention(
    fake: FakeCouch,
) -> None:
    """Contract test: the documented rule for missing, malformed, naive and future dates."""
    db = fake.new_db("onboarding")
    db.put(onboarding_doc("p:missing", None))
    db.put(onboarding_doc("p:malformed", "yesterday"))
    db.put(onboarding_doc("p:naive", "2026-01-01T00:00:00"))
    db.put(onboarding_doc("p:future", days_ago(-10)))
    db.put(onboarding_doc("p:epoch", None, createdAt=1700000000))
    db.put({"_id": "p:tombstone"}, deleted=True)
    first = purge(client(), options())
    assert first.documents_invalid_timestamp == 5
    assert first.documents_untimed_deleted == 1
    assert first.documents_purged == 0
    assert len(db.local[LEDGER_ID.split("/", 1)[1]]["first_seen"]) == 6

    later = purge(client(), options(now=NOW + timedelta(days=29)))
    assert later.documents_purged == 0
    last = purge(client(), options(now=NOW + timedelta(days=30, seconds=1)))
    assert last.documents_purged == 5
    # Ten days on, the future date became a valid one: from then on it counts as any other.
    assert list(db.docs) == ["p:future"]
    assert db.local[LEDGER_ID.split("/", 1)[1]]["first_seen"] == {}


def test_a_document_that_gains_a_valid_timestamp_leaves_the_ledger(fake: FakeCouch) -> None:
    """Contract test: the ledger only holds documents still without a valid timestamp."""
    db = fake.new_db("onboarding")
    db.put(onboarding_doc("p:fixed", None))
    purge(client(), options())
    db.put(onboarding_doc("p:fixed", days_ago(1)))
    purge(client(), options(now=NOW + timedelta(days=1)))
    assert db.local[LEDGER_ID.split("/", 1)[1]]["first_seen"] == {}
    assert "p:fixed" in db.docs


def test_dry_run_lists_what_would_go_and_sends_no_purge(fake: FakeCouch) -> None:
    db = fake.new_db("onboarding")
    db.put(onboarding_doc("p:old", days_ago(31)))
    db.put(onboarding_doc("p:new", days_ago(1)))
    listing = io.StringIO()
    stats = purge(client(), options(dry_run=True, listing=listing))
    assert stats.documents_would_purge == 1
    assert '"id": "p:old"' in listing.getvalue() and "p:new" not in listing.getvalue()
    assert fake.requests_to("/_purge") == []
    writes = [p for m, p, _ in fake.calls if m != "GET" and not p.endswith(("_changes", "_find"))]
    assert writes == []


def test_a_purge_accepted_without_quorum_is_counted_for_alerting() -> None:
    """Contract test: CouchDB answers 202 Accepted when the write quorum was not met."""
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        fake = FakeCouch(mock, purge_status=202)
        db = fake.new_db("onboarding")
        db.put(onboarding_doc("p:old", days_ago(31)))
        stats = purge(client(), options())
    assert stats.requests_without_quorum == 1
    assert stats.documents_purged == 1


def test_indexes_are_refreshed_and_the_database_compacted_after_a_purge(fake: FakeCouch) -> None:
    """Contract test: views and Mango indexes are queried (so they drop purged documents),
    then `POST /{db}/_compact` and `POST /{db}/_compact/{ddoc}` are sent."""
    db = fake.new_db("onboarding")
    db.put({"_id": "_design/app", "views": {"v": {"map": "function(d){emit(d.step)}"}}})
    db.put(
        {
            "_id": "_design/mango",
            "language": "query",
            "views": {"by-createdAt": {"map": {}, "options": {"def": {"fields": ["createdAt"]}}}},
            "options": {"partitioned": False},
        }
    )
    db.put(onboarding_doc("p:old", days_ago(31)))
    purge(client(), options())
    paths = [path for _, path, _ in fake.calls]
    assert "/onboarding/_partition/couchops/_design/app/_view/v" in paths
    assert "/onboarding/_find" in paths
    refreshes = [f["use_index"] for f in fake.requests_to("/_find") if f.get("limit") == 1]
    assert ["_design/mango", "by-createdAt"] in refreshes
    assert "/onboarding/_compact" in paths and "/onboarding/_compact/app" in paths
    assert "_design/app" in db.docs


@pytest.mark.parametrize("fake", [(True, True)], ids=["through-indexes"], indirect=True)
def test_purge_indexes_defined_otherwise_are_not_trusted(fake: FakeCouch) -> None:
    """An index of the purge's name without `_rev` (an earlier definition) would make CouchDB
    read every document it lists: the purge scans the changes feed instead and says why."""
    db = fake.new_db("onboarding")
    for index in db.indexes:
        index["def"]["fields"] = [f for f in index["def"]["fields"] if "_rev" not in f]
    db.put(onboarding_doc("p1:older", days_ago(31)))
    db.put(onboarding_doc("p2:today", days_ago(0)))
    stats = purge(client(), options())
    assert stats.documents_purged == 1 and sorted(db.docs) == ["p2:today"]
    assert fake.requests_to("/_find") == []
    assert "$or" in fake.requests_to("/_changes")[0]["selector"]


def test_candidates_are_purged_in_id_order_chunk_by_chunk() -> None:
    """The indexes list candidates by date; `_purge` costs CouchDB less for neighbouring ids."""
    ids = [f"u{(i * 7919) % 1000:04d}:doc" for i in range(1000)]
    cands = (Candidate(i, ("1-a",), "old", None) for i in ids)
    out = [c.doc_id for c in in_id_order(cands, chunk=300)]
    assert sorted(out) == sorted(ids)
    chunks = [out[k : k + 300] for k in range(0, 1000, 300)]
    assert all(chunk == sorted(chunk) for chunk in chunks)
    assert chunks[0] == sorted(ids[:300])


# Answers of `GET /{db}/_shards/{id}` from Apache CouchDB 3.5.2, databases of q=8.
PLACED = [
    (False, "ana", "60000000-7fffffff"),
    (False, "profile", "80000000-9fffffff"),
    (False, "u1:profile", "c0000000-dfffffff"),
    (False, "bo@example.fr", "80000000-9fffffff"),
    (False, "é-ü", "40000000-5fffffff"),
    (True, "u1:profile", "40000000-5fffffff"),
    (True, "u1:other", "40000000-5fffffff"),
    (True, "ana:x", "60000000-7fffffff"),
    (True, "u02633beae7e3382f874ce497b9785daf:05-document", "60000000-7fffffff"),
    (True, "zz:1", "20000000-3fffffff"),
]


@pytest.mark.parametrize(("partitioned", "doc_id", "placed"), PLACED)
def test_shard_hash_places_an_id_where_apache_couchdb_does(
    partitioned: bool, doc_id: str, placed: str
) -> None:
    low, high = (int(end, 16) for end in placed.split("-"))
    assert low <= shard_hash(doc_id, partitioned) <= high


@pytest.mark.parametrize("fake", [(True, True)], ids=["through-index-views"], indirect=True)
def test_the_shard_locator_is_used_only_where_the_server_places_ids_as_it_computes(
    fake: FakeCouch,
) -> None:
    """`GET /{db}/_shards` lists the ranges, `GET /{db}/_shards/{id}` the range of an id."""
    db = fake.new_db("onboarding")
    assert shard_locator(client(), "onboarding", True) is None  # no ranges listed (404)
    db.q = 1
    assert shard_locator(client(), "onboarding", True) is None  # a single range
    db.q = 4
    locate = shard_locator(client(), "onboarding", True)
    assert locate is not None
    ids = [f"u{n}:doc" for n in range(50)]
    assert [db.shard_ranges()[locate(i)] for i in ids] == [db.shard_of(i) for i in ids]
    assert len({locate(i) for i in ids}) == 4
    db.shard_of = lambda doc_id: db.shard_ranges()[0]  # type: ignore[method-assign]
    assert shard_locator(client(), "onboarding", True) is None  # the server places otherwise
    db.shards_refused = True
    assert shard_locator(client(), "onboarding", True) is None  # the question is refused


@pytest.mark.parametrize("fake", [(True, True)], ids=["through-index-views"], indirect=True)
def test_each_purge_request_stays_within_one_shard_range(fake: FakeCouch) -> None:
    """The server splits a `_purge` into one purge per copy of each range it touches."""
    db = fake.new_db("onboarding")
    db.q = 4
    for n in range(400):
        db.put(onboarding_doc(f"u{n:03d}:doc", days_ago(40)))

    stats = purge(client(), options(compact=False), ["onboarding"])

    assert stats.documents_purged == 400 and not db.docs
    requests = fake.requests_to("/_purge")
    assert all(len({db.shard_of(i) for i in body}) == 1 for body in requests)
    per_range = Counter(db.shard_of(f"u{n:03d}:doc") for n in range(400))
    assert len(per_range) == 4
    assert len(requests) == sum(-(-count // 100) for count in per_range.values())


def test_a_database_with_nothing_to_purge_is_not_asked_for_its_shard_ranges(
    fake: FakeCouch,
) -> None:
    db = fake.new_db("onboarding")
    db.q = 4
    db.put(onboarding_doc("u1:doc", days_ago(3)))

    stats = purge(client(), options(compact=False), ["onboarding"])

    assert stats.documents_purged == 0 and list(db.docs) == ["u1:doc"]
    assert not [path for _, path, _ in fake.calls if "/_shards" in path]


@pytest.mark.parametrize("fake", [(True, True)], ids=["through-index-views"], indirect=True)
def test_view_rows_of_another_shape_send_the_purge_to_find(fake: FakeCouch) -> None:
    """Should a server's Mango view keys not be [field, _rev], the purge reads `_find`."""
    db = fake.new_db("onboarding")
    db.put(onboarding_doc("p:old", days_ago(40)))
    db.put(onboarding_doc("p:new", days_ago(1)))
    fake._view = lambda *_: {"rows": [{"id": "p:old", "key": ["x", "y", "z"]}]}  # type: ignore[method-assign]

    stats = purge(client(), options())

    assert sorted(db.docs) == ["p:new"]
    assert stats.documents_purged == 1
    assert len(fake.view_reads) == 1  # the first answer sent every later read to _find
    reads = [f["fields"] for f in fake.requests_to("/_find") if f.get("update") is False]
    assert reads[0] == ["_id", "_rev", "createdAt"]


@pytest.mark.parametrize("fake", [(True, True)], ids=["through-index-views"], indirect=True)
def test_index_views_are_read_page_by_page_from_the_last_key_and_id(
    fake: FakeCouch, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each page of a view starts at the key and id of the first row the page before did not
    return (`limit` one above the page), so no row is read twice or skipped."""
    monkeypatch.setattr("couchops.purge.VIEW_PAGE", 2)
    db = fake.new_db("onboarding")
    same = days_ago(40)
    for n in range(5):
        db.put(onboarding_doc(f"p{n}:old", same), rev=f"1-{n}")
    db.put(onboarding_doc("p9:new", days_ago(1)))

    stats = purge(client(), options())

    assert sorted(db.docs) == ["p9:new"]
    assert stats.documents_purged == 5
    first_round = [q for ddoc, q in fake.view_reads if ddoc == "couchops-by-createdAt"][:3]
    assert [(q.get("startkey"), q.get("startkey_docid"), q["limit"]) for q in first_round] == [
        (None, None, "3"),
        (json.dumps([same, "1-2"], separators=(",", ":")), "p2:old", "3"),
        (json.dumps([same, "1-4"], separators=(",", ":")), "p4:old", "3"),
    ]


def test_one_database_that_fails_never_stops_the_others_and_the_run_names_it(
    fake: FakeCouch,
) -> None:
    """Contract test: the first database's `_purge` answers 500 every time (a copy down, a
    limit exceeded); the databases after it are purged all the same, and the run fails naming
    the failed one by pseudonym, with the counts of the whole run."""
    broken = fake.new_db("userdb-6a65616e6e65")
    broken.put(onboarding_doc("p1:old", days_ago(40)))
    healthy = fake.new_db("zz-second")
    healthy.put(onboarding_doc("p2:old", days_ago(40)))
    healthy.put(onboarding_doc("p2:young", days_ago(1)))
    fake.failing_purges.add("userdb-6a65616e6e65")
    with pytest.raises(PartialFailure) as raised:
        purge(client(), options(), ["userdb-6a65616e6e65", "zz-second"])
    assert sorted(healthy.docs) == ["p2:young"]
    assert "p1:old" in broken.docs
    assert str(raised.value) == (f"1 of 2 databases not purged: {pseudonym('userdb-6a65616e6e65')}")
    assert raised.value.counts["databases_failed"] == 1
    assert raised.value.counts["documents_purged"] == 1


@pytest.mark.parametrize("fake", [(False, True)], ids=["full-scan"], indirect=True)
@pytest.mark.parametrize(("lag", "compacted"), [(0, True), (None, False)])
def test_a_view_is_compacted_only_once_every_copy_of_its_index_applied_every_purge(
    fake: FakeCouch, lag: int | None, compacted: bool
) -> None:
    """Contract test: CouchDB 3.5.2's view compactor would record the database's purge
    sequence for an index copy that has not applied every purge, and those purges would never
    reach it. Before `POST /{db}/_compact/{ddoc}` each copy's `_local/purge-mrview-<sig>`
    checkpoint is compared with the copy's `purge_seq`; a copy that never catches up (lag
    None) keeps the view uncompacted (the database itself is compacted either way)."""
    db = fake.new_db("onboarding")
    db.index_lag = lag
    db.put({"_id": "_design/app", "views": {"v": {"map": "function(d){emit(d.step)}"}}})
    db.put(onboarding_doc("p:old", days_ago(31)))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("couchops.purge.COMPACT_WAIT_SECONDS", 0.5)
        purge(client(), options())
    paths = [path for method, path, _ in fake.calls if method == "POST"]
    assert "/onboarding/_compact" in paths
    assert ("/onboarding/_compact/app" in paths) is compacted
    checkpoints = [p for _, p, _ in fake.calls if "_local/purge-mrview-sigapp" in p]
    assert checkpoints, "the copies' purge checkpoints were read"
