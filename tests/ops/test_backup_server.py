"""backup / restore / verify against a real server (pouchdb-server or COUCHDB_URL)."""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
import os
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import quote, unquote

import pytest

from couchops import backup as backup_module
from couchops.backup import (
    MANIFEST,
    SORTED_KEYS_FORMAT,
    BackupRetention,
    backup,
    content_digest,
    expire_backups,
    list_backups,
    resolve_backup,
    restore,
    verify,
)
from couchops.couch import Couch, db_path, doc_path
from couchops.errors import OpsError, VerificationError
from couchops.timestamps import iso
from tests.ops.helpers import bulk, days_ago, last_line, onboarding_doc, run_cli, with_attachment

pytestmark = pytest.mark.server

PDF = bytes(range(256)) * 40 + b"%%EOF"
PNG = os.urandom(30_000)


def seed(couch: Couch, db: str, users: int = 20) -> int:
    docs = []
    for u in range(users):
        docs.append(onboarding_doc(f"u{u:04d}:profile", days_ago(u % 40)))
        docs.append(onboarding_doc(f"u{u:04d}:application", days_ago(u % 40), step="review"))
        if u % 3 == 0:
            docs.append(
                with_attachment(
                    onboarding_doc(f"u{u:04d}:identity", days_ago(1)),
                    "passport.pdf",
                    PDF,
                    "application/pdf",
                )
            )
    docs[0] = with_attachment(docs[0], "selfie.png", PNG, "image/png")
    docs.append(
        {"_id": "_design/app", "views": {"by_step": {"map": "function (d) { emit(d.step); }"}}}
    )
    bulk(couch, db, docs)
    return len(docs)


def test_on_apache_couchdb_each_shard_range_is_read_from_one_copy(
    couch: Couch, make_db: Callable[..., str]
) -> None:
    if not couch.is_apache_couchdb():
        pytest.skip("pouchdb-server has no shards nor node-local interface (contract tests)")
    db = make_db()
    count = seed(couch, db)
    ranges = couch.get(f"{db_path(db)}/_shards")["shards"]

    copies = backup_module.copies_to_read(couch, db)

    assert copies is not None
    assert len(copies) == len(ranges)
    for (client, path), shard_range in zip(copies, sorted(ranges), strict=True):
        # through the cluster URL's node, or straight to the node (COUCHDB_NODE_URLS)
        node = unquote(path.split("/")[2])
        if client is not couch:
            node = client.get("/_node/_local")["name"]
        assert node in ranges[shard_range]
        assert quote(f"shards/{shard_range}/{db}.", safe="") in path
    docs = [
        change.doc
        for chunk in backup_module.read_database(couch, db, documents=count, page=7, concurrency=4)
        for change in chunk
    ]
    clustered = couch.get(f"{db_path(db)}/_all_docs")["rows"]
    assert sorted(d["_id"] for d in docs) == [row["id"] for row in clustered]
    assert len(docs) == count


def test_backup_restore_round_trip_keeps_documents_and_attachments_byte_identical(
    couch: Couch, make_db: Callable[..., str], tmp_path: Path
) -> None:
    source = make_db()
    count = seed(couch, source)
    result = backup(
        couch,
        tmp_path,
        retention=BackupRetention(),
        every_document=True,
        databases=[source],
        page=7,
    )

    entry = result.manifest["databases"][0]
    assert entry["documents"] == count
    assert entry["design_documents"] == 1
    assert entry["attachments"] == 8
    assert entry["attachment_bytes"] == len(PNG) + 7 * len(PDF)
    assert list_backups(tmp_path) == [result.path]
    assert not list(tmp_path.glob(".tmp-*"))

    target = make_db(create=False)
    restore(couch, result.path, mapping={source: target})
    for doc_id, name, data in [
        ("u0000:profile", "selfie.png", PNG),
        ("u0003:identity", "passport.pdf", PDF),
    ]:
        restored = couch.request("GET", f"{doc_path(target, doc_id)}/{name}").content
        assert restored == data
        original = couch.get(doc_path(source, doc_id))
        assert couch.get(doc_path(target, doc_id))["_rev"] == original["_rev"]
    verify(result.path, couch=couch, mapping={source: target}, live=True)


def seed_ordered(couch: Couch, db: str) -> None:
    """A document whose keys are not in sorted order, and a Mango index on two fields whose
    order is not sorted either (the index's definition is an object: its key order is the
    index's field order)."""
    couch.put(doc_path(db, "ordered"), {"zeta": 1, "alpha": {"y": 1, "b": 2}, "mid": [3]})
    couch.post(
        f"{db_path(db)}/_index",
        {"index": {"fields": ["step", "createdAt"]}, "ddoc": "by-step", "name": "by-step"},
    )


def key_orders(couch: Couch, db: str) -> tuple[list[str], list[str], list[str]]:
    """Key orders as the server returns them: the document's, its nested object's, and the
    Mango index's `map.fields` in its design document (where a server puts `_id` and `_rev`
    is its own: CouchDB first, pouchdb-server last)."""
    doc = json.loads(couch.request("GET", doc_path(db, "ordered")).text)
    ddoc = json.loads(couch.request("GET", doc_path(db, "_design/by-step")).text)
    own = [key for key in doc if not key.startswith("_")]
    return own, list(doc["alpha"]), list(ddoc["views"]["by-step"]["map"]["fields"])


def index_fields_on(couch: Couch, db: str) -> list[list[str]]:
    return [
        [next(iter(f)) for f in ix["def"]["fields"]]
        for ix in couch.get(f"{db_path(db)}/_index")["indexes"]
        if ix["name"] == "by-step"
    ]


def test_key_order_and_a_mango_index_field_order_survive_backup_and_restore(
    couch: Couch, make_db: Callable[..., str], tmp_path: Path
) -> None:
    source = make_db()
    seed_ordered(couch, source)
    original = key_orders(couch, source)
    assert original == (["zeta", "alpha", "mid"], ["y", "b"], ["step", "createdAt"])

    result = backup(
        couch, tmp_path, retention=BackupRetention(), every_document=True, databases=[source]
    )
    target = make_db(create=False)
    restore(couch, result.path, mapping={source: target})

    assert key_orders(couch, target) == original
    assert index_fields_on(couch, target) == [["step", "createdAt"]]
    verify(result.path, couch=couch, mapping={source: target}, live=True)


def test_a_backup_of_the_sorted_keys_format_restores_each_mango_index_in_its_field_order(
    couch: Couch, make_db: Callable[..., str], tmp_path: Path
) -> None:
    """Backups written before format 2 sorted every document's keys, which turned the index
    on [step, createdAt] into one on [createdAt, step] when restored."""
    source = make_db()
    seed_ordered(couch, source)
    result = backup(
        couch, tmp_path, retention=BackupRetention(), every_document=True, databases=[source]
    )
    # The same backup as the earlier code wrote it: sorted keys, digests of that form.
    manifest = json.loads((result.path / MANIFEST).read_text())
    entry = manifest["databases"][0]
    data_file = result.path / entry["file"]
    lines = [
        json.dumps(json.loads(line), sort_keys=True, separators=(",", ":")).encode()
        for line in gzip.decompress(data_file.read_bytes()).splitlines()
    ]
    data_file.write_bytes(gzip.compress(b"\n".join(lines) + b"\n"))
    entry["file_sha256"] = hashlib.sha256(data_file.read_bytes()).hexdigest()
    entry["file_bytes"] = data_file.stat().st_size
    entry["content_sha256"] = content_digest(
        [(json.loads(line)["_id"], hashlib.sha256(line).hexdigest()) for line in lines]
    )
    manifest["format"] = SORTED_KEYS_FORMAT
    (result.path / MANIFEST).write_text(json.dumps(manifest))
    verify(result.path, couch=couch, live=True)

    target = make_db(create=False)
    restore(couch, result.path, mapping={source: target})

    assert key_orders(couch, target)[2] == ["step", "createdAt"]
    assert index_fields_on(couch, target) == [["step", "createdAt"]]
    verify(result.path, couch=couch, mapping={source: target}, live=True)


def test_verify_detects_a_corrupted_file_and_a_changed_live_database(
    couch: Couch, make_db: Callable[..., str], tmp_path: Path
) -> None:
    db = make_db()
    seed(couch, db, users=5)
    result = backup(
        couch, tmp_path, retention=BackupRetention(), every_document=True, databases=[db]
    )
    verify(result.path, couch=couch, live=True)

    couch.put(doc_path(db, "extra"), {"createdAt": days_ago(0)})
    with pytest.raises(VerificationError, match="live database holds"):
        verify(result.path, couch=couch, live=True, settle_seconds=0)

    data_file = result.path / result.manifest["databases"][0]["file"]
    raw = bytearray(data_file.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    data_file.write_bytes(bytes(raw))
    with pytest.raises(VerificationError, match="sha256"):
        verify(result.path)


def test_a_backup_killed_midway_is_never_listed_and_the_next_run_cleans_it(
    couch: Couch, make_db: Callable[..., str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = make_db()
    seed(couch, db)
    real = backup_module.stream_items
    calls = {"n": 0}

    def dying(*args: object, **kwargs: object) -> object:
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt("killed")
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(backup_module, "stream_items", dying)
    with pytest.raises(KeyboardInterrupt):
        backup(
            couch,
            tmp_path,
            retention=BackupRetention(),
            every_document=True,
            databases=[db],
            page=5,
            concurrency=1,
        )
    assert list_backups(tmp_path) == []
    assert len(list(tmp_path.glob(".tmp-*"))) == 1
    with pytest.raises(OpsError, match="no complete backup"):
        resolve_backup(tmp_path, "latest")

    monkeypatch.setattr(backup_module, "stream_items", real)
    result = backup(
        couch, tmp_path, retention=BackupRetention(), every_document=True, databases=[db], page=5
    )
    assert list_backups(tmp_path) == [result.path]
    assert not list(tmp_path.glob(".tmp-*"))


def test_restore_refuses_a_target_that_holds_documents(
    couch: Couch, make_db: Callable[..., str], tmp_path: Path
) -> None:
    db = make_db()
    count = seed(couch, db, users=2)
    result = backup(
        couch, tmp_path, retention=BackupRetention(), every_document=True, databases=[db]
    )
    with pytest.raises(OpsError, match="not empty"):
        restore(couch, result.path)
    assert couch.db_info(db)["doc_count"] == count  # type: ignore[index]


def test_restore_takes_a_target_as_cluster_setup_leaves_it_and_keeps_its_design_documents(
    couch: Couch, make_db: Callable[..., str], tmp_path: Path
) -> None:
    """After a disaster `pulumi up` runs the setup Job first: the database exists with its
    indexes. The restore fills it; the current index definitions stay, without a conflict."""
    source, target, busy = make_db(), make_db(), make_db()
    count = seed(couch, source, users=2)
    old_view = {"views": {"by_step": {"map": "function (doc) { emit(doc.step, 1); }"}}}
    couch.put(doc_path(source, "_design/onboarding"), old_view)
    result = backup(
        couch, tmp_path, retention=BackupRetention(), every_document=True, databases=[source]
    )
    current = {"views": {"by_step": {"map": "function (doc) { emit([doc.step], 1); }"}}}
    couch.put(doc_path(target, "_design/onboarding"), current)
    couch.put(doc_path(busy, "_design/onboarding"), current)
    couch.put(doc_path(busy, "someone"), {"step": "identity"})

    restore(couch, result.path, mapping={source: target})

    assert couch.db_info(target)["doc_count"] == count + 1  # type: ignore[index]
    design = couch.get(f"{doc_path(target, '_design/onboarding')}", params={"conflicts": True})
    assert design["views"] == current["views"]
    assert "_conflicts" not in design
    # A design document beside any other document is not a set-up database: refused.
    with pytest.raises(OpsError, match="not empty"):
        restore(couch, result.path, mapping={source: busy})


def _fake_backup(root: Path, created: datetime, oldest: datetime | str | None) -> Path:
    path = root / created.strftime("%Y%m%dT%H%M%SZ")
    path.mkdir()
    manifest: dict[str, object] = {"format": "couchops-backup/2", "created_at": created.isoformat()}
    if oldest != "unrecorded":
        manifest["oldest_data_at"] = oldest.isoformat() if isinstance(oldest, datetime) else None
    (path / MANIFEST).write_text(json.dumps(manifest))
    return path


def test_backups_expire_at_the_end_of_their_life_or_when_their_oldest_data_passes_the_budget(
    tmp_path: Path,
) -> None:
    now = datetime(2026, 11, 28, 3, 0, tzinfo=UTC)
    day = timedelta(days=1)
    kept = [
        _fake_backup(tmp_path, now - 6 * day, now - 26 * day),  # 6 days old, data 29 d 23 h
        _fake_backup(tmp_path, now - 2 * day, None),  # no personal data, within its life
    ]
    gone = [
        _fake_backup(tmp_path, now - 7 * day, now - 8 * day),  # its 7 days are over
        _fake_backup(tmp_path, now - 3 * day, now - 30 * day),  # data reaches 30 days now
        _fake_backup(tmp_path, now - 1 * day, "unrecorded"),  # may hold 31-day-old data
    ]
    broken = tmp_path / (now - 2 * day).strftime("%Y%m%dT%H%M%SZ-2")
    broken.mkdir()
    (broken / MANIFEST).write_text("{not json")  # unusable, its data's age unknown
    gone.append(broken)
    (tmp_path / ".tmp-20261128T020000Z").mkdir()
    retention = BackupRetention(retention_days=7, max_age_days=30, expiry_interval_hours=1)
    deleted = expire_backups(tmp_path, retention, now=now)
    assert sorted(deleted) == sorted(p.name for p in gone)
    assert list_backups(tmp_path) == sorted(kept)
    assert not list(tmp_path.glob(".tmp-*"))


def test_a_backup_holds_no_data_that_would_pass_the_budget_before_it_expires(
    couch: Couch, make_db: Callable[..., str], tmp_path: Path
) -> None:
    db = make_db()
    now = datetime.now(UTC)
    docs = [
        onboarding_doc(f"u{age:02d}:profile", days_ago(age, now)) for age in (1, 20, 22, 23, 35)
    ]
    bulk(couch, db, [*docs, {"_id": "undated", "step": "start"}])
    retention = BackupRetention(retention_days=7, max_age_days=30, expiry_interval_hours=1)
    result = backup(couch, tmp_path, retention=retention, databases=[db], now=now)
    manifest = json.loads((result.path / MANIFEST).read_text())
    entry = manifest["databases"][0]
    lines = gzip.decompress((result.path / entry["file"]).read_bytes()).splitlines()
    ids = sorted(json.loads(line)["_id"] for line in lines)
    # 30 days - 7 days of life - 1 hour of expiry interval: data up to 22 days 23 hours old.
    assert ids == ["u01:profile", "u20:profile", "u22:profile", "undated"]
    assert entry["documents_expired"] == 2 == manifest["totals"]["documents_expired"]
    assert entry["untimed_first_seen"] == {"undated": iso(now)}
    assert manifest["expires_at"] == iso(now + timedelta(days=7))
    assert db not in json.dumps(manifest["databases"][0]["file"])


def test_backup_files_are_gzip_json_lines_and_the_manifest_is_written_last(
    couch: Couch, make_db: Callable[..., str], tmp_path: Path
) -> None:
    db = make_db()
    count = seed(couch, db, users=3)
    result = backup(
        couch, tmp_path, retention=BackupRetention(), every_document=True, databases=[db]
    )
    manifest = json.loads((result.path / MANIFEST).read_text())
    entry = manifest["databases"][0]
    lines = gzip.decompress((result.path / entry["file"]).read_bytes()).splitlines()
    assert len(lines) == count == manifest["totals"]["documents"]
    docs = [json.loads(line) for line in lines]
    atts = [a for d in docs for a in d.get("_attachments", {}).values()]
    assert all(base64.b64decode(a["data"]) for a in atts)
    files = sorted(p for p in result.path.rglob("*") if p.is_file())
    assert max(files, key=lambda p: p.stat().st_mtime_ns).name == MANIFEST


def test_cli_backup_verify_restore(
    server: object, couch: Couch, make_db: Callable[..., str], tmp_path: Path
) -> None:
    db = make_db()
    seed(couch, db, users=4)
    env = server.env()  # type: ignore[attr-defined]
    env["BACKUP_DIR"] = str(tmp_path)
    done = run_cli(["backup", "--database", db], env)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout.splitlines()[0])  # the backup's, then its audit's
    assert summary["documents"] == 11
    assert run_cli(["verify"], env).returncode == 0
    target = make_db(create=False)
    done = run_cli(["restore", "--from", "latest", "--database", f"{db}={target}"], env)
    assert done.returncode == 0, done.stderr
    assert run_cli(["verify", "--live", "--database", f"{db}={target}"], env).returncode == 0
    refused = run_cli(["restore", "--from", "latest", "--database", f"{db}={target}"], env)
    assert refused.returncode == 1
    assert "not empty" in last_line(refused.stderr)
    db_info = couch.db_info(target)
    assert db_info is not None and db_info["doc_count"] == 11
    assert couch.get(f"{db_path(target)}/_all_docs")["total_rows"] == 11


def test_a_long_backup_expires_the_others_while_it_runs(
    couch: Couch, make_db: Callable[..., str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The expiry job may not attach the volume while a backup holds it: the backup expires
    backups itself every EXPIRY_DURING_RUN_SECONDS (here shortened)."""
    db = make_db()
    bulk(couch, db, [onboarding_doc("u1:profile", days_ago(1, datetime.now(UTC)))])
    monkeypatch.setattr(backup_module, "EXPIRY_DURING_RUN_SECONDS", 0.05)
    real = backup_module.backup_database
    now = datetime.now(UTC)
    expired: list[Path] = []

    def slow(*args: object, **kwargs: object) -> object:
        # A backup that expires while this one runs (the run's first expiry is over).
        expired.append(_fake_backup(tmp_path, now - timedelta(days=8), now - timedelta(days=9)))
        time.sleep(0.5)
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(backup_module, "backup_database", slow)
    result = backup(couch, tmp_path, retention=BackupRetention(), databases=[db], now=now)
    assert result.deleted == [expired[0].name]
    assert not expired[0].exists()
