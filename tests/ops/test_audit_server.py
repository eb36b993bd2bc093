"""`audit` against a real server (pouchdb-server, or the CouchDB cluster named by COUCHDB_URL).

The channels that only a cluster has (shard copies, the purge) are exercised on Apache CouchDB;
on pouchdb-server the same commands run through every clustered channel.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import responses

from couchops.audit import audit
from couchops.backup import BackupRetention, backup
from couchops.couch import Couch, db_path, doc_path
from couchops.errors import AuditFindings
from couchops.retention import DataCutoff
from tests.ops.helpers import bulk, days_ago, log_events, onboarding_doc, run_cli

pytestmark = pytest.mark.server

EMAILS_VIEW = {
    "_id": "_design/emails",
    "views": {"by_email": {"map": "function (d) { if (d.email) emit(d.email, null); }"}},
}


def _cutoff(days: int = 30) -> DataCutoff:
    now = datetime.now(UTC)
    return DataCutoff(now - timedelta(days=days), now)


def test_an_audit_of_data_within_the_retention_finds_nothing_and_reads_every_channel(
    couch: Couch, make_db: Callable[..., str]
) -> None:
    db = make_db()
    now = datetime.now(UTC)
    docs = [onboarding_doc(f"u{i}:profile", days_ago(i, now), email=f"p{i}@x.fr") for i in range(5)]
    bulk(couch, db, [*docs, EMAILS_VIEW])
    report = audit(couch, _cutoff(), databases=[db])
    assert report.findings == 0
    # _all_docs and _changes each read the 5 documents; the view is read three ways.
    assert report.reads >= 5 * 2 + 5 * 3
    assert report.oldest_database_data is not None
    assert (now - report.oldest_database_data) > timedelta(days=4)


def test_an_old_document_is_found_through_documents_changes_mango_and_its_view_rows(
    couch: Couch, make_db: Callable[..., str]
) -> None:
    db = make_db()
    now = datetime.now(UTC)
    bulk(
        couch,
        db,
        [
            onboarding_doc("young:profile", days_ago(2, now), email="young@x.fr"),
            onboarding_doc("old:profile", days_ago(45, now), email="old@x.fr"),
            EMAILS_VIEW,
        ],
    )
    with pytest.raises(AuditFindings) as raised:
        audit(couch, _cutoff(), databases=[db])
    assert "old:profile" in str(raised.value)
    counts = raised.value.counts
    # _all_docs, _changes, and _find read three ways; the view rows are of a readable document
    # (it is readable, but too old: it is found through the document channels).
    assert counts["findings"] >= 5
    assert counts["oldest_database_data_age_seconds"] > 44 * 86400


def test_a_row_left_by_a_deletion_is_no_finding_once_the_index_is_brought_up_to_date(
    couch: Couch, make_db: Callable[..., str]
) -> None:
    """The site deletes documents all day; an index not read since still holds their rows
    for an `update=false` read. The audit brings the index up to date before it reports."""
    db = make_db()
    now = datetime.now(UTC)
    bulk(couch, db, [onboarding_doc("gone:profile", days_ago(3, now), email="g@x.fr"), EMAILS_VIEW])
    path = f"{db_path(db)}/_design/emails/_view/by_email"
    assert len(couch.get(path)["rows"]) == 1
    rev = couch.get(doc_path(db, "gone:profile"))["_rev"]
    couch.request("DELETE", doc_path(db, "gone:profile"), params={"rev": rev})
    report = audit(couch, _cutoff(), databases=[db])
    assert report.findings == 0
    assert couch.get(path, params={"stable": True, "update": False})["rows"] == []


def test_a_view_row_that_stays_without_a_readable_document_is_a_finding(
    server: object, couch: Couch, make_db: Callable[..., str]
) -> None:
    """The server here stands for a cluster whose shard copy kept a purged document's row
    for good (seen on a 3-node CouchDB 3.5.2): its view answers the row on every read, while
    the document itself answers 404."""
    db = make_db()
    bulk(couch, db, [EMAILS_VIEW])
    view = f"{server.url}{db_path(db)}/_design/emails/_view/by_email"  # type: ignore[attr-defined]
    ghost = {"total_rows": 1, "offset": 0, "rows": [{"id": "ghost:1", "key": "p@x.fr"}]}
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        mock.add_passthru(server.url)  # type: ignore[attr-defined]
        mock.add(responses.GET, re.compile(re.escape(view) + r"(\?.*)?$"), json=ghost)
        with pytest.raises(AuditFindings) as raised:
            audit(couch, _cutoff(), databases=[db])
    assert raised.value.counts["findings"] == 3  # plain, stable, stable with update=false
    assert "ghost:1" in str(raised.value)
    assert "view _design/emails/by_email (plain)" in str(raised.value)


def test_a_backup_holding_data_older_than_the_budget_is_a_finding(
    couch: Couch, make_db: Callable[..., str], tmp_path: Path
) -> None:
    db = make_db()
    now = datetime.now(UTC)
    bulk(couch, db, [onboarding_doc("u1:profile", days_ago(25, now))])
    retention = BackupRetention(retention_days=1, max_age_days=30, expiry_interval_hours=1)
    backup(couch, tmp_path, retention=retention, databases=[db], now=now)
    clean = audit(couch, _cutoff(), databases=[db], backup_dir=tmp_path, backup_keep=_cutoff())
    assert clean.findings == 0 and clean.backups == 1
    with pytest.raises(AuditFindings) as raised:
        audit(couch, _cutoff(), databases=[db], backup_dir=tmp_path, backup_keep=_cutoff(20))
    assert "through backup file" in str(raised.value)
    assert raised.value.counts["oldest_backup_data_age_seconds"] > 24 * 86400


def test_cli_audit_exits_4_naming_the_channel_and_pushes_its_counts(
    server: object, couch: Couch, make_db: Callable[..., str]
) -> None:
    db = make_db()
    bulk(couch, db, [onboarding_doc("old:profile", days_ago(40, datetime.now(UTC)))])
    env = server.env()  # type: ignore[attr-defined]
    done = run_cli(["audit", "--database", db], env)
    assert done.returncode == 4, done.stderr
    assert "readable items older than" in done.stderr.splitlines()[-1]
    events = [e for e in log_events(done.stderr) if e.get("event") == "audit.finding"]
    assert {e["channel"] for e in events} >= {"_all_docs", "_changes", "_find (stable)"}
    fresh = make_db()
    bulk(couch, fresh, [onboarding_doc("new:profile", days_ago(1, datetime.now(UTC)))])
    done = run_cli(["audit", "--database", fresh], env)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.splitlines()[-1])["findings"] == 0


def test_repair_purges_by_id_the_rows_of_documents_that_exist_nowhere(
    server: object, couch: Couch, make_db: Callable[..., str]
) -> None:
    """A copy of an index kept rows of a purged document (seen on CouchDB 3.5.2 after a view
    compaction raced the purges). Purging that id again (a revision no document has) makes
    every copy's index drop its rows: the real cluster showed 2,970 such ids cleared, every
    read mode and copy. Here the server's `_purge` (which pouchdb-server lacks) and the view
    are stand-ins that behave so; the document checks go to the real server."""
    db = make_db()
    bulk(couch, db, [EMAILS_VIEW])
    base = f"{server.url}{db_path(db)}"  # type: ignore[attr-defined]
    purged: list[dict[str, list[str]]] = []

    def view(_request: object) -> tuple[int, dict[str, str], str]:
        rows = [] if purged else [{"id": "ghost:1", "key": "p@x.fr", "value": None}]
        return 200, {}, json.dumps({"total_rows": len(rows), "offset": 0, "rows": rows})

    def purge(request: object) -> tuple[int, dict[str, str], str]:
        purged.append(json.loads(request.body))  # type: ignore[attr-defined]
        return 201, {}, json.dumps({"purge_seq": None, "purged": {"ghost:1": []}})

    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        mock.add_passthru(server.url)  # type: ignore[attr-defined]
        mock.add_callback(
            responses.GET, re.compile(re.escape(base) + r"/_design/emails/_view/by_email.*"), view
        )
        mock.add_callback(responses.POST, re.compile(re.escape(base) + r"/_purge.*"), purge)
        report = audit(couch, _cutoff(), databases=[db], repair=True)
    assert purged == [{"ghost:1": ["1-" + "0" * 32]}]
    assert report.findings == 0 and report.index_rows_repaired == 1


def test_repair_never_purges_the_id_of_a_document_that_exists(
    server: object, couch: Couch, make_db: Callable[..., str]
) -> None:
    """A row whose document is readable again (a deleted document, or one written back) is no
    orphan: nothing is purged for it."""
    db = make_db()
    now = datetime.now(UTC)
    bulk(couch, db, [onboarding_doc("live:1", days_ago(1, now), email="l@x.fr"), EMAILS_VIEW])
    base = f"{server.url}{db_path(db)}"  # type: ignore[attr-defined]
    rows = {"total_rows": 1, "offset": 0, "rows": [{"id": "live:1", "key": "l@x.fr"}]}
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        mock.add_passthru(server.url)  # type: ignore[attr-defined]
        mock.add(
            responses.GET, re.compile(re.escape(base) + r"/_design/emails/_view/.*"), json=rows
        )
        purge = mock.add(responses.POST, re.compile(re.escape(base) + r"/_purge.*"), status=201)
        report = audit(couch, _cutoff(), databases=[db], repair=True)
    assert purge.call_count == 0
    assert report.findings == 0 and report.index_rows_repaired == 0
