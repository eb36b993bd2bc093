"""A backup restores its source exactly: every leaf revision (conflicts and deleted branches),
attachments, design documents, security and database settings; a killed restore resumes;
memory stays bounded by bytes. Against a real server (pouchdb-server, or COUCHDB_URL: the
3-node Apache CouchDB 3.5.2 the closing notes name)."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from couchops import backup as backup_module
from couchops.backup import CHECKPOINT_ID, BackupRetention, backup, restore, verify
from couchops.couch import Couch, db_path, doc_path
from couchops.errors import OpsError, VerificationError
from tests.ops.conftest import Server
from tests.ops.helpers import bulk, days_ago, onboarding_doc, with_attachment

pytestmark = pytest.mark.server

SCAN = os.urandom(50_000)


class Killed(Exception):
    """The restore's process dies here (its next request is never sent)."""


def leaves(couch: Couch, db: str) -> dict[str, list[tuple[str, bool, str]]]:
    """Every document's leaves as (revision, deleted, body digest), read one by one with
    `open_revs=all`: independent of the backup's own reading."""
    ids = [row["id"] for row in couch.get(f"{db_path(db)}/_all_docs")["rows"]]
    out: dict[str, list[tuple[str, bool, str]]] = {}
    for doc_id in ids:
        # r=3: every copy answers (on a cluster, a read right after a write may otherwise
        # hit a copy that has not merged the latest branch yet).
        answer = couch.get(
            doc_path(db, doc_id), params={"open_revs": "all", "attachments": True, "r": 3}
        )
        found = []
        for item in answer:
            leaf = item["ok"]
            body = {k: v for k, v in leaf.items() if k not in ("_rev", "_revisions")}
            for meta in (body.get("_attachments") or {}).values():
                for key in ("revpos", "digest", "length", "stub"):
                    meta.pop(key, None)
            found.append((leaf["_rev"], bool(leaf.get("_deleted")), repr(sorted(body.items()))))
        out[doc_id] = sorted(found)
    return out


def seed_with_conflicts(couch: Couch, db: str, users: int = 12) -> None:
    """Documents, attachments, a design document, and for every third user a conflict (two
    live leaves) and for every fourth a deleted branch beside the live one."""
    docs: list[dict[str, Any]] = []
    for u in range(users):
        docs.append(onboarding_doc(f"u{u:04d}:profile", days_ago(2), email=f"p{u}@exemple.fr"))
        if u % 2 == 0:
            docs.append(
                with_attachment(
                    onboarding_doc(f"u{u:04d}:identity", days_ago(1)),
                    "scan.jpg",
                    SCAN,
                    "image/jpeg",
                )
            )
    docs.append(
        {"_id": "_design/app", "views": {"by_step": {"map": "function (d) { emit(d.step); }"}}}
    )
    # w=3: every copy has each write before the backup reads one copy per shard range (on a
    # loaded machine internal replication may lag; pouchdb-server ignores it).
    bulk(couch, db, docs, params={"w": 3})
    branches: list[dict[str, Any]] = []
    for u in range(users):
        doc_id = f"u{u:04d}:profile"
        if u % 3 == 0:
            branches.append(
                {
                    **onboarding_doc(doc_id, days_ago(2), email="other@exemple.fr"),
                    "_rev": f"1-{'a' * 31}{u % 10}",
                }
            )
        if u % 4 == 0:
            branches.append(
                {
                    "_id": doc_id,
                    "_rev": f"2-{'d' * 31}{u % 10}",
                    "_deleted": True,
                    "_revisions": {
                        "start": 2,
                        "ids": [f"{'d' * 31}{u % 10}", f"{'c' * 31}{u % 10}"],
                    },
                }
            )
    bulk(couch, db, branches, new_edits=False, params={"w": 3})


def test_every_leaf_conflicts_and_deleted_branches_included_is_restored_exactly(
    couch: Couch, make_db: Callable[..., str], tmp_path: Path
) -> None:
    source = make_db()
    seed_with_conflicts(couch, source)
    before = leaves(couch, source)
    assert sum(len(v) > 1 for v in before.values()) == 6  # users 0,3,4,6,8,9 of 12

    result = backup(
        couch, tmp_path, retention=BackupRetention(), every_document=True, databases=[source]
    )
    entry = result.manifest["databases"][0]
    assert entry["conflicted_documents"] == 6
    assert entry["leaves"] == entry["documents"] + 4 + 3  # 4 live conflicts, 3 deleted branches
    target = make_db(create=False)
    restore(couch, result.path, mapping={source: target})

    assert leaves(couch, target) == before
    conflicts = {
        row["id"]: sorted(row["doc"].get("_conflicts", []))
        for row in couch.get(
            f"{db_path(target)}/_all_docs", params={"include_docs": True, "conflicts": True}
        )["rows"]
    }
    assert sum(1 for c in conflicts.values() if c) == 4
    verify(result.path, couch=couch, mapping={source: target}, live=True)
    assert couch.get_doc(target, CHECKPOINT_ID) is None


def test_verify_live_catches_a_missing_conflict_leaf(
    couch: Couch, make_db: Callable[..., str], tmp_path: Path
) -> None:
    source = make_db()
    seed_with_conflicts(couch, source, users=4)
    result = backup(
        couch, tmp_path, retention=BackupRetention(), every_document=True, databases=[source]
    )
    # the same winners, without the conflicting leaf of u0000:profile
    copy = make_db()
    winners = couch.get(
        f"{db_path(source)}/_all_docs", params={"include_docs": True, "attachments": True}
    )["rows"]
    bulk(couch, copy, [row["doc"] for row in winners], new_edits=False)
    deleted_branch = couch.get(
        doc_path(source, "u0000:profile"), params={"open_revs": "all", "revs": True}
    )
    bulk(couch, copy, [i["ok"] for i in deleted_branch if i["ok"].get("_deleted")], new_edits=False)

    with pytest.raises(VerificationError, match="live database holds"):
        verify(result.path, couch=couch, mapping={source: copy}, live=True, settle_seconds=0)


def test_a_restore_killed_midway_resumes_from_its_checkpoint_without_rewriting_everything(
    couch: Couch, make_db: Callable[..., str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = make_db()
    bulk(couch, source, [onboarding_doc(f"v{n:04d}:profile", days_ago(1)) for n in range(300)])
    seed_with_conflicts(couch, source, users=6)
    result = backup(
        couch, tmp_path, retention=BackupRetention(), every_document=True, databases=[source]
    )
    expected = leaves(couch, source)
    target = make_db(create=False)
    real = backup_module._bulk_write
    writes: list[int] = []

    def dying(couch: Couch, db: str, lines: list[bytes], *args: Any) -> int:
        if len(writes) == 4:
            raise Killed
        writes.append(len(lines))
        return real(couch, db, lines, *args)

    monkeypatch.setattr(backup_module, "CHECKPOINT_SECONDS", 0.0)
    monkeypatch.setattr(backup_module, "SORT_WINDOW_LINES", 50)
    monkeypatch.setattr(backup_module, "_bulk_write", dying)
    with pytest.raises(Killed):
        restore(couch, result.path, mapping={source: target}, batch=25, concurrency=1)
    mark = couch.get_doc(target, CHECKPOINT_ID)
    assert mark is not None
    # Four batches of 25 confirmed: two windows of 50 lines sorted by id. A checkpoint is
    # saved beside the writes, the one after a checkpoint on its way skipped: 50 or 100.
    assert mark["lines"] in (50, 100)
    # A target holding documents of something else than this backup is still refused.
    bulk(couch, source, [onboarding_doc("w0001:profile", days_ago(1))])
    other = backup(
        couch,
        tmp_path / "other",
        retention=BackupRetention(),
        every_document=True,
        databases=[source],
    )
    with pytest.raises(OpsError, match="no unfinished restore of this backup"):
        restore(couch, other.path, mapping={source: target})

    again: list[int] = []

    def counting(couch: Couch, db: str, lines: list[bytes], *args: Any) -> int:
        again.append(len(lines))
        return real(couch, db, lines, *args)

    monkeypatch.setattr(backup_module, "_bulk_write", counting)
    restore(couch, result.path, mapping={source: target}, batch=25, concurrency=1)

    total = result.manifest["databases"][0]["leaves"]
    # On from the checkpoint, the design document included: nothing confirmed is rewritten.
    assert sum(again) == total - mark["lines"]
    assert leaves(couch, target) == expected
    assert couch.get_doc(target, CHECKPOINT_ID) is None
    verify(result.path, couch=couch, mapping={source: target}, live=True)


def test_database_settings_are_backed_up_and_restored(
    couch: Couch, server: Server, make_db: Callable[..., str], tmp_path: Path
) -> None:
    server.require("security")  # pouchdb-server has no _revs_limit, _purged_infos_limit
    source = make_db()
    bulk(couch, source, [onboarding_doc("u0001:profile", days_ago(1))])
    couch.request("PUT", f"{db_path(source)}/_revs_limit", data=b"123")
    couch.request("PUT", f"{db_path(source)}/_purged_infos_limit", data=b"4567")
    security = {
        "admins": {"names": [], "roles": ["_admin"]},
        "members": {"names": ["webapp"], "roles": []},
    }
    couch.put(f"{db_path(source)}/_security", security)
    result = backup(
        couch, tmp_path, retention=BackupRetention(), every_document=True, databases=[source]
    )
    target = make_db(create=False)

    restore(couch, result.path, mapping={source: target})

    assert couch.get(f"{db_path(target)}/_revs_limit") == 123
    assert couch.get(f"{db_path(target)}/_purged_infos_limit") == 4567
    assert couch.get(f"{db_path(target)}/_security") == security
    verify(result.path, couch=couch, mapping={source: target}, live=True)
    couch.request("PUT", f"{db_path(target)}/_revs_limit", data=b"1000")
    with pytest.raises(VerificationError, match="_revs_limit differ"):
        verify(result.path, couch=couch, mapping={source: target}, live=True)


@pytest.mark.slow
def test_memory_is_bounded_by_bytes_with_attachments_of_several_megabytes(
    server: Server, couch: Couch, make_db: Callable[..., str], tmp_path: Path
) -> None:
    """40 documents each with a 4 MB scan, 20 of them with a second leaf and its scan (240 MB,
    320 MB in base64): a page of 1,000
    documents held whole (as before) needs well over 400 MB; the backup and the restore,
    run as the job runs them (`couchops` in its own process), stay under 200 MB (measured:
    94 MB and 115-125 MB on pouchdb-server and on the 3-node CouchDB; 970 MB for the backup
    before byte bounds)."""
    db = make_db()
    scan = os.urandom(4_000_000)  # one scan, written 40 times
    encoded = base64.b64encode(scan).decode()
    for n in range(40):
        doc = onboarding_doc(f"u{n:04d}:identity", days_ago(1))
        doc["_attachments"] = {"scan.jpg": {"content_type": "image/jpeg", "data": encoded}}
        bulk(couch, db, [doc], params={"w": 3})
        if n % 2 == 0:
            # Half of them in conflict, the other leaf with its own scan: the leaves of
            # such documents are fetched in batches, bounded by bytes too.
            branch = {**doc, "_rev": f"1-{n:032x}", "step": "conflict"}
            bulk(couch, db, [branch], new_edits=False, params={"w": 3})
    env = {**server.env(), "BACKUP_DIR": str(tmp_path / "backups"), "GDPR_MAX_AGE_DAYS": "30"}

    peak_backup = _peak_rss_mb(["backup", "--database", db], env)
    target = make_db(create=False)
    peak_restore = _peak_rss_mb(
        ["restore", "--from", "latest", "--database", f"{db}={target}"], env
    )

    print(f"peak RSS: backup {peak_backup:.0f} MB, restore {peak_restore:.0f} MB")
    assert peak_backup < 200
    assert peak_restore < 200
    assert couch.db_info(target)["doc_count"] == 40


def _peak_rss_mb(args: list[str], env: dict[str, str]) -> float:
    """Peak resident memory of `couchops ARGS`, measured by a parent that has no other child."""
    measure = (
        "import resource, subprocess, sys\n"
        "done = subprocess.run([sys.executable, '-m', 'couchops.cli', *sys.argv[1:]])\n"
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
        "sys.exit(done.returncode)\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", measure, *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert run.returncode == 0, (run.stdout + run.stderr)[-2000:]
    return int(run.stdout.strip().splitlines()[-1]) / 1024
