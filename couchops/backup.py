"""`backup`, `restore`, `verify`: every database that holds data, documents AND attachments.

Layout under BACKUP_DIR::

    .lock                              held by the one backup run allowed at a time
    .tmp-<id>/                         a backup being written (never listed as good)
    <id>/manifest.json                 written last: a directory with it is a complete backup
    <id>/databases/<n>-<name>.jsonl.gz one document per line, attachments inline (base64)

``<id>`` is the UTC start time, ``YYYYMMDDTHHMMSSZ``. A backup is written under ``.tmp-<id>``,
its files flushed to disk, the manifest written last, then the directory renamed to ``<id>``: a
run killed midway leaves only a ``.tmp-`` directory, which the next run deletes.

Each line is one leaf revision in compact JSON, its keys in the order the server keeps them (a
Mango index's definition is an object whose key order is the index's field order), its
attachments reduced to ``content_type`` and ``data``; its SHA-256 is the line's digest. A
document without conflicts has one line, its winning revision; a document with several leaves
(conflicts, deleted branches) has one line per leaf, the winning one first, each with its
history (``_revisions``), so that a restore (``new_edits=false``) gives back the same revision
tree's leaves, conflicts included. The documents are read from each shard range's changes
feed (``style=all_docs`` names every leaf), streamed and parsed one document at a time: memory
is bounded by bytes, not by a count of documents of unknown size; a restore's requests too
(`BATCH_BYTES`).

The manifest records, per database, counts (documents, leaves, attachments), the settings a
restore puts back (partitioning, ``q``, ``_revs_limit``, ``_purged_infos_limit``,
``_security``), the compressed file's size and SHA-256, and the ``content_sha256`` of the
sorted ``id<TAB>digest`` lines, which does not depend on order: the same figure computed on a
live database tells whether it holds exactly the backed-up content.

A restore keeps a checkpoint in each database it writes (`CHECKPOINT_ID`): killed and run
again with the same backup, it goes on from there.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import gzip
import hashlib
import io
import json
import os
import queue
import re
import shutil
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any
from urllib.parse import quote

import ijson

from couchops import jsoncodec, pseudonym
from couchops.couch import (
    JSON,
    Couch,
    copy_path,
    db_path,
    doc_path,
    mango_field_names,
    shard_copies,
)
from couchops.errors import CouchError, OpsError, VerificationError
from couchops.log import logger
from couchops.purge import LEDGER_ID
from couchops.retention import (
    DataCutoff,
    backup_data_window,
    collected_at,
    first_seen_ledger,
)
from couchops.timestamps import iso, parse_timestamp

FORMAT = "couchops-backup/3"
WINNERS_FORMAT = "couchops-backup/2"
"""Earlier backups holding only each document's winning revision (no conflicts)."""
SORTED_KEYS_FORMAT = "couchops-backup/1"
"""Earlier backups, their lines written with sorted keys: that lost the field order of each
Mango index (`views.<name>.map.fields`), which a restore of them puts back from the index's
definition (`options.def.fields`, a list). Their digests are of the sorted form."""
MANIFEST = "manifest.json"
BACKUP_ID = re.compile(r"^\d{8}T\d{6}Z(-\d+)?$")
DESIGN_MARK = b'"_id":"_design/'


def is_design_line(line: bytes) -> bool:
    """Whether a backup line holds a design document (parsed only when it may)."""
    return DESIGN_MARK in line and str(jsoncodec.loads(line).get("_id", "")).startswith("_design/")


def document_line(doc: JSON, *, sort_keys: bool = False) -> bytes:
    """A leaf revision as one backup line: the stored form and the basis of its digest. Its
    keys stay in the server's order (`sort_keys` for backups of `SORTED_KEYS_FORMAT`); a leaf
    of a document with several keeps its history (``_revisions``), so its branch is restored
    where it was."""
    atts = doc.get("_attachments")
    if atts:
        doc = {
            **doc,
            "_attachments": {
                name: {"content_type": meta.get("content_type"), "data": meta.get("data", "")}
                for name, meta in atts.items()
            },
        }
    else:
        doc = dict(doc)
    doc.pop("_conflicts", None)
    doc.pop("_deleted_conflicts", None)
    if sort_keys:
        doc.pop("_revisions", None)
        return jsoncodec.canonical(doc)
    return jsoncodec.dumps(doc)


def mango_field_order(doc: JSON) -> JSON:
    """A Mango design document with each index's `map.fields` back in its definition's order
    (`options.def.fields`), for documents restored from a backup of `SORTED_KEYS_FORMAT`."""
    if doc.get("language") != "query":
        return doc
    for view in (doc.get("views") or {}).values():
        defined = ((view.get("options") or {}).get("def") or {}).get("fields")
        fields = (view.get("map") or {}).get("fields")
        if not isinstance(defined, list) or not isinstance(fields, dict):
            continue
        order = mango_field_names(defined)
        if sorted(order) == sorted(fields):
            view["map"]["fields"] = {name: fields[name] for name in order}
    return doc


def content_digest(entries: list[tuple[str, str]]) -> str:
    """Order-independent digest of a database's content from (id, document digest) pairs."""
    h = hashlib.sha256()
    for doc_id, digest in sorted(entries):
        h.update(f"{doc_id}\t{digest}\n".encode())
    return h.hexdigest()


@dataclass
class DatabaseSummary:
    name: str
    documents: int = 0
    """Documents whose winning revision is live (what the database's ``doc_count`` counts)."""
    leaves: int = 0
    """Leaf revisions backed up, one line each: a document with conflicts or deleted
    branches has several."""
    conflicted_documents: int = 0
    design_documents: int = 0
    attachments: int = 0
    attachment_bytes: int = 0
    content_sha256: str = ""
    file: str = ""
    file_bytes: int = 0
    file_sha256: str = ""
    partitioned: bool = False
    properties: JSON = field(default_factory=dict)
    """What a restore must set again: ``q`` and ``n`` (where the server says), the revisions
    limit and the purged-infos limit."""
    security: JSON = field(default_factory=dict)
    documents_expired: int = 0
    """Documents left out: their data is older than the backup may hold (`retention`)."""
    oldest_data_at: str | None = None
    untimed_first_seen: dict[str, str] = field(default_factory=dict)
    """For the documents without a valid timestamp, when their data was first seen: a restore
    gives them to the purge's ledger, so that a restore makes no datum younger."""

    def to_json(self) -> JSON:
        return dict(self.__dict__)


def database_properties(couch: Couch, db: str, info: JSON) -> JSON:
    """The settings of a database that its documents do not carry: its shards (``q``) and
    copies (``n``) where the server has them, ``_revs_limit`` and ``_purged_infos_limit``
    where it answers them."""
    props: JSON = {}
    cluster = info.get("cluster") or {}
    for key in ("q", "n"):
        if isinstance(cluster.get(key), int):
            props[key] = cluster[key]
    for key in ("_revs_limit", "_purged_infos_limit"):
        response = couch.request("GET", f"{db_path(db)}/{key}", ok=(200, 400, 404, 405, 500))
        if response.status_code == 200:
            with contextlib.suppress(ValueError):
                value = response.json()
                if isinstance(value, int):
                    props[key] = value
    return props


def _attachment_bytes(doc: JSON) -> tuple[int, int]:
    atts = doc.get("_attachments") or {}
    size = 0
    for meta in atts.values():
        data = meta.get("data")
        if isinstance(data, str):
            size += len(data) * 3 // 4 - data[-2:].count("=")
    return len(atts), size


def copies_to_read(couch: Couch, db: str) -> list[tuple[Couch, str]] | None:
    """Where to read one copy of each of the database's shard ranges, as (client, node-local
    path ``/_node/<node>/<shard>``), or None where the server offers none (not Apache CouchDB
    3, not an admin, a range with no copy that answers): the clustered ``_all_docs`` is read
    then.

    A clustered ``_all_docs`` also reads each range from a single copy, through a coordinator
    that merges every range's rows; asking the copies themselves spares the server that work
    (a backup of 60,000 documents on the 3-node cluster: 16.5-19 s of CouchDB CPU instead of
    19.5-22.5 s, couchops/README.md). Of a range's copies, one that has seen the most documents
    (live and deleted) is read, so not one that internal replication has yet to bring up to
    date; among those, the nodes take turns. A copy is read from its node directly where
    ``COUCHDB_NODE_URLS`` says how to reach it (`Couch.node_client`), else through the URL's
    node."""
    if not couch.is_apache_couchdb():
        return None
    response = couch.request("GET", f"/_node/_local/_dbs{db_path(db)}", ok=(200, 401, 403, 404))
    if response.status_code != 200:
        logger().info("backup.clustered_read", database=db, reason=f"HTTP {response.status_code}")
        return None
    shard_map = response.json()
    by_range, codes = shard_map.get("by_range"), shard_map.get("shard_suffix")
    if not isinstance(by_range, dict) or not isinstance(codes, list):
        return None
    turns: dict[str, int] = {}
    failed: set[str] = set()  # a node that failed once is not asked again (retries take time)
    chosen: list[tuple[Couch, str]] = []
    for shard_range, nodes in sorted(by_range.items()):
        seen: dict[str, int] = {}  # node -> documents its copy has seen (live and deleted)
        for node in nodes:
            if node in failed:
                continue
            path = copy_path(node, shard_range, db, shard_map)
            try:
                info = couch.get(path)
            except CouchError as exc:
                logger().warning("backup.copy_unavailable", database=db, copy=path, reason=str(exc))
                failed.add(node)
                continue
            seen[node] = int(info.get("doc_count", 0)) + int(info.get("doc_del_count", 0))
        if not seen:
            return None
        most = max(seen.values())
        node = min((n for n, count in seen.items() if count == most), key=lambda n: turns.get(n, 0))
        turns[node] = turns.get(node, 0) + 1
        chosen.append(couch.copy_location(node, shard_range, db, shard_map))
    return chosen


class _Chunks:
    """A streamed response as the file `ijson` reads: the body is parsed as it arrives, so a
    page of documents is never held whole (memory bounded by the largest document)."""

    def __init__(self, response: Any, size: int = 1 << 20) -> None:
        self._chunks = response.iter_content(chunk_size=size)

    def read(self, size: int = -1) -> bytes:
        if size == 0:  # ijson asks for 0 bytes to learn whether the file gives bytes or text
            return b""
        return next(self._chunks, b"")


def stream_items(couch: Couch, path: str, params: dict[str, Any], prefix: str) -> Iterator[JSON]:
    """The items under `prefix` (``results.item``, ``rows.item``) of a JSON answer, parsed as
    the body streams in."""
    response = couch.request("GET", path, params=params, stream=True)
    try:
        yield from ijson.items(_Chunks(response), prefix, use_float=True, buf_size=1 << 20)
    except ijson.JSONError as exc:
        raise CouchError(f"GET {path}: the answer is not the JSON expected ({exc})") from exc
    finally:
        response.close()


@dataclass
class Change:
    """One document as the changes feed gives it: its winning revision (attachments inline)
    and, when it has other leaves (conflicts, deleted branches), every leaf with its history."""

    doc: JSON
    leaves: list[JSON] | None = None

    @property
    def id(self) -> str:
        return str(self.doc["_id"])

    def revisions(self) -> list[JSON]:
        """The leaves to back up, the winning one first (a restore decides on it whether the
        document's data is young enough to write)."""
        if not self.leaves:
            return [self.doc]
        won = [leaf for leaf in self.leaves if leaf.get("_rev") == self.doc.get("_rev")]
        return won + [leaf for leaf in self.leaves if leaf.get("_rev") != self.doc.get("_rev")]


def fetch_leaves(couch: Couch, path: str, doc_id: str) -> list[JSON]:
    """Every leaf revision of a document (deleted ones too), each with its history
    (``_revisions``) and attachments inline, in revision order."""
    answer = couch.get(
        f"{path}/{quote(doc_id, safe='')}",
        params={"open_revs": "all", "revs": True, "attachments": True},
    )
    found = [item["ok"] for item in answer if isinstance(item, dict) and "ok" in item]
    return sorted(found, key=lambda leaf: revision_order(str(leaf.get("_rev", ""))))


LEAVES_BATCH = 100
"""Documents of several leaves fetched by one `_bulk_get` (fewer when their leaves would
pass `CHUNK_BYTES`)."""


def fetch_many_leaves(
    couch: Couch, db: str, wanted: list[tuple[JSON, list[str]]], fallback: str
) -> list[Change]:
    """The leaves of several documents (each winner with the revisions its feed row listed),
    by one clustered `_bulk_get` with histories and attachments: one request where one a
    document cost 1,056 requests, 5 s of the reading threads' time, for 3% of 36,000
    documents. A leaf the clustered read cannot find yet (a write not on every copy) is read
    with the document's other leaves from the copy that listed it (`fallback`)."""
    if not wanted:
        return []
    body = {"docs": [{"id": doc["_id"], "rev": rev} for doc, revs in wanted for rev in revs]}
    try:
        answer = couch.post(
            f"{db_path(db)}/_bulk_get", body, params={"revs": True, "attachments": True}
        )
    except CouchError as exc:
        if exc.status not in (400, 404, 405, 501):
            raise
        answer = {}  # a server without `_bulk_get`: each document from its copy
    found: dict[str, list[JSON]] = {}
    for result in answer.get("results", []):
        for item in result.get("docs", []):
            if isinstance(item, dict) and isinstance(item.get("ok"), dict):
                found.setdefault(str(result.get("id")), []).append(item["ok"])
    changes = []
    for doc, revs in wanted:
        leaves = found.get(str(doc["_id"]), [])
        if {leaf.get("_rev") for leaf in leaves} == set(revs):
            leaves = sorted(leaves, key=lambda leaf: revision_order(str(leaf.get("_rev", ""))))
        else:
            leaves = fetch_leaves(couch, fallback, str(doc["_id"]))  # in revision order
        changes.append(Change(doc, leaves))
    return changes


def revision_order(rev: str) -> tuple[int, str]:
    pos, _, digest = rev.partition("-")
    return (int(pos) if pos.isdigit() else 0, digest)


Range = tuple[Couch, str, Any, int | None]
"""A stretch of a changes feed to read: (client, path, since, last seq included or None)."""


def changes_ranges(
    couch: Couch, db: str, *, documents: int, page: int, concurrency: int
) -> list[Range]:
    """What to read, as stretches of changes feeds: the database's shard copies, one per
    range, when it holds more than a page and the server offers them, else the clustered
    database. A copy's sequence numbers are integers: each copy is cut into stretches of
    sequence so that about `concurrency` are read at once (one stream per copy leaves the
    server waiting while each page is parsed). The clustered feed's sequences are opaque: it
    is read as one stream."""
    sources = [(couch, db_path(db))]
    if documents > page:
        sources = copies_to_read(couch, db) or sources
    parts = -(-concurrency // len(sources)) if documents > page * len(sources) else 1
    ranges: list[Range] = []
    for client, path in sources:
        if parts < 2 or path == db_path(db):
            ranges.append((client, path, 0, None))
            continue
        top = client.get(path).get("update_seq")
        if not isinstance(top, int) or top < parts * page // 4:
            ranges.append((client, path, 0, None))
            continue
        cuts = [top * i // parts for i in range(parts)]
        ranges.extend(
            (client, path, since, until)
            for since, until in zip(cuts, [*(c for c in cuts[1:]), None], strict=True)
        )
    return ranges


def _read_range(
    couch: Couch,
    path: str,
    since: Any,
    until: int | None,
    page: int,
    *,
    clustered: Couch,
    db: str,
) -> Iterator[Change]:
    """The live documents of one stretch of a changes feed (``style=all_docs`` names every
    leaf of each), page by page; the last stretch of a feed stays open to its end, so a
    document moved there by a write during the backup is still read. Documents of several
    leaves are completed in batches (`fetch_many_leaves`, through `clustered`)."""
    several: list[tuple[JSON, list[str]]] = []
    expected = 0
    params: dict[str, Any] = {
        "style": "all_docs",
        "include_docs": True,
        "attachments": True,
        "limit": page,
    }
    while True:
        rows = 0
        last: Any = since
        for row in stream_items(
            couch, f"{path}/_changes", {**params, "since": since}, "results.item"
        ):
            rows += 1
            last = row.get("seq", last)
            if until is not None and isinstance(last, int) and last > until:
                break
            doc = row.get("doc")
            if row.get("deleted") or not isinstance(doc, dict):
                continue  # a deleted winner: every leaf is deleted, the document holds nothing
            leaves = row.get("changes") or []
            if len(leaves) > 1:
                several.append((doc, [str(leaf.get("rev")) for leaf in leaves]))
                # The answer holds every leaf, each about the winner's size: bounded by
                # bytes too, so that documents of large scans come a few at a time.
                expected += _change_bytes(Change(doc)) * len(leaves)
                if len(several) >= LEAVES_BATCH or expected >= CHUNK_BYTES:
                    yield from fetch_many_leaves(clustered, db, several, path)
                    several, expected = [], 0
            else:
                yield Change(doc)
        if rows < page or (until is not None and isinstance(last, int) and last >= until):
            yield from fetch_many_leaves(clustered, db, several, path)
            return
        since = last


CHUNK_BYTES = 1 << 20
"""About how many bytes of documents a reading thread hands over at once."""
WAITING_BYTES = 16 << 20
"""At most this many bytes of documents read and not yet written (a single larger document
is let through alone): whatever the number of threads and the size of the documents."""


class _Budget:
    """Bytes handed over and not yet taken back: a thread waits while its chunk would pass
    `limit`, unless nothing else is waiting (so a document larger than it still passes)."""

    def __init__(self, limit: int, stop: threading.Event) -> None:
        self.limit = limit
        self.used = 0
        self.stop = stop
        self.cond = threading.Condition()

    def take(self, size: int) -> bool:
        with self.cond:
            while self.used and self.used + size > self.limit:
                if self.stop.is_set():
                    return False
                self.cond.wait(timeout=0.2)
            self.used += size
            return True

    def give_back(self, size: int) -> None:
        with self.cond:
            self.used -= size
            self.cond.notify_all()


def read_database(
    couch: Couch, db: str, *, documents: int, page: int, concurrency: int
) -> Iterator[list[Change]]:
    """Chunks of documents, in no particular order, each document once (a write during the
    read can move a document to a later stretch: the first reading is kept): the stretches of
    `changes_ranges` are streamed by up to `concurrency` threads. Memory stays bounded by
    bytes: each thread parses one document at a time and hands over chunks of about
    `CHUNK_BYTES`, and at most `WAITING_BYTES` wait to be written. `documents` is about how
    many the database holds (its ``doc_count``)."""
    todo: queue.SimpleQueue[Range] = queue.SimpleQueue()
    ranges = changes_ranges(couch, db, documents=documents, page=page, concurrency=concurrency)
    for one in ranges:
        todo.put(one)
    workers = max(1, min(concurrency, len(ranges)))
    chunks: queue.Queue[tuple[list[Change], int] | BaseException | None] = queue.Queue()
    stop = threading.Event()
    budget = _Budget(WAITING_BYTES, stop)

    def hand_over(chunk: list[Change], size: int) -> None:
        if budget.take(size):
            chunks.put((chunk, size))

    def worker() -> None:
        try:
            while not stop.is_set():
                try:
                    client, path, since, until = todo.get_nowait()
                except queue.Empty:
                    break
                chunk: list[Change] = []
                size = 0
                for change in _read_range(client, path, since, until, page, clustered=couch, db=db):
                    chunk.append(change)
                    size += _change_bytes(change)
                    if size >= CHUNK_BYTES or len(chunk) >= page:
                        hand_over(chunk, size)
                        chunk, size = [], 0
                hand_over(chunk, size)
            chunks.put(None)
        except BaseException as exc:  # handed to the reading thread, which raises it
            chunks.put(exc)

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(workers)]
    for thread in threads:
        thread.start()
    seen: set[str] = set()
    running = len(threads)
    try:
        while running:
            item = chunks.get()
            if item is None:
                running -= 1
            elif isinstance(item, BaseException):
                raise item
            else:
                chunk, size = item
                fresh = [change for change in chunk if change.id not in seen]
                seen.update(change.id for change in fresh)
                if fresh:
                    yield fresh
                budget.give_back(size)  # written by now: the consumer asked for more
    finally:
        stop.set()  # a reader that stops early lets the threads end


def _change_bytes(change: Change) -> int:
    size = 512
    for leaf in change.leaves or [change.doc]:
        for meta in (leaf.get("_attachments") or {}).values():
            data = meta.get("data")
            size += len(data) if isinstance(data, str) else 0
    return size


class _HashingWriter(io.RawIOBase):
    """Counts and hashes the bytes on their way to the file."""

    def __init__(self, target: IO[bytes]) -> None:
        self.target = target
        self.sha = hashlib.sha256()
        self.size = 0

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        chunk = bytes(data)
        self.sha.update(chunk)
        self.size += len(chunk)
        self.target.write(chunk)
        return len(chunk)


def _safe_file_name(index: int, db: str) -> str:
    # The name's pseudonym: a legacy database's name is personal (`couchops.pseudonym`).
    return f"databases/{index:05d}-{pseudonym.label(db).replace('~', '-')}.jsonl.gz"


def backup_database(
    couch: Couch,
    db: str,
    directory: Path,
    index: int,
    *,
    page: int,
    concurrency: int,
    keep: DataCutoff,
) -> DatabaseSummary:
    info = couch.db_info(db)
    if info is None:
        raise OpsError(f"database {db} disappeared during the backup")
    summary = DatabaseSummary(
        name=db,
        file=_safe_file_name(index, db),
        partitioned=bool((info.get("props") or {}).get("partitioned")),
        properties=database_properties(couch, db, info),
        security=couch.get(f"{db_path(db)}/_security"),
    )
    first_seen = first_seen_ledger(couch, db)
    oldest: datetime | None = None
    entries: list[tuple[str, str]] = []
    path = directory / summary.file
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as raw:
        hashing = _HashingWriter(raw)
        with gzip.GzipFile(fileobj=hashing, mode="wb", compresslevel=1, mtime=0) as out:
            documents = int(info.get("doc_count") or 0)
            for changes in read_database(
                couch, db, documents=documents, page=page, concurrency=concurrency
            ):
                lines = []
                for change in changes:
                    doc = change.doc
                    born = collected_at(doc, keep.timestamp_field, keep.now, first_seen)
                    if born is not None:
                        if born < keep.cutoff:
                            summary.documents_expired += 1
                            continue
                        oldest = born if oldest is None else min(oldest, born)
                        if parse_timestamp(doc.get(keep.timestamp_field), keep.now) is None:
                            summary.untimed_first_seen[change.id] = iso(born)
                    summary.documents += 1
                    if change.leaves:
                        summary.conflicted_documents += 1
                    if change.id.startswith("_design/"):
                        summary.design_documents += 1
                    for leaf in change.revisions():
                        line = document_line(leaf)
                        lines.append(line)
                        entries.append((change.id, hashlib.sha256(line).hexdigest()))
                        count, size = _attachment_bytes(leaf)
                        summary.attachments += count
                        summary.attachment_bytes += size
                if lines:
                    out.write(b"\n".join(lines) + b"\n")
        raw.flush()
        os.fsync(raw.fileno())
    summary.leaves = len(entries)
    summary.oldest_data_at = iso(oldest) if oldest is not None else None
    summary.content_sha256 = content_digest(entries)
    summary.file_bytes = hashing.size
    summary.file_sha256 = hashing.sha.hexdigest()
    return summary


@contextlib.contextmanager
def _exclusive(backup_dir: Path) -> Iterator[None]:
    backup_dir.mkdir(parents=True, exist_ok=True)
    with (backup_dir / ".lock").open("a") as lock:
        try:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            raise OpsError(f"another backup is running in {backup_dir} (it holds .lock)") from exc
        yield


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def databases_to_back_up(couch: Couch, only: list[str] | None) -> list[str]:
    if only:
        for name in only:
            if couch.db_info(name) is None:
                raise OpsError(f"database {name} does not exist")
        return list(only)
    return [name for name in couch.all_dbs() if not name.startswith("_")]


@dataclass
class BackupResult:
    backup_id: str
    path: Path
    manifest: JSON
    deleted: list[str]


@dataclass(frozen=True)
class BackupRetention:
    """How long backups live and what they may hold (`couchops.retention`)."""

    retention_days: int = 7
    max_age_days: int = 30
    expiry_interval_hours: int = 1
    timestamp_field: str = "createdAt"

    def data_cutoff(self, now: datetime) -> DataCutoff:
        window = backup_data_window(
            self.max_age_days, self.retention_days, self.expiry_interval_hours
        )
        return DataCutoff(now - window, now, self.timestamp_field)

    def expires_at(self, manifest: JSON) -> datetime:
        """When a backup must be gone: at the end of its life, or sooner if its oldest datum
        would pass the budget. A backup that does not record its data's age (format 1 and 2
        before this rule) was taken before the purge with a 30-day retention: it may hold
        data 31 days old at its creation."""
        created = manifest_instant(manifest["created_at"])
        by_life = created + timedelta(days=self.retention_days)
        if "oldest_data_at" not in manifest:
            oldest: datetime | None = created - timedelta(days=LEGACY_DATA_AGE_DAYS)
        else:
            oldest = (
                manifest_instant(manifest["oldest_data_at"]) if manifest["oldest_data_at"] else None
            )
        if oldest is None:
            return by_life
        return min(by_life, oldest + timedelta(days=self.max_age_days))


LEGACY_DATA_AGE_DAYS = 31


def manifest_instant(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)


EXPIRY_DURING_RUN_SECONDS = 15 * 60
"""While a backup runs (up to hours), it expires the others itself this often: the expiry
job's pod may not be able to attach the volume meanwhile (ReadWriteOnce, another node)."""


@contextlib.contextmanager
def _expiring_meanwhile(
    backup_dir: Path, retention: BackupRetention, deleted: list[str]
) -> Iterator[None]:
    stop = threading.Event()

    def expire() -> None:
        while not stop.wait(EXPIRY_DURING_RUN_SECONDS):
            try:
                deleted.extend(expire_backups(backup_dir, retention, now=datetime.now(UTC)))
            except (OSError, OpsError) as exc:
                logger().warning("backup.expiry_failed", reason=str(exc))

    thread = threading.Thread(target=expire, name="backup-expiry", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def backup(
    couch: Couch,
    backup_dir: Path,
    *,
    retention: BackupRetention,
    databases: list[str] | None = None,
    page: int = 1000,
    concurrency: int = 8,
    now: datetime | None = None,
    clock: Callable[[], float] = time.monotonic,
    every_document: bool = False,
) -> BackupResult:
    """Back up every database with data (or the ones named) into a new backup under
    `backup_dir`, holding only data young enough to stay within the budget until the backup
    expires (`retention`); `every_document` copies everything, for a benchmark against a tool
    that does (its oldest datum recorded as it is, such a backup expires as soon as that datum
    passes the budget)."""
    log = logger()
    started_at = now or datetime.now(UTC)
    started = clock()
    keep = retention.data_cutoff(started_at)
    if every_document:
        keep = DataCutoff(datetime.min.replace(tzinfo=UTC), started_at, keep.timestamp_field)
    # Expired backups go first: a backup that fails below must not keep them alive.
    deleted = expire_backups(backup_dir, retention, now=started_at)
    with _exclusive(backup_dir), _expiring_meanwhile(backup_dir, retention, deleted):
        backup_id = started_at.strftime("%Y%m%dT%H%M%SZ")
        suffix = 1
        while (backup_dir / backup_id).exists():
            suffix += 1
            backup_id = started_at.strftime("%Y%m%dT%H%M%SZ") + f"-{suffix}"
        work = backup_dir / f".tmp-{backup_id}"
        work.mkdir()
        names = databases_to_back_up(couch, databases)
        log.info("backup.start", backup=backup_id, databases=len(names))
        summaries = []
        for index, db in enumerate(names):
            summary = backup_database(
                couch, db, work, index, page=page, concurrency=concurrency, keep=keep
            )
            summaries.append(summary)
            log.info(
                "backup.database_done",
                database=db,
                documents=summary.documents,
                documents_expired=summary.documents_expired,
                attachments=summary.attachments,
                bytes=summary.file_bytes,
            )
        manifest: JSON = {
            "format": FORMAT,
            "id": backup_id,
            "created_at": iso(started_at),
            "completed_at": iso(datetime.now(UTC)),
            "source": couch.url,
            "data_cutoff": iso(keep.cutoff),
            "oldest_data_at": min(
                (s.oldest_data_at for s in summaries if s.oldest_data_at), default=None
            ),
            "databases": [s.to_json() for s in summaries],
            "totals": {
                "databases": len(summaries),
                "documents": sum(s.documents for s in summaries),
                "leaves": sum(s.leaves for s in summaries),
                "conflicted_documents": sum(s.conflicted_documents for s in summaries),
                "documents_expired": sum(s.documents_expired for s in summaries),
                "attachments": sum(s.attachments for s in summaries),
                "attachment_bytes": sum(s.attachment_bytes for s in summaries),
                "bytes": sum(s.file_bytes for s in summaries),
            },
        }
        if (work / "databases").exists():
            _fsync_dir(work / "databases")
        manifest["expires_at"] = iso(retention.expires_at(manifest))
        final = backup_dir / backup_id
        with (work / MANIFEST).open("w", encoding="utf-8") as out:
            json.dump(manifest, out, indent=2, sort_keys=True)
            out.flush()
            os.fsync(out.fileno())
        work.rename(final)
        _fsync_dir(backup_dir)
    deleted += expire_backups(backup_dir, retention, now=datetime.now(UTC), keep=backup_id)
    duration = clock() - started
    totals = manifest["totals"]
    log.info(
        "backup.summary",
        backup=backup_id,
        duration_seconds=round(duration, 3),
        documents_per_second=round(totals["documents"] / duration, 1) if duration else 0,
        deleted_backups=deleted,
        **totals,
    )
    return BackupResult(backup_id, final, manifest, deleted)


def list_backups(backup_dir: Path) -> list[Path]:
    """Complete backups (a manifest present), oldest first."""
    if not backup_dir.is_dir():
        return []
    return sorted(
        p for p in backup_dir.iterdir() if BACKUP_ID.match(p.name) and (p / MANIFEST).is_file()
    )


def expire_backups(
    backup_dir: Path, retention: BackupRetention, *, now: datetime, keep: str | None = None
) -> list[str]:
    """Delete every complete backup past its expiry (`BackupRetention.expires_at`), never the
    one just written (`keep`), and, when no backup run holds the lock, what killed runs left.
    Needs no CouchDB: the expiry job runs it on its own, so backups expire even when backup
    runs fail."""
    deleted = []
    for path in list_backups(backup_dir):
        if path.name == keep:
            continue
        try:
            manifest = load_manifest(path)
        except OpsError as exc:
            # Unusable for a restore, and its data's age unknown: it goes as an old backup.
            logger().warning("backup.manifest_unreadable", backup=path.name, reason=str(exc))
            created = datetime.strptime(path.name[:16], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
            manifest = {"created_at": iso(created)}
        expires = retention.expires_at(manifest)
        if expires <= now:
            shutil.rmtree(path, ignore_errors=True)
            deleted.append(path.name)
            logger().info("backup.deleted_expired", backup=path.name, expired_at=iso(expires))
    if backup_dir.is_dir():
        with contextlib.suppress(OpsError), _exclusive(backup_dir):
            for stale in backup_dir.glob(".tmp-*"):
                shutil.rmtree(stale, ignore_errors=True)
                logger().info("backup.removed_incomplete", directory=stale.name)
    return deleted


def resolve_backup(backup_dir: Path | None, reference: str | None) -> Path:
    """A backup directory from a path, an id under BACKUP_DIR, or 'latest'/None."""
    if reference and reference not in ("latest",) and Path(reference).is_dir():
        path = Path(reference)
    else:
        if backup_dir is None:
            raise OpsError("BACKUP_DIR is not set: name a backup directory with --from/--backup")
        if reference in (None, "latest"):
            found = list_backups(backup_dir)
            if not found:
                raise OpsError(f"no complete backup in {backup_dir}")
            path = found[-1]
        else:
            path = backup_dir / str(reference)
    if not (path / MANIFEST).is_file():
        raise OpsError(f"{path} is not a complete backup (no {MANIFEST})")
    return path


def load_manifest(path: Path) -> JSON:
    try:
        manifest: JSON = json.loads((path / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise OpsError(f"{path / MANIFEST} is unreadable: {exc}") from exc
    if manifest.get("format") not in (FORMAT, WINNERS_FORMAT, SORTED_KEYS_FORMAT):
        raise OpsError(f"{path / MANIFEST}: unknown format {manifest.get('format')!r}")
    return manifest


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as data:
        for chunk in iter(lambda: data.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def read_lines(path: Path) -> Iterator[bytes]:
    with gzip.open(path, "rb") as data:
        for line in data:
            stripped = line.rstrip(b"\n")
            if stripped:
                yield stripped


def _check_file(backup_path: Path, entry: JSON) -> Path:
    path = backup_path / str(entry["file"])
    if not path.is_file():
        raise VerificationError(f"{entry['name']}: backup file {entry['file']} is missing")
    actual = _file_sha256(path)
    if actual != entry["file_sha256"]:
        raise VerificationError(
            f"{entry['name']}: {entry['file']} has sha256 {actual[:12]}…, "
            f"the manifest says {str(entry['file_sha256'])[:12]}…"
        )
    return path


def parse_mapping(specs: list[str] | None) -> dict[str, str] | None:
    """`--database SRC[=TARGET]` options as {source: target}."""
    if not specs:
        return None
    mapping = {}
    for spec in specs:
        source, _, target = spec.partition("=")
        mapping[source] = target or source
    return mapping


def _selected(manifest: JSON, mapping: dict[str, str] | None) -> list[tuple[JSON, str]]:
    entries = {str(e["name"]): e for e in manifest["databases"]}
    if mapping is None:
        return [(e, name) for name, e in entries.items()]
    missing = sorted(set(mapping) - set(entries))
    if missing:
        raise OpsError(f"the backup holds no database named {', '.join(missing)}")
    return [(entries[source], target) for source, target in mapping.items()]


def wait_for_count(
    couch: Couch,
    db: str,
    expected: int,
    *,
    timeout: float = 30.0,
    sleep: Callable[[float], None] = time.sleep,
) -> int:
    """Re-read doc_count until it equals the expected one or the bound passes: a read right
    after a write may hit a copy that has not caught up."""
    deadline = time.monotonic() + timeout
    while True:
        count = int((couch.db_info(db) or {}).get("doc_count", -1))
        if count == expected or time.monotonic() >= deadline:
            return count
        sleep(0.5)


def _bulk_write(couch: Couch, db: str, lines: list[bytes], copies: int | None = None) -> int:
    """Write documents as they are (revisions kept). With `copies` (the database's `n`), every
    copy confirms the batch (`w=n`): the default quorum answers once two copies have it, and
    under a restore's load the third one falls behind, its queue of batches growing. The
    restore then ended seconds after its last answer: 13.3-19.7 s in 10 runs for the same
    60,000 documents on a 3-node CouchDB 3.5.2, against 13.3-16.4 s in 11 runs with every copy
    confirming (runs alternated while that server slowed over the hour)."""
    try:
        results = couch.write_as_is(db, lines, copies)
    except CouchError as exc:
        if exc.status == 413 and len(lines) == 1:
            raise OpsError(
                f"{db}: a document of {len(lines[0])} bytes is larger than the server accepts "
                f"in one request ({exc}); raise [chttpd] max_http_request_size to restore it"
            ) from exc
        raise
    failures = [r for r in results if isinstance(r, dict) and r.get("error")]
    if failures:
        first = failures[0]
        raise OpsError(
            f"{db}: {len(failures)} documents refused, first {first.get('id')}: "
            f"{first.get('error')} {first.get('reason', '')}".strip()
        )
    return len(lines)


ID_PREFIX = b'{"_id":'


def line_id(line: bytes) -> str:
    """The id of a backup line (the first key of every line the backup writes)."""
    if line.startswith(ID_PREFIX):
        end = line.find(b'",', len(ID_PREFIX))
        if end > 0 and b"\\" not in line[len(ID_PREFIX) : end]:
            return line[len(ID_PREFIX) + 1 : end].decode()
    return str(jsoncodec.loads(line)["_id"])


@dataclass
class _Admission:
    """Which lines of a backup file a restore writes: none whose data the purge would remove
    (`keep`, None when the manifest shows that nothing in the file is that old). The lines of
    one document follow each other, its winning revision first: it decides for all."""

    keep: DataCutoff | None
    created_at: datetime
    untimed: dict[str, str]
    expired: int = 0
    _last: tuple[str, bool] = ("", True)

    def admits(self, line: bytes) -> bool:
        if self.keep is None:
            return True
        doc_id = line_id(line)
        if doc_id == self._last[0]:
            return self._last[1]
        doc = jsoncodec.loads(line)
        admitted = self._decide(doc)
        self._last = (doc_id, admitted)
        return admitted

    def _decide(self, doc: JSON) -> bool:
        assert self.keep is not None
        born = collected_at(
            doc, self.keep.timestamp_field, self.keep.now, self.untimed, self.created_at
        )
        if born is None:
            return True
        if born < self.keep.cutoff:
            self.expired += 1
            return False
        if parse_timestamp(doc.get(self.keep.timestamp_field), self.keep.now) is None:
            self.untimed.setdefault(str(doc["_id"]), iso(born))
        return True


BATCH_BYTES = 8 << 20
"""At most about this many bytes of documents per `_bulk_docs` request (CouchDB refuses a
request above `[chttpd] max_http_request_size`, 64 MiB by default)."""
IN_FLIGHT_BYTES = 16 << 20
"""At most about this many bytes of documents sent and not yet confirmed: with the requests'
own bound, the memory a restore holds stays bounded by bytes whatever the documents weigh
(identity scans of several MB each), and small documents still keep `2 x concurrency`
requests in flight."""

CHECKPOINT_ID = "_local/couchops-restore"
"""Where a restore records, in the database it writes, how far into its backup file every
copy has confirmed the writes: a restore run again after being killed goes on from there.
A local document: never replicated, never in a backup, and deleted once the restore is
complete."""
CHECKPOINT_SECONDS = 2.0
SORT_WINDOW_BYTES = 16 << 20
"""A restore writes the lines of a file by windows of about this many bytes, each sorted by
document id: a backup reads documents in the order of their shard copies' changes, random in
ids, and CouchDB rewrites the path to every b-tree leaf a batch touches. Sorted, consecutive
batches touch neighbouring leaves: the 3-node CouchDB 3.5.2 spent 12.5-13.3 s of CPU restoring
36,000 documents in id order, 18.1-18.7 s in the backup's order."""
SORT_WINDOW_LINES = 100_000
"""And at most this many lines (the sort's own cost stays small)."""


@dataclass
class _Batches:
    """The lines of a file cut into requests bounded by count and bytes."""

    count: int
    size: int
    lines: list[bytes] = field(default_factory=list)
    held: int = 0

    def add(self, line: bytes) -> list[bytes] | None:
        """Add a line; answer a full batch to send, the line starting the next one."""
        full = None
        if self.lines and (len(self.lines) >= self.count or self.held + len(line) > self.size):
            full, self.lines, self.held = self.lines, [], 0
        self.lines.append(line)
        self.held += len(line) + 1
        return full


def _write_file(
    couch: Couch,
    target: str,
    path: Path,
    *,
    batch: int,
    batch_bytes: int,
    concurrency: int,
    sorted_keys: bool,
    copies: int | None,
    admission: _Admission,
    done: int = 0,
    checkpoint: Callable[[int], None] = lambda _lines: None,
    clock: Callable[[], float] = time.monotonic,
) -> tuple[int, list[bytes]]:
    """Write a backup file's documents in batches, `concurrency` requests in flight, except
    its design documents and what `admission` refuses; answers how many were written and the
    design documents, to be written last (`sorted_keys`: the file is of `SORTED_KEYS_FORMAT`,
    its Mango indexes get their field order back). The lines go by windows sorted by id
    (`SORT_WINDOW_BYTES`). The first `done` lines were written by an earlier run (still read:
    admission and design documents are decided on every line); `checkpoint` is told, every
    few seconds, how many lines every copy holds."""
    design: list[bytes] = []
    with ThreadPoolExecutor(max_workers=concurrency) as pool, ThreadPoolExecutor(1) as saver:
        writer = _FileWriter(
            couch, target, _Batches(batch, batch_bytes), concurrency, copies, pool, saver,
            checkpoint, clock, done,
        )  # fmt: skip
        number = 0
        for number, line in enumerate(read_lines(path), start=1):
            if not admission.admits(line):
                continue
            if is_design_line(line):
                repaired = mango_field_order(jsoncodec.loads(line)) if sorted_keys else None
                design.append(line if repaired is None else jsoncodec.dumps(repaired))
                continue
            if number > done:
                writer.add(line, number)
        writer.finish(number)
    return writer.written, design


class _FileWriter:
    """The writing side of `_write_file`: windows of lines sorted by id, cut into batches,
    `concurrency` batches in flight and at most `IN_FLIGHT_BYTES` unconfirmed, checkpoints
    saved beside the writes."""

    def __init__(  # noqa: PLR0917 (the parts of one restore, passed once)
        self,
        couch: Couch,
        target: str,
        batches: _Batches,
        concurrency: int,
        copies: int | None,
        pool: ThreadPoolExecutor,
        saver: ThreadPoolExecutor,
        checkpoint: Callable[[int], None],
        clock: Callable[[], float],
        done: int,
    ) -> None:
        self.couch, self.target, self.batches = couch, target, batches
        self.concurrency, self.copies = concurrency, copies
        self.pool, self.saver, self.checkpoint, self.clock = pool, saver, checkpoint, clock
        self.flying: deque[tuple[Future[int], int, int]] = deque()
        self.in_flight = 0
        self.written = 0
        self.confirmed = done
        self.saved_at = clock()
        self.saving: Future[None] | None = None
        self.window: list[tuple[str, int, bytes]] = []
        self.held = 0
        self.reached = done  # the last line of the last window sent

    def add(self, line: bytes, number: int) -> None:
        if self.window and (
            self.held + len(line) > SORT_WINDOW_BYTES or len(self.window) >= SORT_WINDOW_LINES
        ):
            self.send_window(number - 1)
        self.window.append((line_id(line), number, line))
        self.held += len(line)

    def send_window(self, upto: int) -> None:
        """The window's lines in id order (a document's leaves in file order, the winner
        first), in batches; only its last batch confirms the lines up to `upto`, so a
        checkpoint never counts a line of a window not wholly confirmed."""
        self.window.sort(key=lambda entry: (entry[0], entry[1]))
        for _, _, line in self.window:
            full = self.batches.add(line)
            if full is not None:
                self.send(full, self.reached)
                self.settle(2 * self.concurrency)
        if self.batches.lines:
            self.send(self.batches.lines, upto)
            self.batches.lines, self.batches.held = [], 0
        self.window.clear()
        self.held, self.reached = 0, upto

    def send(self, lines: list[bytes], upto: int) -> None:
        size = sum(len(line) for line in lines)
        future = self.pool.submit(_bulk_write, self.couch, self.target, lines, self.copies)
        self.flying.append((future, upto, size))
        self.in_flight += size

    def settle(self, keep: int) -> None:
        while len(self.flying) > keep or (self.flying and self.in_flight > IN_FLIGHT_BYTES):
            future, upto, size = self.flying.popleft()
            self.written += future.result()
            self.confirmed = upto
            self.in_flight -= size
        if self.clock() - self.saved_at >= CHECKPOINT_SECONDS:
            self.save(self.confirmed)
            self.saved_at = self.clock()

    def save(self, lines: int) -> None:
        """Beside the writes, one at a time (each takes the last one's revision): while one
        is on its way, the next is skipped, the one after it records more."""
        if self.saving is not None:
            if not self.saving.done():
                return
            self.saving.result()
        self.saving = self.saver.submit(self.checkpoint, lines)

    def finish(self, last: int) -> None:
        self.send_window(max(last, self.reached))
        self.settle(0)
        if self.saving is not None:
            self.saving.result()
        self.checkpoint(max(self.confirmed, last))


def restore(
    couch: Couch,
    backup_path: Path,
    *,
    mapping: dict[str, str] | None = None,
    batch: int = 1000,
    batch_bytes: int = BATCH_BYTES,
    concurrency: int = 8,
    q: int | None = None,
    n: int | None = None,
    keep: DataCutoff | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> dict[str, int]:
    """Restore databases from a backup into absent or empty databases, then check counts.

    Every leaf revision is written as it was (``new_edits=false``: revision ids and conflicts
    kept, nothing written twice), then the database's settings (security, revisions and
    purged-infos limits). A restore killed midway, run again with the same backup, goes on
    from its checkpoint (`CHECKPOINT_ID`) in each database instead of starting over; a
    database holding anything else is refused.

    With `keep` (the purge's cutoff), a document whose data the purge would remove is never
    written, so nobody can read it, and each undated document restored enters the purge's
    ledger as first seen when the backup says (at the latest when it was taken): a restore of
    an old backup brings back nothing the retention forbids, and makes nothing younger."""
    log = logger()
    manifest = load_manifest(backup_path)
    selected = _selected(manifest, mapping)
    resume = {target: _resume_point(couch, manifest, entry, target) for entry, target in selected}
    for entry, _target in selected:
        _check_file(backup_path, entry)
    started = clock()
    restored = 0
    expired = 0
    for entry, target in selected:
        written, admission = _restore_database(
            couch,
            backup_path,
            manifest,
            entry,
            target,
            done=resume[target],
            write=_Writing(batch, batch_bytes, concurrency, q, n),
            keep=keep,
            sleep=sleep,
        )
        restored += written
        expired += admission.expired
    duration = clock() - started
    log.info(
        "restore.summary",
        backup=manifest["id"],
        databases=len(selected),
        revisions_written=restored,
        duration_seconds=round(duration, 3),
        revisions_per_second=round(restored / duration, 1) if duration else 0,
    )
    return {"databases": len(selected), "documents": restored, "documents_expired": expired}


@dataclass(frozen=True)
class _Writing:
    batch: int
    batch_bytes: int
    concurrency: int
    q: int | None
    n: int | None


def design_ids(couch: Couch, db: str) -> set[str]:
    """The ids of a database's design documents."""
    rows = couch.get(
        f"{db_path(db)}/_all_docs", params={"startkey": "_design/", "endkey": "_design0"}
    )["rows"]
    return {str(row["id"]) for row in rows}


def _set_up_only(couch: Couch, target: str, info: JSON) -> bool:
    """Whether `target` holds design documents and nothing else, as `couchops cluster-setup`
    leaves a new database (its indexes): after a disaster, `pulumi up` runs the setup Job
    before anyone restores. Such a target counts as empty; its design documents stay."""
    if info.get("doc_del_count", 0):
        return False
    return int(info.get("doc_count", 0)) <= len(design_ids(couch, target))


def _resume_point(couch: Couch, manifest: JSON, entry: JSON, target: str) -> int:
    """How many lines of its file an earlier, killed restore of this backup wrote into
    `target` (0 for an absent or empty database, or one as cluster-setup leaves it); a
    database holding anything else is refused."""
    info = couch.db_info(target)
    if not info or not (info.get("doc_count", 0) or info.get("doc_del_count", 0)):
        return 0
    mark = couch.get_doc(target, CHECKPOINT_ID)
    if mark is None and _set_up_only(couch, target, info):
        logger().info("restore.target_set_up", database=target, documents=info.get("doc_count"))
        return 0
    if not mark or (mark.get("backup"), mark.get("file_sha256")) != (
        manifest["id"],
        entry["file_sha256"],
    ):
        raise OpsError(
            f"restore refuses database {target}: it is not empty "
            f"({info.get('doc_count')} documents, {info.get('doc_del_count')} deleted) "
            "and holds no unfinished restore of this backup"
        )
    return int(mark.get("lines", 0))


def _restore_database(
    couch: Couch,
    backup_path: Path,
    manifest: JSON,
    entry: JSON,
    target: str,
    *,
    done: int,
    write: _Writing,
    keep: DataCutoff | None,
    sleep: Callable[[float], None],
) -> tuple[int, _Admission]:
    props = dict(entry.get("properties") or {})
    info = couch.db_info(target)
    if info is None:
        params: dict[str, Any] = {"q": write.q or props.get("q"), "n": write.n}
        if entry.get("partitioned"):
            params["partitioned"] = True
        couch.request("PUT", db_path(target), params=params, ok=(201, 202))
        info = couch.db_info(target) or {}
    copies = shard_copies(info)
    admission = _Admission(
        keep if keep is not None and _may_hold_older(entry, keep) else None,
        manifest_instant(manifest["created_at"]),
        dict(entry.get("untimed_first_seen") or {}),
    )
    if done:
        logger().info("restore.resumed", database=target, lines_done=done)
    mark: JSON = {"backup": manifest["id"], "file_sha256": entry["file_sha256"], "lines": done}
    current = couch.get_doc(target, CHECKPOINT_ID)
    if current is not None:
        mark["_rev"] = current["_rev"]

    def checkpoint(lines: int) -> None:
        mark["lines"] = lines
        mark["_rev"] = couch.put(doc_path(target, CHECKPOINT_ID), mark).get("rev")

    checkpoint(done)
    with ThreadPoolExecutor(1) as aside:
        # The limits beside the writes (on a cluster each takes a few hundred milliseconds);
        # no document of the backup has more history than its own revisions limit kept.
        limits = aside.submit(_restore_limits, couch, target, props)
        written, design = _write_file(
            couch,
            target,
            backup_path / str(entry["file"]),
            batch=write.batch,
            batch_bytes=write.batch_bytes,
            concurrency=write.concurrency,
            sorted_keys=manifest["format"] == SORTED_KEYS_FORMAT,
            copies=copies,
            admission=admission,
            done=done,
            checkpoint=checkpoint,
        )
        limits.result()
    if admission.untimed:
        ledger = {"_id": LEDGER_ID, "first_seen": dict(sorted(admission.untimed.items()))}
        existing = couch.get_doc(target, LEDGER_ID)
        if existing is not None:
            ledger["_rev"] = existing["_rev"]
        couch.put_doc(target, ledger)
    expected = int(entry["documents"]) - admission.expired
    if design:
        # Last, once every copy holds the other documents: CouchDB builds a database's
        # indexes as soon as their design documents exist. Written first, they would be
        # updated beside every batch of the restore (a quarter of its time on a 3-node
        # CouchDB 3.5.2); written while a copy still catches up with the last batches, the
        # index builds would compete with it.
        present = design_ids(couch, target)
        if copies is None:  # with every copy confirming each batch, none is behind
            wait_for_count(
                couch, target, expected - len({line_id(d) for d in design} - present), sleep=sleep
            )
        # A design document the target has (cluster-setup made it, or a killed run wrote
        # it) is kept: written again, the backup's revision would sit beside it as a
        # conflict and might win over the current index definitions.
        missing = [d for d in design if line_id(d) not in present]
        if len(missing) < len(design):
            logger().info(
                "restore.design_documents_kept",
                database=target,
                kept=len({line_id(d) for d in design} & present),
            )
        if missing:
            written += _bulk_write(couch, target, missing, copies)
    _restore_settings(couch, target, entry, props)
    count = wait_for_count(couch, target, expected, sleep=sleep)
    if count != expected:
        raise VerificationError(
            f"{target}: the database counts {count} documents, the backup holds "
            f"{entry['documents']} of which {admission.expired} expired"
        )
    couch.request("DELETE", doc_path(target, CHECKPOINT_ID), params={"rev": mark["_rev"]})
    logger().info(
        "restore.database_done",
        source=entry["name"],
        database=target,
        documents=count,
        revisions_written=written,
        documents_expired=admission.expired,
    )
    return written, admission


def _restore_limits(couch: Couch, target: str, props: JSON) -> None:
    """What the documents do not carry: the revisions and purged-infos limits."""
    for key in ("_revs_limit", "_purged_infos_limit"):
        if key in props:
            couch.request(
                "PUT",
                f"{db_path(target)}/{key}",
                data=str(int(props[key])).encode(),
                headers={"Content-Type": "application/json"},
            )


def _restore_settings(couch: Couch, target: str, entry: JSON, props: JSON) -> None:
    """The security object, last: it may shut the restoring admin's own tools out of
    nothing, but the web app's members get in only once everything is there."""
    if entry.get("security"):
        couch.put(f"{db_path(target)}/_security", entry["security"])


def _may_hold_older(entry: JSON, keep: DataCutoff) -> bool:
    """Whether a backed-up database may hold data older than the cutoff (its manifest entry
    says how old its oldest datum is; an entry that does not say may hold anything)."""
    if "oldest_data_at" not in entry:
        return True
    oldest = entry["oldest_data_at"]
    return oldest is not None and manifest_instant(oldest) < keep.cutoff


def live_digest(
    couch: Couch,
    db: str,
    *,
    page: int = 1000,
    concurrency: int = 4,
    form: str = FORMAT,
    keep: DataCutoff | None = None,
) -> tuple[int, str]:
    """A live database's document count and content digest, as a backup's manifest of format
    `form` gives them (every leaf revision, or only the winning ones for earlier formats;
    `keep`: only the documents whose data is not older than its cutoff)."""
    first_seen = first_seen_ledger(couch, db) if keep is not None else {}
    info = couch.db_info(db)
    if info is None:
        raise VerificationError(f"database {db} does not exist")
    documents = 0
    entries: list[tuple[str, str]] = []
    sort_keys = form == SORTED_KEYS_FORMAT
    for changes in read_database(
        couch, db, documents=int(info.get("doc_count") or 0), page=page, concurrency=concurrency
    ):
        for change in changes:
            if keep is not None and _older(change.doc, keep, first_seen, None):
                continue
            documents += 1
            leaves = change.revisions() if form == FORMAT else [change.doc]
            entries.extend(
                (change.id, hashlib.sha256(document_line(leaf, sort_keys=sort_keys)).hexdigest())
                for leaf in leaves
            )
    return documents, content_digest(entries)


def _older(
    doc: JSON, keep: DataCutoff, first_seen: dict[str, str], unseen: datetime | None
) -> bool:
    born = collected_at(doc, keep.timestamp_field, keep.now, first_seen, unseen)
    return born is not None and born < keep.cutoff


def _check_content(
    path: Path, entry: JSON, keep: DataCutoff | None, created_at: datetime
) -> tuple[int, tuple[int, str]]:
    """Check a backup file against its manifest entry (documents, leaves, attachments,
    content digest, the attachments' base64); answer its document count and the count and
    digest of what a restore with `keep` would write."""
    entries: list[tuple[str, str]] = []
    current: list[tuple[str, str]] = []
    untimed = dict(entry.get("untimed_first_seen") or {})
    attachments = 0
    ids: list[str] = []
    kept_ids = 0
    admitted = True
    for line in read_lines(path):
        try:
            doc = jsoncodec.loads(line)
        except ValueError as exc:
            raise VerificationError(f"{entry['name']}: a line is not JSON ({exc})") from exc
        for meta in (doc.get("_attachments") or {}).values():
            base64.b64decode(meta.get("data", ""), validate=True)
            attachments += 1
        doc_id = str(doc["_id"])
        entries.append((doc_id, hashlib.sha256(line).hexdigest()))
        if not ids or ids[-1] != doc_id:  # a document's leaves follow each other, winner first
            ids.append(doc_id)
            admitted = keep is None or not _older(doc, keep, untimed, created_at)
            kept_ids += admitted
        if admitted:
            current.append(entries[-1])
    leaves = int(entry.get("leaves") or entry["documents"])
    if (len(ids), len(entries), attachments) != (entry["documents"], leaves, entry["attachments"]):
        raise VerificationError(
            f"{entry['name']}: the file holds {len(ids)} documents, {len(entries)} revisions "
            f"and {attachments} attachments, the manifest says {entry['documents']}, {leaves} "
            f"and {entry['attachments']}"
        )
    if content_digest(entries) != entry["content_sha256"]:
        raise VerificationError(f"{entry['name']}: content digest differs from the manifest")
    return len(ids), (kept_ids, content_digest(current))


def _compare_live(
    couch: Couch,
    target: str,
    entry: JSON,
    *,
    form: str,
    keep: DataCutoff | None,
    expected: tuple[int, str],
    settle_seconds: float,
) -> None:
    """The live database holds exactly what the backup would restore: the same settings
    (partitioning, security, revisions and purged-infos limits, shards) and the same
    documents, each with the same leaf revisions (a copy that has not caught up with a recent
    write may answer first: re-read, bounded)."""
    info = couch.db_info(target)
    if info is None:
        raise VerificationError(f"database {target} does not exist")
    differences = []
    if bool((info.get("props") or {}).get("partitioned")) != bool(entry.get("partitioned")):
        differences.append("partitioned")
    if form == FORMAT:
        live_props = database_properties(couch, target, info)
        differences += [
            key
            for key, value in (entry.get("properties") or {}).items()
            if key != "n" and live_props.get(key) != value
        ]
    if (couch.get(f"{db_path(target)}/_security") or {}) != (entry.get("security") or {}):
        differences.append("_security")
    if differences:
        raise VerificationError(
            f"{target}: the live database's {', '.join(differences)} differ from the backup's"
        )
    deadline = time.monotonic() + settle_seconds
    found = live_digest(couch, target, form=form, keep=keep)
    while found != expected and time.monotonic() < deadline:
        time.sleep(1.0)
        found = live_digest(couch, target, form=form, keep=keep)
    if found != expected:
        raise VerificationError(
            f"{target}: live database holds {found[0]} documents (digest {found[1][:12]}…), "
            f"the backup {expected[0]} within the retention (digest {expected[1][:12]}…)"
        )


def verify(
    backup_path: Path,
    *,
    couch: Couch | None = None,
    mapping: dict[str, str] | None = None,
    live: bool = False,
    keep: DataCutoff | None = None,
    settle_seconds: float = 10.0,
) -> dict[str, int]:
    """Check a backup against its manifest (file checksums, counts, content digests) and,
    with ``live``, against the databases it would restore into: with `keep` (the purge's
    cutoff, as the restore applies it), both sides without the documents older than it."""
    log = logger()
    manifest = load_manifest(backup_path)
    created_at = manifest_instant(manifest["created_at"])
    checked = 0
    documents = 0
    for entry, target in _selected(manifest, mapping):
        path = _check_file(backup_path, entry)
        count, current = _check_content(path, entry, keep, created_at)
        if live:
            if couch is None:
                raise OpsError("a live verification needs a CouchDB connection")
            _compare_live(
                couch,
                target,
                entry,
                form=manifest["format"],
                keep=keep,
                expected=current,
                settle_seconds=settle_seconds,
            )
        checked += 1
        documents += count
        log.info("verify.database_ok", database=entry["name"], documents=count, live=live)
    log.info("verify.summary", backup=manifest["id"], databases=checked, documents=documents)
    return {"databases": checked, "documents": documents}
