"""A small CouchDB HTTP client: requests with timeouts, bounded retries with backoff, clear errors.

Every request couchops sends is idempotent (reads; ``_bulk_docs`` with ``new_edits=false``;
``_purge`` of given revisions; ``PUT`` of fixed content), so every method may be retried on a
connection error, a timeout or a 429/5xx answer.
"""

from __future__ import annotations

import bisect
import json
import re
import threading
import zlib
from collections.abc import Callable, Iterator, Mapping
from typing import Any
from urllib.parse import quote, urlsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from couchops import pseudonym
from couchops.errors import CouchError
from couchops.log import logger

JSON = dict[str, Any]
RETRY_STATUSES = (429, 500, 502, 503, 504)


class _Retry(Retry):
    """urllib3's retry, plus a 409 answered to a read. Apache CouchDB 3.5 answered
    `GET /_node/<node>/_nodes/_all_docs` with 409 "Document update conflict" while the nodes
    of a new cluster were still syncing their node documents (the setup Job on real pods,
    tests/realpods); a read changes nothing, so reading again is safe. A 409 to a write is a
    real conflict and is never retried."""

    def is_retry(self, method: str, status_code: int, has_retry_after: bool = False) -> bool:
        if status_code == 409 and method.upper() in {"GET", "HEAD"}:
            return True
        return bool(super().is_retry(method, status_code, has_retry_after))


# View-style query parameters that CouchDB reads as JSON values.
_JSON_PARAMS = frozenset(
    {"key", "keys", "startkey", "endkey", "start_key", "end_key", "open_revs", "since"}
)


# Where a plain string is the value itself (an opaque sequence, or "all" revisions).
_RAW_STRINGS = frozenset({"since", "open_revs"})


def db_path(db: str) -> str:
    """The URL path of a database (names may hold '/', which must be escaped). The name is
    recorded, so that nothing couchops prints shows it (`couchops.pseudonym`)."""
    pseudonym.remember(db)
    return "/" + quote(db, safe="")


def shard_copies(info: JSON) -> int | None:
    """A database's number of copies (`cluster.n` of its info) when it has more than one,
    else None (a single node, or a server that does not say)."""
    n = (info.get("cluster") or {}).get("n")
    return n if isinstance(n, int) and n > 1 else None


def copy_path(node: str, shard_range: str, db: str, shard_map: JSON) -> str:
    """The node-local path of one copy of a database's shard range (CouchDB 3:
    ``/_node/<node>/shards%2F<range>%2F<db><suffix>``), from the database's shard map (its
    document in the node-local ``_dbs``, whose ``shard_suffix`` holds the suffix's character
    codes)."""
    suffix = "".join(chr(code) for code in shard_map["shard_suffix"])
    pseudonym.remember(db)
    return f"/_node/{quote(node, safe='@')}/" + quote(f"shards/{shard_range}/{db}{suffix}", safe="")


def shard_hash(doc_id: str, partitioned: bool) -> int:
    """Where CouchDB places a document by default: the CRC-32 of its id (`mem3_hash:crc32`),
    or in a partitioned database of the id's partition (`couch_partition:hash`; ids that
    begin with `_`, such as design documents, hash whole). The shard range holding the value
    holds the document."""
    key = doc_id
    if partitioned and not doc_id.startswith("_"):
        key = doc_id.partition(":")[0]
    return zlib.crc32(key.encode())


def shard_locator(couch: Couch, db: str, partitioned: bool) -> Callable[[str], int] | None:
    """A function giving the shard range a document id of `db` falls in (its rank in range
    order), or None: a database of one range, a server that does not list its ranges
    (`GET /{db}/_shards`, CouchDB 2 and later), or one that places ids otherwise than
    `shard_hash` says, checked with `GET /{db}/_shards/{id}` for a probe id in each of up to
    four ranges (the ids need not exist). A wrong answer could only cost speed: it orders
    requests, it decides nothing (and a refused or failed question answers None)."""
    try:
        return _shard_locator(couch, db, partitioned)
    except (CouchError, ValueError) as exc:  # ValueError: an answer not of the shape expected
        logger().info("couch.shard_placement_unknown", database=db, reason=str(exc))
        return None


def _shard_locator(couch: Couch, db: str, partitioned: bool) -> Callable[[str], int] | None:
    response = couch.request("GET", f"{db_path(db)}/_shards", ok=(200, 400, 404))
    body = response.json() if response.status_code == 200 else None
    shards = body.get("shards") if isinstance(body, dict) else None
    if not isinstance(shards, dict) or len(shards) < 2:
        return None
    ranges = sorted(  # a range name not of two hex numbers: ValueError, answered None above
        (int(lo, 16), int(hi, 16), name) for name in shards for lo, hi in [str(name).split("-")]
    )
    starts = [lo for lo, _, _ in ranges]

    def locate(doc_id: str) -> int:
        return bisect.bisect_right(starts, shard_hash(doc_id, partitioned)) - 1

    probes: dict[int, str] = {}
    for n in range(256):
        probes.setdefault(locate(f"couchops-probe-{n}:x"), f"couchops-probe-{n}:x")
    for place, probe in list(probes.items())[:4]:
        answer = couch.request(
            "GET", f"{db_path(db)}/_shards/{quote(probe, safe='')}", ok=(200, 400, 404)
        )
        placed = answer.json() if answer.status_code == 200 else None
        if not isinstance(placed, dict) or placed.get("range") != ranges[place][2]:
            logger().info("couch.shard_placement_unknown", database=db, probe=probe)
            return None
    return locate


def mango_field_names(fields: list[Any]) -> list[str]:
    """The field names of a Mango index definition's `fields`, given as names or as
    `{name: direction}` objects."""
    return [next(iter(f)) if isinstance(f, dict) else str(f) for f in fields]


_NODE = re.compile(r"^[A-Za-z0-9_.-]+@([A-Za-z0-9_.-]+)$")


def check_http_url(url: str) -> str:
    """An http(s) URL with a host and without credentials, its trailing slash dropped; else
    ValueError (whose message does not repeat the URL: it may hold a password)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("is not an http(s) URL")
    if parts.username or parts.password:
        raise ValueError("must not carry credentials")
    return url.rstrip("/")


def parse_node_urls(spec: str) -> Callable[[str], str | None]:
    """Where each CouchDB node answers directly, from ``COUCHDB_NODE_URLS``: either a template
    with ``{host}`` (the host part of the node name, ``couchdb@<host>``), such as
    ``http://{host}:5984`` for the pods of a StatefulSet, or a comma list of
    ``<node name>=<url>``. Raises ValueError on a malformed spec."""
    spec = spec.strip()
    if "{host}" in spec:
        try:
            check_http_url(spec.replace("{host}", "node.example"))
        except ValueError as exc:
            raise ValueError(f"the template {exc}") from None

        def from_template(node: str) -> str | None:
            match = _NODE.match(node)
            return spec.replace("{host}", match.group(1)).rstrip("/") if match else None

        return from_template
    table: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in spec.split(","))):
        node, sep, url = item.partition("=")
        if not sep or not _NODE.match(node.strip()):
            raise ValueError(
                f"{item!r} is not <node name>=<url> (or give a template with {{host}})"
            )
        try:
            table[node.strip()] = check_http_url(url.strip())
        except ValueError as exc:
            raise ValueError(f"the URL of {node.strip()} {exc}") from None
    if not table:
        raise ValueError("names no node")
    return table.get


def doc_path(db: str, doc_id: str) -> str:
    """The URL path of a document; design and local documents keep their prefix's slash."""
    for prefix in ("_design/", "_local/"):
        if doc_id.startswith(prefix):
            return f"{db_path(db)}/{prefix}{quote(doc_id[len(prefix) :], safe='')}"
    return f"{db_path(db)}/{quote(doc_id, safe='')}"


def encode_params(params: Mapping[str, Any]) -> dict[str, str]:
    """Query parameters as CouchDB expects them: booleans lower-case, view keys as JSON."""
    out: dict[str, str] = {}
    for name, value in params.items():
        if value is None:
            continue
        if isinstance(value, bool):
            out[name] = "true" if value else "false"
        elif name in _JSON_PARAMS and not (name in _RAW_STRINGS and isinstance(value, str)):
            out[name] = json.dumps(value, separators=(",", ":"))
        else:
            out[name] = str(value)
    return out


class Couch:
    """One CouchDB server (or cluster behind one URL), with admin credentials when given."""

    def __init__(
        self,
        url: str,
        credentials: tuple[str, str] | None = None,
        *,
        timeout: float = 60.0,
        retries: int = 4,
        backoff: float = 0.5,
        pool_size: int = 32,
        node_urls: str | None = None,
        ca_file: str | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self._options: dict[str, Any] = {
            "credentials": credentials,
            "timeout": timeout,
            "retries": retries,
            "backoff": backoff,
            "pool_size": pool_size,
            "ca_file": ca_file,
        }
        self._node_url = parse_node_urls(node_urls) if node_urls else None
        self._nodes: dict[str, Couch | None] = {}
        self._nodes_lock = threading.Lock()
        self.user = credentials[0] if credentials else None
        self.timeout = timeout
        self._is_couchdb: bool | None = None
        # HTTPS is always verified: against the CA that issued CouchDB's certificate when given
        # (COUCHDB_CA_FILE, the cluster's own CA), else against the system's trusted CAs. Given
        # with each request: requests lets REQUESTS_CA_BUNDLE override a Session's `verify`.
        self.verify: str | bool = ca_file if ca_file else True
        self.session = requests.Session()
        if credentials:
            self.session.auth = credentials
        self.session.headers.update({"Accept": "application/json"})
        retry = _Retry(
            total=retries,
            connect=retries,
            read=retries,
            status=retries,
            other=0,
            backoff_factor=backoff,
            backoff_max=10.0,
            status_forcelist=RETRY_STATUSES,
            allowed_methods=None,
            raise_on_status=False,
            respect_retry_after_header=True,
        )
        adapter = HTTPAdapter(max_retries=retry, pool_connections=4, pool_maxsize=pool_size)
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)

    def is_apache_couchdb(self) -> bool:
        """Whether the server says it is Apache CouchDB (other servers of the protocol, such as
        pouchdb-server, lack some of its features and crash on some requests)."""
        if self._is_couchdb is None:
            welcome = self.get("/")
            self._is_couchdb = isinstance(welcome, dict) and "couchdb" in welcome
        return self._is_couchdb

    def close(self) -> None:
        self.session.close()
        for client in self._nodes.values():
            if client is not None:
                client.close()

    def node_client(self, node: str) -> Couch | None:
        """A connection to `node` itself (``COUCHDB_NODE_URLS``), or None: none configured, or
        the URL does not answer as that node (``GET /_node/_local`` names the node that
        answers), which is logged once. Node-local requests sent there spare the node this
        client's URL reaches the work of relaying them (a shard read through another node cost
        the cluster 17 s of CPU against 12.6 s sent to the node itself, 60,000 documents)."""
        if self._node_url is None:
            return None
        with self._nodes_lock:
            if node in self._nodes:
                return self._nodes[node]
            url = self._node_url(node)
            client = Couch(url, **self._options) if url else None
            if client is not None:
                try:
                    name = client.get("/_node/_local").get("name")
                except CouchError as exc:
                    name = f"no answer ({exc})"
                if name != node:
                    logger().warning("couch.node_url_unusable", node=node, url=url, answered=name)
                    client.close()
                    client = None
            self._nodes[node] = client
            return client

    def copy_location(
        self, node: str, shard_range: str, db: str, shard_map: JSON
    ) -> tuple[Couch, str]:
        """Where to read `node`'s copy of a shard range: from the node itself when
        `node_client` connects to it (``/_node/_local/<shard>``), else relayed by the node this
        client's URL reaches (``/_node/<node>/<shard>``)."""
        direct = self.node_client(node)
        if direct is not None:
            return direct, copy_path("_local", shard_range, db, shard_map)
        return self, copy_path(node, shard_range, db, shard_map)

    def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        body: Any = None,
        data: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        ok: tuple[int, ...] = (200, 201, 202),
        stream: bool = False,
        timeout: float | None = None,
    ) -> requests.Response:
        """Send one request; answer the response if its status is in ``ok``, else raise."""
        hdrs = dict(headers or {})
        payload = data
        if body is not None:
            payload = json.dumps(body, separators=(",", ":")).encode("utf-8")
            hdrs.setdefault("Content-Type", "application/json")
        wait = timeout if timeout is not None else self.timeout
        try:
            response = self.session.request(
                method,
                self.url + path,
                params=encode_params(params or {}),
                data=payload,
                headers=hdrs,
                timeout=(min(10.0, wait), wait),
                stream=stream,
                verify=self.verify,
            )
        except requests.exceptions.Timeout as exc:
            raise CouchError(
                f"CouchDB at {self.url} did not answer {method} {path} within {wait:g}s"
            ) from exc
        except requests.exceptions.ConnectionError as exc:
            raise CouchError(f"CouchDB at {self.url} is unreachable ({_root_cause(exc)})") from exc
        except requests.exceptions.RequestException as exc:
            raise CouchError(f"{method} {path} failed: {_root_cause(exc)}") from exc
        if response.status_code in ok:
            return response
        raise self._error(method, path, response)

    def _error(self, method: str, path: str, response: requests.Response) -> CouchError:
        status = response.status_code
        error, reason = "", ""
        try:
            payload = response.json()
            if isinstance(payload, dict):
                error = str(payload.get("error", ""))
                reason = str(payload.get("reason", ""))
        except ValueError:
            reason = response.text[:200].strip()
        if status == 401:
            who = f"user '{self.user}'" if self.user else "an anonymous client"
            message = f"CouchDB at {self.url} refused the credentials of {who} (401 {error})"
        elif status == 403:
            message = f"{method} {path} is forbidden for user '{self.user}' (403: {reason})"
        else:
            detail = f"{error}: {reason}" if reason else error
            message = f"{method} {path} failed: HTTP {status} {detail}".rstrip(": ")
        return CouchError(message.replace("\n", " "), status=status, error=error or None)

    def json(self, method: str, path: str, **kwargs: Any) -> Any:
        return self.request(method, path, **kwargs).json()

    def get(self, path: str, **kwargs: Any) -> Any:
        return self.json("GET", path, **kwargs)

    def post(self, path: str, body: Any, **kwargs: Any) -> Any:
        return self.json("POST", path, body=body, **kwargs)

    def put(self, path: str, body: Any = None, **kwargs: Any) -> Any:
        return self.json("PUT", path, body=body, **kwargs)

    def write_as_is(
        self, db: str, docs: bytes | list[bytes], copies: int | None = None
    ) -> list[JSON]:
        """`POST /{db}/_bulk_docs` with `new_edits=false` of documents already encoded, as a
        JSON array or as one document each (`docs`, joined into the request's one copy):
        written as they are, revision ids kept, which makes it safe to retry. With `copies`
        (the database's `n`), every copy confirms (`w=n`). Answers the per-document results."""
        response = self.request(
            "POST",
            f"{db_path(db)}/_bulk_docs",
            data=b'{"new_edits":false,"docs":' + docs + b"}"
            if isinstance(docs, bytes)
            else b'{"new_edits":false,"docs":[' + b",".join(docs) + b"]}",
            params={"w": copies} if copies else None,
            headers={"Content-Type": "application/json"},
            ok=(201, 202),
        )
        results = response.json()
        return results if isinstance(results, list) else []

    def db_info(self, db: str) -> JSON | None:
        """The database's info, or None when it does not exist."""
        response = self.request("GET", db_path(db), ok=(200, 404))
        if response.status_code == 404:
            return None
        info: JSON = response.json()
        return info

    def all_dbs(self, prefix: str = "", page: int = 10_000) -> Iterator[str]:
        """Database names in order, paged (servers that ignore paging are filtered here)."""
        start: str | None = prefix or None
        skip_first = False
        while True:
            params: dict[str, Any] = {"limit": page}
            if start is not None:
                params["startkey"] = start
            if prefix:
                params["endkey"] = prefix + "\ufff0"
            names: list[str] = self.get("/_all_dbs", params=params)
            fresh = names[1:] if skip_first and names and names[0] == start else names
            for name in fresh:
                if name.startswith(prefix):
                    yield name
            if len(names) < page:
                return
            start, skip_first = names[-1], True

    def shard_maps(self, prefix: str, page: int = 5000) -> Iterator[JSON]:
        """The shard maps (``by_range``, ``shard_suffix``) of the databases whose names start
        with `prefix`: their documents in CouchDB 3's node-local ``_dbs``, paged. Admin only."""
        params: dict[str, Any] = {
            "include_docs": True,
            "startkey": prefix,
            "endkey": prefix + "\ufff0",
            "limit": page,
        }
        while True:
            rows = self.get("/_node/_local/_dbs/_all_docs", params=params).get("rows", [])
            for row in rows:
                if isinstance(row.get("doc"), dict):
                    yield row["doc"]
            if len(rows) < page:
                return
            params = {**params, "startkey": rows[-1]["id"], "skip": 1}

    def get_doc(self, db: str, doc_id: str) -> JSON | None:
        response = self.request("GET", doc_path(db, doc_id), ok=(200, 404))
        if response.status_code == 404:
            return None
        doc: JSON = response.json()
        return doc

    def put_doc(self, db: str, doc: JSON) -> None:
        """Create or update a document (``_rev`` in it when updating)."""
        self.request("PUT", doc_path(db, doc["_id"]), body=doc)


def _root_cause(exc: BaseException) -> str:
    cause: BaseException = exc
    while cause.__context__ is not None and cause.__context__ is not cause:
        cause = cause.__context__
    text = str(cause) or type(cause).__name__
    if "Connection refused" in text:
        return "connection refused"
    if "Name or service not known" in text or "nodename nor servname" in text:
        return "host name not found"
    return text.splitlines()[0][:200]
