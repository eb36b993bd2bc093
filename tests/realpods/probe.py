"""Runs INSIDE the cluster (python -c, in the ops image, as a CouchDB client pod): the questions
the real-pods tests ask CouchDB, each printing one JSON line last.

    status URL...                   per node: /_up, /_membership, an admin login (/_session)
    write DB PREFIX COUNT SECONDS   COUNT documents, one at a time, through the Service; each
                                    acknowledged one printed as `ACK <id> <status>`; a failed
                                    write is retried until SECONDS have passed
    check DB ID...                  which of these ids the database has (_all_docs by keys)
    put-old DB ID DAYS              a prospect whose createdAt is DAYS days ago
    view DB PART                    a design document whose view emits every document's createdAt
                                    (queried once, so its index is built)
    info DB                         the database's info (GET /DB)
    reads DB ID [REV]               every kind of read of one document, and what each answered

Environment: COUCHDB_URL (the Service), COUCHDB_CA_FILE, COUCHDB_ADMIN_USER/_PASSWORD,
PROBE_WAIT (seconds to wait, first, for CouchDB to be reachable: see wait_reachable).
"""

import json
import os
import sys
import time
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

import requests

URL = os.environ["COUCHDB_URL"].rstrip("/")
AUTH = (os.environ["COUCHDB_ADMIN_USER"], os.environ["COUCHDB_ADMIN_PASSWORD"])
session = requests.Session()
session.verify = os.environ["COUCHDB_CA_FILE"]
session.auth = AUTH


def emit(result: dict[str, Any]) -> None:
    print(json.dumps(result, sort_keys=True), flush=True)


def status(urls: list[str]) -> None:
    nodes: dict[str, dict[str, Any]] = {}
    for url in urls:
        entry: dict[str, Any] = {}
        try:
            entry["up"] = session.get(f"{url}/_up", auth=None, timeout=10).status_code
            membership = session.get(f"{url}/_membership", timeout=10).json()
            entry["all_nodes"] = sorted(membership.get("all_nodes", []))
            entry["cluster_nodes"] = sorted(membership.get("cluster_nodes", []))
            login = session.post(
                f"{url}/_session",
                auth=None,
                json={"name": AUTH[0], "password": AUTH[1]},
                timeout=10,
            )
            entry["login"] = login.status_code
            entry["roles"] = login.json().get("roles", [])
        except requests.RequestException as exc:
            entry["error"] = str(exc)[:300]
        nodes[url] = entry
    emit({"nodes": nodes})


def write(db: str, prefix: str, count: int, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    statuses: dict[str, int] = {}
    errors: list[str] = []
    acked = 0
    for i in range(count):
        doc_id = f"realpods:{prefix}-{i:05d}"
        body = {"createdAt": datetime.now(UTC).isoformat(), "kind": "prospect", "n": i}
        while True:
            answer: object
            try:
                answer = session.put(f"{URL}/{db}/{quote(doc_id, safe=':')}", json=body, timeout=15)
                code = answer.status_code
            except requests.RequestException as exc:
                code, answer = None, exc
            if code in (201, 202):
                statuses[str(code)] = statuses.get(str(code), 0) + 1
                acked += 1
                print(f"ACK {doc_id} {code}", flush=True)
                break
            if code == 409:  # a retried write that had landed: it is there, say so
                statuses["409"] = statuses.get("409", 0) + 1
                acked += 1
                print(f"ACK {doc_id} 409", flush=True)
                break
            errors.append(f"{doc_id}: {code or ''} {str(answer)[:160]}")
            if time.monotonic() > deadline:
                emit({"acked": acked, "statuses": statuses, "errors": errors, "gave_up": doc_id})
                sys.exit(3)
            time.sleep(0.5)
    emit({"acked": acked, "statuses": statuses, "errors": errors})


def check(db: str, ids: list[str]) -> None:
    rows = session.post(f"{URL}/{db}/_all_docs", json={"keys": ids}, timeout=60).json()["rows"]
    missing = [r["key"] for r in rows if "error" in r or r.get("value", {}).get("deleted")]
    emit({"asked": len(ids), "missing": missing})


def put_old(db: str, doc_id: str, days: int) -> None:
    created = (datetime.now(UTC) - timedelta(days=days)).isoformat()
    response = session.put(
        f"{URL}/{db}/{quote(doc_id, safe=':')}",
        json={"createdAt": created, "kind": "prospect", "email": "old@example.org"},
        timeout=30,
    )
    response.raise_for_status()
    emit({"id": doc_id, "rev": response.json()["rev"], "createdAt": created})


VIEW_DOC = "_design/realpods"


def view(db: str, partition: str) -> None:
    body = {"views": {"by_created": {"map": "function (doc) { emit(doc.createdAt, null); }"}}}
    response = session.put(f"{URL}/{db}/{VIEW_DOC}", json=body, timeout=30)
    if response.status_code != 409:
        response.raise_for_status()
    rows = session.get(
        f"{URL}/{db}/_partition/{partition}/{VIEW_DOC}/_view/by_created", timeout=120
    ).json()
    emit({"view": VIEW_DOC, "rows": len(rows.get("rows", [])), "answer": str(rows)[:200]})


def reads(db: str, doc_id: str, rev: str | None = None) -> None:
    quoted = quote(doc_id, safe=":")
    partition = doc_id.split(":", 1)[0]
    answers: dict[str, dict[str, Any]] = {}

    def ask(name: str, method: str, path: str, **kwargs: Any) -> None:
        try:
            response = session.request(method, f"{URL}/{db}{path}", timeout=60, **kwargs)
            answers[name] = {"status": response.status_code, "body": response.text[:400]}
        except requests.RequestException as exc:
            answers[name] = {"error": str(exc)[:300]}

    ask("plain", "GET", f"/{quoted}")
    ask("stable", "GET", f"/{quoted}", params={"stable": "true", "update": "false"})
    ask("open_revs_all", "GET", f"/{quoted}", params={"open_revs": "all"})
    if rev:
        ask("by_revision", "GET", f"/{quoted}", params={"rev": rev})
    ask("all_docs", "POST", "/_all_docs", json={"keys": [doc_id]})
    ask(
        "partition_all_docs",
        "GET",
        f"/_partition/{partition}/_all_docs",
        params={"key": json.dumps(doc_id)},
    )
    ask("changes", "POST", "/_changes", params={"filter": "_doc_ids"}, json={"doc_ids": [doc_id]})
    ask("find", "POST", "/_find", json={"selector": {"_id": doc_id}})
    ask("view", "GET", f"/_partition/{partition}/{VIEW_DOC}/_view/by_created")
    ask(
        "view_stable",
        "GET",
        f"/_partition/{partition}/{VIEW_DOC}/_view/by_created",
        params={"stable": "true", "update": "false"},
    )
    emit({"id": doc_id, "reads": answers})


def info(db: str) -> None:
    emit({"db": session.get(f"{URL}/{db}", timeout=30).json()})


def wait_reachable(url: str, seconds: float) -> None:
    """A new pod's first connections can be refused until the NetworkPolicy enforcer has
    added its address to the sets the policies allow (kube-router: a few seconds): retry
    until `url` answers anything over HTTPS, or `seconds` have passed (then the command runs
    and reports what it gets)."""
    start = time.monotonic()
    while True:
        try:
            session.get(f"{url}/_up", auth=None, timeout=5)
        except requests.RequestException as exc:
            if time.monotonic() - start > seconds:
                print(f"not reachable after {seconds:.0f}s: {str(exc)[:200]}", file=sys.stderr)
                return
            time.sleep(1)
            continue
        print(f"reachable after {time.monotonic() - start:.1f}s", file=sys.stderr)
        return


def main(argv: list[str]) -> None:
    command, args = argv[0], argv[1:]
    # status asks every node: each must have had its chance (a CouchDB pod just restarted is
    # Ready for its kubelet, on its node, a few seconds before the enforcer lets clients in)
    for url in args if command == "status" else [URL]:
        wait_reachable(url, float(os.environ["PROBE_WAIT"]))
    if command == "status":
        status(args)
    elif command == "write":
        write(args[0], args[1], int(args[2]), float(args[3]))
    elif command == "check":
        check(args[0], args[1:])
    elif command == "put-old":
        put_old(args[0], args[1], int(args[2]))
    elif command == "info":
        info(args[0])
    elif command == "view":
        view(args[0], args[1])
    elif command == "reads":
        reads(args[0], args[1], *(args[2:3]))
    else:
        sys.exit(f"unknown command {command}")


main(sys.argv[1:])
