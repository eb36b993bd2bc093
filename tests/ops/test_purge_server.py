"""purge against a real server. pouchdb-server has no `_purge`: there only the dry-run (scan and
decision) runs; the purge itself runs against Apache CouchDB (COUCHDB_URL) and is covered for
pouchdb-server by test_purge_contract.py."""

from __future__ import annotations

import io
import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest

from couchops.couch import Couch, db_path, doc_path, shard_locator
from couchops.purge import PurgeOptions, _DatabasePurge, purge, purge_index_specs
from couchops.timestamps import iso
from tests.ops.conftest import Server
from tests.ops.helpers import (
    bulk,
    every_copy,
    last_line,
    onboarding_doc,
    run_cli,
    with_attachment,
)

pytestmark = pytest.mark.server


def boundary_docs(now: datetime) -> dict[str, str]:
    cutoff = now - timedelta(days=30)
    return {
        "p1:older-by-1ms": iso(cutoff - timedelta(milliseconds=1)),
        "p1:at-cutoff": iso(cutoff),
        "p1:younger-by-1ms": iso(cutoff + timedelta(milliseconds=1)),
        "p2:very-old": iso(now - timedelta(days=400)),
        "p2:today": iso(now),
    }


@pytest.mark.parametrize("partitioned", [False, True], ids=["plain", "partitioned"])
def test_the_purge_places_ids_in_shard_ranges_as_the_server_does(
    server: Server, couch: Couch, make_db: Callable[..., str], partitioned: bool
) -> None:
    """The purge groups its requests by shard range; pouchdb-server has no ranges to list."""
    if server.kind != "couchdb":
        assert shard_locator(couch, make_db(), partitioned) is None
        return
    db = make_db(q=8, partitioned=partitioned)
    locate = shard_locator(couch, db, partitioned)
    assert locate is not None
    ranges = sorted(couch.get(f"{db_path(db)}/_shards")["shards"])
    ids = [f"u{n}@example.fr:{n % 7}" for n in range(40)]
    placed = [couch.get(f"{db_path(db)}/_shards/{i}")["range"] for i in ids]
    assert [ranges[locate(i)] for i in ids] == placed
    assert len(set(placed)) >= 6


def test_dry_run_lists_exactly_what_is_older_than_the_cutoff_and_changes_nothing(
    couch: Couch, make_db: Callable[..., str]
) -> None:
    db = make_db()
    now = datetime.now(UTC).replace(microsecond=0)
    bulk(couch, db, [onboarding_doc(i, ts) for i, ts in boundary_docs(now).items()])
    before = couch.get(f"{db_path(db)}/_all_docs")["rows"]
    listing = io.StringIO()
    stats = purge(
        couch, PurgeOptions(retention_days=30, dry_run=True, now=now, listing=listing), [db]
    )
    listed = sorted(json.loads(line)["id"] for line in listing.getvalue().splitlines())
    assert listed == ["p1:older-by-1ms", "p2:very-old"]
    assert stats.documents_would_purge == 2 and stats.documents_purged == 0
    assert couch.get(f"{db_path(db)}/_all_docs")["rows"] == before
    assert couch.get_doc(db, "_local/couchops-purge-untimed") is None


def test_purge_removes_old_documents_from_every_api_and_never_touches_younger_ones(
    server: Server, couch: Couch, make_db: Callable[..., str], monkeypatch: pytest.MonkeyPatch
) -> None:
    server.require("purge")
    db = make_db(**({"partitioned": True} if server.kind == "couchdb" else {}))
    now = datetime.now(UTC).replace(microsecond=0)
    stamps = boundary_docs(now)
    w = every_copy(couch, db)
    docs = [onboarding_doc(i, ts, secret="PERSONAL") for i, ts in stamps.items()]
    bulk(couch, db, docs, params=w)
    old_id = "p2:very-old"
    first = couch.get(doc_path(db, old_id))
    update = couch.put(doc_path(db, old_id), {**first, "step": "documents"}, params=w)
    couch.put(
        doc_path(db, old_id),
        with_attachment(
            {**first, "_rev": update["rev"]}, "payslip.pdf", b"%PDF salary", "application/pdf"
        ),
        params=w,
    )
    bulk(
        couch,
        db,
        [{**onboarding_doc(old_id, stamps[old_id]), "_rev": "1-conflict"}],
        new_edits=False,
        params=w,
    )
    couch.post(
        f"{db_path(db)}/_index",
        {"index": {"fields": ["createdAt"]}, "ddoc": "ts", "name": "ts", "partitioned": False},
    )
    # The purge's own indexes (cluster-setup creates them): the purge reads through them.
    for spec in purge_index_specs("createdAt", partitioned=server.kind == "couchdb"):
        couch.post(f"{db_path(db)}/_index", spec)
    couch.put(
        doc_path(db, "_design/app"),
        {
            "views": {"secret": {"map": "function(d){ if (d.secret) emit(d._id, d.secret); }"}},
            "options": {"partitioned": False},
        },
    )
    couch.get(f"{db_path(db)}/_design/app/_view/secret")

    def no_find(*_: object) -> None:
        raise AssertionError("the purge indexes' views did not answer: read with _find")

    # Apache CouchDB answers the Mango indexes' views: the purge reads them, not `_find`.
    monkeypatch.setattr(_DatabasePurge, "_find", no_find)
    stats = purge(couch, PurgeOptions(retention_days=30, now=now, compact=True), [db])
    assert stats.documents_purged == 2
    assert stats.revisions_purged == 3

    gone = ["p1:older-by-1ms", old_id]
    for doc_id in gone:
        assert couch.request("GET", doc_path(db, doc_id), ok=(404,)).status_code == 404
        for rev in (first["_rev"], update["rev"], "1-conflict"):
            old = couch.request("GET", doc_path(db, doc_id), params={"rev": rev}, ok=(404,))
            assert old.status_code == 404
        leaves = couch.request(
            "GET", doc_path(db, doc_id), params={"open_revs": "all"}, ok=(200, 404)
        )
        assert leaves.status_code == 404 or leaves.json() in ([], [{"missing": "all"}])
    changes = couch.get(
        f"{db_path(db)}/_changes", params={"include_docs": True, "style": "all_docs"}
    )
    assert not {r["id"] for r in changes["results"]} & set(gone)
    assert "PERSONAL" not in json.dumps([r for r in changes["results"] if r["id"] in gone])
    all_docs = couch.post(f"{db_path(db)}/_all_docs", {"keys": gone})["rows"]
    assert all(row.get("error") == "not_found" for row in all_docs)
    found = couch.post(
        f"{db_path(db)}/_find",
        {"selector": {"createdAt": {"$gt": None}}, "use_index": ["_design/ts", "ts"]},
    )
    assert sorted(d["_id"] for d in found["docs"]) == [
        "p1:at-cutoff",
        "p1:younger-by-1ms",
        "p2:today",
    ]
    view = couch.get(f"{db_path(db)}/_design/app/_view/secret", params={"update": "false"})
    assert sorted(r["id"] for r in view["rows"]) == [
        "p1:at-cutoff",
        "p1:younger-by-1ms",
        "p2:today",
    ]


def test_a_purge_killed_midway_is_finished_by_the_next_run(
    server: Server, couch: Couch, make_db: Callable[..., str]
) -> None:
    server.require("purge")
    db = make_db()
    now = datetime.now(UTC)
    old = [
        onboarding_doc(f"old:{i:05d}", iso(now - timedelta(days=31 + i % 7))) for i in range(3000)
    ]
    young = [onboarding_doc(f"new:{i:05d}", iso(now - timedelta(days=i % 29))) for i in range(300)]
    for start in range(0, len(old), 1000):
        bulk(couch, db, old[start : start + 1000])
    bulk(couch, db, young)
    env = server.env() | {"LOG_LEVEL": "DEBUG", "PURGE_CONCURRENCY": "1"}
    process = subprocess.Popen(
        [sys.executable, "-m", "couchops.cli", "purge", "--database", db, "--no-compact"],
        env=env,
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
    )
    assert process.stderr is not None
    for line in process.stderr:
        if '"purge.batch"' in line and '"batch": 3' in line:
            process.send_signal(signal.SIGKILL)
            break
    process.wait(timeout=60)
    assert process.returncode == -signal.SIGKILL
    remaining = couch.db_info(db)["doc_count"]  # type: ignore[index]
    assert 300 < remaining < 3300

    done = run_cli(["purge", "--database", db], server.env())
    assert done.returncode == 0, done.stderr
    deadline = time.monotonic() + 30
    while couch.db_info(db)["doc_count"] != 300 and time.monotonic() < deadline:  # type: ignore[index]
        time.sleep(0.5)
    rows = couch.get(f"{db_path(db)}/_all_docs")["rows"]
    assert sorted(r["id"] for r in rows) == sorted(d["_id"] for d in young)


def test_cli_refuses_a_retention_above_30_days_with_one_line(server: Server) -> None:
    done = run_cli(["purge", "--dry-run"], server.env() | {"PURGE_RETENTION_DAYS": "45"})
    assert done.returncode == 2
    line = last_line(done.stderr)
    assert "PURGE_RETENTION_DAYS=45" in line and "30" in line
    done = run_cli(["purge", "--dry-run", "--retention-days", "0"], server.env())
    assert done.returncode == 2
    assert "--retention-days=0" in last_line(done.stderr)
