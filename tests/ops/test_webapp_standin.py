"""The stand-in web app (images/webapp-standin/app.py), run as a process against the test
server (pouchdb-server, or the CouchDB of COUCHDB_URL) over HTTPS verified against a test CA,
as the platform's Deployment runs it: the same environment variables, the application user.

What it writes is read back with the admin client and judged by couchops' own functions (the
partition key the consolidation computes, the timestamp parser the purge uses), not by the
app's code.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests

from couchops.couch import db_path, doc_path
from couchops.partition import partition_key
from couchops.timestamps import parse_timestamp
from tests.ops.conftest import Server
from tests.ops.tls_server import Issued, TlsFront, issue, make_ca

pytestmark = pytest.mark.server

APP = Path(__file__).resolve().parents[2] / "images" / "webapp-standin" / "app.py"
SECRET = "partition-secret-of-the-test"


@dataclass(frozen=True)
class Database:
    url: str
    ca_file: Path
    name: str
    user: str
    password: str


@dataclass(frozen=True)
class App:
    public: str
    management: str
    process: subprocess.Popen[str]


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Issued]:
    base = tmp_path_factory.mktemp("standin-pki")
    cluster_ca = make_ca(base / "cluster-ca", "onboarding test couchdb CA")
    return {
        "cluster-ca": cluster_ca,
        "other-ca": make_ca(base / "other-ca", "another CA"),
        "serving": issue(cluster_ca, base / "serving", ["localhost"]),
    }


@pytest.fixture(scope="module")
def https(server: Server, pki: dict[str, Issued]) -> Iterator[tuple[str, Path]]:
    """CouchDB's URL on https and the CA file that verifies it, as the pods get them."""
    backend = urlsplit(server.url)
    if backend.scheme == "https" and server.ca_file:
        yield server.url, Path(server.ca_file)
        return
    assert backend.hostname is not None and backend.port is not None
    with TlsFront(pki["serving"], (backend.hostname, backend.port)) as front:
        yield f"https://localhost:{front.port}", pki["serving"].ca


@pytest.fixture(scope="module")
def database(server: Server, https: tuple[str, Path]) -> Iterator[Database]:
    """A database and its application user (not an admin), made as cluster-setup makes them."""
    admin = server.client()
    name = f"standin-{uuid.uuid4().hex[:10]}"
    user = f"standin-app-{uuid.uuid4().hex[:6]}"
    password = uuid.uuid4().hex
    params = {"partitioned": "true"} if server.kind == "couchdb" else {}
    admin.request("PUT", db_path(name), params=params, ok=(201, 202))
    account = f"org.couchdb.user:{user}"
    admin.request(
        "PUT",
        doc_path("_users", account),
        body={"_id": account, "name": user, "type": "user", "roles": [], "password": password},
        ok=(201, 202),
    )
    if server.kind == "couchdb":
        admin.put(
            f"{db_path(name)}/_security",
            {"admins": {"names": [], "roles": ["_admin"]}, "members": {"names": [user]}},
        )
    try:
        yield Database(https[0], https[1], name, user, password)
    finally:
        admin.request("DELETE", db_path(name), ok=(200, 202, 404))
        current = admin.get_doc("_users", account)
        if current:
            admin.request(
                "DELETE", doc_path("_users", account), params={"rev": current["_rev"]}, ok=(200,)
            )
        admin.close()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _http() -> requests.Session:
    session = requests.Session()
    session.trust_env = False  # loopback only, never a proxy
    return session


@contextlib.contextmanager
def running(db: Database, **overrides: str) -> Iterator[App]:
    port, management = _free_port(), _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("COUCHDB_")}
    env.update(
        PORT=str(port),
        MANAGEMENT_PORT=str(management),
        BIND_ADDRESS="127.0.0.1",
        COUCHDB_URL=db.url,
        COUCHDB_CA_FILE=str(db.ca_file),
        COUCHDB_DATABASE=db.name,
        COUCHDB_USER=db.user,
        COUCHDB_PASSWORD=db.password,
        USER_PARTITION_SECRET=SECRET,
        PYTHONDONTWRITEBYTECODE="1",
    )
    env.update(overrides)
    process = subprocess.Popen(
        [sys.executable, str(APP)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    app = App(f"http://127.0.0.1:{port}", f"http://127.0.0.1:{management}", process)
    try:
        deadline = time.monotonic() + 20
        while True:
            with contextlib.suppress(requests.ConnectionError):
                if _http().get(f"{app.management}/healthz", timeout=2).status_code == 200:
                    break
            if process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"the stand-in did not start: {process.communicate()[0]}")
            time.sleep(0.1)
        yield app
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.stdout:
            process.stdout.close()


def test_a_prospect_written_on_the_public_port_reads_back_partitioned_and_dated(
    server: Server, database: Database
) -> None:
    user = "alice.martin@example.fr"
    before = datetime.now(UTC)
    with running(database) as app:
        created = _http().post(
            f"{app.public}/prospects",
            json={"email": user, "step": "identity", "answers": {"country": "FR"}},
            timeout=20,
        )
        assert created.status_code == 201, created.text
        doc_id = created.json()["id"]
        read = _http().get(f"{app.public}/prospects/{doc_id}", timeout=20)
    after = datetime.now(UTC)

    assert read.status_code == 200, read.text
    assert read.json()["answers"] == {"country": "FR"}
    # The partition is the one couchops' consolidation computes for this user and secret.
    partition, _, local_id = doc_id.partition(":")
    assert partition == partition_key(user, SECRET.encode())
    assert created.json()["partition"] == partition
    assert len(local_id) == 32
    stored = server.client().get_doc(database.name, doc_id)
    assert stored is not None
    assert (stored["step"], stored["email"], stored["type"]) == ("identity", user, "application")
    assert "alice" not in doc_id  # the e-mail address is kept in the document, not in its id
    # The purge reads a document's age from createdAt, with its own parser.
    instant = parse_timestamp(stored["createdAt"], after)
    assert instant is not None, stored["createdAt"]
    assert before.replace(microsecond=0) <= instant <= after


def test_one_user_writes_into_one_partition_another_user_into_another(
    database: Database,
) -> None:
    with running(database) as app:
        ids = [
            _http().post(f"{app.public}/prospects", json={"email": user}, timeout=20).json()["id"]
            for user in ("bob@example.fr", "bob@example.fr", "carol@example.fr")
        ]
    partitions = [doc_id.split(":")[0] for doc_id in ids]
    assert partitions[0] == partitions[1] != partitions[2]
    assert len(set(ids)) == 3


def test_wrong_credentials_give_an_error_and_write_nothing(
    server: Server, database: Database
) -> None:
    admin = server.client()
    count = admin.get(db_path(database.name))["doc_count"]
    with running(database, COUCHDB_PASSWORD="not-the-password") as app:
        answer = _http().post(
            f"{app.public}/prospects", json={"email": "dave@example.fr"}, timeout=20
        )
    assert answer.status_code == 502
    assert "401" in answer.json()["error"]
    assert "not-the-password" not in answer.text
    assert admin.get(db_path(database.name))["doc_count"] == count


def test_a_server_certificate_of_another_ca_is_refused(
    database: Database, pki: dict[str, Issued]
) -> None:
    with running(database, COUCHDB_CA_FILE=str(pki["other-ca"].ca)) as app:
        answer = _http().post(
            f"{app.public}/prospects", json={"email": "erin@example.fr"}, timeout=20
        )
    assert answer.status_code == 503
    assert "CERTIFICATE_VERIFY_FAILED" in answer.json()["error"]


def test_only_prospect_ids_are_read(database: Database) -> None:
    with running(database) as app:
        missing = _http().get(f"{app.public}/prospects/u{'0' * 32}:{'1' * 32}", timeout=20)
        # Not a prospect id: no path into CouchDB's own endpoints or design documents.
        system = _http().get(f"{app.public}/prospects/_all_docs", timeout=20)
        design = _http().get(f"{app.public}/prospects/_design%2Fx", timeout=20)
    assert (missing.status_code, system.status_code, design.status_code) == (404, 404, 404)


def test_health_and_metrics_answer_on_the_management_port_only(database: Database) -> None:
    with running(database) as app:
        for user in ("frank@example.fr", "grace@example.fr"):
            _http().post(f"{app.public}/prospects", json={"email": user}, timeout=20)
        _http().post(f"{app.public}/prospects", json={"no-email": 1}, timeout=20)
        public = [
            _http().get(f"{app.public}{path}", timeout=5) for path in ("/healthz", "/metrics")
        ]
        health = _http().get(f"{app.management}/healthz", timeout=5)
        metrics = _http().get(f"{app.management}/metrics", timeout=5)
        site_on_management = _http().get(f"{app.management}/prospects/x", timeout=5)
    assert health.status_code == 200
    assert metrics.status_code == 200
    lines = metrics.text.splitlines()
    assert 'http_requests_total{method="POST",code="201"} 2' in lines
    assert 'http_requests_total{method="POST",code="400"} 1' in lines
    # The public port's own 404s for the management paths are counted; the probes are not.
    assert 'http_requests_total{method="GET",code="404"} 2' in lines
    assert 'http_request_duration_seconds_bucket{le="+Inf"} 5' in lines
    assert "http_request_duration_seconds_count 5" in lines
    assert [answer.status_code for answer in public] == [404, 404]
    assert site_on_management.status_code == 404


def test_missing_configuration_stops_the_app_at_start(database: Database) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("COUCHDB_")}
    env.update(PORT="1", MANAGEMENT_PORT="2", COUCHDB_URL=database.url)
    done = subprocess.run(
        [sys.executable, str(APP)], env=env, capture_output=True, text=True, timeout=30, check=False
    )
    assert done.returncode != 0
    assert "COUCHDB_PASSWORD" in done.stderr
    assert "USER_PARTITION_SECRET" in done.stderr


def test_sigterm_stops_the_app_cleanly(database: Database) -> None:
    with running(database) as app:
        pass
    assert app.process.returncode == 0
