"""The client's retries against a real HTTP server on loopback: a 409 answered to a read is read
again (Apache CouchDB 3.5 answered one to `GET /_node/<node>/_nodes/_all_docs` while a new
cluster's nodes were syncing: tests/realpods), a 409 answered to a write is a conflict and is
not retried."""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Iterator

import pytest

from couchops.couch import Couch
from couchops.errors import CouchError


class _Server(http.server.ThreadingHTTPServer):
    hits: dict[str, int]


class _Conflicting(http.server.BaseHTTPRequestHandler):
    server: _Server

    def _answer(self, code: int, body: object) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        hits = self.server.hits
        hits[self.path] = hits.get(self.path, 0) + 1
        if hits[self.path] == 1:  # the first read conflicts, as CouchDB's did
            self._answer(409, {"error": "conflict", "reason": "Document update conflict."})
        else:
            self._answer(200, {"rows": []})

    def do_PUT(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        hits = self.server.hits
        hits[self.path] = hits.get(self.path, 0) + 1
        self._answer(409, {"error": "conflict", "reason": "Document update conflict."})

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[_Server]:
    httpd = _Server(("127.0.0.1", 0), _Conflicting)
    httpd.hits = {}
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def test_a_conflict_answered_to_a_read_is_read_again(server: _Server) -> None:
    couch = Couch(f"http://127.0.0.1:{server.server_port}", backoff=0.01)
    assert couch.get("/_node/n1/_nodes/_all_docs") == {"rows": []}
    assert server.hits["/_node/n1/_nodes/_all_docs"] == 2


def test_a_conflict_answered_to_a_write_is_not_retried(server: _Server) -> None:
    couch = Couch(f"http://127.0.0.1:{server.server_port}", backoff=0.01)
    with pytest.raises(CouchError, match="409"):
        couch.put("/db/doc", {"a": 1})
    assert server.hits["/db/doc"] == 1
