"""Fixtures for the couchops tests.

Server tests run against `COUCHDB_URL` when it is set (admin credentials from
`COUCHDB_ADMIN_USER` / `COUCHDB_ADMIN_PASSWORD`, an HTTPS certificate verified against
`COUCHDB_CA_FILE` when set), otherwise against a pouchdb-server started
here, in memory, on a free loopback port, from the repository's npm install (`npm ci`).
Features pouchdb-server lacks are skipped there by `server.require(...)`, and covered by the
contract tests (marker `contract`) against the documented CouchDB requests and responses.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests

from couchops.couch import Couch, db_path

REPO = Path(__file__).resolve().parents[2]
POUCHDB_SERVER = REPO / "node_modules" / ".bin" / "pouchdb-server"
ADMIN = ("admin", "couchops-test-password")

# What Apache CouchDB 3.x has and pouchdb-server does not.
COUCHDB_ONLY = {
    "purge": "_purge",
    "partitioned": "partitioned databases",
    "cluster_setup": "_cluster_setup actions",
    "up": "/_up",
    "selector_changes": "_changes?filter=_selector",
    "compaction": "_compact",
    "security": "_security enforcement",
}


@dataclass
class Server:
    url: str
    credentials: tuple[str, str]
    kind: str
    nodes: list[str] = field(default_factory=list)
    node_urls: str | None = None
    """COUCHDB_NODE_URLS, where each node of the cluster answers directly (optional)."""
    ca_file: str | None = None
    """COUCHDB_CA_FILE: the CA of the server's HTTPS certificate (optional)."""

    def client(self, **kwargs: object) -> Couch:
        kwargs.setdefault("node_urls", self.node_urls)
        kwargs.setdefault("ca_file", self.ca_file)
        return Couch(self.url, self.credentials, timeout=60, retries=2, **kwargs)  # type: ignore[arg-type]

    def require(self, capability: str) -> None:
        if self.kind != "couchdb" and capability in COUCHDB_ONLY:
            pytest.skip(
                f"pouchdb-server does not implement {COUCHDB_ONLY[capability]}: "
                "covered by the contract tests; runs against a real CouchDB (COUCHDB_URL)"
            )

    def require_nodes(self, count: int) -> None:
        if len(self.nodes) < count:
            pytest.skip(f"needs a cluster of {count} nodes, the server has {len(self.nodes)}")

    def env(self) -> dict[str, str]:
        """Environment for a `couchops` subprocess against this server."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("COUCHDB_", "PURGE_"))}
        env.update(
            {
                "COUCHDB_URL": self.url,
                "COUCHDB_ADMIN_USER": self.credentials[0],
                "COUCHDB_ADMIN_PASSWORD": self.credentials[1],
                "ENVIRONMENT": "test",
                "PUSHGATEWAY_URL": "",
                "HTTP_RETRIES": "1",
            }
        )
        if self.node_urls:
            env["COUCHDB_NODE_URLS"] = self.node_urls
        if self.ca_file:
            env["COUCHDB_CA_FILE"] = self.ca_file
        return env


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _describe(
    url: str, credentials: tuple[str, str], kind: str, ca_file: str | None = None
) -> Server:
    nodes: list[str] = []
    response = requests.get(
        f"{url}/_membership", auth=credentials, timeout=10, verify=ca_file or True
    )
    if response.status_code == 200:
        nodes = list(response.json().get("cluster_nodes", []))
    node_urls = os.environ.get("COUCHDB_NODE_URLS") or None
    return Server(url, credentials, kind, nodes, node_urls, ca_file)


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    url = os.environ.get("COUCHDB_URL")
    if url:
        user = os.environ.get("COUCHDB_ADMIN_USER", "admin")
        password = os.environ.get("COUCHDB_ADMIN_PASSWORD", "")
        ca_file = os.environ.get("COUCHDB_CA_FILE") or None
        # With credentials: the platform's CouchDB requires them everywhere but on /_up.
        welcome = requests.get(
            url, auth=(user, password), timeout=10, verify=ca_file or True
        ).json()
        kind = "couchdb" if "couchdb" in welcome else "pouchdb"
        yield _describe(url.rstrip("/"), (user, password), kind, ca_file)
        return
    if not POUCHDB_SERVER.exists():
        pytest.fail(
            f"{POUCHDB_SERVER} is missing: run `npm ci` at the repository root "
            "(or set COUCHDB_URL to test against a CouchDB)"
        )
    workdir = tmp_path_factory.mktemp("pouchdb-server")
    port = _free_port()
    log = (workdir / "server.log").open("w")
    process = subprocess.Popen(
        [str(POUCHDB_SERVER), "--in-memory", "--host", "127.0.0.1", "--port", str(port)],
        cwd=workdir,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if requests.get(base, timeout=2).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    f"pouchdb-server did not start: {(workdir / 'server.log').read_text()[-500:]}"
                )
            time.sleep(0.2)
        requests.put(
            f"{base}/_config/admins/{ADMIN[0]}", data=f'"{ADMIN[1]}"', timeout=10
        ).raise_for_status()
        yield _describe(base, ADMIN, "pouchdb")
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture
def couch(server: Server) -> Iterator[Couch]:
    client = server.client()
    yield client
    client.close()


@pytest.fixture
def make_db(couch: Couch) -> Iterator[Callable[..., str]]:
    """Create uniquely named databases, deleted after the test."""
    created: list[str] = []

    def make(prefix: str = "couchops-test", *, create: bool = True, **params: object) -> str:
        name = f"{prefix}-{uuid.uuid4().hex[:10]}"
        if create:
            couch.request("PUT", db_path(name), params=params, ok=(201, 202))
        created.append(name)
        return name

    yield make
    for name in created:
        couch.request("DELETE", db_path(name), ok=(200, 202, 404))
