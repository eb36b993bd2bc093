"""`audit`: proof that nothing older than a cutoff is readable, through every read channel.

Run after every purge (with the purge's own cutoff) and on demand (with the GDPR budget). For
each database, every way a client can read a document is tried, and whatever it returns is
judged by the age of its data (`couchops.retention.collected_at`):

- documents: ``_all_docs?include_docs`` with ``conflicts``, each conflicting revision by
  ``?rev=``, and every leaf (``open_revs=all``) of the documents with several leaves or
  deleted; attachments come inline with the revision that holds them;
- ``_changes?include_docs&style=all_docs``, tombstones included;
- Mango: ``_find`` of the documents dated before the cutoff, read three ways (plain,
  ``stable``, ``stable`` with ``update=false``);
- every view of every design document (JavaScript views and Mango indexes), read the same
  three ways: a row must belong to a document that is readable and within the retention, so
  a row of a purged document is found even though the document itself is gone;
- on Apache CouchDB, each shard copy on its own node (``/_node/<node>/<shard>``):
  ``_all_docs`` and ``_changes``, so a copy that holds what the clustered reads do not show
  (internal replication writing a purged document back) is found too.

Backups (``BACKUP_DIR``) are read line by line, each document judged by the budget: a backup
must never hold data older than it, whatever its manifest says.

A finding is a document id (never its content) with its channel and age; ids carry no
personal data, by design. The run fails (exit 4) when anything is found.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

from couchops import jsoncodec
from couchops.backup import list_backups, load_manifest, manifest_instant, read_lines
from couchops.couch import JSON, Couch, copy_path, db_path, doc_path, shard_copies
from couchops.errors import AuditFindings, CouchError, OpsError, PartialFailure, describe
from couchops.log import logger
from couchops.pseudonym import label
from couchops.purge import leaves, purge_request, refresh_indexes, scan_changes
from couchops.retention import DataCutoff, collected_at, first_seen_ledger
from couchops.timestamps import iso

PAGE = 2000
KEPT_FINDINGS = 100
READS: tuple[tuple[str, dict[str, Any]], ...] = (
    ("plain", {}),
    ("stable", {"stable": True}),
    ("stable,update=false", {"stable": True, "update": False}),
)


@dataclass
class Finding:
    where: str
    channel: str
    doc_id: str
    age_days: float | None
    """None: a view row whose document is not readable at all (purged, or never indexed
    away)."""


@dataclass
class AuditReport:
    cutoff: datetime
    now: datetime
    databases: int = 0
    databases_failed: int = 0
    backups: int = 0
    reads: int = 0
    findings: int = 0
    kept: list[Finding] = field(default_factory=list)
    index_rows_repaired: int = 0
    """Documents whose rows a copy of an index kept after their purge, purged again by id."""
    oldest_database_data: datetime | None = None
    oldest_backup_data: datetime | None = None

    def found(self, finding: Finding) -> None:
        self.findings += 1
        if len(self.kept) < KEPT_FINDINGS:
            self.kept.append(finding)
            logger().error("audit.finding", **finding.__dict__)

    def counts(self) -> dict[str, float]:
        def age(instant: datetime | None) -> float:
            return round((self.now - instant).total_seconds(), 3) if instant else 0.0

        return {
            "findings": self.findings,
            "databases": self.databases,
            "databases_failed": self.databases_failed,
            "backups": self.backups,
            "reads": self.reads,
            "index_rows_repaired": self.index_rows_repaired,
            "oldest_database_data_age_seconds": age(self.oldest_database_data),
            "oldest_backup_data_age_seconds": age(self.oldest_backup_data),
            "cutoff_age_seconds": age(self.cutoff),
        }


PLACEHOLDER_REVISION = "1-" + "0" * 32
"""A revision no document has: a purge of it changes no document, and is recorded all the
same (CouchDB 3.5.2 `couch_db_updater:purge_docs` records a purge info per request)."""


def purge_ids_that_exist_nowhere(couch: Couch, db: str, doc_ids: list[str]) -> int:
    """Make every copy of every index drop its rows of these documents, once it is sure that
    none of them exists on any copy: a purge of an id is applied by each copy's indexes to
    every row of that id, whatever the revision (`couch_mrview_updater:purge/4`), and a
    purge of a revision the document does not have changes no document. Rows of purged
    documents that a copy of an index kept (a view compaction that raced the purges, CouchDB
    3.5.2) are so removed, on the copies no read reached too. Answers how many ids went."""
    gone: list[str] = []
    for start in range(0, len(doc_ids), 100):
        batch = doc_ids[start : start + 100]
        rows = couch.post(f"{db_path(db)}/_all_docs", {"keys": batch}).get("rows", [])
        # not_found: no revision at all (a deleted document answers "deleted"), and no leaf
        # in the changes feed either.
        missing = [str(r["key"]) for r in rows if r.get("error") == "not_found"]
        present = leaves(couch, db, missing) if missing else {}
        gone.extend(i for i in missing if not present.get(i))
    info = couch.db_info(db) or {}
    copies = shard_copies(info)
    for start in range(0, len(gone), 100):
        body = {i: [PLACEHOLDER_REVISION] for i in gone[start : start + 100]}
        purge_request(couch, db, body, copies=copies)
    if gone:
        logger().warning("audit.index_rows_repaired", database=db, documents=len(gone))
    return len(gone)


class _DatabaseAudit:
    def __init__(
        self, couch: Couch, db: str, keep: DataCutoff, report: AuditReport, repair: bool
    ) -> None:
        self.couch, self.db, self.keep, self.report = couch, db, keep, report
        self.repair = repair
        self.where = label(db)
        self.first_seen = first_seen_ledger(couch, db)
        info = couch.db_info(db) or {}
        self.partitioned = bool((info.get("props") or {}).get("partitioned"))
        self.readable: set[str] = set()
        """Ids of the documents a client may read now and whose data is within the cutoff."""
        self.partitions: set[str] = set()
        """Every partition a document id seen by this audit names (a partitioned database's
        partitioned views answer per partition only)."""

    def judge(self, channel: str, doc: JSON) -> bool:
        """Whether `doc` (as `channel` returned it) is within the cutoff; reports it if not."""
        self.report.reads += 1
        born = collected_at(doc, self.keep.timestamp_field, self.keep.now, self.first_seen)
        if born is None:
            return True
        report = self.report
        if report.oldest_database_data is None or born < report.oldest_database_data:
            report.oldest_database_data = born
        if born >= self.keep.cutoff:
            return True
        age = (self.keep.now - born).total_seconds() / 86400
        report.found(Finding(self.where, channel, str(doc.get("_id")), round(age, 2)))
        return False

    def run(self) -> None:
        self.documents(db_path(self.db), "")
        self.changes(db_path(self.db), "")
        self.mango()
        self.views()
        for path, copy in self.copies():
            self.documents(path, f" on copy {copy}", leaves=False)
            self.changes(path, f" on copy {copy}")

    def _all_docs(self, path: str) -> Iterator[JSON]:
        params: dict[str, Any] = {"include_docs": True, "conflicts": True, "limit": PAGE + 1}
        while True:
            rows = self.couch.get(f"{path}/_all_docs", params=params).get("rows", [])
            for row in rows[:PAGE]:
                if isinstance(row.get("doc"), dict):
                    yield row["doc"]
            if len(rows) <= PAGE:
                return
            params = {**params, "startkey": rows[PAGE]["id"]}

    def saw(self, doc_id: str) -> None:
        if self.partitioned and ":" in doc_id and not doc_id.startswith("_"):
            self.partitions.add(doc_id.split(":", 1)[0])

    def documents(self, path: str, copy: str, *, leaves: bool = True) -> None:
        for doc in self._all_docs(path):
            self.saw(str(doc.get("_id", "")))
            if self.judge(f"_all_docs{copy}", doc) and not copy:
                self.readable.add(str(doc["_id"]))
            if leaves and doc.get("_conflicts"):
                self.leaves(str(doc["_id"]))

    def leaves(self, doc_id: str) -> None:
        """Every leaf of a document, by `open_revs=all` and each by `?rev=` (bodies of
        conflicting and deleted revisions, attachments inline)."""
        path = doc_path(self.db, doc_id)
        answer = self.couch.request(
            "GET",
            path,
            params={"open_revs": "all", "attachments": True},
            headers={"Accept": "application/json"},
            ok=(200, 404),
        )
        if answer.status_code == 404:
            return
        for item in answer.json():
            leaf = item.get("ok") if isinstance(item, dict) else None
            if not isinstance(leaf, dict):
                continue
            self.judge("open_revs=all", leaf)
            # The bodies still on disk of the leaf's earlier revisions (until compaction).
            history = self.couch.request(
                "GET", path, params={"rev": leaf.get("_rev"), "revs_info": True}, ok=(200, 404)
            )
            if history.status_code != 200:
                continue
            for info in history.json().get("_revs_info") or []:
                if info.get("status") != "available":
                    continue
                response = self.couch.request(
                    "GET", path, params={"rev": info.get("rev"), "attachments": True}, ok=(200, 404)
                )
                if response.status_code == 200:
                    self.judge("?rev=", response.json())

    def changes(self, path: str, copy: str) -> None:
        for change in scan_changes(self.couch, self.db, None, at=path):
            self.saw(str(change.get("id", "")))
            doc = change.get("doc")
            if isinstance(doc, dict):
                self.judge(f"_changes{copy}", doc)
            if not copy and (change.get("deleted") or len(change.get("changes") or []) > 1):
                self.leaves(str(change["id"]))

    def mango(self) -> None:
        selector = {self.keep.timestamp_field: {"$lt": iso(self.keep.cutoff)}}
        for mode, params in READS:
            body: JSON = {"selector": selector, "limit": PAGE, **params}
            while True:
                answer = self.couch.post(f"{db_path(self.db)}/_find", body)
                docs = answer.get("docs") or []
                for doc in docs:
                    self.judge(f"_find ({mode})", doc)
                if len(docs) < PAGE or not answer.get("bookmark"):
                    break
                body = {**body, "bookmark": answer["bookmark"]}

    def views(self) -> None:
        rows = self.couch.get(
            f"{db_path(self.db)}/_all_docs",
            params={"startkey": "_design/", "endkey": "_design0", "include_docs": True},
        ).get("rows", [])
        for row in rows:
            ddoc = row.get("doc") or {}
            # In a partitioned database a design document is partitioned unless it says not,
            # and CouchDB refuses a global query of its views (400 "`partition` parameter is
            # mandatory"): those are read partition by partition, over every partition a
            # document or a change names. (A partition no document or change names any more
            # has no rows to read this way; the purge removes a purged document's rows from
            # every index it refreshes.)
            partitioned = (
                self.partitioned and (ddoc.get("options") or {}).get("partitioned") is not False
            )
            base = db_path(self.db)
            prefixes = (
                [f"{base}/_partition/{quote(p, safe='')}" for p in sorted(self.partitions)]
                if partitioned
                else [base]
            )
            for view in sorted(ddoc.get("views") or {}):
                for prefix in prefixes:
                    self.view(prefix, str(row["id"]), view)

    def view(self, prefix: str, ddoc: str, view: str) -> None:
        path = f"{prefix}/{ddoc}/_view/{view}"
        for mode, params in READS:
            orphans = self.orphan_rows(path, params)
            if orphans:
                # Rows of documents written or deleted by the site since this audit listed
                # them are no finding: a document readable now is judged as any other, and
                # the index is brought up to date before a row without one is reported.
                orphans = {i for i in orphans if not self.readable_now(i)}
            if orphans:
                refresh_indexes(self.couch, self.db, self.partitioned)
                orphans &= self.orphan_rows(path, params)
            if orphans and self.repair:
                self.report.index_rows_repaired += purge_ids_that_exist_nowhere(
                    self.couch, self.db, sorted(orphans)
                )
                refresh_indexes(self.couch, self.db, self.partitioned)
                orphans &= self.orphan_rows(path, params)
            for doc_id in sorted(orphans):
                self.report.found(Finding(self.where, f"view {ddoc}/{view} ({mode})", doc_id, None))

    def orphan_rows(self, path: str, params: dict[str, Any]) -> set[str]:
        """Ids of the view's rows whose document this audit did not find readable."""
        orphans: set[str] = set()
        query: JSON = {"reduce": False, "limit": PAGE + 1, **params}
        while True:
            rows = self.couch.get(path, params=query).get("rows", [])
            for entry in rows[:PAGE]:
                self.report.reads += 1
                doc_id = str(entry.get("id"))
                if doc_id not in self.readable and not doc_id.startswith("_design/"):
                    orphans.add(doc_id)
            if len(rows) <= PAGE:
                return orphans
            query = {**query, "startkey": rows[PAGE]["key"]}
            query["startkey_docid"] = rows[PAGE]["id"]

    def readable_now(self, doc_id: str) -> bool:
        doc = self.couch.get_doc(self.db, doc_id)
        if doc is None:
            return False
        if self.judge("_all_docs", doc):
            self.readable.add(doc_id)
        return True

    def copies(self) -> Iterator[tuple[str, str]]:
        """Every shard copy's node-local path (Apache CouchDB 3, as an admin), with a name."""
        if not self.couch.is_apache_couchdb():
            return
        response = self.couch.request(
            "GET", f"/_node/_local/_dbs{db_path(self.db)}", ok=(200, 401, 403, 404)
        )
        if response.status_code != 200:
            return
        shard_map = response.json()
        for shard_range, nodes in sorted((shard_map.get("by_range") or {}).items()):
            for node in nodes:
                yield copy_path(node, shard_range, self.db, shard_map), f"{node}/{shard_range}"


def audit_backups(backup_dir: Path, keep: DataCutoff, report: AuditReport) -> None:
    """Every line of every complete backup judged by `keep` (the budget)."""
    for path in list_backups(backup_dir):
        manifest = load_manifest(path)
        created = manifest_instant(manifest["created_at"])
        report.backups += 1
        for entry in manifest["databases"]:
            untimed = dict(entry.get("untimed_first_seen") or {})
            where = f"backup {path.name} {label(str(entry['name']))}"
            for line in read_lines(path / str(entry["file"])):
                doc = jsoncodec.loads(line)
                report.reads += 1
                born = collected_at(doc, keep.timestamp_field, keep.now, untimed, created)
                if born is None:
                    continue
                if report.oldest_backup_data is None or born < report.oldest_backup_data:
                    report.oldest_backup_data = born
                if born < keep.cutoff:
                    age = round((keep.now - born).total_seconds() / 86400, 2)
                    report.found(Finding(where, "backup file", str(doc.get("_id")), age))


def audit(
    couch: Couch,
    keep: DataCutoff,
    *,
    databases: list[str] | None = None,
    backup_dir: Path | None = None,
    backup_keep: DataCutoff | None = None,
    repair: bool = False,
) -> AuditReport:
    """Audit every database with data (or the ones named) against `keep`, and the backups in
    `backup_dir` against `backup_keep`. One database that cannot be read is reported and the
    others are audited; the run then fails. With `repair`, view rows of documents that exist
    nowhere are purged by id (`purge_ids_that_exist_nowhere`) before they are judged."""
    log = logger()
    report = AuditReport(keep.cutoff, keep.now)
    names = (
        [n for n in couch.all_dbs() if not n.startswith("_")] if databases is None else databases
    )
    log.info("audit.start", cutoff=iso(keep.cutoff), databases=len(names))
    failed = []
    for db in names:
        try:
            _DatabaseAudit(couch, db, keep, report, repair).run()
        except (CouchError, OpsError, ValueError, KeyError) as exc:
            failed.append(label(db))
            log.error("audit.database_failed", database=db, reason=describe(exc))
        report.databases += 1
    report.databases_failed = len(failed)
    if backup_dir is not None and backup_keep is not None:
        audit_backups(backup_dir, backup_keep, report)
    log.info("audit.summary", **report.counts())
    if failed:
        raise PartialFailure(
            f"audit incomplete: {len(failed)} databases unreadable: {', '.join(failed)}",
            report.counts(),
        )
    if report.findings:
        first = report.kept[0]
        raise AuditFindings(
            f"{report.findings} readable items older than {iso(report.cutoff)}; first: "
            f"{first.doc_id} in {first.where} through {first.channel}",
            report.counts(),
        )
    return report
