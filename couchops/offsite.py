"""Off-site backups: complete local backups copied to S3-compatible object storage (Scaleway,
OVH…), encrypted on this side with age before they leave the cluster.

Layout under ``s3://<S3_BUCKET>/<S3_PREFIX>`` (``backups/`` by default)::

    <id>/databases/<n>-<name>.jsonl.gz.age   each file of the local backup, encrypted
    <id>/manifest.json.age                   the manifest, encrypted, after the files
    <id>/index.json                          in clear, written last: its presence = complete

``<id>`` is the local backup's id (``couchops.backup``). Every object but the index is in the
age format (age-encryption.org/v1) to X25519 recipients, so the standard ``age`` tool decrypts
it. The manifest holds database names, personal in places: it leaves encrypted like the rest.
The index holds only what is needed without the key and names no person: format, id,
``created_at``, ``oldest_data_at``, ``expires_at``, the recipients (public keys), and per
object its name under ``<prefix><id>/``, its size and the SHA-256 of its ciphertext.

Keys: uploading needs only the public recipients (``BACKUP_AGE_RECIPIENTS``), so a compromised
cluster cannot read the backups it sent; the private identity (``BACKUP_AGE_IDENTITY_FILE``),
held in escrow, is given to a restore job only. Several recipients may be given (an operations
key and an offline escrow key): any one of their identities opens the backup.

- `upload_backup`: streams each file through age into a multipart upload (memory bounded by
  the part size, nothing written to disk), the manifest after the files, the index last. A
  backup whose index exists is not uploaded again; a run killed midway leaves objects without
  an index, never listed, overwritten by the next run or deleted by the expiry after a day.
- `download_backup`: fetches and decrypts into ``<dest>/<id>/``, the layout of a local backup
  (so `couchops.backup.restore` and `verify` read it), working in ``<dest>/.tmp-<id>/`` under
  the directory's ``.lock`` as a backup run does, its manifest written last. Each object's
  ciphertext is checked against the index (SHA-256, size) and each database file against the
  manifest's own ``file_sha256`` once decrypted; a finished file leaves a marker, so a re-run
  after a kill fetches only what is missing.
- `expire_remote_backups`: deletes a backup at the index's ``expires_at``, or sooner if the
  retention given now says so (`BackupRetention.expires_at` on the index's dates), without the
  key; its index goes first, so a deletion cut short never leaves it listed as complete. Objects
  under an id without an index (a killed upload, a deletion cut short) go once a day old.
- `ensure_lifecycle`: a bucket rule expiring everything under the prefix a day after the
  retention, as a backstop should the expiry job stop running.

Errors: settings raise `SettingsError` naming the variable; the storage unreachable, refusing
the credentials or missing the bucket raise `ObjectStorageError` (exit 3) naming the endpoint
and bucket; a checksum mismatch raises `VerificationError` naming the object. Logs carry
backup ids and object names only (file names are pseudonyms, `couchops.pseudonym`).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import ipaddress
import json
import os
import re
import shutil
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import boto3
import pyrage  # type: ignore[import-untyped]
from boto3.exceptions import Boto3Error
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError
from pyrage import x25519

from couchops import pseudonym
from couchops.backup import BACKUP_ID, MANIFEST, BackupRetention, load_manifest
from couchops.errors import OpsError, SettingsError, VerificationError
from couchops.log import logger
from couchops.settings import read_secret_file
from couchops.timestamps import iso

INDEX = "index.json"
INDEX_FORMAT = "couchops-offsite/1"
SUFFIX = ".age"
INCOMPLETE_AFTER = timedelta(days=1)
"""Objects under an id without an index, all older than this, are what a killed run left."""
DONE = ".offsite-done"
"""Within a download's work directory: one marker per finished file."""
MIB = 1 << 20
_READ = 1 << 20

Recipient = Any
"""A `pyrage.x25519.Recipient` (pyrage ships no type information)."""
Identity = Any
"""A `pyrage.x25519.Identity`."""


class ObjectStorageError(OpsError):
    """The object storage could not be reached, or refused the credentials or a request."""

    exit_code = 3


# ---------------------------------------------------------------------------------------------
# settings


_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_REGION = re.compile(r"^[a-z0-9][a-z0-9-]{0,30}$")
_PREFIX = re.compile(r"^([A-Za-z0-9!_.*'()-]+/)*$")


@dataclass(frozen=True)
class ObjectStorage:
    """Where off-site backups go, and how to talk to it (`from_env` reads it)."""

    endpoint: str
    """https URL of the S3 API, such as https://s3.fr-par.scw.cloud (http only on loopback)."""
    bucket: str
    region: str
    access_key_id: str = field(repr=False)
    secret_access_key: str = field(repr=False)
    prefix: str = "backups/"
    """Every object's key starts with it; empty, or path segments each ending with '/'."""
    connect_timeout: float = 5.0
    read_timeout: float = 60.0
    max_attempts: int = 3
    """Per request, the first included (botocore's standard retry mode, with backoff)."""
    part_bytes: int = 8 * MIB
    """Multipart part size: memory holds a few parts per upload; an object has at most
    10,000 parts (S3's limit), so 8 MiB allows files up to 78 GiB."""

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> ObjectStorage:
        """From ``S3_ENDPOINT``, ``S3_BUCKET``, ``S3_REGION``, ``S3_PREFIX`` and the
        credentials ``S3_ACCESS_KEY_ID`` and ``S3_SECRET_ACCESS_KEY``, each or its ``_FILE``
        (a mounted Secret); `SettingsError` naming the variable otherwise."""
        endpoint = _required(
            environ, "S3_ENDPOINT", "the S3 API's URL, such as https://s3.fr-par.scw.cloud"
        )
        bucket = _required(environ, "S3_BUCKET", "the bucket that receives the backups")
        region = _required(environ, "S3_REGION", "the bucket's region, such as fr-par")
        prefix = environ.get("S3_PREFIX", "backups/").strip()
        if prefix and not prefix.endswith("/"):
            prefix += "/"
        if not _BUCKET.match(bucket) or ".." in bucket:
            raise SettingsError(
                f"bad setting S3_BUCKET={bucket}: must be an S3 bucket name (3 to 63 of "
                "a-z, 0-9, '.', '-', starting and ending with a letter or digit)"
            )
        if not _REGION.match(region):
            raise SettingsError(
                f"bad setting S3_REGION={region}: must be a region name such as fr-par"
            )
        if not _PREFIX.match(prefix):
            raise SettingsError(
                f"bad setting S3_PREFIX={prefix}: must be empty or path segments of "
                "A-Z a-z 0-9 !_.*'()- each ending with '/', such as backups/prod/"
            )
        return cls(
            endpoint=_endpoint(endpoint),
            bucket=bucket,
            region=region,
            prefix=prefix,
            access_key_id=_secret(environ, "S3_ACCESS_KEY_ID"),
            secret_access_key=_secret(environ, "S3_SECRET_ACCESS_KEY"),
        )

    def client(self) -> Any:
        """A boto3 S3 client: path-style addressing, which S3-compatible providers all take;
        checksums only where the API requires them (botocore's newer default sends CRC
        trailers some of them refuse); short timeouts and bounded retries."""
        return boto3.session.Session().client(
            "s3",
            endpoint_url=self.endpoint,
            region_name=self.region,
            aws_access_key_id=self.access_key_id,
            aws_secret_access_key=self.secret_access_key,
            config=Config(
                signature_version="s3v4",
                connect_timeout=self.connect_timeout,
                read_timeout=self.read_timeout,
                retries={"total_max_attempts": self.max_attempts, "mode": "standard"},
                s3={"addressing_style": "path"},
                request_checksum_calculation="when_required",
                response_checksum_validation="when_required",
            ),
        )

    def folder(self, backup_id: str) -> str:
        return f"{self.prefix}{backup_id}/"

    def describe(self) -> str:
        return f"bucket {self.bucket} at {self.endpoint}"


def _required(environ: Mapping[str, str], name: str, meaning: str) -> str:
    value = environ.get(name, "").strip()
    if not value:
        raise SettingsError(f"{name} is not set: give {meaning}")
    return value


def _endpoint(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise SettingsError(f"bad setting S3_ENDPOINT={url}: is not an http(s) URL")
    if parts.username or parts.password:
        raise SettingsError(
            "bad setting S3_ENDPOINT: must not carry credentials (they go in "
            "S3_ACCESS_KEY_ID(_FILE) and S3_SECRET_ACCESS_KEY(_FILE))"
        )
    if parts.scheme == "http" and not _loopback(parts.hostname):
        raise SettingsError(
            f"bad setting S3_ENDPOINT={url}: must be https (plain http only to a loopback address)"
        )
    return url.rstrip("/")


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _secret(environ: Mapping[str, str], name: str) -> str:
    direct, path = environ.get(name, ""), environ.get(f"{name}_FILE", "")
    if direct and path:
        raise SettingsError(f"set {name} or {name}_FILE, not both")
    if path:
        return read_secret_file(f"{name}_FILE", path)
    if direct:
        return direct
    raise SettingsError(
        f"{name} is not set: give it, or {name}_FILE naming a mounted Secret's file"
    )


def recipients_from_env(environ: Mapping[str, str]) -> list[Recipient]:
    """The public keys backups are encrypted to: ``BACKUP_AGE_RECIPIENTS`` (``age1…``, comma,
    space or newline separated) or ``BACKUP_AGE_RECIPIENTS_FILE`` (an age recipients file:
    one per line, ``#`` comments)."""
    direct = environ.get("BACKUP_AGE_RECIPIENTS", "")
    path = environ.get("BACKUP_AGE_RECIPIENTS_FILE", "")
    if direct.strip() and path:
        raise SettingsError("set BACKUP_AGE_RECIPIENTS or BACKUP_AGE_RECIPIENTS_FILE, not both")
    name = "BACKUP_AGE_RECIPIENTS_FILE" if path else "BACKUP_AGE_RECIPIENTS"
    text = read_secret_file(name, path) if path else direct
    return parse_recipients(text, name)


def parse_recipients(text: str, name: str) -> list[Recipient]:
    """age X25519 recipients from text; `SettingsError` naming `name` and the bad entry."""
    words = [
        word
        for line in text.splitlines()
        if not line.strip().startswith("#")
        for word in re.split(r"[\s,]+", line.strip())
        if word
    ]
    if not words:
        raise SettingsError(
            f"{name} is not set: give the age public key(s) backups are encrypted to (age1…)"
        )
    recipients = []
    for position, word in enumerate(words, 1):
        if word.upper().startswith("AGE-SECRET-KEY-"):
            raise SettingsError(
                f"bad setting {name}: entry {position} is a private key (AGE-SECRET-KEY-…); give "
                "its public key (`age-keygen -y`), the private one stays in escrow"
            )
        try:
            recipients.append(x25519.Recipient.from_str(word))
        except pyrage.RecipientError as exc:
            raise SettingsError(
                f"bad setting {name}: entry {position} ({word[:12]}…) is not an age X25519 "
                f"public key age1… ({exc})"
            ) from exc
    return recipients


def identities_from_env(environ: Mapping[str, str]) -> list[Identity]:
    """The private keys a restore decrypts with, from the file ``BACKUP_AGE_IDENTITY_FILE``
    names (as `age-keygen` writes it: ``AGE-SECRET-KEY-1…`` lines, ``#`` comments)."""
    path = environ.get("BACKUP_AGE_IDENTITY_FILE", "")
    if not path:
        raise SettingsError(
            "BACKUP_AGE_IDENTITY_FILE is not set: name the file holding the age private key "
            "(AGE-SECRET-KEY-1…) that opens the backups"
        )
    return parse_identities(
        read_secret_file("BACKUP_AGE_IDENTITY_FILE", path), "BACKUP_AGE_IDENTITY_FILE"
    )


def parse_identities(text: str, name: str) -> list[Identity]:
    """age X25519 identities from an identity file's text (never shown in a message)."""
    lines = [line.strip() for line in text.splitlines()]
    keys = [line for line in lines if line and not line.startswith("#")]
    if not keys:
        raise SettingsError(f"bad setting {name}: the file holds no AGE-SECRET-KEY-1… line")
    identities = []
    for position, key in enumerate(keys, 1):
        try:
            identities.append(x25519.Identity.from_str(key))
        except pyrage.IdentityError as exc:
            raise SettingsError(
                f"bad setting {name}: key {position} is not an age X25519 private key "
                "AGE-SECRET-KEY-1…"
            ) from exc
    return identities


def lifecycle_days(retention: BackupRetention) -> int:
    """The backstop's age in days: a day after the retention, so the expiry job acts first."""
    return retention.retention_days + 1


# ---------------------------------------------------------------------------------------------
# errors


_CREDENTIALS_REFUSED = {
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "AccessDenied",
    "InvalidToken",
    "ExpiredToken",
    "403",
}


@contextlib.contextmanager
def _talking(storage: ObjectStorage, action: str) -> Iterator[None]:
    """boto3's errors as one line naming the endpoint, the bucket, the action and the cause."""
    try:
        yield
    except ClientError as exc:
        error = exc.response.get("Error", {})
        code = _code(exc)
        if code == "NoSuchBucket":
            message = f"bucket {storage.bucket} does not exist at {storage.endpoint} ({action})"
        elif code in _CREDENTIALS_REFUSED:
            message = (
                f"{storage.endpoint} refused the credentials (access key "
                f"{storage.access_key_id[:4]}…) for bucket {storage.bucket} while {action}: {code}"
            )
        else:
            message = (
                f"{storage.endpoint} refused {action} in bucket {storage.bucket}: "
                f"{code} {error.get('Message', '')}".strip()
            )
        raise ObjectStorageError(message) from exc
    except (BotoCoreError, Boto3Error) as exc:
        raise ObjectStorageError(
            f"object storage {storage.endpoint} (bucket {storage.bucket}) failed while "
            f"{action}: {exc}"
        ) from exc


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", "?"))


def _missing(exc: ClientError) -> bool:
    return _code(exc) in ("NoSuchKey", "404", "NotFound")


# ---------------------------------------------------------------------------------------------
# the index


@dataclass(frozen=True)
class RemoteObject:
    name: str
    """Under ``<prefix><id>/``: the local file's relative path with ``.age`` appended."""
    size: int
    sha256: str
    """Of the ciphertext, as stored."""

    @property
    def path(self) -> str:
        """The local file's path relative to the backup directory."""
        return self.name.removesuffix(SUFFIX)


@dataclass(frozen=True)
class RemoteBackup:
    """A complete off-site backup, as its index describes it."""

    backup_id: str
    created_at: datetime
    expires_at: datetime
    oldest_data_at: datetime | None
    objects: tuple[RemoteObject, ...]
    recipients: tuple[str, ...]
    uploaded_at: datetime
    legacy_age: bool = False
    """The manifest did not record its data's age (`BackupRetention.expires_at`)."""

    def to_index(self) -> dict[str, Any]:
        index: dict[str, Any] = {
            "format": INDEX_FORMAT,
            "id": self.backup_id,
            "created_at": iso(self.created_at),
            "expires_at": iso(self.expires_at),
            "uploaded_at": iso(self.uploaded_at),
            "encryption": {"format": "age-encryption.org/v1", "recipients": list(self.recipients)},
            "objects": [{"name": o.name, "size": o.size, "sha256": o.sha256} for o in self.objects],
        }
        if not self.legacy_age:
            index["oldest_data_at"] = iso(self.oldest_data_at) if self.oldest_data_at else None
        return index

    @classmethod
    def from_index(cls, index: Mapping[str, Any]) -> RemoteBackup:
        """Raises ValueError (or KeyError, TypeError) on an index that is not well formed:
        it arrives in clear from the bucket, so object names are checked before use."""
        if index.get("format") != INDEX_FORMAT:
            raise ValueError(f"unknown format {index.get('format')!r}")
        objects = tuple(
            RemoteObject(_object_name(str(o["name"])), int(o["size"]), str(o["sha256"]))
            for o in index["objects"]
        )
        if not any(o.name == MANIFEST + SUFFIX for o in objects):
            raise ValueError(f"no {MANIFEST}{SUFFIX} among its objects")
        oldest = index.get("oldest_data_at")
        return cls(
            backup_id=_backup_id(str(index["id"])),
            created_at=_instant(index["created_at"]),
            expires_at=_instant(index["expires_at"]),
            oldest_data_at=_instant(oldest) if oldest else None,
            objects=objects,
            recipients=tuple(str(r) for r in index["encryption"]["recipients"]),
            uploaded_at=_instant(index["uploaded_at"]),
            legacy_age="oldest_data_at" not in index,
        )

    def expiry(self, retention: BackupRetention) -> datetime:
        """The index's expiry, or sooner if `retention` (today's settings) says so."""
        facts: dict[str, Any] = {"created_at": iso(self.created_at)}
        if not self.legacy_age:
            facts["oldest_data_at"] = iso(self.oldest_data_at) if self.oldest_data_at else None
        return min(self.expires_at, retention.expires_at(facts))


def _instant(text: Any) -> datetime:
    return datetime.fromisoformat(str(text).replace("Z", "+00:00")).astimezone(UTC)


def _backup_id(text: str) -> str:
    if not BACKUP_ID.match(text):
        raise ValueError(f"{text!r} is not a backup id")
    return text


def _object_name(name: str) -> str:
    """A relative path ending in .age that stays inside the backup's directory."""
    parts = PurePosixPath(name).parts
    if (
        not name.endswith(SUFFIX)
        or name.startswith("/")
        or "\\" in name
        or any(part in ("", ".", "..") or part.startswith(".tmp") for part in parts)
        or parts[0] == DONE
        or any(ord(c) < 32 for c in name)
        or name == INDEX
    ):
        raise ValueError(f"object name {name!r} is not a backup file's")
    return name


def _read_index(client: Any, storage: ObjectStorage, backup_id: str) -> RemoteBackup | None:
    """The backup's index, None when it has none (not complete); `OpsError` if unreadable."""
    key = storage.folder(backup_id) + INDEX
    try:
        with _talking(storage, f"reading {backup_id}/{INDEX}"):
            try:
                body = client.get_object(Bucket=storage.bucket, Key=key)["Body"].read()
            except ClientError as exc:
                if _missing(exc):
                    return None
                raise
        remote = RemoteBackup.from_index(json.loads(body))
    except (ValueError, KeyError, TypeError) as exc:
        raise OpsError(f"{backup_id}/{INDEX} in {storage.describe()} is unreadable: {exc}") from exc
    if remote.backup_id != backup_id:
        raise OpsError(f"{backup_id}/{INDEX} in {storage.describe()} names {remote.backup_id}")
    return remote


def _remote_ids(client: Any, storage: ObjectStorage) -> list[str]:
    """Ids with objects under the prefix, complete or not, oldest first."""
    ids: set[str] = set()
    with _talking(storage, "listing backups"):
        pages = client.get_paginator("list_objects_v2").paginate(
            Bucket=storage.bucket, Prefix=storage.prefix, Delimiter="/"
        )
        for page in pages:
            for common in page.get("CommonPrefixes", []):
                name = str(common["Prefix"])[len(storage.prefix) :].rstrip("/")
                if BACKUP_ID.match(name):
                    ids.add(name)
    return sorted(ids)


def list_remote_backups(storage: ObjectStorage) -> list[RemoteBackup]:
    """Complete off-site backups (an index present), oldest first; one whose index cannot be
    read is left out with a warning (the expiry deletes it)."""
    client = storage.client()
    found = []
    for backup_id in _remote_ids(client, storage):
        try:
            remote = _read_index(client, storage, backup_id)
        except ObjectStorageError:
            raise
        except OpsError as exc:
            logger().warning("offsite.index_unreadable", backup=backup_id, reason=str(exc))
            continue
        if remote is not None:
            found.append(remote)
    return found


# ---------------------------------------------------------------------------------------------
# upload


class _HashingReader:
    """Reads a stream, counting and hashing what passes; a failure of its producer (`failed`)
    turns the end of the stream into an error, so a cut-short stream is never uploaded whole."""

    def __init__(self, stream: Any, failed: threading.Event | None = None) -> None:
        self.stream = stream
        self.sha = hashlib.sha256()
        self.size = 0
        self.failed = failed
        self.error: BaseException | None = None

    def read(self, size: int = -1) -> bytes:
        try:
            data: bytes = self.stream.read(size)
        except BaseException as exc:
            self.error = exc
            raise
        if not data and self.failed is not None and self.failed.is_set():
            raise OpsError("the encryption stopped before the end of the file")
        self.sha.update(data)
        self.size += len(data)
        return data


class _HashingWriter:
    def __init__(self, target: Any) -> None:
        self.target = target
        self.sha = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.sha.update(data)
        self.size += len(data)
        written: int = self.target.write(data)
        return written


def _transfer(storage: ObjectStorage) -> TransferConfig:
    config = TransferConfig(
        multipart_threshold=storage.part_bytes,
        multipart_chunksize=storage.part_bytes,
        max_concurrency=4,
        use_threads=True,
        preferred_transfer_client="classic",
    )
    # s3transfer buffers parts of a stream that cannot seek: at most this many at once
    config.max_in_memory_upload_chunks = 6
    return config


def _put_encrypted(
    client: Any, storage: ObjectStorage, key: str, source: Path, recipients: Sequence[Recipient]
) -> tuple[int, str]:
    """Encrypt `source` to `recipients` on its way to `key`, streamed: a thread writes age's
    output into a pipe that the upload reads. Answers the ciphertext's size and SHA-256."""
    read_end, write_end = os.pipe()
    with contextlib.suppress(OSError, AttributeError):
        fcntl.fcntl(write_end, fcntl.F_SETPIPE_SZ, MIB)
    failed = threading.Event()
    reader = _HashingReader(os.fdopen(read_end, "rb"), failed)

    def encrypt() -> None:
        try:
            with os.fdopen(write_end, "wb") as sink, source.open("rb") as plain:
                pyrage.encrypt_io(plain, sink, list(recipients))
        except BaseException:  # the reader turns it into an error of the upload
            failed.set()

    thread = threading.Thread(target=encrypt, name="offsite-encrypt", daemon=True)
    thread.start()
    try:
        with _talking(storage, f"uploading {key}"):
            client.upload_fileobj(reader, storage.bucket, key, Config=_transfer(storage))
    finally:
        reader.stream.close()  # an upload that failed frees the writer (broken pipe)
        thread.join()
    if failed.is_set():
        raise OpsError(f"encrypting {source.name} failed: its upload to {key} is incomplete")
    with _talking(storage, f"checking {key}"):
        stored = int(client.head_object(Bucket=storage.bucket, Key=key)["ContentLength"])
    if stored != reader.size:
        raise VerificationError(f"{key}: {stored} bytes stored, {reader.size} sent")
    return reader.size, reader.sha.hexdigest()


def _backup_files(directory: Path) -> list[str]:
    """Every file of a local backup, relative, the manifest last. Their names become object
    names, in clear: one that names a legacy database (`couchops.pseudonym`) is refused."""
    files = sorted(
        p.relative_to(directory).as_posix()
        for p in directory.rglob("*")
        if p.is_file() and not p.is_symlink()
    )
    for relative in files:
        if pseudonym.scrub(relative) != relative:
            raise OpsError(
                f"{directory.name}: {pseudonym.scrub(relative)} names a database in clear, and "
                "object names are not encrypted; back it up again (its files are then named by "
                "pseudonym)"
            )
    files.remove(MANIFEST)
    return [*files, MANIFEST]


def upload_backup(
    storage: ObjectStorage,
    local_backup_dir: Path,
    recipients: Sequence[Recipient],
    *,
    retention: BackupRetention | None = None,
    now: datetime | None = None,
) -> RemoteBackup:
    """Upload a complete local backup, encrypted to `recipients`, index last; a backup whose
    index is already there is left as it is. Its expiry is the manifest's ``expires_at``, or
    sooner if `retention` says so."""
    log = logger()
    if not recipients:
        raise SettingsError("no age recipient given: BACKUP_AGE_RECIPIENTS is empty")
    manifest = load_manifest(local_backup_dir)
    backup_id = local_backup_dir.name
    if not BACKUP_ID.match(backup_id) or manifest.get("id") != backup_id:
        raise OpsError(f"{local_backup_dir} is not a backup directory named by its manifest's id")
    client = storage.client()
    with _talking(storage, "checking the bucket"):
        # a listing, not HeadBucket: an answer to HEAD has no body, so no error code
        client.list_objects_v2(Bucket=storage.bucket, Prefix=storage.prefix, MaxKeys=1)
    existing = _read_index(client, storage, backup_id)
    if existing is not None:
        log.info("offsite.already_uploaded", backup=backup_id)
        return existing
    facts: dict[str, Any] = {
        k: manifest[k] for k in ("created_at", "oldest_data_at") if k in manifest
    }
    expiries = [_instant(manifest["expires_at"])] if "expires_at" in manifest else []
    if retention is not None:
        expiries.append(retention.expires_at(facts))
    if not expiries:
        raise OpsError(f"{backup_id}: its manifest has no expires_at; give the retention")
    files = _backup_files(local_backup_dir)
    log.info("offsite.upload_start", backup=backup_id, destination=storage.describe())
    objects = []
    for relative in files:
        name = relative + SUFFIX
        size, sha = _put_encrypted(
            client,
            storage,
            storage.folder(backup_id) + name,
            local_backup_dir / relative,
            recipients,
        )
        objects.append(RemoteObject(name, size, sha))
        log.debug("offsite.object_uploaded", backup=backup_id, object=name, bytes=size)
    _delete_keys(
        client,
        storage,
        [
            k
            for k in _keys(client, storage, backup_id)
            if k[len(storage.folder(backup_id)) :] not in {o.name for o in objects}
        ],
    )
    oldest = manifest.get("oldest_data_at")
    uploaded = RemoteBackup(
        backup_id=backup_id,
        created_at=_instant(manifest["created_at"]),
        expires_at=min(expiries),
        oldest_data_at=_instant(oldest) if oldest else None,
        objects=tuple(objects),
        recipients=tuple(str(r) for r in recipients),
        uploaded_at=now or datetime.now(UTC),
        legacy_age="oldest_data_at" not in manifest,
    ).to_index()
    remote = RemoteBackup.from_index(uploaded)  # as any reader of the index will see it
    with _talking(storage, f"writing {backup_id}/{INDEX}"):
        client.put_object(
            Bucket=storage.bucket,
            Key=storage.folder(backup_id) + INDEX,
            Body=json.dumps(uploaded, indent=2).encode(),
            ContentType="application/json",
        )
    log.info(
        "offsite.uploaded",
        backup=backup_id,
        objects=len(objects),
        bytes=sum(o.size for o in objects),
        expires_at=iso(remote.expires_at),
    )
    return remote


# ---------------------------------------------------------------------------------------------
# download


@contextlib.contextmanager
def _exclusive(directory: Path) -> Iterator[None]:
    """The lock a backup run holds on its directory (``.lock``, `couchops.backup`): no backup
    and no download write in the same directory at once, and the expiry leaves our ``.tmp-``
    work directory alone meanwhile."""
    directory.mkdir(parents=True, exist_ok=True)
    with (directory / ".lock").open("a") as lock:
        try:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            raise OpsError(
                f"a backup or download is running in {directory} (it holds .lock)"
            ) from exc
        yield


def _resolve(client: Any, storage: ObjectStorage, reference: str) -> RemoteBackup:
    if reference == "latest":
        ids = _remote_ids(client, storage)
        for backup_id in reversed(ids):
            remote = _read_index(client, storage, backup_id)
            if remote is not None:
                return remote
        raise OpsError(
            f"no complete off-site backup under {storage.prefix} in {storage.describe()}"
        )
    if not BACKUP_ID.match(reference):
        raise OpsError(f"{reference!r} is not a backup id (YYYYMMDDTHHMMSSZ) nor 'latest'")
    remote = _read_index(client, storage, reference)
    if remote is None:
        raise OpsError(
            f"no complete off-site backup {reference} in {storage.describe()} (no {INDEX})"
        )
    return remote


@dataclass
class _Fetch:
    """One download: where from, what, with which keys, into which work directory."""

    client: Any
    storage: ObjectStorage
    remote: RemoteBackup
    identities: Sequence[Identity]
    work: Path

    def where(self, obj: RemoteObject) -> str:
        return f"{self.remote.backup_id}/{obj.name}"

    def body(self, obj: RemoteObject) -> Any:
        key = self.storage.folder(self.remote.backup_id) + obj.name
        with _talking(self.storage, f"reading {self.where(obj)}"):
            try:
                return self.client.get_object(Bucket=self.storage.bucket, Key=key)["Body"]
            except ClientError as exc:
                if _missing(exc):
                    raise VerificationError(
                        f"object {self.where(obj)} is missing from {self.storage.describe()}"
                    ) from exc
                raise

    def decrypt(self, obj: RemoteObject, sink: Any) -> None:
        """Fetch an object and decrypt it into `sink`, then check its ciphertext against the
        index: a ciphertext that differs is named as such, whatever the decryption said."""
        body = self.body(obj)
        reader = _HashingReader(body)
        failure: Exception | None = None
        try:
            pyrage.decrypt_io(reader, sink, list(self.identities))
        except (pyrage.DecryptError, OSError, ValueError) as exc:
            failure = exc
        with _talking(self.storage, f"reading {self.where(obj)}"):
            if reader.error is not None:
                raise reader.error
            while reader.read(_READ):
                pass
            body.close()
        digest = reader.sha.hexdigest()
        if reader.size != obj.size or digest != obj.sha256:
            raise VerificationError(
                f"object {self.where(obj)} differs from its index (tampered with or truncated): "
                f"{reader.size} bytes, sha256 {digest[:12]}…; the index says {obj.size} bytes, "
                f"{obj.sha256[:12]}…"
            )
        if failure is not None and "no matching keys" in str(failure).lower():
            raise OpsError(
                f"the age identity given does not open backup {self.remote.backup_id}: it was "
                f"encrypted to {', '.join(self.remote.recipients)}"
            ) from failure
        if failure is not None:
            raise VerificationError(
                f"object {self.where(obj)} does not decrypt: {failure}"
            ) from failure

    def manifest(self) -> tuple[bytes, dict[str, Any]]:
        """The manifest, decrypted in memory (it is small), first: a wrong key stops the
        download before any data is fetched."""
        sink = _Collector()
        self.decrypt(next(o for o in self.remote.objects if o.name == MANIFEST + SUFFIX), sink)
        data = b"".join(sink.chunks)
        try:
            manifest: dict[str, Any] = json.loads(data)
        except ValueError as exc:
            raise VerificationError(
                f"{self.remote.backup_id}: its manifest is not JSON ({exc})"
            ) from exc
        if manifest.get("id") != self.remote.backup_id:
            raise VerificationError(
                f"{self.remote.backup_id}: its manifest names backup {manifest.get('id')!r}"
            )
        return data, manifest

    def marker(self, obj: RemoteObject) -> Path:
        return self.work / DONE / (obj.path + ".json")

    def finished(self, obj: RemoteObject) -> bool:
        """Whether an earlier run fetched, checked and decrypted the object already."""
        try:
            mark = json.loads(self.marker(obj).read_text(encoding="utf-8"))
            size = (self.work / obj.path).stat().st_size
            return bool(mark["sha256"] == obj.sha256 and size == mark["bytes"])
        except (OSError, ValueError, KeyError):
            return False

    def file(self, obj: RemoteObject, plain_sha256: str | None) -> bool:
        """Fetch and decrypt one file unless an earlier run did; answers whether it was
        fetched. Once decrypted it is checked against the manifest (`plain_sha256`)."""
        if self.finished(obj):
            return False
        target = self.work / obj.path
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(target.name + ".part")
        with partial.open("wb") as out:
            plain = _HashingWriter(out)
            self.decrypt(obj, plain)
            out.flush()
            os.fsync(out.fileno())
        if plain_sha256 is not None and plain.sha.hexdigest() != plain_sha256:
            partial.unlink()
            raise VerificationError(
                f"{self.remote.backup_id}: {obj.path} decrypted has sha256 "
                f"{plain.sha.hexdigest()[:12]}…, its manifest says {plain_sha256[:12]}…"
            )
        partial.replace(target)
        mark = {"sha256": obj.sha256, "bytes": plain.size}
        _write_atomically(self.marker(obj), json.dumps(mark).encode())
        return True


def _write_atomically(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".part")
    with partial.open("wb") as out:
        out.write(data)
        out.flush()
        os.fsync(out.fileno())
    partial.replace(path)


class _Collector:
    def __init__(self) -> None:
        self.chunks: list[bytes] = []

    def write(self, data: bytes) -> int:
        self.chunks.append(bytes(data))
        return len(data)


def download_backup(
    storage: ObjectStorage,
    backup_id: str,
    dest_dir: Path,
    identities: Sequence[Identity],
    *,
    now: datetime | None = None,
) -> Path:
    """Fetch an off-site backup (an id, or ``latest``) into ``dest_dir/<id>/``, decrypted, in
    the layout of a local backup; answers that directory. Resumable: a re-run fetches only the
    files a killed run had not finished. A backup past its expiry is refused: it may hold
    data older than the budget."""
    log = logger()
    if not identities:
        raise SettingsError("no age identity given: BACKUP_AGE_IDENTITY_FILE holds no key")
    client = storage.client()
    remote = _resolve(client, storage, backup_id)
    if remote.expires_at <= (now or datetime.now(UTC)):
        raise OpsError(
            f"off-site backup {remote.backup_id} expired at {iso(remote.expires_at)}: it may "
            "hold data past the GDPR budget, and is not restored"
        )
    final = dest_dir / remote.backup_id
    if (final / MANIFEST).is_file():
        log.info("offsite.already_downloaded", backup=remote.backup_id, directory=str(final))
        return final
    if final.exists():
        raise OpsError(f"{final} exists and is not a complete backup: move it away first")
    with _exclusive(dest_dir):
        work = dest_dir / f".tmp-{remote.backup_id}"
        work.mkdir(exist_ok=True)
        fetch = _Fetch(client, storage, remote, identities, work)
        manifest_bytes, manifest = fetch.manifest()
        expected = {str(e["file"]): str(e["file_sha256"]) for e in manifest.get("databases", [])}
        fetched = 1
        for obj in remote.objects:
            if obj.name != MANIFEST + SUFFIX and fetch.file(obj, expected.get(obj.path)):
                fetched += 1
                log.debug("offsite.object_downloaded", backup=remote.backup_id, object=obj.name)
        _write_atomically(work / MANIFEST, manifest_bytes)
        shutil.rmtree(work / DONE, ignore_errors=True)
        work.rename(final)
        _fsync_dir(dest_dir)
    log.info(
        "offsite.downloaded",
        backup=remote.backup_id,
        objects=len(remote.objects),
        fetched=fetched,
        directory=str(final),
    )
    return final


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# ---------------------------------------------------------------------------------------------
# expiry


def _keys(client: Any, storage: ObjectStorage, backup_id: str) -> list[str]:
    return [str(o["Key"]) for o in _objects(client, storage, backup_id)]


def _objects(client: Any, storage: ObjectStorage, backup_id: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    with _talking(storage, f"listing {backup_id}"):
        pages = client.get_paginator("list_objects_v2").paginate(
            Bucket=storage.bucket, Prefix=storage.folder(backup_id)
        )
        for page in pages:
            found.extend(page.get("Contents", []))
    return found


def _delete_keys(client: Any, storage: ObjectStorage, keys: list[str]) -> None:
    for start in range(0, len(keys), 1000):
        batch = keys[start : start + 1000]
        with _talking(storage, f"deleting {len(batch)} objects"):
            answer = client.delete_objects(
                Bucket=storage.bucket,
                Delete={"Objects": [{"Key": k} for k in batch], "Quiet": True},
            )
        errors = answer.get("Errors") or []
        if errors:
            first = errors[0]
            raise ObjectStorageError(
                f"{storage.describe()} refused to delete {len(errors)} objects, first "
                f"{first.get('Key')}: {first.get('Code')} {first.get('Message', '')}".strip()
            )


def _uploads(client: Any, storage: ObjectStorage, prefix: str) -> list[dict[str, Any]]:
    """Multipart uploads begun and neither completed nor aborted under `prefix`."""
    found: list[dict[str, Any]] = []
    with _talking(storage, "listing unfinished multipart uploads"):
        for page in client.get_paginator("list_multipart_uploads").paginate(
            Bucket=storage.bucket, Prefix=prefix
        ):
            found.extend(page.get("Uploads", []))
    return found


def _abort(client: Any, storage: ObjectStorage, uploads: list[dict[str, Any]]) -> None:
    for upload in uploads:
        with _talking(storage, f"aborting the multipart upload of {upload['Key']}"):
            client.abort_multipart_upload(
                Bucket=storage.bucket, Key=upload["Key"], UploadId=upload["UploadId"]
            )


def _delete_backup(client: Any, storage: ObjectStorage, backup_id: str) -> None:
    """Index first: a deletion cut short leaves objects without an index, never listed as
    complete, which the next expiry removes as what a killed run left."""
    with _talking(storage, f"deleting {backup_id}/{INDEX}"):
        client.delete_object(Bucket=storage.bucket, Key=storage.folder(backup_id) + INDEX)
    _abort(client, storage, _uploads(client, storage, storage.folder(backup_id)))
    _delete_keys(client, storage, _keys(client, storage, backup_id))


def _left_by_killed_run(client: Any, storage: ObjectStorage, backup_id: str, now: datetime) -> bool:
    """Whether every object and unfinished multipart upload under an id without index is
    older than `INCOMPLETE_AFTER` (an upload still running wrote something recently)."""
    times = [o["LastModified"] for o in _objects(client, storage, backup_id)]
    times += [u["Initiated"] for u in _uploads(client, storage, storage.folder(backup_id))]
    # an empty folder (some stores list one where objects were deleted) holds nothing to delete
    return bool(times) and all(t <= now - INCOMPLETE_AFTER for t in times)


def expire_remote_backups(
    storage: ObjectStorage, retention: BackupRetention, *, now: datetime
) -> list[str]:
    """Delete every off-site backup past its expiry (the index's, or sooner by `retention`),
    one whose index cannot be read as an old backup (as `couchops.backup.expire_backups`
    does), and what killed runs left once a day old; answers the ids deleted. Needs no key."""
    log = logger()
    client = storage.client()
    deleted = []
    for backup_id in _remote_ids(client, storage):
        try:
            remote = _read_index(client, storage, backup_id)
        except ObjectStorageError:
            raise
        except OpsError as exc:
            log.warning("offsite.index_unreadable", backup=backup_id, reason=str(exc))
            created = datetime.strptime(backup_id[:16], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
            expires = retention.expires_at({"created_at": iso(created)})
        else:
            if remote is None:
                if _left_by_killed_run(client, storage, backup_id, now):
                    _delete_backup(client, storage, backup_id)
                    deleted.append(backup_id)
                    log.info("offsite.removed_incomplete", backup=backup_id)
                continue
            expires = remote.expiry(retention)
        if expires <= now:
            _delete_backup(client, storage, backup_id)
            deleted.append(backup_id)
            log.info("offsite.deleted_expired", backup=backup_id, expired_at=iso(expires))
    stale = [
        u
        for u in _uploads(client, storage, storage.prefix)
        if u["Initiated"] <= now - INCOMPLETE_AFTER
    ]
    _abort(client, storage, stale)
    return deleted


# ---------------------------------------------------------------------------------------------
# lifecycle backstop

LIFECYCLE_RULE_ID = "couchops-offsite-backstop"
_LIFECYCLE_REFUSED = {
    "AccessDenied",
    "NotImplemented",
    "MethodNotAllowed",
    "MalformedXML",
    "InvalidRequest",
    "InvalidArgument",
}
"""Answers of a store that does not take the rule, or of credentials not allowed to set it:
a warning. Anything else (unreachable, wrong secret, no bucket) is an error, as elsewhere."""


def ensure_lifecycle(storage: ObjectStorage, days: int) -> bool:
    """Set the bucket rule that expires every object under the prefix `days` days after its
    upload, and unfinished multipart uploads after a day, keeping the bucket's other rules;
    answers whether the rule reads back as set. A store that refuses lifecycle rules (not
    implemented, or credentials not allowed to set them) gets a warning, not an error: the
    precise expiry is `expire_remote_backups`, this is its backstop."""
    if not 1 <= days <= 365:
        raise SettingsError(f"the lifecycle backstop must be 1 to 365 days, not {days}")
    log = logger()
    client = storage.client()
    rule = {
        "ID": LIFECYCLE_RULE_ID,
        "Status": "Enabled",
        "Filter": {"Prefix": storage.prefix},
        "Expiration": {"Days": days},
        "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 1},
    }
    try:
        others = [r for r in _lifecycle_rules(client, storage) if r.get("ID") != LIFECYCLE_RULE_ID]
        with _talking(storage, "setting the lifecycle rule"):
            client.put_bucket_lifecycle_configuration(
                Bucket=storage.bucket, LifecycleConfiguration={"Rules": [*others, rule]}
            )
        applied = [r for r in _lifecycle_rules(client, storage) if r.get("ID") == LIFECYCLE_RULE_ID]
    except ObjectStorageError as exc:
        cause = exc.__cause__
        if not isinstance(cause, ClientError) or _code(cause) not in _LIFECYCLE_REFUSED:
            raise
        log.warning(
            "offsite.lifecycle_refused",
            rule=LIFECYCLE_RULE_ID,
            days=days,
            reason=str(exc),
            remedy="set the rule with credentials allowed to (the provider's console), or rely "
            "on the expiry job alone",
        )
        return False
    ok = bool(applied) and (applied[0].get("Expiration") or {}).get("Days") == days
    if ok:
        log.info("offsite.lifecycle_set", rule=LIFECYCLE_RULE_ID, days=days, prefix=storage.prefix)
    else:
        log.warning(
            "offsite.lifecycle_not_kept",
            rule=LIFECYCLE_RULE_ID,
            days=days,
            read_back=applied,
            reason="the store accepted the rule but does not return it",
        )
    return ok


def _lifecycle_rules(client: Any, storage: ObjectStorage) -> list[dict[str, Any]]:
    with _talking(storage, "reading the lifecycle rules"):
        try:
            rules: list[dict[str, Any]] = client.get_bucket_lifecycle_configuration(
                Bucket=storage.bucket
            ).get("Rules", [])
        except ClientError as exc:
            if _code(exc) == "NoSuchLifecycleConfiguration":
                return []
            raise
    return rules


# ---------------------------------------------------------------------------------------------
# what the couchops commands use


REMOTE = "s3:"
"""A backup reference that names an off-site backup: ``s3:latest`` or ``s3:<id>``."""


def configured(environ: Mapping[str, str]) -> ObjectStorage | None:
    """The object storage when ``S3_ENDPOINT`` is set (`ObjectStorage.from_env`), else None:
    backups then stay on the volume only. Another ``S3_*`` variable set without it is refused,
    lest a half-configured job believe it copies off site."""
    if environ.get("S3_ENDPOINT", "").strip():
        return ObjectStorage.from_env(environ)
    stray = sorted(k for k in environ if k.startswith("S3_") and environ[k].strip())
    if stray:
        raise SettingsError(
            f"{', '.join(stray)} set but S3_ENDPOINT is not: set it to copy backups off site, "
            "or unset the others"
        )
    return None


def remote_reference(reference: str | None) -> str | None:
    """The id (or ``latest``) an ``s3:`` reference names; None for a local one."""
    if reference is None or not reference.startswith(REMOTE):
        return None
    return reference.removeprefix(REMOTE) or "latest"


def keep_local_copy(environ: Mapping[str, str]) -> bool:
    """``BACKUP_KEEP_LOCAL_COPY`` (default true): false deletes the local copy once the
    off-site one is complete, the volume then serving as a staging area only."""
    value = environ.get("BACKUP_KEEP_LOCAL_COPY", "true").strip().lower()
    if value not in ("true", "false"):
        raise SettingsError(f"bad setting BACKUP_KEEP_LOCAL_COPY={value}: must be true or false")
    return value == "true"


def send_off_site(
    storage: ObjectStorage,
    local_backup_dir: Path,
    recipients: Sequence[Recipient],
    retention: BackupRetention,
    *,
    keep_local: bool,
) -> RemoteBackup:
    """What the backup job does after each backup: the bucket's lifecycle backstop set (a
    warning when refused), the backup uploaded, then checked back without the key (every
    object read and hashed against the index); only then, unless `keep_local`, the local copy
    deleted."""
    ensure_lifecycle(storage, lifecycle_days(retention))
    upload_backup(storage, local_backup_dir, recipients, retention=retention)
    remote = check_remote_backup(storage, local_backup_dir.name)
    if not keep_local:
        shutil.rmtree(local_backup_dir)
        logger().info("offsite.local_copy_deleted", backup=remote.backup_id)
    return remote


def check_remote_backup(storage: ObjectStorage, reference: str = "latest") -> RemoteBackup:
    """Read back every object of an off-site backup (an id, or ``latest``) and check its size
    and the SHA-256 of its ciphertext against the index, without the key: what can be proven
    of a backup the cluster cannot read. `VerificationError` names the first that differs."""
    client = storage.client()
    remote = _resolve(client, storage, reference)
    fetch = _Fetch(client, storage, remote, (), Path())
    for obj in remote.objects:
        body = fetch.body(obj)
        reader = _HashingReader(body)
        with _talking(storage, f"reading {fetch.where(obj)}"):
            while reader.read(_READ):
                pass
            body.close()
        if reader.size != obj.size or reader.sha.hexdigest() != obj.sha256:
            raise VerificationError(
                f"object {fetch.where(obj)} differs from its index (tampered with or "
                f"truncated): {reader.size} bytes, the index says {obj.size}"
            )
    logger().info("offsite.checked", backup=remote.backup_id, objects=len(remote.objects))
    return remote
