"""`purge`: the GDPR purge. Everything older than the retention is removed for good.

A document's age is the timestamp in its winning revision (``PURGE_TIMESTAMP_FIELD``). A
document older than the cutoff (``now - PURGE_RETENTION_DAYS``, strictly older) is purged with
``POST /{db}/_purge``, which removes the document, its old revision bodies and attachments from
every API: reads by id or ``?rev=``, ``_all_docs``, ``_changes`` (with ``include_docs``), Mango
indexes and views. Then the database's indexes are brought up to date and, by default, the
database and its indexes are compacted (so the bytes leave the disk too), each index only once
every copy of it has applied every purge (see `compact`: a view compaction that races the
purges leaves rows of purged documents in a copy of the index for good, in CouchDB 3.5.2).
Whether anything is still readable, views included, is not claimed here but proven after every
run by `couchops audit` (`couchops.audit`), which reads every channel and repairs such rows.

On Apache CouchDB with the purge's indexes (``cluster-setup`` creates them), what may go is read
from the indexes alone, which hold each document's winning revision: the winners go first; once
the indexes hold those purges, a leaf that was in conflict with a purged winner shows as the
winner and goes, with every leaf left, when its own timestamp says so (a later round of the same
run); deleted leaves left behind go in the last phase, which lists tombstones. Without the
indexes (or on pouchdb-server) every document is scanned, and every leaf of an old document
goes in one request.

Documents whose winning revision has no valid timestamp (missing, not ISO-8601 with an explicit
offset, more than an hour in the future), tombstones without one included, follow one rule:
they are reported, and recorded with the time a purge run first saw them in the database's
``_local/couchops-purge-untimed`` document; once first seen more than the retention ago, they
are purged like any old document. Nothing can thus stay forever by lacking a date.

The run is resumable by construction: it decides from what is in the database now, so a run
killed midway leaves the rest for the next run, which finishes the work. On a cluster, documents
written or updated seconds before a purge can come back after it: CouchDB's internal
replication, copying them between shard copies at that moment, writes them again to a copy
that has already purged them, and from there to the others (seen on a 3-node CouchDB 3.5.2
when a purge follows the writes within seconds, never 30 seconds after them). The next run
purges them again. Requests stay within
CouchDB's purge limits (100 document ids and 1000 revisions per request by default).
"""

from __future__ import annotations

import functools
import itertools
import json
import sys
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TextIO
from urllib.parse import quote

from couchops.couch import (
    JSON,
    Couch,
    copy_path,
    db_path,
    mango_field_names,
    shard_copies,
    shard_locator,
)
from couchops.errors import CouchError, OpsError, PartialFailure, describe
from couchops.log import logger
from couchops.pseudonym import label
from couchops.timestamps import FUTURE_TOLERANCE, ISO_PATTERN, iso, parse_timestamp

MAX_IDS_PER_REQUEST = 100
MAX_REVS_PER_REQUEST = 1000
LEDGER_ID = "_local/couchops-purge-untimed"
LEDGER_MAX_ENTRIES = 100_000
"""About 7 MB of ledger, under CouchDB's default 8 MB document limit."""
CHANGES_PAGE = 2000
FIND_PAGE = 2000
VIEW_PAGE = 10_000
SORT_CHUNK = 20_000
"""Candidates sorted by id in chunks this large before they are batched: a `_purge` of ids
that are neighbours in the id tree costs CouchDB far less than one of ids scattered over it
(the indexes list them by date: 19.7 s against 13.8 s for 18,282 documents, 3-node 3.5.2)."""
MAX_ROUNDS = 10
"""Rounds through the indexes after the first, for leaves that were in conflict with a purged
winner (one round per conflicting leaf a document had); what is left goes in the next run."""


@dataclass(frozen=True)
class Candidate:
    doc_id: str
    revs: tuple[str, ...]
    reason: str
    timestamp: str | None
    counted: bool = True
    """False for what is left of a document already counted as purged."""


@dataclass
class PurgeStats:
    databases: int = 0
    databases_failed: int = 0
    accounts_purged: int = 0
    replication_jobs_purged: int = 0
    documents_scanned: int = 0
    documents_purged: int = 0
    revisions_purged: int = 0
    documents_invalid_timestamp: int = 0
    documents_untimed_deleted: int = 0
    documents_untimed_purged: int = 0
    documents_would_purge: int = 0
    requests_without_quorum: int = 0
    batches: int = 0
    index_refresh_seconds: float = 0.0
    """Of the run, the time the server took to bring the indexes up to date with the purges."""
    complete: bool = True

    def counts(self) -> dict[str, float]:
        return {
            "databases": self.databases,
            "databases_failed": self.databases_failed,
            "accounts_purged": self.accounts_purged,
            "replication_jobs_purged": self.replication_jobs_purged,
            "documents_scanned": self.documents_scanned,
            "documents_purged": self.documents_purged,
            "revisions_purged": self.revisions_purged,
            "documents_invalid_timestamp": self.documents_invalid_timestamp,
            "documents_untimed_deleted": self.documents_untimed_deleted,
            "documents_untimed_purged": self.documents_untimed_purged,
            "documents_would_purge": self.documents_would_purge,
            "requests_without_quorum": self.requests_without_quorum,
            "index_refresh_seconds": round(self.index_refresh_seconds, 3),
            "complete": 1 if self.complete else 0,
        }


@dataclass
class PurgeOptions:
    retention_days: int
    timestamp_field: str = "createdAt"
    dry_run: bool = False
    concurrency: int = 4
    compact: bool = True
    max_batches: int | None = None
    now: datetime | None = None
    max_ids: int = MAX_IDS_PER_REQUEST
    max_revs: int = MAX_REVS_PER_REQUEST
    listing: TextIO = field(default_factory=lambda: sys.stdout)


def cutoff_for(now: datetime, retention_days: int) -> datetime:
    return now - timedelta(days=retention_days)


def prefilter(timestamp_field: str, cutoff: datetime, now: datetime) -> JSON:
    """A Mango selector that keeps a superset of what may be purged, for the server to apply.

    Timestamps compare as text there, so it widens the window by a day on each side (more
    than any UTC offset); the exact decision is made here, on the instant.
    """
    upper = iso(cutoff + timedelta(days=1))
    future = iso(now + FUTURE_TOLERANCE - timedelta(days=1))
    f = timestamp_field
    return {
        "$or": [
            {f: {"$lt": upper}},
            {f: {"$gt": future}},
            {f: {"$exists": False}},
            {f: {"$not": {"$type": "string"}}},
            {f: {"$not": {"$regex": ISO_PATTERN}}},
        ]
    }


def untimed_selector(timestamp_field: str) -> JSON:
    """Documents whose timestamp field is missing, not a string, or not ISO-8601 shaped."""
    f = timestamp_field
    return {
        "$or": [
            {f: {"$exists": False}},
            {f: {"$not": {"$type": "string"}}},
            {f: {"$not": {"$regex": ISO_PATTERN}}},
        ]
    }


def purge_index_specs(timestamp_field: str, partitioned: bool) -> list[JSON]:
    """The Mango indexes that let a purge read only what it may remove: one on the timestamp
    (old and future-dated documents by range) and one holding only documents without a
    well-formed timestamp (a partial index). `cluster-setup` creates them.

    Both hold `_rev` too: the purge asks them for nothing but id, winning revision and
    timestamp, which they answer alone (a covering index: CouchDB 3.5 reads no document, where
    a query that needs the documents costs several times the server CPU)."""
    f = timestamp_field
    specs: list[JSON] = [
        {
            "index": {"fields": [f, "_rev"]},
            "ddoc": f"couchops-by-{f}",
            "name": f"by-{f}",
            "type": "json",
        },
        {
            "index": {"fields": ["_id", "_rev"], "partial_filter_selector": untimed_selector(f)},
            "ddoc": f"couchops-untimed-{f}",
            "name": f"untimed-{f}",
            "type": "json",
        },
    ]
    if partitioned:
        for spec in specs:
            spec["partitioned"] = False
    return specs


class _Ledger:
    """First sightings of documents without a valid timestamp, kept in the database itself."""

    def __init__(self, couch: Couch, db: str) -> None:
        self.couch = couch
        self.db = db
        self.doc = couch.get_doc(db, LEDGER_ID) or {"_id": LEDGER_ID}
        self.previous: dict[str, str] = dict(self.doc.get("first_seen") or {})
        self.seen: dict[str, str] = {}

    def first_seen(self, doc_id: str, now: datetime) -> datetime:
        text = self.previous.get(doc_id) or iso(now)
        self.seen[doc_id] = text
        return parse_timestamp(text, now) or now

    def forget(self, doc_id: str) -> None:
        self.seen.pop(doc_id, None)

    def save(self, complete: bool) -> None:
        entries = self.seen if complete else {**self.previous, **self.seen}
        if entries == self.previous:
            return
        if len(entries) > LEDGER_MAX_ENTRIES:
            raise OpsError(
                f"{self.db}: {len(entries)} documents without a valid timestamp, more than "
                f"the ledger holds ({LEDGER_MAX_ENTRIES}); fix the documents' timestamps"
            )
        self.couch.put_doc(self.db, {**self.doc, "first_seen": dict(sorted(entries.items()))})


def databases_to_purge(couch: Couch, only: list[str] | None) -> list[str]:
    """Every database that holds data (all but the system ones), or the ones named."""
    if only:
        for name in only:
            if couch.db_info(name) is None:
                raise OpsError(f"database {name} does not exist")
        return list(only)
    return [name for name in couch.all_dbs() if not name.startswith("_")]


def scan_changes(
    couch: Couch,
    db: str,
    selector: JSON | None,
    page: int = CHANGES_PAGE,
    *,
    include_docs: bool = True,
    at: str | None = None,
) -> Iterator[JSON]:
    """Every change of the database (winning document and all leaf revisions), paged; `at`:
    the path to read instead of the clustered database's (a shard copy's).

    With a selector the server filters (`filter=_selector`); a server that refuses it is
    scanned whole.
    """
    since: Any = 0
    path = f"{at or db_path(db)}/_changes"
    use_selector = selector is not None
    while True:
        params: dict[str, Any] = {
            "style": "all_docs",
            "include_docs": include_docs,
            "limit": page,
            "since": since,
        }
        try:
            if use_selector:
                body = couch.post(
                    path, {"selector": selector}, params={**params, "filter": "_selector"}
                )
            else:
                body = couch.get(path, params=params)
        except CouchError as exc:
            if use_selector and exc.status in (400, 404, 500):
                logger().warning("purge.server_filter_unsupported", database=db, error=str(exc))
                use_selector = False
                continue
            raise
        results = body.get("results") or []
        yield from results
        since = body.get("last_seq", since)
        if not results or body.get("pending") == 0:
            return


def decide(
    change: JSON, field_name: str, cutoff: datetime, now: datetime, ledger: _Ledger | None
) -> tuple[Candidate | None, str]:
    """What to do with one document: (candidate or None, kind) where kind tells why."""
    doc: JSON = change.get("doc") or {}
    doc_id = str(change["id"])
    revs = tuple(str(c["rev"]) for c in change.get("changes", []) if "rev" in c)
    raw = doc.get(field_name)
    instant = parse_timestamp(raw, now)
    if instant is not None:
        if ledger is not None:
            ledger.forget(doc_id)
        if instant < cutoff:
            return Candidate(doc_id, revs, "older than the retention", iso(instant)), "old"
        return None, "young"
    deleted = bool(change.get("deleted") or doc.get("_deleted"))
    kind = "untimed_deleted" if deleted else "invalid_timestamp"
    first = ledger.first_seen(doc_id, now) if ledger is not None else now
    if first < cutoff:
        if ledger is not None:
            ledger.forget(doc_id)
        reason = f"no valid timestamp, first seen {iso(first)}"
        return Candidate(doc_id, revs, reason, None), kind + "_due"
    return None, kind


def index_fields(index: JSON) -> list[str]:
    """The field names of an index as `GET /{db}/_index` describes it."""
    return mango_field_names((index.get("def") or {}).get("fields") or [])


def purge_indexes(
    couch: Couch, db: str, timestamp_field: str
) -> tuple[list[str], list[str]] | None:
    """The two purge indexes ([design document, name] each), when the database has both as
    `purge_index_specs` defines them, field order included (Apache CouchDB only); else None,
    and a purge scans every document."""
    if not couch.is_apache_couchdb():
        return None
    have = {
        (str(ix.get("ddoc")), str(ix.get("name"))): index_fields(ix)
        for ix in couch.get(f"{db_path(db)}/_index").get("indexes", [])
    }
    specs = purge_index_specs(timestamp_field, False)
    wanted = [[f"_design/{spec['ddoc']}", str(spec["name"])] for spec in specs]
    if all(
        have.get((ddoc, name)) == spec["index"]["fields"]
        for (ddoc, name), spec in zip(wanted, specs, strict=True)
    ):
        return wanted[0], wanted[1]
    return None


def leaves(couch: Couch, db: str, doc_ids: list[str]) -> dict[str, list[str]]:
    """Every leaf revision (conflicts and deleted leaves included) of these documents, by
    `_changes` looked up by id (batches of 100: CouchDB scans the whole feed above that)."""
    found: dict[str, list[str]] = {}
    wanted = set(doc_ids)
    for start in range(0, len(doc_ids), MAX_IDS_PER_REQUEST):
        answer = couch.post(
            f"{db_path(db)}/_changes",
            {"doc_ids": doc_ids[start : start + MAX_IDS_PER_REQUEST]},
            params={"filter": "_doc_ids", "style": "all_docs"},
        )
        for change in answer.get("results") or []:
            doc_id = str(change.get("id", ""))
            if doc_id in wanted:
                found[doc_id] = [str(c["rev"]) for c in change.get("changes", []) if "rev" in c]
    return found


def in_id_order(
    candidates: Iterator[Candidate],
    chunk: int = SORT_CHUNK,
    locate: Callable[[str], int] | None = None,
) -> Iterator[Candidate]:
    """The candidates sorted by document id, `chunk` at a time (memory stays bounded), and
    by shard range first when `locate` tells it (`couch.shard_locator`): a `_purge` request
    is split by the server into one purge per copy of each range it touches, so a request
    within one range makes up to q times fewer of them. With q=2 on a 3-node CouchDB 3.5.2,
    the raw API purged 18,282 documents grouped by range in 5.6, 8.0 and 6.3 s (10.3-15.1 s
    of server CPU), and in id order in 7.0, 6.8, 7.0 and 9.8 s (12.9-18.5 s): a gain of
    about a tenth, inside that server's run-to-run noise; it grows with q."""
    key: Callable[[Candidate], Any] = (
        (lambda c: c.doc_id) if locate is None else (lambda c: (locate(c.doc_id), c.doc_id))
    )
    while True:
        block = list(itertools.islice(candidates, chunk))
        if not block:
            return
        yield from sorted(block, key=key)


def batches(
    candidates: Iterator[Candidate],
    max_ids: int,
    max_revs: int,
    locate: Callable[[str], int] | None = None,
) -> Iterator[tuple[JSON, frozenset[str]]]:
    """`_purge` request bodies within the server's limits on ids and revisions, each with the
    ids it continues (a document with more leaves than one request may carry is spread over
    several requests, and counted once); with `locate`, each within one shard range."""
    body: JSON = {}
    continued: set[str] = set()
    rev_count = 0
    place = None
    for cand in candidates:
        revs = list(cand.revs)
        here = locate(cand.doc_id) if locate else None
        for start in range(0, len(revs), max_revs):
            chunk = revs[start : start + max_revs]
            full = len(body) >= max_ids or rev_count + len(chunk) > max_revs
            if body and (full or cand.doc_id in body or here != place):
                yield body, frozenset(continued)
                body, rev_count, continued = {}, 0, set()
            body[cand.doc_id] = chunk
            place = here
            if start or not cand.counted:
                continued.add(cand.doc_id)
            rev_count += len(chunk)
    if body:
        yield body, frozenset(continued)


def purge_request(
    couch: Couch,
    db: str,
    body: JSON,
    continued: frozenset[str] = frozenset(),
    copies: int | None = None,
) -> tuple[int, int, bool]:
    """One `_purge`: answers (documents purged, revisions purged, quorum reached).

    With `copies` (the database's `n`), the request asks every copy to confirm (`w=n`): on a
    cluster the default quorum answers 201 while a copy may still hold the documents, and a
    read that reaches that copy returns them. 202 then means some copy has not confirmed (it
    gets the purge through internal replication)."""
    params = {"w": copies} if copies else None
    response = couch.request(
        "POST", f"{db_path(db)}/_purge", body=body, params=params, ok=(200, 201, 202)
    )
    purged = response.json().get("purged") or {}
    revisions = sum(len(v) for v in purged.values())
    documents = sum(1 for doc_id, v in purged.items() if v and doc_id not in continued)
    return documents, revisions, response.status_code != 202


def refresh_indexes(couch: Couch, db: str, partitioned: bool) -> int:
    """Bring every view and Mango index up to date, so purged documents leave them now.

    On a cluster an updating read waits only for the first copy of each shard range to
    answer (the other copies go on updating in the background): each index is read once so
    (every copy starts updating), then once with `stable` (the copies that `stable` reads
    always use, whichever node coordinates, are up to date when this returns)."""
    rows = couch.get(
        f"{db_path(db)}/_all_docs",
        params={"startkey": "_design/", "endkey": "_design0", "include_docs": True},
    ).get("rows", [])
    refreshed = 0
    for row in rows:
        ddoc = row.get("doc") or {}
        views: JSON = ddoc.get("views") or {}
        if not views:
            continue
        name = str(row["id"])[len("_design/") :]
        options = ddoc.get("options") or {}
        in_partition = partitioned and options.get("partitioned", True) is not False
        prefix = f"{db_path(db)}/_partition/couchops" if in_partition else db_path(db)
        view_name, view = next(iter(views.items()))
        if ddoc.get("language") == "query":
            fields = ((view.get("options") or {}).get("def") or {}).get("fields") or []
            first = fields[0] if fields else "_id"
            key = next(iter(first)) if isinstance(first, dict) else str(first)
            query: JSON = {
                "selector": {key: {"$gt": None}},
                "use_index": [f"_design/{name}", view_name],
                "limit": 1,
                "fields": ["_id"],
            }
            couch.post(f"{prefix}/_find", query)
            couch.post(f"{prefix}/_find", {**query, "stable": True})
        else:
            path = f"{prefix}/_design/{name}/_view/{view_name}"
            couch.get(path, params={"limit": 0})
            couch.get(path, params={"limit": 0, "stable": True})
        refreshed += 1
    return refreshed


COMPACT_WAIT_SECONDS = 300.0


def compact(
    couch: Couch,
    db: str,
    partitioned: bool = False,
    *,
    wait_seconds: float | None = None,
) -> None:
    """Compact the database and its view indexes, so purged bytes leave the disk.

    On Apache CouchDB an index is compacted only once every copy of it has applied every
    purge of its shard copy. CouchDB 3.5.2's view compactor gives the compacted index the
    database's purge sequence of the moment it starts, not the index's own
    (`couch_mrview_compactor:compact/1` builds it with `reset_index`, whose `init_state` reads
    `couch_db:get_purge_seq`): purges the index had not applied yet are then never applied,
    and their documents' rows stay in that copy's index for good, readable by any view read
    that reaches it. Seen on a 3-node CouchDB 3.5.2, 16,944 documents purged: 500 to 1,300 rows
    of purged documents in a JavaScript view after compactions started during the purge, none
    without. The platform turns CouchDB's automatic view compaction off for the same reason
    (`components/couchdb_config.py`)."""
    couch.request("POST", f"{db_path(db)}/_compact", body={}, ok=(200, 202))
    rows = couch.get(
        f"{db_path(db)}/_all_docs",
        params={"startkey": "_design/", "endkey": "_design0", "include_docs": True},
    ).get("rows", [])
    # Only design documents with views have an index (and a purge checkpoint) to compact.
    names = [str(r["id"])[len("_design/") :] for r in rows if (r.get("doc") or {}).get("views")]
    behind: set[str] = set()
    if couch.is_apache_couchdb():
        deadline = time.monotonic() + (
            COMPACT_WAIT_SECONDS if wait_seconds is None else wait_seconds
        )
        while True:
            lagging = indexes_behind_purges(couch, db, names)
            behind = set(names if lagging is None else lagging)
            if lagging is None or not behind or time.monotonic() >= deadline:
                break
            refresh_indexes(couch, db, partitioned)
            time.sleep(1.0)
    for name in names:
        if name in behind:
            logger().warning(
                "purge.view_compaction_skipped",
                database=db,
                design=name,
                reason="a copy of the index has not applied every purge yet, or the copies "
                "cannot be seen",
            )
            continue
        couch.request("POST", f"{db_path(db)}/_compact/{name}", body={}, ok=(200, 202, 404))


def indexes_behind_purges(couch: Couch, db: str, names: list[str]) -> list[str] | None:
    """The design documents (of `names`) whose index, on some shard copy, has not applied
    every purge of that copy: its checkpoint (`_local/purge-mrview-<signature>` in the copy,
    which CouchDB updates as the index applies purges) is behind the copy's `purge_seq`. One
    whose copy cannot be read (a copy down) counts as behind; None when the shard copies
    cannot be seen at all (not an admin)."""
    response = couch.request("GET", f"/_node/_local/_dbs{db_path(db)}", ok=(200, 401, 403, 404))
    if response.status_code != 200:
        return None
    shard_map = response.json()
    copies = [
        copy_path(node, shard_range, db, shard_map)
        for shard_range, nodes in sorted((shard_map.get("by_range") or {}).items())
        for node in nodes
    ]
    behind = []
    for name in names:
        info = couch.request(
            "GET", f"{db_path(db)}/_design/{quote(name, safe='')}/_info", ok=(200, 404)
        )
        signature = ((info.json() if info.status_code == 200 else {}).get("view_index") or {}).get(
            "signature"
        )
        if not signature:
            continue  # no view: nothing to compact
        for path in copies:
            try:
                purge_seq = int(couch.get(path).get("purge_seq") or 0)
                checkpoint = couch.request(
                    "GET", f"{path}/_local/purge-mrview-{signature}", ok=(200, 404)
                )
            except CouchError:
                behind.append(name)
                break
            applied = checkpoint.json().get("purge_seq") if checkpoint.status_code == 200 else None
            if not isinstance(applied, int) or applied < purge_seq:
                behind.append(name)
                break
    return behind


class _DatabasePurge:
    """One database's purge: scan and decide in this thread, purge in a pool of workers."""

    def __init__(
        self,
        couch: Couch,
        db: str,
        options: PurgeOptions,
        stats: PurgeStats,
        now: datetime,
        *,
        copies: int | None = None,
    ) -> None:
        self.couch = couch
        self.db = db
        self.copies = copies
        self.options = options
        self.stats = stats
        self.now = now
        self.cutoff = cutoff_for(now, options.retention_days)
        self.log = logger().bind(database=db)
        self.ledger = _Ledger(couch, db)
        self.purged_here = 0
        self.since_refresh = 0
        self.invalid_listed = 0
        self.seen: set[str] = set()
        self.views = True
        """Whether the indexes' views answer (else `_find`, see `_index_rows`)."""
        self.purged_ids: set[str] = set()
        self.partitioned = False

    def candidates(self, changes: Iterator[JSON]) -> Iterator[Candidate]:
        for change in changes:
            doc_id = str(change.get("id", ""))
            if not doc_id or doc_id.startswith("_design/"):
                continue
            if doc_id in self.seen:
                if doc_id in self.purged_ids:
                    left = self._leftover(change)
                    if left is not None:
                        yield left
                continue
            self.seen.add(doc_id)
            self.stats.documents_scanned += 1
            cand, kind = decide(
                change, self.options.timestamp_field, self.cutoff, self.now, self.ledger
            )
            self._count(doc_id, kind, cand)
            if cand is None:
                continue
            if self.options.dry_run:
                self.stats.documents_would_purge += 1
                self._list(cand)
                continue
            self.purged_ids.add(doc_id)
            yield cand

    def _leftover(self, change: JSON) -> Candidate | None:
        """What a purged document left: leaves that were not its winner. A deleted leaf
        (invisible to Mango) goes at once; a live one, now the winner, goes when its own
        timestamp says so, with every leaf it still has."""
        doc_id = str(change["id"])
        if change.get("deleted"):
            revs = tuple(str(c["rev"]) for c in change.get("changes", []))
            return Candidate(doc_id, revs, "leaves left by its purge", None, counted=False)
        cand, _ = decide(change, self.options.timestamp_field, self.cutoff, self.now, None)
        if cand is None:
            return None
        revs = tuple(leaves(self.couch, self.db, [doc_id]).get(doc_id, cand.revs))
        return Candidate(doc_id, revs, "leaves left by its purge", cand.timestamp, counted=False)

    def _purge_indexes(self) -> tuple[list[str], list[str]] | None:
        indexes = purge_indexes(self.couch, self.db, self.options.timestamp_field)
        if indexes is None and self.couch.is_apache_couchdb():
            self.log.info(
                "purge.full_scan",
                reason="the purge indexes are missing or outdated: run cluster-setup",
            )
        return indexes

    def _find(self, selector: JSON, index: list[str], fields: list[str]) -> Iterator[JSON]:
        """Index rows matching a selector (id, winning revision and the fields asked, all in
        the index: no document is read), paged with bookmarks, without updating the index
        (`_indexed_changes` did, before any purge: updating it between purges would make it
        process them one query at a time). `stable`: on a cluster, the same copy of each shard
        range as the update, not whichever answers first (a copy whose index is not built yet
        answers with nothing)."""
        body: JSON = {
            "selector": selector,
            "use_index": index,
            "fields": fields,
            "limit": FIND_PAGE,
            "update": False,
            "stable": True,
        }
        while True:
            answer = self.couch.post(f"{db_path(self.db)}/_find", body)
            if answer.get("warning"):
                self.log.warning("purge.find_warning", warning=answer["warning"])
            docs = answer.get("docs") or []
            yield from docs
            if len(docs) < FIND_PAGE or not answer.get("bookmark"):
                return
            body = {**body, "bookmark": answer["bookmark"]}

    def _view(self, index: list[str], key: list[str], params: JSON) -> Iterator[JSON]:
        """The same rows as `_find`, read from the index's view itself: a Mango JSON index is a
        view whose key holds the index's fields in order (`key`, here ending in `_rev`), and
        reading it costs CouchDB less than `_find` (18,300 rows: 1.9 s and 3.0 s of server CPU
        against 2.5 s and 4.2 s, 3-node 3.5.2). Paged by key and id; `stable` and no update,
        as `_find`."""
        ddoc, name = index
        path = f"{db_path(self.db)}/{ddoc}/_view/{name}"
        query: JSON = {**params, "reduce": False, "update": False, "stable": True}
        while True:
            rows = self.couch.get(path, params={**query, "limit": VIEW_PAGE + 1}).get("rows", [])
            for row in rows[:VIEW_PAGE]:
                values = row.get("key")
                if not isinstance(values, list) or len(values) != len(key):
                    raise CouchError(f"{path}: a row's key is not [{', '.join(key)}]")
                yield {"_id": row["id"], **dict(zip(key, values, strict=True))}
            if len(rows) <= VIEW_PAGE:
                return
            query = {**query, "startkey": rows[VIEW_PAGE]["key"]}
            query["startkey_docid"] = rows[VIEW_PAGE]["id"]

    def _index_rows(
        self, selector: JSON, index: list[str], key: list[str], params: JSON
    ) -> Iterator[JSON]:
        """Index rows through the view (`params`: its key range), else through `_find`: a
        server that refuses the view read, or answers rows of another shape, is asked with
        `_find` for the whole range (the rows already read are seen again and skipped)."""
        if self.views:
            try:
                yield from self._view(index, key, params)
                return
            except CouchError as exc:
                self.views = False
                self.log.info("purge.index_view_unavailable", reason=str(exc))
        yield from self._find(selector, index, ["_id", "_rev", *(k for k in key if k[0] != "_")])

    def _indexed_changes(self, indexes: tuple[list[str], list[str]]) -> Iterator[JSON]:
        """What may go, read through the indexes: documents dated before the cutoff (with a
        day's margin), dated in the future, or without a well-formed date."""
        by, untimed = indexes
        f = self.options.timestamp_field
        upper = iso(self.cutoff + timedelta(days=1))
        # Offsets run from -12:00 to +14:00: a future instant reads at least 12 hours earlier.
        future = iso(self.now + FUTURE_TOLERANCE - timedelta(hours=13))
        # The untimed index holds no timestamp: its documents have none that is valid.
        # The view's key is [field, _rev] ([_id, _rev] for the untimed index): [upper] sorts
        # after every key whose field is below it, [future] before every key above it.
        queries: list[tuple[JSON, list[str], list[str], JSON]] = [
            ({f: {"$lt": upper}}, by, [f, "_rev"], {"endkey": [upper]}),
            ({f: {"$gt": future}}, by, [f, "_rev"], {"startkey": [future]}),
            ({"$and": [{"_id": {"$gt": None}}, untimed_selector(f)]}, untimed, ["_id", "_rev"], {}),
        ]
        for selector, index, _, _ in (queries[0], queries[2]):
            # Both indexes brought up to date with every write so far, before any purge.
            self.couch.post(
                f"{db_path(self.db)}/_find",
                {
                    "selector": selector,
                    "use_index": index,
                    "limit": 1,
                    "fields": ["_id"],
                    "stable": True,
                },
            )
        for selector, index, key, params in queries:
            for doc in self._index_rows(selector, index, key, params):
                yield {"id": doc["_id"], "changes": [{"rev": doc["_rev"]}], "doc": doc}

    def _tombstones(self) -> Iterator[JSON]:
        """Tombstones are in no index: the changes feed, without bodies, lists them (only
        when the database has any)."""
        info = self.couch.db_info(self.db) or {}
        if not info.get("doc_del_count"):
            return
        for change in scan_changes(self.couch, self.db, None, include_docs=False):
            if change.get("deleted"):
                yield {**change, "doc": {}}

    def _scanned_changes(self) -> Iterator[JSON]:
        """Every document, bodies included (on Apache CouchDB pre-filtered by the server)."""
        selector = (
            prefilter(self.options.timestamp_field, self.cutoff, self.now)
            if self.couch.is_apache_couchdb()
            else None
        )
        return scan_changes(self.couch, self.db, selector)

    def _count(self, doc_id: str, kind: str, cand: Candidate | None) -> None:
        if kind.startswith("invalid_timestamp"):
            self.stats.documents_invalid_timestamp += 1
            if self.invalid_listed < 100:
                self.invalid_listed += 1
                self.log.warning(
                    "purge.invalid_timestamp",
                    id=doc_id,
                    field=self.options.timestamp_field,
                    due=cand is not None,
                )
        elif kind.startswith("untimed_deleted"):
            self.stats.documents_untimed_deleted += 1
        if cand is not None and kind.endswith("_due"):
            self.stats.documents_untimed_purged += 1

    def _list(self, cand: Candidate) -> None:
        entry = {
            "database": label(self.db),
            "id": cand.doc_id,
            "revisions": list(cand.revs),
            "timestamp": cand.timestamp,
            "reason": cand.reason,
        }
        self.options.listing.write(json.dumps(entry) + "\n")

    def _collect(self, future: Future[tuple[int, int, bool]]) -> None:
        docs, revs, quorum = future.result()
        self.stats.documents_purged += docs
        self.stats.revisions_purged += revs
        self.purged_here += docs
        self.since_refresh += docs
        if not quorum:
            self.stats.requests_without_quorum += 1
            self.log.warning("purge.accepted_without_quorum")

    @functools.cached_property
    def locate(self) -> Callable[[str], int] | None:
        """The shard range of an id (`shard_locator`), asked when the first request is about
        to go: a database with nothing to purge costs no question."""
        return shard_locator(self.couch, self.db, self.partitioned)

    def run(self, partitioned: bool) -> None:
        options, stats = self.options, self.stats
        self.partitioned = partitioned
        indexes = self._purge_indexes()
        if indexes is None:
            self._purge_all(self.candidates(self._scanned_changes()), partitioned)
        else:
            # Through the indexes, the cost follows what goes, not what stays. They show each
            # document's winner only: once the purges are in the indexes, a leaf that was in
            # conflict with a purged winner shows as the winner and goes in the next round.
            # The tombstones come last, so deleted leaves left by the purges go too.
            self._purge_all(self.candidates(self._indexed_changes(indexes)), partitioned)
            for _ in range(MAX_ROUNDS):
                before = stats.revisions_purged
                if options.dry_run or not stats.complete or not self.purged_here:
                    break
                self._refresh(partitioned)
                self._purge_all(self.candidates(self._indexed_changes(indexes)), partitioned)
                if stats.revisions_purged == before:
                    break
            if stats.complete:
                self._purge_all(self.candidates(self._tombstones()), partitioned)
        self.log.info(
            "purge.database_done",
            purged=self.purged_here,
            batches=stats.batches,
            complete=stats.complete,
            indexed=indexes is not None,
        )
        if options.dry_run:
            return
        self.ledger.save(complete=stats.complete)
        if self.purged_here:
            self._refresh(partitioned)
            if options.compact:
                compact(self.couch, self.db, partitioned)

    def _refresh(self, partitioned: bool) -> None:
        started = time.monotonic()
        refresh_indexes(self.couch, self.db, partitioned)
        self.stats.index_refresh_seconds += time.monotonic() - started

    def _purge_all(self, candidates: Iterator[Candidate], partitioned: bool) -> None:
        options, stats = self.options, self.stats
        first = next(candidates, None)
        if first is None:
            return
        candidates = itertools.chain([first], candidates)
        # Indexes kept within the purge history CouchDB retains, so none has to be rebuilt.
        limit = _purged_infos_limit(self.couch, self.db)
        inflight: deque[Future[tuple[int, int, bool]]] = deque()
        with ThreadPoolExecutor(max_workers=options.concurrency) as pool:
            for body, continued in batches(
                in_id_order(candidates, locate=self.locate),
                options.max_ids,
                options.max_revs,
                self.locate,
            ):
                if options.max_batches is not None and stats.batches >= options.max_batches:
                    stats.complete = False
                    break
                stats.batches += 1
                inflight.append(
                    pool.submit(purge_request, self.couch, self.db, body, continued, self.copies)
                )
                self.log.debug("purge.batch", batch=stats.batches, documents=len(body))
                while len(inflight) >= 2 * options.concurrency:
                    self._collect(inflight.popleft())
                if limit and self.since_refresh >= limit // 2:
                    self._refresh(partitioned)
                    self.since_refresh = 0
            while inflight:
                self._collect(inflight.popleft())


def purge_database(
    couch: Couch, db: str, options: PurgeOptions, stats: PurgeStats, now: datetime
) -> None:
    info = couch.db_info(db)
    if info is None:
        logger().info("purge.database_gone", database=db)
        return
    partitioned = bool((info.get("props") or {}).get("partitioned"))
    _DatabasePurge(couch, db, options, stats, now, copies=shard_copies(info)).run(partitioned)


def _purged_infos_limit(couch: Couch, db: str) -> int | None:
    response = couch.request("GET", f"{db_path(db)}/_purged_infos_limit", ok=(200, 400, 404))
    if response.status_code != 200:
        return None
    value = response.json()
    return value if isinstance(value, int) else None


def _purge_accounts(
    couch: Couch, options: PurgeOptions, stats: PurgeStats, failed: list[str]
) -> None:
    """Prospects' accounts and replication jobs whose data is gone (`couchops.accounts`)."""
    from couchops.accounts import purge_accounts  # noqa: PLC0415 - it builds on this module

    try:
        counts, due = purge_accounts(couch, dry_run=options.dry_run)
    except Exception as exc:  # reported, and the run exits non-zero
        failed.append("_users")
        logger().error("purge.accounts_failed", reason=describe(exc))
        return
    stats.accounts_purged += counts.accounts_purged
    stats.replication_jobs_purged += counts.replication_jobs_purged
    if options.dry_run:
        stats.documents_would_purge += len(due)
        for doc_id in due:
            # An account's id holds the user name: listed by pseudonym.
            entry = {"database": "_users|_replicator", "id": label(doc_id), "reason": "data gone"}
            options.listing.write(json.dumps(entry) + "\n")


def purge(
    couch: Couch,
    options: PurgeOptions,
    databases: list[str] | None = None,
    *,
    clock: Callable[[], float] = time.monotonic,
) -> PurgeStats:
    now = options.now or datetime.now(UTC)
    cutoff = cutoff_for(now, options.retention_days)
    log = logger()
    started = clock()
    stats = PurgeStats()
    names = databases_to_purge(couch, databases)
    log.info(
        "purge.start",
        cutoff=iso(cutoff),
        retention_days=options.retention_days,
        databases=len(names),
        dry_run=options.dry_run,
    )
    failed: list[str] = []
    for db in names:
        if not stats.complete:
            break
        # One database that fails (over a limit, a shard copy down, a malformed document)
        # must not leave every database after it unpurged.
        try:
            purge_database(couch, db, options, stats, now)
        except Exception as exc:  # reported, and the run exits non-zero
            failed.append(db)
            log.error(
                "purge.database_failed",
                database=db,
                reason=describe(exc),
                exc_info=not isinstance(exc, OpsError),
            )
        stats.databases += 1
    if not databases and stats.complete:
        _purge_accounts(couch, options, stats, failed)
    stats.databases_failed = len(failed)
    duration = clock() - started
    rate = stats.documents_purged / duration if duration > 0 else 0.0
    log.info(
        "purge.summary",
        duration_seconds=round(duration, 3),
        documents_per_second=round(rate, 1),
        **stats.counts(),
    )
    if not stats.complete:
        log.warning("purge.incomplete", reason="stopped by --max-batches; run again to finish")
    if failed:
        raise PartialFailure(
            f"{len(failed)} of {len(names)} databases not purged: "
            + ", ".join(label(db) for db in failed),
            stats.counts(),
        )
    return stats
