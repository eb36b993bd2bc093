"""A stateful stand-in for the CouchDB endpoints pouchdb-server lacks, for contract tests.

It answers as docs.couchdb.org documents for Apache CouchDB 3.5 (status codes, bodies, the
`_purge` limits of 100 document ids and 1000 revisions per request) and records every request,
so a test can check both what couchops sends and how it reacts to what CouchDB answers.
"""

from __future__ import annotations

import json
import re
import threading
import zlib
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import requests
import responses

from couchops.purge import purge_index_specs
from couchops.timestamps import ISO_PATTERN

BASE = "http://couchdb.test:5984"
_MISSING = object()


def collation(value: Any) -> tuple[Any, ...]:
    """A sort key in CouchDB's view collation for JSON values: null, booleans, numbers,
    strings (here by code point, where CouchDB uses ICU: the same for ISO-8601 timestamps),
    arrays element by element (a prefix first), objects."""
    if value is None:
        return (0,)
    if isinstance(value, bool):
        return (1, value)
    if isinstance(value, int | float):
        return (2, value)
    if isinstance(value, str):
        return (3, value)
    if isinstance(value, list):
        return (4, tuple(collation(v) for v in value))
    return (5, tuple((k, collation(v)) for k, v in value.items()))


@dataclass
class FakeDoc:
    leaves: dict[str, dict[str, Any]]
    deleted: set[str] = field(default_factory=set)

    def winner(self) -> str:
        live = [r for r in self.leaves if r not in self.deleted] or list(self.leaves)
        return max(live, key=lambda r: (int(r.split("-")[0]), r))


@dataclass
class FakeDb:
    docs: dict[str, FakeDoc] = field(default_factory=dict)
    local: dict[str, dict[str, Any]] = field(default_factory=dict)
    seq: int = 0
    changes: dict[str, int] = field(default_factory=dict)
    partitioned: bool = True
    indexes: list[dict[str, Any]] = field(default_factory=list)
    q: int | None = None
    """Shard ranges listed by `GET /{db}/_shards` (None: answered 404, as pouchdb-server)."""
    shards_refused: bool = False
    """`GET /{db}/_shards` answered 403 (a reader without the right to see them)."""
    purge_seq: int = 0
    """Purge infos recorded (one per id of each `_purge`, as CouchDB records them)."""
    index_lag: int | None = 0
    """Purges a copy's index has yet to apply after each index read (None: it never
    catches up), as its `_local/purge-mrview-<signature>` checkpoint shows."""
    index_purge_seq: int = 0

    def shard_ranges(self) -> list[str]:
        step = 2**32 // (self.q or 1)
        return [f"{k * step:08x}-{(k + 1) * step - 1:08x}" for k in range(self.q or 1)]

    def shard_of(self, doc_id: str) -> str:
        """As Apache CouchDB 3 places ids: the CRC-32 of the id, or of its partition in a
        partitioned database (`mem3_hash:crc32`, `couch_partition:hash`)."""
        key = doc_id.partition(":")[0] if self.partitioned and doc_id[0] != "_" else doc_id
        value = zlib.crc32(key.encode())
        return next(r for r in self.shard_ranges() if int(r[9:], 16) >= value)

    def put(self, doc: dict[str, Any], rev: str | None = None, deleted: bool = False) -> str:
        doc_id = doc["_id"]
        entry = self.docs.setdefault(doc_id, FakeDoc({}))
        rev = rev or f"{len(entry.leaves) + 1}-{abs(hash((doc_id, len(entry.leaves)))):x}"
        entry.leaves[rev] = {**doc, "_id": doc_id, "_rev": rev}
        if deleted:
            entry.deleted.add(rev)
            entry.leaves[rev]["_deleted"] = True
        self.seq += 1
        self.changes[doc_id] = self.seq
        return rev


class FakeCouch:
    """Register with `responses`; `dbs` holds the state, `calls` what was asked."""

    def __init__(
        self,
        mock: responses.RequestsMock,
        purge_status: int = 201,
        indexed: bool = False,
        views: bool = True,
    ) -> None:
        self.indexed = indexed
        self.views = views
        """Whether a Mango index's view answers `GET .../_view/...` (CouchDB 3.5 does)."""
        self.view_reads: list[tuple[str, dict[str, str]]] = []
        self.dbs: dict[str, FakeDb] = {}
        self.calls: list[tuple[str, str, Any]] = []
        self.purge_status = purge_status
        self.failing_purges: set[str] = set()
        """Databases whose `_purge` answers 500, as a node in trouble does."""
        self.max_ids = 100
        self.max_revs = 1000
        # couchops sends requests from several threads (purge batches while the index is read):
        # one at a time here, as a database's updates are applied in order by CouchDB.
        self._lock = threading.Lock()
        for method in ("GET", "POST", "PUT", "DELETE"):
            mock.add_callback(method, re.compile(re.escape(BASE) + r"/.*"), callback=self._handle)

    def _handle(self, request: requests.PreparedRequest) -> tuple[int, dict[str, str], str]:
        url = urlsplit(str(request.url))
        parts = [unquote(p) for p in url.path.strip("/").split("/")]
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        body = json.loads(request.body) if request.body else None
        with self._lock:
            self.calls.append((str(request.method), url.path, body))
            status, payload = self.route(str(request.method), parts, query, body)
        return status, {"Content-Type": "application/json"}, json.dumps(payload)

    def route(  # noqa: PLR0911, PLR0912 (one answer per endpoint)
        self, method: str, parts: list[str], query: dict[str, str], body: Any
    ) -> tuple[int, Any]:
        if parts == [""]:
            return 200, {"couchdb": "Welcome", "version": "3.5.0", "vendor": {"name": "fake"}}
        if parts == ["_all_dbs"]:
            return 200, sorted(self.dbs)
        if parts[0] == "_node":
            return self._node(parts)
        db = self.dbs.get(parts[0])
        if db is None:
            return 404, {"error": "not_found", "reason": "Database does not exist."}
        if len(parts) == 1 and method == "GET":
            live = sum(1 for d in db.docs.values() if d.winner() not in d.deleted)
            return 200, {
                "db_name": parts[0],
                "doc_count": live,
                "doc_del_count": len(db.docs) - live,
                "props": {"partitioned": True} if db.partitioned else {},
            }
        action = parts[1]
        if action in ("_find", "_partition", "_design"):
            self._index_read(db)
        if action == "_local":
            key = "/".join(parts[2:])
            if method == "GET":
                doc = db.local.get(key)
                return (200, doc) if doc else (404, {"error": "not_found", "reason": "missing"})
            db.local[key] = {**body, "_rev": "0-1"}
            return 201, {"ok": True, "id": f"_local/{key}", "rev": "0-1"}
        if action == "_changes":
            return 200, self._changes(db, query)
        if action == "_purge":
            if parts[0] in self.failing_purges:
                return 500, {"error": "unknown_error", "reason": "function_clause"}
            return self._purge(db, body)
        if action == "_shards" and db.shards_refused:
            return 403, {"error": "forbidden", "reason": "You are not allowed to access this db."}
        if action == "_shards" and db.q:
            if len(parts) == 2:
                return 200, {"shards": {r: ["couchdb@a", "couchdb@b"] for r in db.shard_ranges()}}
            return 200, {"range": db.shard_of("/".join(parts[2:])), "nodes": ["couchdb@a"]}
        if action == "_purged_infos_limit":
            return 200, 1000
        if action == "_all_docs":
            rows = [
                {"id": i, "key": i, "value": {"rev": d.winner()}, "doc": d.leaves[d.winner()]}
                for i, d in sorted(db.docs.items())
                if i.startswith("_design/")
            ]
            return 200, {"total_rows": len(rows), "offset": 0, "rows": rows}
        if action == "_index":
            return 200, {"total_rows": len(db.indexes), "indexes": db.indexes}
        if action == "_find" and len(parts) == 2:
            return 200, self._find(db, body)
        if action == "_design" and len(parts) == 5 and parts[3] == "_view" and db.indexes:
            if not self.views:
                return 404, {"error": "not_found", "reason": "missing_named_view"}
            self.view_reads.append((parts[2], query))
            return 200, self._view(db, parts[2], query)
        if action == "_design" and parts[3:] == ["_info"]:
            return 200, {"name": parts[2], "view_index": {"signature": f"sig{parts[2]}"}}
        if action in ("_compact", "_find", "_partition", "_design"):
            return (202, {"ok": True}) if action == "_compact" else (200, {"docs": [], "rows": []})
        return 404, {"error": "not_found", "reason": "missing"}

    def _find(self, db: FakeDb, body: dict[str, Any]) -> Any:
        """Mango `_find` for the selectors couchops' purge sends (and index refreshes)."""
        selector = body["selector"]
        field_name = "createdAt"  # the purge's timestamp field in every contract test
        wanted = body.get("fields") or ["_id", "_rev", field_name]

        def matches(doc: dict[str, Any]) -> bool:
            value = doc.get(field_name)
            if "$and" in selector:
                return not isinstance(value, str) or not re.match(ISO_PATTERN, value)
            condition = selector.get(field_name)
            if not isinstance(condition, dict) or not isinstance(value, str):
                return False
            if "$lt" in condition:
                return bool(value < condition["$lt"])
            return "$gt" in condition and bool(value > condition["$gt"])

        found = []
        for doc_id, entry in sorted(db.docs.items()):
            winner = entry.winner()
            if doc_id.startswith("_design/") or winner in entry.deleted:
                continue
            doc = entry.leaves[winner]
            if matches(doc):
                others = [r for r in entry.leaves if r != winner and r not in entry.deleted]
                row = {"_id": doc_id, "_rev": winner}
                if field_name in doc:  # as Mango: a field the document lacks is left out
                    row[field_name] = doc[field_name]
                if body.get("conflicts"):
                    row["_conflicts"] = others
                found.append({k: v for k, v in row.items() if k in wanted or k == "_conflicts"})
        start = int(body.get("bookmark", "0"))
        page = found[start : start + int(body.get("limit", 25))]
        return {"docs": page, "bookmark": str(start + len(page))}

    def _view(self, db: FakeDb, ddoc: str, query: dict[str, str]) -> Any:
        """A purge index's view (`reduce=false`): key [createdAt, _rev] for documents that
        have the field, [_id, _rev] for those without a well-formed one (the partial index),
        in view collation; `startkey`/`startkey_docid`, `endkey` (inclusive) and `limit`."""
        field_name = "createdAt"
        rows = []
        for doc_id, entry in db.docs.items():
            winner = entry.winner()
            if doc_id.startswith("_design/") or winner in entry.deleted:
                continue
            value = entry.leaves[winner].get(field_name, _MISSING)
            if ddoc.startswith("couchops-by-"):
                if value is _MISSING:
                    continue
                key = [value, winner]
            elif isinstance(value, str) and re.match(ISO_PATTERN, value):
                continue
            else:
                key = [doc_id, winner]
            rows.append({"id": doc_id, "key": key, "value": None})
        rows.sort(key=lambda r: (collation(r["key"]), r["id"]))
        if "startkey" in query:
            first = (collation(json.loads(query["startkey"])), query.get("startkey_docid", ""))
            rows = [r for r in rows if (collation(r["key"]), r["id"]) >= first]
        if "endkey" in query:
            last = collation(json.loads(query["endkey"]))
            rows = [r for r in rows if collation(r["key"]) <= last]
        return {"total_rows": len(rows), "rows": rows[: int(query.get("limit", len(rows)))]}

    def _changes(self, db: FakeDb, query: dict[str, str]) -> Any:
        since = int(query.get("since", "0") or 0)
        limit = int(query.get("limit", "1000000"))
        pending = sorted((seq, doc_id) for doc_id, seq in db.changes.items() if seq > since)
        results = []
        for seq, doc_id in pending[:limit]:
            doc = db.docs[doc_id]
            winner = doc.winner()
            result: dict[str, Any] = {
                "seq": f"{seq}-opaque",
                "id": doc_id,
                "changes": [{"rev": r} for r in sorted(doc.leaves)],
            }
            if query.get("include_docs") == "true":
                result["doc"] = doc.leaves[winner]
            if winner in doc.deleted:
                result["deleted"] = True
            results.append(result)
        last = pending[:limit][-1][0] if pending[:limit] else since
        return {"results": results, "last_seq": last, "pending": max(0, len(pending) - limit)}

    def _purge(self, db: FakeDb, body: dict[str, list[str]]) -> tuple[int, Any]:
        if len(body) > self.max_ids:
            return 400, {"error": "bad_request", "reason": "Exceeded maximum number of documents."}
        if sum(len(v) for v in body.values()) > self.max_revs:
            return 400, {"error": "bad_request", "reason": "Exceeded maximum number of revisions."}
        purged: dict[str, list[str]] = {}
        for doc_id, revs in body.items():
            doc = db.docs.get(doc_id)
            done = [r for r in revs if doc and r in doc.leaves]
            for rev in done:
                assert doc is not None
                del doc.leaves[rev]
            if doc is not None and not doc.leaves:
                del db.docs[doc_id]
                db.changes.pop(doc_id, None)
            purged[doc_id] = done
            db.purge_seq += 1
        return self.purge_status, {"purge_seq": None, "purged": purged}

    def _node(self, parts: list[str]) -> tuple[int, Any]:
        """The node-local interface of one copy per shard range: shard maps, copy infos and
        the views' purge checkpoints."""
        if parts[1:3] == ["_local", "_dbs"] and parts[3] in self.dbs:
            return 200, {"by_range": {"00000000-ffffffff": ["couchdb@a"]}, "shard_suffix": [46, 49]}
        name = parts[2].rsplit("/", 1)[-1].removesuffix(".1") if len(parts) > 2 else ""
        db = self.dbs.get(name)
        if db is None:
            return 404, {"error": "not_found", "reason": "missing"}
        if len(parts) == 3:
            return 200, {"db_name": parts[2], "purge_seq": db.purge_seq}
        if parts[3] == "_local":
            return 200, {"type": "mrview", "purge_seq": db.index_purge_seq}
        return 404, {"error": "not_found", "reason": "missing"}

    def _index_read(self, db: FakeDb) -> None:
        """An index read makes the copies' indexes apply the purges (less their lag)."""
        if db.index_lag is not None:
            db.index_purge_seq = max(db.index_purge_seq, db.purge_seq - db.index_lag)

    def new_db(self, name: str) -> FakeDb:
        """A database; with the purge's two Mango indexes when the fake is `indexed`."""
        db = FakeDb()
        if self.indexed:
            db.indexes = [
                {
                    "ddoc": f"_design/{spec['ddoc']}",
                    "name": spec["name"],
                    "type": "json",
                    "def": {"fields": [{f: "asc"} for f in spec["index"]["fields"]]},
                }
                for spec in purge_index_specs("createdAt", partitioned=False)
            ]
        self.dbs[name] = db
        return db

    def requests_to(self, suffix: str) -> list[Any]:
        return [body for _, path, body in self.calls if path.endswith(suffix)]
