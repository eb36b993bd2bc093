"""Off-site backups (`couchops.offsite`) against a real S3 server: SeaweedFS built from its Go
module (scripts/bootstrap-seaweedfs.sh), started by `tests.ops.s3_server`."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyrage  # type: ignore[import-untyped]
import pytest
from pyrage import x25519
from structlog.testing import capture_logs

from couchops import offsite, pseudonym
from couchops.backup import MANIFEST, BackupRetention, backup, list_backups, restore, verify
from couchops.couch import Couch
from couchops.errors import OpsError, SettingsError, VerificationError
from couchops.offsite import (
    INDEX,
    ObjectStorage,
    ObjectStorageError,
    download_backup,
    ensure_lifecycle,
    expire_remote_backups,
    identities_from_env,
    lifecycle_days,
    list_remote_backups,
    recipients_from_env,
    upload_backup,
)
from couchops.timestamps import iso
from tests.ops.helpers import bulk, days_ago, onboarding_doc, with_attachment
from tests.ops.s3_server import S3Server, s3_server  # noqa: F401  (the fixture)

NOW = datetime.now(UTC).replace(microsecond=0)
PNG = os.urandom(40_000)


class Killed(Exception):
    """Stands for the process being killed at that point."""


@pytest.fixture(scope="module")
def keys() -> dict[str, Any]:
    """An operations key and an escrow key (both recipients), and an unrelated one."""
    return {name: x25519.Identity.generate() for name in ("ops", "escrow", "other")}


@dataclass
class Site:
    """A fresh bucket on the test server, and the keys: backups go to `recipients` (the
    operations and escrow keys); `keys["other"]` opens nothing."""

    server: S3Server
    storage: ObjectStorage
    keys: dict[str, Any]

    @property
    def recipients(self) -> list[Any]:
        return [self.keys["ops"].to_public(), self.keys["escrow"].to_public()]

    def raw(self) -> dict[str, bytes]:
        """Every object under the prefix, as stored."""
        client = self.server.client()
        listing = client.list_objects_v2(Bucket=self.storage.bucket, Prefix=self.storage.prefix)
        return {
            o["Key"]: client.get_object(Bucket=self.storage.bucket, Key=o["Key"])["Body"].read()
            for o in listing.get("Contents", [])
        }

    def put(self, key: str, data: bytes) -> None:
        self.server.client().put_object(Bucket=self.storage.bucket, Key=key, Body=data)


@pytest.fixture
def site(s3_server: S3Server, keys: dict[str, Any]) -> Site:  # noqa: F811
    storage = ObjectStorage(
        endpoint=s3_server.endpoint,
        bucket=s3_server.new_bucket(),
        region=s3_server.region,
        access_key_id=s3_server.access_key_id,
        secret_access_key=s3_server.secret_access_key,
        prefix="backups/test/",
        part_bytes=5 * 1024 * 1024,
    )
    return Site(s3_server, storage, keys)


def make_backup(
    root: Path,
    backup_id: str,
    files: dict[str, bytes],
    *,
    created: datetime = NOW - timedelta(hours=1),
    expires: datetime = NOW + timedelta(days=7),
) -> Path:
    """A complete local backup written by hand: gzip files and a manifest naming them (`files`:
    database name -> its file's content before compression)."""
    path = root / backup_id
    databases = []
    for index, (name, content) in enumerate(sorted(files.items())):
        # as `couchops.backup` names files: a legacy database by its pseudonym
        shown = pseudonym.pseudonym(name) if name.startswith("userdb-") else name
        relative = f"databases/{index:05d}-{shown.replace('~', '-')}.jsonl.gz"
        (path / "databases").mkdir(parents=True, exist_ok=True)
        data = gzip.compress(content, mtime=0)
        (path / relative).write_bytes(data)
        databases.append(
            {"name": name, "file": relative, "file_sha256": hashlib.sha256(data).hexdigest()}
        )
    manifest = {
        "format": "couchops-backup/2",
        "id": backup_id,
        "created_at": iso(created),
        "oldest_data_at": iso(created - timedelta(days=3)),
        "expires_at": iso(expires),
        "databases": databases,
    }
    (path / MANIFEST).write_text(json.dumps(manifest, indent=2))
    return path


def backup_id(moment: datetime) -> str:
    return moment.strftime("%Y%m%dT%H%M%SZ")


def tree(path: Path) -> dict[str, bytes]:
    return {
        p.relative_to(path).as_posix(): p.read_bytes()
        for p in sorted(path.rglob("*"))
        if p.is_file()
    }


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    """Every S3 call the code makes, as (operation, key), seen through boto3's event hooks on
    each client it creates; `calls["fail"]` may raise in one (a kill at that point)."""
    seen: dict[str, Any] = {"log": [], "fail": None}
    make_client = ObjectStorage.client

    def client(self: ObjectStorage) -> Any:
        made = make_client(self)

        def before(params: dict[str, Any], model: Any, **_: Any) -> None:
            call = (model.name, params.get("Key", ""))
            if seen["fail"] is not None and seen["fail"](call):
                raise Killed(f"killed at {call}")
            seen["log"].append(call)

        made.meta.events.register("before-parameter-build.s3", before)
        return made

    monkeypatch.setattr(ObjectStorage, "client", client)
    yield seen


def gets(calls: dict[str, Any], suffix: str = "") -> list[str]:
    return [key for op, key in calls["log"] if op == "GetObject" and key.endswith(suffix)]


# ---------------------------------------------------------------------------------------------
# round trip


def seed(couch: Couch, db: str) -> None:
    docs = [
        onboarding_doc(f"u{u:04d}:application", days_ago(u % 5, NOW), email=f"person{u}@mail.fr")
        for u in range(60)
    ]
    docs[0] = with_attachment(docs[0], "selfie.png", PNG, "image/png")
    bulk(couch, db, docs)


@pytest.mark.server
def test_a_couchops_backup_comes_back_byte_for_byte_and_restores(
    couch: Couch, make_db: Callable[..., str], site: Site, tmp_path: Path
) -> None:
    source, other = make_db(), make_db()
    seed(couch, source)
    seed(couch, other)
    local = backup(
        couch, tmp_path / "local", retention=BackupRetention(), databases=[source, other]
    )

    remote = upload_backup(site.storage, local.path, site.recipients)
    listed = list_remote_backups(site.storage)
    back = download_backup(site.storage, "latest", tmp_path / "restore", [site.keys["ops"]])

    assert [b.backup_id for b in listed] == [local.backup_id]
    assert remote.expires_at == datetime.fromisoformat(local.manifest["expires_at"])
    assert back == tmp_path / "restore" / local.backup_id
    assert tree(back) == tree(local.path)
    assert sorted(p.name for p in (tmp_path / "restore").iterdir()) == [".lock", local.backup_id]
    target = make_db(create=False)
    restore(couch, back, mapping={source: target})
    assert verify(back, couch=couch, mapping={source: target}, live=True)["documents"] == 60


@pytest.mark.server
def test_the_stored_objects_hold_no_plaintext_and_the_index_no_name(
    site: Site, tmp_path: Path
) -> None:
    name = "userdb-706572736f6e40657861"
    content = b"".join(
        json.dumps({"_id": f"u{i}", "email": f"person{i}@mail.fr"}).encode() + b"\n"
        for i in range(2000)
    )
    local = make_backup(tmp_path, backup_id(NOW), {name: content})
    plain = tree(local)
    # what must not be readable: the database's name, and stretches of every file
    needles = [name.encode(), b"person1@mail.fr"]
    for data in plain.values():
        needles += [data[i : i + 24] for i in range(0, len(data) - 24, max(1, len(data) // 5))]

    upload_backup(site.storage, local, site.recipients)
    stored = site.raw()

    index_key = site.storage.folder(local.name) + INDEX
    sealed = {key: data for key, data in stored.items() if key != index_key}
    assert len(sealed) == len(plain)
    assert all(data.startswith(b"age-encryption.org/v1\n") for data in sealed.values())
    assert [(key, n) for key, data in sealed.items() for n in needles if n in data] == []
    assert name.encode() not in stored[index_key]
    assert b"@mail.fr" not in stored[index_key]
    index = json.loads(stored[index_key])
    dates = {"created_at", "oldest_data_at", "expires_at", "uploaded_at"}
    assert set(index) == {"format", "id", *dates, "encryption", "objects"}
    assert [o["name"] for o in index["objects"]][-1] == MANIFEST + ".age"
    for obj in index["objects"]:
        data = stored[site.storage.folder(local.name) + obj["name"]]
        assert (obj["size"], obj["sha256"]) == (len(data), hashlib.sha256(data).hexdigest())


@pytest.mark.server
def test_the_escrow_key_alone_opens_a_backup(site: Site, tmp_path: Path) -> None:
    local = make_backup(tmp_path / "local", backup_id(NOW), {"onboarding": b'{"_id":"a"}\n'})
    upload_backup(site.storage, local, site.recipients)

    back = download_backup(site.storage, local.name, tmp_path / "restore", [site.keys["escrow"]])

    assert tree(back) == tree(local)


@pytest.mark.server
def test_another_identity_is_refused_before_any_data_is_fetched(
    site: Site, calls: dict[str, Any], tmp_path: Path
) -> None:
    local = make_backup(tmp_path / "local", backup_id(NOW), {"a": b"x\n", "b": b"y\n"})
    upload_backup(site.storage, local, site.recipients)
    calls["log"].clear()

    with pytest.raises(OpsError, match=f"does not open backup {local.name}") as failure:
        download_backup(site.storage, local.name, tmp_path / "restore", [site.keys["other"]])

    assert not isinstance(failure.value, VerificationError)
    assert str(site.recipients[0]) in str(failure.value)
    assert gets(calls, ".jsonl.gz.age") == []
    assert not (tmp_path / "restore" / local.name).exists()


@pytest.mark.server
def test_a_file_named_after_a_legacy_database_is_not_uploaded(
    site: Site, calls: dict[str, Any], tmp_path: Path
) -> None:
    """Object names are in clear: a file named `userdb-<hex of an e-mail>` would publish it."""
    local = make_backup(tmp_path, backup_id(NOW), {"a": b"1\n"})
    clear = local / "databases" / "00001-userdb-706572736f6e40657861.jsonl.gz"
    clear.write_bytes(gzip.compress(b"{}\n"))

    with pytest.raises(OpsError, match="names a database in clear") as failure:
        upload_backup(site.storage, local, site.recipients)

    assert "706572736f6e40657861" not in str(failure.value)
    assert [op for op, _ in calls["log"] if op.startswith(("Put", "Create", "Upload"))] == []
    assert site.raw() == {}


# ---------------------------------------------------------------------------------------------
# integrity


@pytest.mark.server
@pytest.mark.parametrize("damage", ["tampered", "truncated"])
def test_a_damaged_object_is_refused_naming_it(site: Site, tmp_path: Path, damage: str) -> None:
    local = make_backup(tmp_path / "local", backup_id(NOW), {"a": os.urandom(5000), "b": b"y\n"})
    upload_backup(site.storage, local, site.recipients)
    key = site.storage.folder(local.name) + "databases/00000-a.jsonl.gz.age"
    data = bytearray(site.raw()[key])
    if damage == "tampered":
        data[len(data) // 2] ^= 0x01
    else:
        del data[-100:]
    site.put(key, bytes(data))

    with pytest.raises(
        VerificationError,
        match=r"object \S+/databases/00000-a\.jsonl\.gz\.age differs from its index",
    ):
        download_backup(site.storage, local.name, tmp_path / "restore", [site.keys["ops"]])

    assert not (tmp_path / "restore" / local.name).exists()


@pytest.mark.server
def test_an_object_replaced_with_its_index_is_refused_by_the_manifest(
    site: Site, tmp_path: Path
) -> None:
    """Whoever holds a public key can encrypt other content to it and fix the clear index;
    the checksum of the file in the encrypted manifest still refuses it."""
    local = make_backup(tmp_path / "local", backup_id(NOW), {"a": b"genuine\n"})
    upload_backup(site.storage, local, site.recipients)
    folder = site.storage.folder(local.name)
    forged = pyrage.encrypt(gzip.compress(b"forged\n"), site.recipients)
    site.put(folder + "databases/00000-a.jsonl.gz.age", forged)
    index = json.loads(site.raw()[folder + INDEX])
    index["objects"][0].update(size=len(forged), sha256=hashlib.sha256(forged).hexdigest())
    site.put(folder + INDEX, json.dumps(index).encode())

    with pytest.raises(VerificationError, match=r"00000-a\.jsonl\.gz decrypted has sha256"):
        download_backup(site.storage, local.name, tmp_path / "restore", [site.keys["ops"]])


# ---------------------------------------------------------------------------------------------
# interruptions


@pytest.mark.server
def test_a_killed_download_resumes_without_fetching_finished_files(
    site: Site, calls: dict[str, Any], tmp_path: Path
) -> None:
    files = {name: os.urandom(3000) for name in ("a", "b", "c")}
    local = make_backup(tmp_path / "local", backup_id(NOW), files)
    upload_backup(site.storage, local, site.recipients)
    folder = site.storage.folder(local.name)
    first, second, third = (
        folder + f"databases/{i:05d}-{n}.jsonl.gz.age" for i, n in enumerate("abc")
    )
    calls["log"].clear()
    calls["fail"] = lambda call: call == ("GetObject", second)
    with pytest.raises(Killed):
        download_backup(site.storage, local.name, tmp_path / "restore", [site.keys["ops"]])
    assert gets(calls, ".jsonl.gz.age") == [first]
    assert [p.name for p in list_backups(tmp_path / "restore")] == []
    calls["log"].clear()
    calls["fail"] = None

    back = download_backup(site.storage, local.name, tmp_path / "restore", [site.keys["ops"]])

    assert gets(calls, ".age") == [folder + MANIFEST + ".age", second, third]
    assert tree(back) == tree(local)


@pytest.mark.server
def test_a_download_whose_marker_is_gone_fetches_that_file_again(
    site: Site, calls: dict[str, Any], tmp_path: Path
) -> None:
    local = make_backup(tmp_path / "local", backup_id(NOW), {"a": b"1\n", "b": b"2\n"})
    upload_backup(site.storage, local, site.recipients)
    second = site.storage.folder(local.name) + "databases/00001-b.jsonl.gz.age"
    calls["fail"] = lambda call: call == ("GetObject", second)
    with pytest.raises(Killed):
        download_backup(site.storage, local.name, tmp_path / "restore", [site.keys["ops"]])
    work = tmp_path / "restore" / f".tmp-{local.name}"
    (work / offsite.DONE / "databases" / "00000-a.jsonl.gz.json").unlink()
    calls["log"].clear()
    calls["fail"] = None

    download_backup(site.storage, local.name, tmp_path / "restore", [site.keys["ops"]])

    assert len(gets(calls, ".jsonl.gz.age")) == 2


@pytest.mark.server
def test_an_interrupted_upload_is_not_listed_and_a_rerun_completes_it(
    site: Site, calls: dict[str, Any], tmp_path: Path
) -> None:
    local = make_backup(tmp_path / "local", backup_id(NOW), {"a": b"1\n", "b": os.urandom(9000)})
    manifest_key = site.storage.folder(local.name) + MANIFEST + ".age"
    calls["fail"] = lambda call: call[1] == manifest_key
    with pytest.raises(Killed):
        upload_backup(site.storage, local, site.recipients)
    assert len(site.raw()) == 2  # the two database files

    assert list_remote_backups(site.storage) == []
    with pytest.raises(OpsError, match="no complete off-site backup"):
        download_backup(site.storage, "latest", tmp_path / "restore", [site.keys["ops"]])
    calls["fail"] = None
    upload_backup(site.storage, local, site.recipients)
    assert [b.backup_id for b in list_remote_backups(site.storage)] == [local.name]
    back = download_backup(site.storage, "latest", tmp_path / "restore", [site.keys["ops"]])
    assert tree(back) == tree(local)


@pytest.mark.server
def test_a_backup_already_uploaded_is_not_uploaded_again(
    site: Site, calls: dict[str, Any], tmp_path: Path
) -> None:
    local = make_backup(tmp_path, backup_id(NOW), {"a": b"1\n"})
    first = upload_backup(site.storage, local, site.recipients)
    calls["log"].clear()

    again = upload_backup(site.storage, local, site.recipients)

    assert again == first
    assert [op for op, _ in calls["log"] if op in ("PutObject", "CreateMultipartUpload")] == []


@pytest.mark.server
@pytest.mark.slow
def test_a_large_file_goes_up_in_parts_and_comes_back_whole(site: Site, tmp_path: Path) -> None:
    local = make_backup(tmp_path / "local", backup_id(NOW), {"big": os.urandom(12 * 1024 * 1024)})

    upload_backup(site.storage, local, site.recipients)

    key = site.storage.folder(local.name) + "databases/00000-big.jsonl.gz.age"
    head = site.server.client().head_object(Bucket=site.storage.bucket, Key=key)
    assert head["ETag"].strip('"').endswith("-3")  # three parts of at most 5 MiB
    back = download_backup(site.storage, local.name, tmp_path / "restore", [site.keys["ops"]])
    assert tree(back) == tree(local)


# ---------------------------------------------------------------------------------------------
# expiry


@pytest.mark.server
def test_expiry_deletes_exactly_the_expired_backups(site: Site, tmp_path: Path) -> None:
    # created 9, 5 and 1 days ago; expired 2 hours ago, expiring in a minute, in 6 days
    life = {9: -timedelta(hours=2), 5: timedelta(minutes=1), 1: timedelta(days=6)}
    ids = []
    for age, left in life.items():
        created = NOW - timedelta(days=age)
        ids.append(backup_id(created))
        local = make_backup(tmp_path, ids[-1], {"a": b"1\n"}, created=created, expires=NOW + left)
        upload_backup(site.storage, local, site.recipients)
    retention = BackupRetention(retention_days=7)

    deleted = expire_remote_backups(site.storage, retention, now=NOW)

    assert deleted == [ids[0]]
    assert [b.backup_id for b in list_remote_backups(site.storage)] == ids[1:]
    assert not [k for k in site.raw() if k.startswith(site.storage.folder(ids[0]))]
    later = NOW + timedelta(minutes=2)
    assert expire_remote_backups(site.storage, retention, now=later) == [ids[1]]


@pytest.mark.server
def test_expiry_applies_a_retention_shortened_since_the_upload(site: Site, tmp_path: Path) -> None:
    created = NOW - timedelta(days=3)
    local = make_backup(
        tmp_path,
        backup_id(created),
        {"a": b"1\n"},
        created=created,
        expires=NOW + timedelta(days=4),
    )
    upload_backup(site.storage, local, site.recipients)

    kept = expire_remote_backups(site.storage, BackupRetention(retention_days=7), now=NOW)
    shortened = expire_remote_backups(site.storage, BackupRetention(retention_days=2), now=NOW)

    assert (kept, shortened) == ([], [local.name])


@pytest.mark.server
def test_expiry_removes_what_a_killed_upload_left_once_a_day_old(
    site: Site, calls: dict[str, Any], tmp_path: Path
) -> None:
    local = make_backup(tmp_path, backup_id(NOW), {"a": b"1\n", "b": b"2\n"})
    calls["fail"] = lambda call: call[1].endswith(MANIFEST + ".age")
    with pytest.raises(Killed):
        upload_backup(site.storage, local, site.recipients)
    retention = BackupRetention(retention_days=7)
    assert len(site.raw()) == 2

    soon = expire_remote_backups(site.storage, retention, now=NOW + timedelta(hours=1))
    later = expire_remote_backups(site.storage, retention, now=NOW + timedelta(days=1, hours=1))

    assert (soon, later) == ([], [local.name])
    assert site.raw() == {}


# ---------------------------------------------------------------------------------------------
# lifecycle


@pytest.mark.server
def test_the_lifecycle_backstop_is_set_beside_the_buckets_other_rules(site: Site) -> None:
    client = site.server.client()
    logs = {"ID": "logs", "Status": "Enabled", "Filter": {"Prefix": "logs/"}}
    client.put_bucket_lifecycle_configuration(
        Bucket=site.storage.bucket,
        LifecycleConfiguration={"Rules": [{**logs, "Expiration": {"Days": 90}}]},
    )
    days = lifecycle_days(BackupRetention(retention_days=7))

    assert ensure_lifecycle(site.storage, days)
    assert ensure_lifecycle(site.storage, days)  # again: the rule is replaced, not doubled

    rules = client.get_bucket_lifecycle_configuration(Bucket=site.storage.bucket)["Rules"]
    by_id = {rule["ID"]: rule for rule in rules}
    assert len(rules) == 2
    assert by_id["logs"]["Expiration"] == {"Days": 90}
    assert by_id[offsite.LIFECYCLE_RULE_ID]["Expiration"] == {"Days": 8}
    assert by_id[offsite.LIFECYCLE_RULE_ID]["Filter"] == {"Prefix": "backups/test/"}


@pytest.mark.server
def test_a_key_not_allowed_to_set_lifecycle_rules_gets_a_warning_and_can_still_back_up(
    site: Site, tmp_path: Path
) -> None:
    """The backup job's key need not administer the bucket: without the rule it warns, and
    uploads, downloads and expires all the same."""
    key, secret = site.server.writer
    writer = replace(site.storage, access_key_id=key, secret_access_key=secret)
    local = make_backup(tmp_path / "local", backup_id(NOW), {"a": b"1\n"})

    with capture_logs() as logs:
        assert not ensure_lifecycle(writer, 8)

    refused = [e for e in logs if e["event"] == "offsite.lifecycle_refused"]
    assert len(refused) == 1
    assert "AccessDenied" in refused[0]["reason"]
    assert refused[0]["log_level"] == "warning"
    with pytest.raises(Exception, match="NoSuchLifecycleConfiguration"):
        site.server.client().get_bucket_lifecycle_configuration(Bucket=writer.bucket)
    upload_backup(writer, local, site.recipients)
    assert tree(download_backup(writer, "latest", tmp_path / "back", [site.keys["ops"]])) == tree(
        local
    )
    retention = BackupRetention(retention_days=7)
    assert expire_remote_backups(writer, retention, now=NOW + timedelta(days=8)) == [local.name]


# ---------------------------------------------------------------------------------------------
# errors


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.server
def test_an_unreachable_endpoint_fails_within_seconds_naming_it(site: Site) -> None:
    nowhere = replace(site.storage, endpoint=f"http://127.0.0.1:{_closed_port()}")
    started = time.monotonic()

    with pytest.raises(ObjectStorageError) as failure:
        list_remote_backups(nowhere)

    assert time.monotonic() - started < 10
    assert nowhere.endpoint in str(failure.value)
    assert site.storage.bucket in str(failure.value)
    assert failure.value.exit_code == 3


@pytest.mark.server
def test_a_wrong_secret_key_is_refused_naming_the_credentials(site: Site, tmp_path: Path) -> None:
    wrong = replace(site.storage, secret_access_key="not-the-secret")
    local = make_backup(tmp_path, backup_id(NOW), {"a": b"1\n"})

    with pytest.raises(ObjectStorageError, match=r"refused the credentials") as failure:
        upload_backup(wrong, local, site.recipients)

    assert "SignatureDoesNotMatch" in str(failure.value)
    assert site.storage.endpoint in str(failure.value)
    assert site.storage.bucket in str(failure.value)
    assert "not-the-secret" not in str(failure.value)


@pytest.mark.server
def test_a_missing_bucket_is_named(site: Site, tmp_path: Path) -> None:
    local = make_backup(tmp_path, backup_id(NOW), {"a": b"1\n"})
    missing = replace(site.storage, bucket="couchops-no-such-bucket")
    named = r"bucket couchops-no-such-bucket does not exist at http://127\.0\.0\.1"

    with pytest.raises(ObjectStorageError, match=named):
        upload_backup(missing, local, site.recipients)
    with pytest.raises(ObjectStorageError, match=named):
        list_remote_backups(missing)


# ---------------------------------------------------------------------------------------------
# settings


def env(tmp_path: Path, **extra: str) -> dict[str, str]:
    (tmp_path / "key-id").write_text("AKEXAMPLE\n")
    (tmp_path / "secret").write_text("s3cr3t\n")
    return {
        "S3_ENDPOINT": "https://s3.fr-par.scw.cloud",
        "S3_BUCKET": "bank-onboarding-backups",
        "S3_REGION": "fr-par",
        "S3_ACCESS_KEY_ID_FILE": str(tmp_path / "key-id"),
        "S3_SECRET_ACCESS_KEY_FILE": str(tmp_path / "secret"),
        **extra,
    }


def test_the_storage_settings_are_read_from_env_and_secret_files(tmp_path: Path) -> None:
    storage = ObjectStorage.from_env(env(tmp_path, S3_PREFIX="backups/prod"))

    assert (storage.endpoint, storage.bucket, storage.region) == (
        "https://s3.fr-par.scw.cloud", "bank-onboarding-backups", "fr-par",
    )  # fmt: skip
    assert (storage.prefix, storage.access_key_id, storage.secret_access_key) == (
        "backups/prod/", "AKEXAMPLE", "s3cr3t",
    )  # fmt: skip
    assert "s3cr3t" not in repr(storage)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"S3_BUCKET": ""}, "S3_BUCKET is not set"),
        (
            {"S3_ENDPOINT": "http://s3.example.net"},
            "S3_ENDPOINT=http://s3.example.net: must be https",
        ),
        (
            {"S3_ENDPOINT": "https://key:pw@s3.example.net"},
            "S3_ENDPOINT: must not carry credentials",
        ),
        ({"S3_SECRET_ACCESS_KEY": "x"}, "set S3_SECRET_ACCESS_KEY or S3_SECRET_ACCESS_KEY_FILE"),
        ({"S3_ACCESS_KEY_ID_FILE": "/nonexistent/key"}, "S3_ACCESS_KEY_ID_FILE=/nonexistent/key"),
        ({"S3_BUCKET": "Bank_Backups"}, "bad setting S3_BUCKET=Bank_Backups"),
        ({"S3_PREFIX": "/backups"}, "bad setting S3_PREFIX=/backups/"),
    ],
)
def test_a_bad_storage_setting_is_named(
    tmp_path: Path, change: dict[str, str], message: str
) -> None:
    with pytest.raises(SettingsError, match=message.replace("?", r"\?")):
        ObjectStorage.from_env(env(tmp_path, **change))


def test_recipients_are_read_from_a_list_or_a_file(tmp_path: Path, keys: dict[str, Any]) -> None:
    ops, escrow = str(keys["ops"].to_public()), str(keys["escrow"].to_public())
    (tmp_path / "recipients").write_text(f"# operations\n{ops}\n\n# escrow\n{escrow}\n")

    listed = recipients_from_env({"BACKUP_AGE_RECIPIENTS": f"{ops}, {escrow}"})
    filed = recipients_from_env({"BACKUP_AGE_RECIPIENTS_FILE": str(tmp_path / "recipients")})

    assert [str(r) for r in listed] == [str(r) for r in filed] == [ops, escrow]


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("", "BACKUP_AGE_RECIPIENTS is not set"),
        ("age1notakey", "BACKUP_AGE_RECIPIENTS: entry 1 .* is not an age X25519 public key"),
        ("PRIVATE", "BACKUP_AGE_RECIPIENTS: entry 2 is a private key"),
    ],
)
def test_a_bad_recipient_setting_is_named(keys: dict[str, Any], value: str, message: str) -> None:
    if value == "PRIVATE":
        value = f"{keys['ops'].to_public()},{keys['ops']}"
    with pytest.raises(SettingsError, match=message) as failure:
        recipients_from_env({"BACKUP_AGE_RECIPIENTS": value})
    assert str(keys["ops"]) not in str(failure.value)


def test_the_identity_file_is_read_and_its_key_never_shown(
    tmp_path: Path, keys: dict[str, Any]
) -> None:
    good, bad = tmp_path / "identity", tmp_path / "bad"
    good.write_text(
        f"# created: 2026-12-01\n# public key: {keys['ops'].to_public()}\n{keys['ops']}\n"
    )
    bad.write_text(f"{str(keys['ops'])[:-3]}xyz\n")

    assert [str(i) for i in identities_from_env({"BACKUP_AGE_IDENTITY_FILE": str(good)})] == [
        str(keys["ops"])
    ]
    with pytest.raises(SettingsError, match="BACKUP_AGE_IDENTITY_FILE is not set"):
        identities_from_env({})
    with pytest.raises(SettingsError, match="BACKUP_AGE_IDENTITY_FILE: key 1 is not") as failure:
        identities_from_env({"BACKUP_AGE_IDENTITY_FILE": str(bad)})
    assert str(keys["ops"])[:30] not in str(failure.value)


# ---------------------------------------------------------------------------------------------
# the standard age tool


@pytest.mark.server
@pytest.mark.skipif(shutil.which("age") is None, reason="no age CLI (apt-get install age)")
def test_the_age_cli_decrypts_uploaded_objects(site: Site, tmp_path: Path) -> None:
    local = make_backup(tmp_path / "local", backup_id(NOW), {"a": os.urandom(70_000)})
    upload_backup(site.storage, local, site.recipients)
    stored = site.raw()
    identity = tmp_path / "escrow.key"
    identity.write_text(f"{site.keys['escrow']}\n")
    identity.chmod(0o600)
    # the manifest, and a file of several age chunks (64 KiB each)
    for relative in (MANIFEST, "databases/00000-a.jsonl.gz"):
        sealed = tmp_path / "sealed.age"
        sealed.write_bytes(stored[site.storage.folder(local.name) + relative + ".age"])

        result = subprocess.run(
            ["age", "--decrypt", "--identity", str(identity), str(sealed)],
            capture_output=True,
            check=True,
            timeout=30,
        )

        assert result.stdout == (local / relative).read_bytes()
