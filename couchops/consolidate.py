"""`consolidate`: migrate legacy per-user databases into the single partitioned database.

Each ``userdb-<hex>`` source's documents are read (winning revisions, conflicting leaves too,
attachments inline) and written to the target under ``<partition>:<id>`` with their revision
ids kept (``_bulk_docs`` with ``new_edits=false``), so a second run writes nothing new: the
migration is idempotent, and a run killed midway is finished by running it again.

No replication is started: workers read many small sources each and write them to the target
in large batches, which keeps 50,000 sources practical (the replicator runs at most a few
hundred jobs at once, and one replication per database costs far more than one read).

Sources are taken in the order of their partition keys, so a group's documents fill one
contiguous stretch of the target's ids: its writes touch neighbouring pages of the id index,
and it is read back with one ``_all_docs`` key range (from its first partition to its last)
instead of a look-up per id, which costs a CouchDB cluster about three times more server CPU
(a fetch from every copy for each id; 25 s against 8.5 s for 12,000 documents in 2,000
partitions on a 3-node CouchDB 3.5.2, and a single range less again). A source is *verified*
when all its documents are there (per-user counts equal), re-reading within a bound because a
fresh write may not have reached every copy yet. Only a verified source may be deleted
(``--delete-sources``). Design documents of sources are not migrated (counted).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from couchops import jsoncodec
from couchops.accounts import USERS, account_id, purge_documents
from couchops.couch import JSON, Couch, db_path, doc_path, shard_copies
from couchops.errors import CouchError, OpsError
from couchops.log import logger
from couchops.partition import USERDB_PREFIX, consolidated_id, partition_key, user_from_userdb

READ_PAGE = 1000
WRITE_BATCH = 2000
VERIFY_PAGE = 5000


@dataclass
class ConsolidateStats:
    sources: int = 0
    sources_verified: int = 0
    sources_failed: int = 0
    sources_deleted: int = 0
    sources_invalid_name: int = 0
    documents_copied: int = 0
    documents_verified: int = 0
    conflict_revisions_copied: int = 0
    design_documents_skipped: int = 0
    accounts_purged: int = 0
    failures: list[str] = field(default_factory=list)

    def add(self, other: ConsolidateStats) -> None:
        for name, value in other.__dict__.items():
            if isinstance(value, int):
                setattr(self, name, getattr(self, name) + value)
        self.failures.extend(other.failures)

    def counts(self) -> dict[str, float]:
        return {k: float(v) for k, v in self.__dict__.items() if isinstance(v, int)}


@dataclass
class _Source:
    name: str
    partition: str
    expected: dict[str, str] = field(default_factory=dict)
    """New id -> winning revision written."""
    copies: list[tuple[Couch, str]] = field(default_factory=list)
    """Where to read one copy of each shard range (CouchDB 3: `Couch.copy_location`), else
    empty."""


def _rows(couch: Couch, path: str) -> Iterator[JSON]:
    """Every row of the `_all_docs` at `path` with its document, attachments and conflicts."""
    params: dict[str, Any] = {
        "include_docs": True,
        "attachments": True,
        "conflicts": True,
        "limit": READ_PAGE,
    }
    while True:
        response = couch.request("GET", f"{path}/_all_docs", params=params)
        rows = jsoncodec.loads(response.content).get("rows", [])
        yield from rows
        if len(rows) < READ_PAGE:
            return
        params = {**params, "startkey": rows[-1]["id"], "skip": 1}


def _read_source(couch: Couch, source: _Source, stats: ConsolidateStats) -> list[JSON]:
    rows: list[JSON] | None = None
    if source.copies:
        try:
            rows = [row for client, path in source.copies for row in _rows(client, path)]
        except CouchError as exc:
            logger().info("consolidate.clustered_read", source=source.name, reason=str(exc))
    if rows is None:
        rows = list(_rows(couch, db_path(source.name)))
    docs: list[JSON] = []
    for row in rows:
        doc = row.get("doc")
        if not doc:
            continue
        old_id = str(doc["_id"])
        if old_id.startswith("_design/"):
            stats.design_documents_skipped += 1
            continue
        conflicts = doc.pop("_conflicts", None)
        new_id = consolidated_id(source.partition, old_id)
        docs.append({**doc, "_id": new_id})
        source.expected[new_id] = str(doc["_rev"])
        if conflicts:
            for leaf in _conflict_leaves(couch, source.name, old_id, conflicts):
                docs.append({**leaf, "_id": new_id})
                stats.conflict_revisions_copied += 1
    return docs


def _assign_copies(couch: Couch, sources: list[_Source]) -> None:
    """On Apache CouchDB 3 (admin), give each source the node-local paths of one copy of each
    of its shard ranges, the nodes taking turns from one source to the next (shard maps read
    in pages from the node-local `_dbs`). A clustered read of a source asks every copy of
    every range and keeps the first to answer; reading one copy spares the server the others
    (2,000 sources read: 20.6-24.9 s of CouchDB CPU instead of 23.2-27.7 s on the 3-node
    cluster), and with node URLs (`Couch.copy_location`) a copy is read from its own node
    rather than relayed (37.9-43.1 s instead of 40.4-51.0 s, 4 alternating pairs). Either way
    one copy serves each range. Elsewhere, or for a source without a map, the clustered
    database is read."""
    if not sources or not couch.is_apache_couchdb():
        return
    wanted = {source.name for source in sources}
    try:
        maps = {m["_id"]: m for m in couch.shard_maps(USERDB_PREFIX) if m.get("_id") in wanted}
    except CouchError as exc:
        logger().info("consolidate.clustered_read", reason=str(exc))
        return
    for turn, source in enumerate(sources):
        shard_map = maps.get(source.name) or {}
        by_range = shard_map.get("by_range")
        if not isinstance(by_range, dict) or not isinstance(shard_map.get("shard_suffix"), list):
            continue
        source.copies = [
            couch.copy_location(nodes[turn % len(nodes)], shard_range, source.name, shard_map)
            for shard_range, nodes in sorted(by_range.items())
            if nodes
        ]


def _conflict_leaves(couch: Couch, db: str, doc_id: str, revs: list[str]) -> list[JSON]:
    answer = couch.get(
        doc_path(db, doc_id),
        params={"open_revs": revs, "attachments": True, "latest": True},
    )
    return [item["ok"] for item in answer if isinstance(item, dict) and "ok" in item]


def _write(
    couch: Couch, target: str, docs: list[JSON], copies: int | None = None
) -> dict[str, str]:
    """Write with revision ids kept; answers {id: error} for refused documents. With `copies`
    (the target's `n`), every copy confirms (`w=n`), as for the restore: none falls behind
    the others while the groups' writes go on, and the verification reads find the documents
    on whichever copy answers."""
    refused: dict[str, str] = {}
    for start in range(0, len(docs), WRITE_BATCH):
        chunk = docs[start : start + WRITE_BATCH]
        for result in couch.write_as_is(target, jsoncodec.dumps(chunk), copies):
            if isinstance(result, dict) and result.get("error"):
                refused[str(result.get("id"))] = f"{result['error']}: {result.get('reason', '')}"
    return refused


def _present(couch: Couch, target: str, first: str, last: str) -> set[str]:
    """Every id the target holds (not deleted) in partitions `first` to `last`, inclusive:
    one key range, paged (`_all_docs` orders ids by code point, and `;` follows `:`)."""
    found: set[str] = set()
    params: dict[str, Any] = {
        "start_key": f"{first}:",
        "end_key": f"{last};",
        "inclusive_end": False,
        "limit": VERIFY_PAGE,
    }
    while True:
        response = couch.request("GET", f"{db_path(target)}/_all_docs", params=params)
        rows = jsoncodec.loads(response.content).get("rows", [])
        found.update(str(row["id"]) for row in rows)
        if len(rows) < VERIFY_PAGE:
            return found
        params = {**params, "start_key": rows[-1]["id"], "skip": 1}


def _process_group(
    couch: Couch,
    target: str,
    group: list[_Source],
    *,
    copies: int | None,
    delete_sources: bool,
    verify_timeout: float,
    sleep: Callable[[float], None],
) -> ConsolidateStats:
    """Read, write and verify a group of sources, in partition order."""
    log = logger()
    stats = ConsolidateStats()
    sources: list[_Source] = []
    docs: list[JSON] = []
    for source in group:
        try:
            docs.extend(_read_source(couch, source, stats))
        except CouchError as exc:
            if exc.status == 404:
                log.info("consolidate.source_gone", source=source.name)
                continue
            raise
        sources.append(source)
        stats.sources += 1
    refused = _write(couch, target, docs, copies) if docs else {}
    stats.documents_copied += len(docs)
    expected = {new_id for s in sources for new_id in s.expected}
    first, last = group[0].partition, group[-1].partition
    deadline = time.monotonic() + verify_timeout
    found = _present(couch, target, first, last) & expected if expected else set()
    while len(found) < len(expected) and time.monotonic() < deadline:
        sleep(0.5)
        found = _present(couch, target, first, last) & expected
    for source in sources:
        missing = [i for i in source.expected if i not in found]
        if missing:
            stats.sources_failed += 1
            reason = refused.get(missing[0], "not found in the target")
            stats.failures.append(
                f"{source.name}: {len(missing)} of {len(source.expected)} documents missing "
                f"in {target} (first {missing[0]}: {reason})"
            )
            log.error(
                "consolidate.source_unverified",
                source=source.name,
                expected=len(source.expected),
                found=len(source.expected) - len(missing),
            )
            continue
        stats.sources_verified += 1
        stats.documents_verified += len(source.expected)
        source.expected.clear()
        if delete_sources:
            couch.request("DELETE", db_path(source.name), ok=(200, 202, 404))
            stats.sources_deleted += 1
            # The user's account goes with their data (`couchops.accounts`).
            stats.accounts_purged += purge_documents(
                couch, USERS, [account_id(user_from_userdb(source.name) or "")]
            )
    return stats


def _sources_in_partition_order(
    names: Iterator[str], secret: bytes, stats: ConsolidateStats
) -> list[_Source]:
    """The sources sorted by partition key; names that are not `userdb-<hex>` reported."""
    sources = []
    for name in names:
        user = user_from_userdb(name)
        if user is None:
            stats.sources_invalid_name += 1
            stats.failures.append(f"{name}: not userdb-<hex of a UTF-8 user name>")
            logger().error("consolidate.invalid_source_name", source=name)
            continue
        sources.append(_Source(name, partition_key(user, secret)))
    return sorted(sources, key=lambda s: s.partition)


def consolidate(
    couch: Couch,
    target: str,
    secret: bytes,
    *,
    concurrency: int = 8,
    delete_sources: bool = False,
    limit: int | None = None,
    group_size: int = 100,
    verify_timeout: float = 30.0,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
    only: list[str] | None = None,
) -> ConsolidateStats:
    """Migrate every `userdb-` database of the server (or only those named) into `target`."""
    log = logger()
    info = couch.db_info(target)
    if info is None:
        raise OpsError(
            f"target database {target} does not exist: run `couchops cluster-setup` first"
        )
    props = info.get("props")
    if props is not None and not props.get("partitioned"):
        raise OpsError(f"target database {target} is not partitioned")
    started = clock()
    # A named source that is gone was migrated and deleted by an earlier run: it is skipped.
    names: Iterator[str] = (
        iter(only) if only else (n for n in couch.all_dbs(prefix=USERDB_PREFIX) if n != target)
    )
    if limit is not None:
        names = (n for i, n in enumerate(names) if i < limit)
    total = ConsolidateStats()
    sources = _sources_in_partition_order(names, secret, total)
    _assign_copies(couch, sources)
    window: deque[Future[ConsolidateStats]] = deque()
    log.info(
        "consolidate.start",
        target=target,
        sources=len(sources),
        concurrency=concurrency,
        delete=delete_sources,
    )
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        for start in range(0, len(sources), group_size):
            window.append(
                pool.submit(
                    _process_group,
                    couch,
                    target,
                    sources[start : start + group_size],
                    copies=shard_copies(info),
                    delete_sources=delete_sources,
                    verify_timeout=verify_timeout,
                    sleep=sleep,
                )
            )
            while len(window) >= 2 * concurrency:
                total.add(window.popleft().result())
                if total.sources % 1000 < group_size:
                    log.info("consolidate.progress", sources=total.sources)
        while window:
            total.add(window.popleft().result())
    duration = clock() - started
    log.info(
        "consolidate.summary",
        duration_seconds=round(duration, 3),
        sources_per_second=round(total.sources / duration, 1) if duration else 0,
        **total.counts(),
    )
    if total.failures:
        for failure in total.failures[:20]:
            log.error("consolidate.failure", detail=failure)
    return total
