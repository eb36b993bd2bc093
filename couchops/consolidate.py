"""`consolidate`: migrate legacy per-user databases into the single partitioned database.

Each ``userdb-<hex>`` source's documents are read (winning revisions, conflicting leaves too,
attachments inline) and written to the target under ``<partition>:<id>`` with their revision
ids kept (``_bulk_docs`` with ``new_edits=false``), so a second run writes nothing new: the
migration is idempotent, and a run killed midway is finished by running it again. Deleted
documents and deleted leaves are not migrated: they hold no data to keep.

No replication is started: workers read many small sources each and write them to the target
in large batches, which keeps 50,000 sources practical (the replicator runs at most a few
hundred jobs at once, and one replication per database costs far more than one read).

Sources are taken in the order of their partition keys, so a group's documents fill one
contiguous stretch of the target's ids: its writes touch neighbouring pages of the id index,
and it is read back with one ``_all_docs`` key range (from its first partition to its last)
instead of a look-up per id, which costs a CouchDB cluster about three times more server CPU
(a fetch from every copy for each id; 25 s against 8.5 s for 12,000 documents in 2,000
partitions on a 3-node CouchDB 3.5.2, and a single range less again). A source is *verified*
when the target *holds* every leaf read from it (the winner and each conflicting leaf of every
document), re-reading within a bound because a fresh write may not have reached every copy
yet. The target holds a revision when it is a live leaf there or an ancestor of one (the
application updated the migrated document since); a revision whose only descendants in the
target are deleted is not held. Only the range's winners are compared; a document whose
leaves are not just the target's winner is looked up (``open_revs=all&revs=true``).

Deleting (``--delete-sources``) asks more, since a source may have changed after it was read,
or its read may have missed what another shard copy holds (`_delete_verified`). Design
documents of sources are not migrated (counted).
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
    """With `delete_sources`, only the sources that passed every check before deletion."""
    sources_failed: int = 0
    sources_changed: int = 0
    """Of the failed: written to after they were read (kept for the next run)."""
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


@dataclass(frozen=True)
class _State:
    """A source's info at one moment (`GET /{db}`): a write moves it."""

    doc_count: Any
    doc_del_count: Any
    """Absent (None) on pouchdb-server."""
    update_seq: Any
    """An integer, or CouchDB 3's `<sum of the answering copies' sequences>-<opaque>`."""


@dataclass
class _Source:
    name: str
    partition: str
    expected: dict[str, frozenset[str]] = field(default_factory=dict)
    """New id -> the document's leaves read (winner and conflicting leaves)."""
    copies: list[tuple[Couch, str]] = field(default_factory=list)
    """Where to read one copy of each shard range (CouchDB 3: `Couch.copy_location`), else
    empty."""
    state: _State | None = None
    """The source's info read before its documents, when it is to be deleted."""


def _rows(couch: Couch, path: str, *, attachments: bool = True) -> Iterator[JSON]:
    """Every row of the `_all_docs` at `path` with its document and conflicts (attachments
    inline, or as stubs)."""
    params: dict[str, Any] = {
        "include_docs": True,
        "attachments": attachments,
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
        source.expected[new_id] = frozenset({str(doc["_rev"]), *map(str, conflicts or ())})
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


def _target_winners(couch: Couch, target: str, first: str, last: str) -> dict[str, str]:
    """Id -> winning revision of every document the target holds (not deleted) in partitions
    `first` to `last`, inclusive: one key range, paged (`_all_docs` orders ids by code point,
    and `;` follows `:`)."""
    found: dict[str, str] = {}
    params: dict[str, Any] = {
        "start_key": f"{first}:",
        "end_key": f"{last};",
        "inclusive_end": False,
        "limit": VERIFY_PAGE,
    }
    while True:
        response = couch.request("GET", f"{db_path(target)}/_all_docs", params=params)
        rows = jsoncodec.loads(response.content).get("rows", [])
        found.update((str(row["id"]), str((row.get("value") or {}).get("rev"))) for row in rows)
        if len(rows) < VERIFY_PAGE:
            return found
        params = {**params, "start_key": rows[-1]["id"], "skip": 1}


def _target_leaves(couch: Couch, target: str, doc_id: str) -> list[JSON]:
    """Every leaf of a target document, deleted ones included, each with its `_revisions`;
    none when the document does not exist."""
    response = couch.request(
        "GET", doc_path(target, doc_id), params={"open_revs": "all", "revs": True}, ok=(200, 404)
    )
    if response.status_code == 404:
        return []
    answer = jsoncodec.loads(response.content)
    return [item["ok"] for item in answer if isinstance(item, dict) and "ok" in item]


def _lineage(leaf: JSON) -> set[str]:
    """A leaf's revision and its ancestors' (as far as `_revisions` goes back)."""
    history = leaf.get("_revisions") or {}
    start, ids = history.get("start"), history.get("ids")
    revs = {str(leaf.get("_rev"))}
    if isinstance(start, int) and isinstance(ids, list):
        revs.update(f"{start - depth}-{rev_id}" for depth, rev_id in enumerate(ids))
    return revs


def _not_held(wanted: frozenset[str], leaves: list[JSON]) -> list[str]:
    """The revisions of `wanted` that are neither a live leaf among `leaves` nor an ancestor
    of one."""
    live = set().union(*(_lineage(leaf) for leaf in leaves if not leaf.get("_deleted")))
    return sorted(wanted - live)


def _unheld(
    couch: Couch, target: str, wanted: dict[str, frozenset[str]], first: str, last: str
) -> set[str]:
    """The ids of `wanted` (new id -> revisions) whose revisions the target does not all hold,
    its documents being in partitions `first` to `last`."""
    winners = _target_winners(couch, target, first, last)
    unheld = set()
    for doc_id, revs in wanted.items():
        winner = winners.get(doc_id)
        if winner is not None and (
            revs == {winner} or not _not_held(revs, _target_leaves(couch, target, doc_id))
        ):
            continue
        unheld.add(doc_id)
    return unheld


def _why_unheld(couch: Couch, target: str, doc_id: str, revs: frozenset[str]) -> str:
    """Why the target does not hold `revs` of a document, in words (one look-up)."""
    leaves = _target_leaves(couch, target, doc_id)
    missing = _not_held(revs, leaves)
    if not leaves:
        return f"{doc_id} is not in the target"
    if not missing:
        return f"{doc_id} was not complete in the target in time"
    deleted = set().union(*(_lineage(leaf) for leaf in leaves if leaf.get("_deleted")))
    where = "deleted in the target" if missing[0] in deleted else "not in the target"
    return f"revision {missing[0]} of {doc_id} is {where}"


def _verify(
    couch: Couch,
    target: str,
    group: list[_Source],
    sources: list[_Source],
    *,
    refused: dict[str, str],
    stats: ConsolidateStats,
    timeout: float,
    sleep: Callable[[float], None],
) -> list[_Source]:
    """The sources whose every leaf read the target holds, re-read within `timeout`; the
    others are counted and reported as failed."""
    wanted = {new_id: revs for s in sources for new_id, revs in s.expected.items()}
    first, last = group[0].partition, group[-1].partition
    deadline = time.monotonic() + timeout
    unheld = _unheld(couch, target, wanted, first, last) if wanted else set()
    while unheld and time.monotonic() < deadline:
        sleep(0.5)
        unheld = _unheld(couch, target, {i: wanted[i] for i in unheld}, first, last)
    verified = []
    for source in sources:
        missing = sorted(i for i in source.expected if i in unheld)
        if not missing:
            verified.append(source)
            continue
        reason = refused.get(missing[0]) or _why_unheld(
            couch, target, missing[0], source.expected[missing[0]]
        )
        _fail(
            stats,
            source,
            f"{len(missing)} of {len(source.expected)} documents not complete in {target} "
            f"(first: {reason})",
        )
    return verified


def _fail(
    stats: ConsolidateStats,
    source: _Source,
    reason: str,
    *,
    event: str = "consolidate.source_unverified",
) -> None:
    """Count, report and log a source left in place (`event`: `consolidate.source_changed`
    counts it as changed too)."""
    stats.sources_failed += 1
    stats.sources_changed += event == "consolidate.source_changed"
    stats.failures.append(f"{source.name}: {reason}")
    logger().error(event, source=source.name, reason=reason)


def _state(couch: Couch, name: str) -> _State | None:
    """A source's info now, or None when it is gone."""
    info = couch.db_info(name)
    if info is None:
        return None
    return _State(info.get("doc_count"), info.get("doc_del_count"), info.get("update_seq"))


def _seq_number(seq: Any) -> str:
    """The number of an update sequence, for a reader (CouchDB 3's opaque part dropped)."""
    return str(seq).split("-", 1)[0]


def _change(couch: Couch, name: str, before: _State, now: _State) -> str | None:
    """How a source changed since `before`, or None. Counts compare exactly. A CouchDB 3
    cluster's `update_seq` names the shard copies that answered, which differ from one read to
    the next: a different one is a change only when the changes feed since the earlier one
    lists any."""
    for what in ("doc_count", "doc_del_count"):
        if getattr(before, what) != getattr(now, what):
            return f"{what} {getattr(before, what)} -> {getattr(now, what)}"
    if now.update_seq != before.update_seq:
        feed = couch.get(
            f"{db_path(name)}/_changes", params={"since": before.update_seq, "limit": 1}
        )
        if feed.get("results"):
            return (
                f"its changes feed lists writes since update_seq {_seq_number(before.update_seq)}"
            )
    return None


def _leaves_now(couch: Couch, source: _Source) -> dict[str, frozenset[str]] | None:
    """New id -> leaves of every document the source holds now (design documents aside),
    read through the clustered database; None when the source is gone."""
    held: dict[str, frozenset[str]] = {}
    try:
        for row in _rows(couch, db_path(source.name), attachments=False):
            doc = row.get("doc")
            if not doc or str(doc["_id"]).startswith("_design/"):
                continue
            revs = frozenset({str(doc["_rev"]), *map(str, doc.get("_conflicts") or ())})
            held[consolidated_id(source.partition, str(doc["_id"]))] = revs
    except CouchError as exc:
        if exc.status == 404:
            return None
        raise
    return held


def _delete_verified(
    couch: Couch,
    target: str,
    group: list[_Source],
    verified: list[_Source],
    stats: ConsolidateStats,
) -> None:
    """Delete each verified source whose documents the target holds as it is now, unless it
    changed since it was read.

    1. Every source is read again (`_leaves_now`): a read from one shard copy may have missed
       what another copy holds, and this read answers each range from whichever copy is
       first. The target must hold every leaf of every document (one key range for the
       group, look-ups for documents with several leaves).
    2. Then, for each source in turn, its info is read once more and compared with the one
       read before its documents were (`_change`): any write since keeps it, reported as
       changed; the next run copies it again (idempotently) and retries.
    3. The `DELETE` follows that last read at once. CouchDB has no conditional database
       deletion (no revision or sequence precondition on `DELETE /{db}`), so a write that
       lands between the last read's answer and the deletion, one round trip, is lost with
       the source; so is one that only shard copies none of the reads consulted hold yet.
    """
    log = logger()
    now: dict[str, dict[str, frozenset[str]]] = {}
    for source in verified:
        leaves = _leaves_now(couch, source)
        if leaves is None:
            log.info("consolidate.source_gone", source=source.name)
        else:
            now[source.name] = leaves
    wanted = {new_id: revs for leaves in now.values() for new_id, revs in leaves.items()}
    first, last = group[0].partition, group[-1].partition
    unheld = _unheld(couch, target, wanted, first, last) if wanted else set()
    for source in verified:
        if source.name in now:
            _delete_unless_changed(
                couch, target, source, now[source.name], unheld=unheld, stats=stats
            )


def _delete_unless_changed(
    couch: Couch,
    target: str,
    source: _Source,
    leaves: dict[str, frozenset[str]],
    *,
    unheld: set[str],
    stats: ConsolidateStats,
) -> None:
    """Steps 2 and 3 of `_delete_verified` for one source, whose documents as read again are
    `leaves`, the target not holding those of `unheld`."""
    if source.state is None or source.state.update_seq is None:
        _fail(
            stats,
            source,
            "CouchDB gave no update_seq for it, so a write after the read cannot be ruled out: "
            "not deleted",
            event="consolidate.source_kept",
        )
        return
    lacking = sorted(i for i in leaves if i in unheld)
    state = _state(couch, source.name)
    if state is None:
        logger().info("consolidate.source_gone", source=source.name)
        return
    change = _change(couch, source.name, source.state, state)
    if change is None and not lacking:
        couch.request("DELETE", db_path(source.name), ok=(200, 202, 404))
        _deleted(couch, source, stats)
    elif change is not None:
        _fail(
            stats,
            source,
            f"written to after it was read ({change}): not deleted, left for the next run",
            event="consolidate.source_changed",
        )
    else:
        reason = _why_unheld(couch, target, lacking[0], leaves[lacking[0]])
        _fail(
            stats,
            source,
            f"{len(lacking)} of its {len(leaves)} documents as it is now are not complete in "
            f"{target} (first: {reason}): not deleted",
            event="consolidate.source_kept",
        )


def _deleted(couch: Couch, source: _Source, stats: ConsolidateStats) -> None:
    """Count a deleted source; the user's account goes with their data
    (`couchops.accounts`)."""
    stats.sources_verified += 1
    stats.documents_verified += len(source.expected)
    stats.sources_deleted += 1
    stats.accounts_purged += purge_documents(
        couch, USERS, [account_id(user_from_userdb(source.name) or "")]
    )


def _read_group(
    couch: Couch, group: list[_Source], stats: ConsolidateStats, *, with_state: bool
) -> tuple[list[_Source], list[JSON]]:
    """The sources of the group still there and their documents to write. `with_state`:
    each source's info is read first, so that any write after its documents' read moves
    it."""
    sources: list[_Source] = []
    docs: list[JSON] = []
    for source in group:
        read: list[JSON] | None = None
        try:
            source.state = _state(couch, source.name) if with_state else None
            if source.state is not None or not with_state:
                read = _read_source(couch, source, stats)
        except CouchError as exc:
            if exc.status != 404:
                raise
        if read is None:
            logger().info("consolidate.source_gone", source=source.name)
            continue
        docs.extend(read)
        sources.append(source)
        stats.sources += 1
    return sources, docs


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
    """Read, write and verify a group of sources, in partition order; delete them if asked."""
    stats = ConsolidateStats()
    sources, docs = _read_group(couch, group, stats, with_state=delete_sources)
    refused = _write(couch, target, docs, copies) if docs else {}
    stats.documents_copied += len(docs)
    verified = _verify(
        couch,
        target,
        group,
        sources,
        refused=refused,
        stats=stats,
        timeout=verify_timeout,
        sleep=sleep,
    )
    if delete_sources:
        _delete_verified(couch, target, group, verified, stats)
    else:
        stats.sources_verified += len(verified)
        stats.documents_verified += sum(len(s.expected) for s in verified)
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
