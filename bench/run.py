"""Benchmarks of couchops against the CouchDB named by COUCHDB_URL, beside the usual tools.

    COUCHDB_URL=http://127.0.0.1:15984 COUCHDB_ADMIN_USER=admin COUCHDB_ADMIN_PASSWORD=... \
        .venv/bin/python bench/run.py --users 10000 --sources 2000

Seeds USERS users of realistic onboarding documents (several per user, some with attachments,
a share older than 30 days) in one database, then times, in the same run and on the same data:

- backup:  couchops vs `couchbackup --attachments` (npm), both with every leaf revision
           (a share of the documents has a conflict) and the attachments;
- restore: couchops vs `couchrestore --attachments` (npm), each into an empty database, the
           leaves restored counted on both sides against the source's;
- purge:   couchops (find + decide + purge everything older than 30 days) vs the raw `_purge`
           API given the precomputed id/revision list (100 ids a request, 8 in flight), each
           on its own copy restored from the same backup;
- consolidation: couchops over SOURCES legacy `userdb-<hex>` databases vs one one-shot
           `_replicate` per source database (8 in flight) over a sample of them.

Each timed run starts on a quiet server (no entry left in `/_active_tasks`: index builds and
compactions that earlier runs set off), and each restored copy is dropped right after its run.
Prints one line per figure and writes them as JSON under .bench/ (gitignored). Every database
it creates is named `bench-*` or `userdb-62656e6368…` (hex of "bench…") and deleted at the end.
Seeding and cleanup are not timed.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from couchops.backup import BackupRetention, backup, copy_path, restore  # noqa: E402
from couchops.consolidate import consolidate  # noqa: E402
from couchops.couch import Couch, db_path  # noqa: E402
from couchops.log import configure  # noqa: E402
from couchops.partition import partition_key, userdb_name  # noqa: E402
from couchops.purge import (  # noqa: E402
    PurgeOptions,
    index_fields,
    purge,
    purge_index_specs,
    purge_indexes,
    refresh_indexes,
)
from couchops.timestamps import iso  # noqa: E402

NODE_BIN = REPO / "node_modules" / ".bin"
DB = "bench-onboarding"
SECRET = b"bench-partition-secret"
STEPS = ("identity", "contact", "situation", "income", "documents", "signature")
JOURNEYS = ("private-individual", "professional", "student", "joint-account")


def onboarding_docs(
    rng: random.Random, per_user: int, *, old_share: float, attachment_share: float, now: datetime
) -> list[dict[str, Any]]:
    """A user's documents, shaped like the onboarding site's (no personal data in ids)."""
    old = rng.random() < old_share
    created = now - timedelta(days=rng.uniform(31, 90) if old else rng.uniform(0, 29))
    docs = []
    for index in range(per_user):
        kind = ("profile", "application", "consent", "step", "document")[min(index, 4)]
        doc: dict[str, Any] = {
            "_id": f"{index:02d}-{kind}",
            "type": kind,
            "createdAt": iso(created + timedelta(minutes=index)),
            "journey": rng.choice(JOURNEYS),
            "step": rng.choice(STEPS),
            "status": rng.choice(("draft", "submitted", "in-review", "accepted")),
            "answers": {
                "civility": rng.choice(("M", "Mme")),
                "birthYear": rng.randint(1940, 2007),
                "employment": rng.choice(("employee", "self-employed", "student", "retired")),
                "incomeBand": rng.choice("ABCDE"),
                "housing": rng.choice(("owner", "tenant", "family")),
                "products": rng.sample(
                    ["current", "savings", "card-premium", "card-classic", "loan"], 2
                ),
            },
            "consents": {"marketing": rng.random() < 0.3, "terms": True, "version": "2026-09"},
        }
        if index == 4 and rng.random() < attachment_share:
            size = rng.randint(2_000, 6_000)
            doc["_attachments"] = {
                "scan.jpg": {
                    "content_type": "image/jpeg",
                    "data": base64.b64encode(rng.randbytes(size)).decode(),
                }
            }
        docs.append(doc)
    return docs


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def bulk(couch: Couch, db: str, docs: list[dict[str, Any]], new_edits: bool = True) -> None:
    answer = couch.post(f"{db_path(db)}/_bulk_docs", {"docs": docs, "new_edits": new_edits})
    errors = [r for r in answer if isinstance(r, dict) and r.get("error")]
    if errors:
        raise RuntimeError(f"seeding {db}: {errors[0]}")


def chunks(items: list[Any], size: int) -> Iterator[list[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def wait_count(couch: Couch, db: str, expected: int, timeout: float = 120) -> int:
    deadline = time.monotonic() + timeout
    while True:
        count = int((couch.db_info(db) or {}).get("doc_count", 0))
        if count >= expected or time.monotonic() > deadline:
            return count
        time.sleep(0.5)


def create_db(couch: Couch, name: str, partitioned: bool) -> None:
    couch.request("DELETE", db_path(name), ok=(200, 202, 404))
    params: dict[str, Any] = {"partitioned": True} if partitioned else {}
    couch.request("PUT", db_path(name), params=params, ok=(201, 202))


def url_with_credentials(url: str, user: str, password: str) -> str:
    parts = urlsplit(url)
    netloc = f"{quote(user, safe='')}:{quote(password, safe='')}@{parts.netloc}"
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.url = os.environ.get("COUCHDB_URL", "").rstrip("/")
        if not self.url:
            raise SystemExit("set COUCHDB_URL (and COUCHDB_ADMIN_USER / COUCHDB_ADMIN_PASSWORD)")
        self.user = os.environ.get("COUCHDB_ADMIN_USER", "admin")
        self.password = os.environ.get("COUCHDB_ADMIN_PASSWORD", "")
        self.couch = Couch(
            self.url,
            (self.user, self.password),
            timeout=600,
            retries=2,
            node_urls=os.environ.get("COUCHDB_NODE_URLS") or None,
        )
        self.is_couchdb = self.couch.is_apache_couchdb()
        membership = self.couch.request("GET", "/_membership", ok=(200, 404))
        nodes = membership.json().get("cluster_nodes", []) if membership.status_code == 200 else []
        welcome = self.couch.get("/")
        kind = "Apache CouchDB" if self.is_couchdb else "pouchdb-server"
        self.server = f"{kind} {welcome.get('version')}, {len(nodes)} node(s)"
        self.results: dict[str, Any] = {
            "server": self.server,
            "started": iso(datetime.now(UTC)),
            "args": vars(args),
        }
        self.work = Path(tempfile.mkdtemp(prefix="couchops-bench-"))
        self.created: list[str] = []

    def settle(self, bound: float = 600.0, quiet: float = 10.0) -> None:
        """Wait until the server has had no background task (index builds, compactions) for
        `quiet` seconds, so each timed run starts on a quiet server and pays for no earlier
        run's aftermath (CouchDB starts compacting a purged database some seconds after)."""
        deadline = time.monotonic() + bound
        calm_since = time.monotonic()
        while time.monotonic() < deadline:
            answer = self.couch.request("GET", "/_active_tasks", ok=(200, 404))
            if answer.status_code == 404:
                return
            if answer.json():
                calm_since = time.monotonic()
            elif time.monotonic() - calm_since >= quiet:
                return
            time.sleep(1.0)

    def drop(self, name: str) -> None:
        self.couch.request("DELETE", db_path(name), ok=(200, 202, 404))

    def report(self, key: str, line: str, **figures: Any) -> None:
        self.results[key] = figures
        print(f"{key:<28} {line}", flush=True)

    # --- seeding -------------------------------------------------------------------------
    def seed(self) -> None:
        a = self.args
        rng = random.Random(a.seed)  # noqa: S311 (test data, not secrets)
        now = datetime.now(UTC)
        create_db(self.couch, DB, self.is_couchdb)
        self.created.append(DB)
        docs = []
        for user in range(a.users):
            partition = partition_key(f"bench-user-{user}", SECRET)
            for doc in onboarding_docs(
                rng,
                a.docs_per_user,
                old_share=a.old_share,
                attachment_share=a.attachment_share,
                now=now,
            ):
                doc["_id"] = f"{partition}:{doc['_id']}"
                docs.append(doc)
        seconds, _ = timed(lambda: self._parallel_bulk(DB, docs))
        self.total = len(docs)
        self.old = sum(
            1
            for d in docs
            if datetime.fromisoformat(d["createdAt"].replace("Z", "+00:00"))
            < now - timedelta(days=30)
        )
        self.attachments = sum(1 for d in docs if "_attachments" in d)
        conflicting = [
            {**doc, "_rev": f"1-{rng.getrandbits(128):032x}", "step": "conflict"}
            for doc in docs
            if rng.random() < a.conflict_share
        ]
        self._parallel_bulk(DB, conflicting, new_edits=False)
        wait_count(self.couch, DB, self.total)
        if self.is_couchdb:
            # As in production, where cluster-setup created them (and set the purge history
            # CouchDB keeps) and each daily run keeps them current: the purge's indexes exist
            # and are built before the purge is timed.
            self.couch.put(f"{db_path(DB)}/_purged_infos_limit", 100_000)
            for spec in purge_index_specs("createdAt", partitioned=True):
                self.couch.post(f"{db_path(DB)}/_index", spec)
            refresh_indexes(self.couch, DB, partitioned=True)
        self.leaves = self.count_leaves(DB)  # design documents included, as the restores count
        self.report(
            "seed",
            f"{self.total} docs ({a.users} users, {self.old} older than 30 days, "
            f"{self.attachments} with attachments, {self.leaves - self.total} conflicts) "
            f"in {seconds:.1f}s",
            documents=self.total,
            leaves=self.leaves,
            old=self.old,
            attachments=self.attachments,
            seconds=seconds,
        )

    def count_leaves(self, db: str) -> int:
        """Every document's live leaves (winner and conflicts), read in pages of `_all_docs`."""
        total, start = 0, None
        while True:
            params: dict[str, Any] = {"include_docs": True, "conflicts": True, "limit": 5000}
            if start is not None:
                params.update(startkey=start, skip=1)
            rows = self.couch.get(f"{db_path(db)}/_all_docs", params=params)["rows"]
            total += sum(1 + len(r["doc"].get("_conflicts", [])) for r in rows)
            if len(rows) < 5000:
                return total
            start = rows[-1]["id"]

    def _parallel_bulk(self, db: str, docs: list[dict[str, Any]], new_edits: bool = True) -> None:
        with ThreadPoolExecutor(max_workers=4) as pool:
            list(pool.map(lambda chunk: bulk(self.couch, db, chunk, new_edits), chunks(docs, 500)))

    # --- backup / restore ----------------------------------------------------------------
    def _npm_tool(self, args: list[str], **kwargs: Any) -> tuple[float, str | None]:
        """Run couchbackup/couchrestore; answers (seconds, error or None)."""
        env = {**os.environ, "COUCH_URL": url_with_credentials(self.url, self.user, self.password)}
        seconds, done = timed(
            lambda: subprocess.run(
                [str(NODE_BIN / args[0]), *args[1:]],
                stderr=subprocess.PIPE,
                env=env,
                check=False,
                **kwargs,
            )
        )
        if done.returncode != 0:
            lines = done.stderr.decode(errors="replace").strip().splitlines()
            return seconds, lines[-1] if lines else f"exit {done.returncode}"
        return seconds, None

    def _couchops_backup(self, round_: int) -> float:
        out = self.work / f"couchops-{round_}"
        self.settle()
        seconds, result = timed(
            lambda: backup(
                self.couch,
                out,
                retention=BackupRetention(),
                databases=[DB],
                concurrency=self.args.concurrency,
                # The same work as couchbackup's: every document, old ones included.
                every_document=True,
            )
        )
        self.backup_path = result.path
        self.backup_totals = result.manifest["totals"]
        return float(seconds)

    def _couchbackup(self) -> tuple[float, str | None]:
        self.settle()
        with self.couchbackup_file.open("wb") as sink:
            return self._npm_tool(["couchbackup", "--db", DB, "--attachments"], stdout=sink)

    def every_copy_holds(self, db: str, documents: int, started: float) -> float:
        """Seconds from `started` until every copy of every shard range of `db` counts its
        share of `documents` (on pouchdb-server, which has one copy: at once). A restore
        answered at the quorum (2 of 3 copies) ends before the third copy has caught up; the
        database is whole again only when every copy is."""
        if not self.is_couchdb:
            return time.monotonic() - started
        deadline = time.monotonic() + 600
        while True:
            # The moment the copies are asked: the answers' own latency does not count.
            asked = time.monotonic()
            counts: dict[str, int] = {}
            for client, path in self._all_copies(db):
                node = path.split("/")[2]
                counts[node] = counts.get(node, 0) + int(client.get(path)["doc_count"])
            if (counts and all(n == documents for n in counts.values())) or (
                time.monotonic() > deadline
            ):
                return asked - started
            time.sleep(0.1)

    def _all_copies(self, db: str) -> list[tuple[Couch, str]]:
        shard_map = self.couch.get(f"/_node/_local/_dbs{db_path(db)}")
        return [
            (self.couch.node_client(node) or self.couch, copy_path(node, shard, db, shard_map))
            for shard, nodes in sorted(shard_map["by_range"].items())
            for node in nodes
        ]

    def _couchops_restore(self, round_: int) -> tuple[float, float, int]:
        """Into an empty database created beforehand, as couchrestore's is."""
        target = f"bench-restore-couchops-{round_}"
        self.drop(target)
        create_db(self.couch, target, self.is_couchdb)
        self.created.append(target)
        self.settle()
        started = time.monotonic()
        restore(
            self.couch, self.backup_path, mapping={DB: target}, concurrency=self.args.concurrency
        )
        answered = time.monotonic() - started
        whole = self.every_copy_holds(target, self.backup_totals["documents"], started)
        leaves = self.count_leaves(target)
        # Dropped at once: the restored copy's index builds must not weigh on the next run.
        self.drop(target)
        return answered, whole, leaves

    def _couchrestore(self, round_: int) -> tuple[float, float, str | None, int]:
        target = f"bench-restore-couchrestore-{round_}"
        create_db(self.couch, target, self.is_couchdb)
        self.created.append(target)
        self.settle()
        started = time.monotonic()
        with self.couchbackup_file.open("rb") as source:
            answered, error = self._npm_tool(
                ["couchrestore", "--db", target, "--attachments"], stdin=source
            )
        whole = (
            self.every_copy_holds(target, self.backup_totals["documents"], started)
            if error is None
            else 0.0
        )
        leaves = self.count_leaves(target) if error is None else 0
        self.drop(target)
        return answered, whole, error, leaves

    def backups(self) -> None:
        """Each tool in turn, `--rounds` times, medians compared: the machine's load moves."""
        self.couchbackup_file = self.work / "couchbackup.txt"
        ours: list[float] = []
        theirs: list[float] = []
        error = None
        for round_ in range(self.args.rounds):
            ours.append(self._couchops_backup(round_))
            seconds, error = self._couchbackup()
            if error:
                break
            theirs.append(seconds)
        totals = self.backup_totals
        rate = totals["documents"] / statistics.median(ours)
        self.report(
            "backup.couchops",
            f"{rate:,.0f} docs/s (median of {len(ours)}: {totals['documents']} docs, "
            f"{totals['leaves']} leaves, {totals['attachments']} attachments, "
            f"{totals['bytes'] / 1e6:.1f} MB; runs "
            f"{', '.join(f'{x:.1f}s' for x in ours)})",
            docs_per_second=rate,
            seconds=ours,
            **totals,
        )
        if error:
            self.report("backup.couchbackup", f"failed: {error}", error=error)
            self.report("restore.couchrestore", "skipped: no couchbackup file")
        else:
            base = self.total / statistics.median(theirs)
            self.report(
                "backup.couchbackup",
                f"{base:,.0f} docs/s (median of {len(theirs)}, --attachments, every leaf; runs "
                f"{', '.join(f'{x:.1f}s' for x in theirs)}) -> couchops x{rate / base:.2f}",
                docs_per_second=base,
                seconds=theirs,
                ratio=rate / base,
            )
        ours, theirs = [], []
        ours_leaves: set[int] = set()
        theirs_leaves: set[int] = set()
        ours_answered: list[float] = []
        theirs_answered: list[float] = []
        for round_ in range(self.args.rounds):
            answered, whole, leaves = self._couchops_restore(round_)
            ours.append(whole)
            ours_answered.append(answered)
            ours_leaves.add(leaves)
            if not error:
                answered, whole, error, leaves = self._couchrestore(round_)
                if not error:
                    theirs.append(whole)
                    theirs_answered.append(answered)
                    theirs_leaves.add(leaves)
        documents = self.backup_totals["documents"]
        rate = documents / statistics.median(ours)
        self.report(
            "restore.couchops",
            f"{rate:,.0f} docs/s (median of {len(ours)}, attachments included, leaves restored "
            f"{'/'.join(map(str, sorted(ours_leaves)))} of {self.leaves}; every copy whole "
            f"after {', '.join(f'{x:.1f}s' for x in ours)}; answered after "
            f"{', '.join(f'{x:.1f}s' for x in ours_answered)})",
            docs_per_second=rate,
            seconds=ours,
            answered_seconds=ours_answered,
            leaves=sorted(ours_leaves),
        )
        if error:
            self.report("restore.couchrestore", f"failed: {error}", error=error)
            return
        base = documents / statistics.median(theirs)
        answered_ratio = statistics.median(theirs_answered) / statistics.median(ours_answered)
        self.report(
            "restore.couchrestore",
            f"{base:,.0f} docs/s (median of {len(theirs)}, --attachments, leaves restored "
            f"{'/'.join(map(str, sorted(theirs_leaves)))} of {self.leaves}; every copy whole "
            f"after {', '.join(f'{x:.1f}s' for x in theirs)}; answered after "
            f"{', '.join(f'{x:.1f}s' for x in theirs_answered)}) -> couchops x{rate / base:.2f} "
            f"to every copy whole, x{answered_ratio:.2f} to the last answer",
            docs_per_second=base,
            seconds=theirs,
            answered_seconds=theirs_answered,
            leaves=sorted(theirs_leaves),
            ratio=rate / base,
            answered_ratio=answered_ratio,
        )

    # --- purge ---------------------------------------------------------------------------
    def check_purge_indexes(self, db: str) -> None:
        """The restored copy has the purge's indexes as defined (field order included), so the
        purge reads through them as in production: a backup that sorted keys once reordered
        them, and the purge scanned everything unnoticed."""
        if purge_indexes(self.couch, db, "createdAt") is None:
            have = [
                (ix["name"], index_fields(ix))
                for ix in self.couch.get(f"{db_path(db)}/_index")["indexes"]
            ]
            wanted = [
                (s["name"], s["index"]["fields"]) for s in purge_index_specs("createdAt", False)
            ]
            raise SystemExit(
                f"{db}: the purge would scan instead of reading its indexes: they are {have}, "
                f"the purge's are {wanted}"
            )

    def purges(self) -> None:
        if not self.is_couchdb:
            self.report("purge", "skipped: the server has no _purge (pouchdb-server)")
            return
        # Both purged databases are restored from the same backup, so they have the same
        # layout on disk (a seeded database, written by parallel writers in no order, has a
        # larger, more scattered id tree than a restored one, which costs a purge more).
        raw_db, ours_db = "bench-purge-raw", "bench-purge-couchops"
        for copy in (raw_db, ours_db):
            self.drop(copy)
            self.created.append(copy)
            restore(
                self.couch, self.backup_path, mapping={DB: copy}, concurrency=self.args.concurrency
            )
            self.couch.put(f"{db_path(copy)}/_purged_infos_limit", 100_000)
            refresh_indexes(self.couch, copy, partitioned=True)
            self.check_purge_indexes(copy)
        # Read from the seeded database, long settled: a copy just restored may answer from a
        # shard copy that internal replication has not completed yet.
        cutoff = iso(datetime.now(UTC) - timedelta(days=30))
        rows = self.couch.get(f"{db_path(DB)}/_all_docs", params={"include_docs": True})["rows"]
        old = [
            (r["id"], r["value"]["rev"]) for r in rows if r["doc"].get("createdAt", "9") < cutoff
        ]

        def raw_purge(batch: list[tuple[str, str]]) -> None:
            self.couch.post(f"{db_path(raw_db)}/_purge", {doc_id: [rev] for doc_id, rev in batch})

        def run_raw() -> None:
            with ThreadPoolExecutor(max_workers=8) as pool:
                list(pool.map(raw_purge, chunks(old, 100)))

        # The copies have the purge's design documents (restored): their indexes are built
        # before timing, and the raw run's are brought up to date after its purge, as any
        # purge of an indexed database needs before an index read stops returning it.
        self.settle()
        seconds, _ = timed(run_raw)
        catch_up, _ = timed(lambda: refresh_indexes(self.couch, raw_db, partitioned=True))
        self.drop(raw_db)  # its compaction, which the purge sets off, must not weigh on ours
        raw = len(old) / seconds
        raw_indexed = len(old) / (seconds + catch_up)
        self.report(
            "purge.raw_purge_api",
            f"{raw:,.0f} docs/s ({len(old)} docs in {seconds:.2f}s, ids precomputed, "
            f"100 ids/request, 8 in flight); with its indexes brought up to date after: "
            f"{raw_indexed:,.0f} docs/s (+{catch_up:.1f}s)",
            docs_per_second=raw,
            seconds=seconds,
            documents=len(old),
            index_catch_up_seconds=catch_up,
            docs_per_second_with_indexes=raw_indexed,
        )
        options = PurgeOptions(
            retention_days=30,
            concurrency=self.args.purge_concurrency,
            compact=False,
            listing=io.StringIO(),
        )
        self.settle()
        seconds, stats = timed(lambda: purge(self.couch, options, [ours_db]))
        ours = stats.documents_purged / seconds
        # Like for like: the raw API's figure leaves the indexes behind, so the purge's own
        # work is compared with it without the time the server took to bring them up to date
        # (stats.index_refresh_seconds), and the whole run with the raw API plus its catch-up.
        own = seconds - stats.index_refresh_seconds
        ours_own = stats.documents_purged / own
        self.report(
            "purge.couchops",
            f"{ours_own:,.0f} docs/s finding, deciding and purging ({stats.documents_purged} "
            f"purged of {self.total} in {own:.2f}s) -> {ours_own / raw:.0%} of the raw API "
            f"alone; with the indexes brought up to date (+{stats.index_refresh_seconds:.1f}s): "
            f"{ours:,.0f} docs/s -> {ours / raw_indexed:.0%} of the raw API with its catch-up",
            docs_per_second=ours,
            docs_per_second_without_index_catch_up=ours_own,
            seconds=seconds,
            index_refresh_seconds=stats.index_refresh_seconds,
            documents=stats.documents_purged,
            ratio=ours_own / raw,
            ratio_with_indexes=ours / raw_indexed,
        )

    # --- consolidation -------------------------------------------------------------------
    def consolidation(self) -> None:
        a = self.args
        rng = random.Random(a.seed + 1)  # noqa: S311 (test data, not secrets)
        now = datetime.now(UTC)
        names = [userdb_name(f"bench{u:06d}@example.fr") for u in range(a.sources)]
        self.created.extend(names)

        per_source = [
            onboarding_docs(
                rng, a.docs_per_user, old_share=0.0, attachment_share=a.attachment_share, now=now
            )
            for _ in names
        ]

        def make(name_docs: tuple[str, list[dict[str, Any]]]) -> int:
            name, docs = name_docs
            params = {"q": 1} if self.is_couchdb else {}
            self.couch.request("PUT", db_path(name), params=params, ok=(201, 202, 412))
            bulk(self.couch, name, docs)
            return len(docs)

        def make_all() -> list[int]:
            with ThreadPoolExecutor(max_workers=8) as pool:
                return list(pool.map(make, zip(names, per_source, strict=True)))

        seconds, counts = timed(make_all)
        total_docs = sum(counts)
        self.report(
            "consolidate.seed",
            f"{a.sources} userdb-<hex> databases, {total_docs} docs, created in {seconds:.1f}s",
            sources=a.sources,
            documents=total_docs,
            seconds=seconds,
        )
        target = "bench-consolidated"
        create_db(self.couch, target, self.is_couchdb)
        self.created.append(target)
        self.settle()
        seconds, stats = timed(
            lambda: consolidate(
                self.couch, target, SECRET, concurrency=a.consolidate_concurrency, only=names
            )
        )
        if stats.failures:
            raise RuntimeError(f"consolidation failed: {stats.failures[:3]}")
        ours = stats.sources / seconds
        self.report(
            "consolidate.couchops",
            f"{ours:,.1f} databases/s ({stats.sources} databases, {stats.documents_verified} "
            f"docs verified, {seconds:.1f}s) -> 50,000 databases in {50_000 / ours / 60:.1f} min",
            databases_per_second=ours,
            seconds=seconds,
            sources=stats.sources,
            minutes_for_50000=50_000 / ours / 60,
        )
        if not self.is_couchdb:
            self.report(
                "consolidate.replicate", "skipped: pouchdb-server's replicator is not CouchDB's"
            )
            return
        sample = names[: a.replicate_sample]
        target = "bench-replicated"
        # Replication cannot rewrite ids into partitions: the historical target was a plain
        # database (where every user's `profile` collides).
        create_db(self.couch, target, False)
        self.created.append(target)
        source_base = url_with_credentials(self.url, self.user, self.password)

        def replicate(name: str) -> None:
            self.couch.post(
                "/_replicate",
                {
                    "source": f"{source_base}/{quote(name, safe='')}",
                    "target": f"{source_base}/{target}",
                },
                timeout=600,
            )

        def run() -> None:
            with ThreadPoolExecutor(max_workers=8) as pool:
                list(pool.map(replicate, sample))

        self.settle()
        seconds, _ = timed(run)
        theirs = len(sample) / seconds
        self.report(
            "consolidate.replicate",
            f"{theirs:,.1f} databases/s (one _replicate per database, {len(sample)} databases, "
            f"8 in flight, {seconds:.1f}s) -> 50,000 databases in {50_000 / theirs / 3600:.1f} h; "
            f"couchops x{ours / theirs:.0f}",
            databases_per_second=theirs,
            seconds=seconds,
            hours_for_50000=50_000 / theirs / 3600,
            ratio=ours / theirs,
        )

    def cleanup(self) -> None:
        with ThreadPoolExecutor(max_workers=8) as pool:
            list(pool.map(self.drop, self.created))
        shutil.rmtree(self.work, ignore_errors=True)

    def save(self) -> None:
        out = REPO / ".bench"
        out.mkdir(exist_ok=True)
        path = out / f"results-{datetime.now(UTC).strftime('%Y%m%dT%H%M%SZ')}.json"
        path.write_text(json.dumps(self.results, indent=2, default=str))
        print(f"{'results':<28} {path}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--docs-per-user", type=int, default=6)
    parser.add_argument(
        "--old-share", type=float, default=0.3, help="share of users older than 30 days"
    )
    parser.add_argument(
        "--attachment-share", type=float, default=0.2, help="share of users with a scanned document"
    )
    parser.add_argument(
        "--conflict-share", type=float, default=0.03, help="share of documents with a conflict"
    )
    parser.add_argument(
        "--sources", type=int, default=2_000, help="legacy userdb databases to consolidate"
    )
    parser.add_argument(
        "--replicate-sample",
        type=int,
        default=200,
        help="of those, replicated one by one for comparison",
    )
    parser.add_argument("--concurrency", type=int, default=8, help="backup/restore")
    parser.add_argument("--consolidate-concurrency", type=int, default=32)
    parser.add_argument("--purge-concurrency", type=int, default=8)
    parser.add_argument("--seed", type=int, default=20261128)
    parser.add_argument("--rounds", type=int, default=3, help="alternating runs per tool")
    parser.add_argument("--only", choices=("backup", "purge", "consolidate"), action="append")
    parser.add_argument("--keep", action="store_true", help="keep the databases afterwards")
    args = parser.parse_args()
    configure("WARNING")
    bench = Bench(args)
    print(f"{'server':<28} {bench.server} at {bench.url}", flush=True)
    only = set(args.only or ("backup", "purge", "consolidate"))
    try:
        if only & {"backup", "purge"}:
            bench.seed()
            bench.backups()
        if "purge" in only:
            bench.purges()
        if "consolidate" in only:
            bench.consolidation()
        bench.save()
    finally:
        if not args.keep:
            bench.cleanup()


if __name__ == "__main__":
    main()
