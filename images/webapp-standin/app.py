"""A STAND-IN for the agency's onboarding web app (registry.agence.example.fr/onboarding/web),
which this repository does not have. It honours the contract the platform's Deployment gives
the real app (components/webapp.py), and nothing more: enough to prove on real pods that the
site's pods start as deployed, reach CouchDB over HTTPS with the application user, and write
and read prospects through the CouchDB Service. It is not the agency's site.

    PORT=8080 MANAGEMENT_PORT=9090 COUCHDB_URL=https://couchdb:6984 COUCHDB_CA_FILE=ca.crt \
    COUCHDB_DATABASE=onboarding COUCHDB_USER=app COUCHDB_PASSWORD=... \
    USER_PARTITION_SECRET=... python app.py

Public port (PORT), JSON only:
  POST /prospects       {"email": "<login>", <fields>} -> 201 {"id", "rev", "partition"}
  GET  /prospects/<id>                                 -> 200 the document, 404 if none
Management port (MANAGEMENT_PORT), for the kubelet and Prometheus only:
  GET /healthz  -> 200 while the process serves (no CouchDB check: the liveness probe uses it)
  GET /metrics  -> Prometheus text: http_requests_total{method,code} and the histogram
                   http_request_duration_seconds of the public port (the names the alerts use)

A prospect document is written the way couchops expects the site's documents in the
consolidated, partitioned database (couchops/README.md, consolidate and purge): id
`<partition>:<random hex>`, partition = "u" + hex(HMAC-SHA256(USER_PARTITION_SECRET,
utf8(email)))[:32] (couchops/partition.py computes the same function; the prospect's e-mail
address is their user name), so no personal data is in the id (the document holds the
prospect's fields, e-mail included, until the purge); `createdAt` is the creation instant,
ISO-8601 UTC with milliseconds, the field couchops' purge reads a document's age from. Python
standard library only; stateless; writes nothing to disk (the pod's root filesystem is
read-only).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import re
import signal
import ssl
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib import error, parse, request

MAX_BODY_BYTES = 64 * 1024
MAX_EMAIL_CHARS = 254
COUCHDB_TIMEOUT_SECONDS = 10.0
TIMESTAMP_FIELD = "createdAt"
DOC_TYPE = "application"
PROSPECT_ID = re.compile(r"^u[0-9a-f]{32}:[0-9a-f]{32}$")
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
REQUIRED = (
    "PORT",
    "MANAGEMENT_PORT",
    "COUCHDB_URL",
    "COUCHDB_DATABASE",
    "COUCHDB_USER",
    "COUCHDB_PASSWORD",
    "USER_PARTITION_SECRET",
)

JSON = dict[str, Any]


@dataclass(frozen=True)
class Config:
    port: int
    management_port: int
    couchdb_url: str
    database: str
    user: str
    password: str
    partition_secret: bytes
    ca_file: str | None
    # Not part of the Deployment's contract: the tests bind loopback only.
    bind: str

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Config:
        missing = [name for name in REQUIRED if not env.get(name)]
        if missing:
            raise SystemExit(f"webapp-standin: missing environment: {', '.join(missing)}")
        ca_file = env.get("COUCHDB_CA_FILE") or None
        if ca_file is not None and not os.path.isfile(ca_file):
            raise SystemExit(f"webapp-standin: COUCHDB_CA_FILE {ca_file} is not a file")
        return cls(
            port=int(env["PORT"]),
            management_port=int(env["MANAGEMENT_PORT"]),
            couchdb_url=env["COUCHDB_URL"].rstrip("/"),
            database=env["COUCHDB_DATABASE"],
            user=env["COUCHDB_USER"],
            password=env["COUCHDB_PASSWORD"],
            partition_secret=env["USER_PARTITION_SECRET"].encode("utf-8"),
            ca_file=ca_file,
            bind=env.get("BIND_ADDRESS", "0.0.0.0"),  # noqa: S104 (a pod's own address)
        )


def partition_key(user: str, secret: bytes) -> str:
    return "u" + hmac.new(secret, user.encode("utf-8"), hashlib.sha256).hexdigest()[:32]


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class CouchUnavailable(Exception):
    """No HTTP answer from CouchDB: refused, timed out, or a certificate not verified."""


class Couch:
    """The application user's view of one database; never an admin."""

    def __init__(self, config: Config) -> None:
        self.base = f"{config.couchdb_url}/{parse.quote(config.database, safe='')}"
        token = base64.b64encode(f"{config.user}:{config.password}".encode()).decode()
        self.auth = f"Basic {token}"
        # With a CA file, that CA alone verifies the server (the cluster's private CA).
        context = ssl.create_default_context(cafile=config.ca_file)
        self.opener = request.build_opener(
            request.ProxyHandler({}), request.HTTPSHandler(context=context)
        )

    def call(self, method: str, doc_id: str, body: JSON | None = None) -> tuple[int, JSON]:
        url = f"{self.base}/{parse.quote(doc_id, safe='')}"
        data = json.dumps(body).encode() if body is not None else None
        req = request.Request(url, data=data, method=method)  # noqa: S310 (http/https only)
        req.add_header("Authorization", self.auth)
        req.add_header("Accept", "application/json")
        if data is not None:
            req.add_header("Content-Type", "application/json")
        try:
            with self.opener.open(req, timeout=COUCHDB_TIMEOUT_SECONDS) as answer:
                return answer.status, json.loads(answer.read() or b"{}")
        except error.HTTPError as refused:
            try:
                return refused.code, json.loads(refused.read() or b"{}")
            except ValueError:
                return refused.code, {}
        except (error.URLError, OSError) as exc:
            raise CouchUnavailable(str(getattr(exc, "reason", exc))) from exc


class Metrics:
    """The public port's requests, in the Prometheus-client conventions the alerts assume."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.requests: dict[tuple[str, int], int] = {}
        self.buckets = [0] * len(DURATION_BUCKETS)
        self.count = 0
        self.total_seconds = 0.0

    def observe(self, method: str, code: int, seconds: float) -> None:
        with self.lock:
            self.requests[(method, code)] = self.requests.get((method, code), 0) + 1
            for i, bound in enumerate(DURATION_BUCKETS):
                if seconds <= bound:
                    self.buckets[i] += 1
            self.count += 1
            self.total_seconds += seconds

    def render(self) -> str:
        with self.lock:
            lines = [
                "# HELP http_requests_total Requests answered on the public port.",
                "# TYPE http_requests_total counter",
                *(
                    f'http_requests_total{{method="{m}",code="{c}"}} {n}'
                    for (m, c), n in sorted(self.requests.items())
                ),
                "# HELP http_request_duration_seconds Time to answer on the public port.",
                "# TYPE http_request_duration_seconds histogram",
                *(
                    f'http_request_duration_seconds_bucket{{le="{b}"}} {n}'
                    for b, n in zip(DURATION_BUCKETS, self.buckets, strict=True)
                ),
                f'http_request_duration_seconds_bucket{{le="+Inf"}} {self.count}',
                f"http_request_duration_seconds_sum {self.total_seconds:.6f}",
                f"http_request_duration_seconds_count {self.count}",
            ]
        return "\n".join(lines) + "\n"


class _Handler(BaseHTTPRequestHandler):
    server_version = "webapp-standin"
    sys_version = ""
    code = 500

    def log_message(self, format: str, *args: object) -> None:
        pass  # one JSON line per request instead, without the ids (pseudonyms) in it

    def reply(self, code: int, body: JSON | str) -> None:
        is_text = isinstance(body, str)
        data = (body if isinstance(body, str) else json.dumps(body)).encode()
        self.send_response(code)
        self.send_header(
            "Content-Type", "text/plain; version=0.0.4" if is_text else "application/json"
        )
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
        self.code = code


class PublicHandler(_Handler):
    couch: Couch
    secret: bytes
    metrics: Metrics

    def do_GET(self) -> None:
        self.timed("GET")

    def do_POST(self) -> None:
        self.timed("POST")

    def timed(self, method: str) -> None:
        started = time.monotonic()
        self.code = 500
        route = "other"
        try:
            if method == "POST" and self.path == "/prospects":
                route = "create"
                self.create()
            elif method == "GET" and self.path.startswith("/prospects/"):
                route = "read"
                self.read(parse.unquote(self.path.removeprefix("/prospects/")))
            else:
                self.reply(404, {"error": "not found"})
        except CouchUnavailable as exc:
            self.reply(503, {"error": f"CouchDB unavailable: {exc}"})
        finally:
            elapsed = time.monotonic() - started
            self.metrics.observe(method, self.code, elapsed)
            print(
                json.dumps(
                    {
                        "route": route,
                        "method": method,
                        "code": self.code,
                        "ms": round(elapsed * 1000, 1),
                    }
                ),
                flush=True,
            )

    def create(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY_BYTES:
            self.reply(413, {"error": f"body over {MAX_BODY_BYTES} bytes"})
            return
        try:
            body = json.loads(self.rfile.read(length) or b"null")
        except ValueError:
            body = None
        email = body.get("email") if isinstance(body, dict) else None
        if not isinstance(email, str) or not email.strip() or len(email) > MAX_EMAIL_CHARS:
            self.reply(400, {"error": 'a JSON object with an "email" string is required'})
            return
        partition = partition_key(email, self.secret)
        fields = {k: v for k, v in body.items() if not k.startswith("_")}
        doc = {
            **fields,
            "_id": f"{partition}:{uuid.uuid4().hex}",
            "type": DOC_TYPE,
            TIMESTAMP_FIELD: now_iso(),
        }
        status, answer = self.couch.call("PUT", doc["_id"], doc)
        if status in (201, 202):
            self.reply(201, {"id": answer["id"], "rev": answer["rev"], "partition": partition})
        else:
            self.upstream_error(status, answer)

    def read(self, doc_id: str) -> None:
        if not PROSPECT_ID.match(doc_id):
            self.reply(404, {"error": "not found"})
            return
        status, answer = self.couch.call("GET", doc_id)
        if status == 200:
            self.reply(200, answer)
        elif status == 404:
            self.reply(404, {"error": "not found"})
        else:
            self.upstream_error(status, answer)

    def upstream_error(self, status: int, answer: JSON) -> None:
        self.reply(502, {"error": f"CouchDB answered {status} {answer.get('error', '')}".strip()})


class ManagementHandler(_Handler):
    metrics: Metrics

    def do_GET(self) -> None:
        if self.path == "/healthz":
            self.reply(200, {"status": "ok"})
        elif self.path == "/metrics":
            self.reply(200, self.metrics.render())
        else:
            self.reply(404, {"error": "not found"})


def main() -> None:
    config = Config.from_env(os.environ)
    metrics = Metrics()
    public_handler = type(
        "Public",
        (PublicHandler,),
        {"couch": Couch(config), "secret": config.partition_secret, "metrics": metrics},
    )
    management_handler = type("Management", (ManagementHandler,), {"metrics": metrics})
    servers = [
        ThreadingHTTPServer((config.bind, config.port), public_handler),
        ThreadingHTTPServer((config.bind, config.management_port), management_handler),
    ]
    for server in servers:
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, daemon=True).start()
    print(
        json.dumps(
            {
                "event": "serving",
                "port": config.port,
                "management_port": config.management_port,
                "couchdb": config.couchdb_url,
                "database": config.database,
                "uid": os.getuid(),
            }
        ),
        flush=True,
    )
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()
    for server in servers:
        server.shutdown()
        server.server_close()


if __name__ == "__main__":
    main()
