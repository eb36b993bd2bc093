"""couchops verifies CouchDB's HTTPS certificate against the cluster's CA, and nothing else.

A real TLS handshake: the test server (pouchdb-server, or the CouchDB of COUCHDB_URL when it
speaks plain HTTP) behind Python's TLS server with a certificate of a test CA shaped as
cert-manager issues the cluster's (tests/ops/tls_server.py).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from couchops.couch import Couch, db_path
from couchops.errors import CouchError
from tests.ops.conftest import Server
from tests.ops.helpers import run_cli
from tests.ops.tls_server import Issued, TlsFront, issue, make_ca


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Issued]:
    base = tmp_path_factory.mktemp("pki")
    cluster_ca = make_ca(base / "cluster-ca", "onboarding test couchdb CA")
    other_ca = make_ca(base / "other-ca", "another CA")
    return {
        "cluster-ca": cluster_ca,
        "other-ca": other_ca,
        "serving": issue(cluster_ca, base / "serving", ["localhost"]),
    }


@pytest.fixture(scope="module")
def https_url(server: Server, pki: dict[str, Issued]) -> Iterator[str]:
    backend = urlsplit(server.url)
    if backend.scheme != "http" or backend.hostname is None or backend.port is None:
        pytest.skip(
            "the server under test speaks HTTPS already: the whole suite ran through it "
            "with COUCHDB_CA_FILE"
        )
    with TlsFront(pki["serving"], (backend.hostname, backend.port)) as front:
        # The certificate names `localhost`, as the cluster's names its Service and pods.
        yield f"https://localhost:{front.port}"


def _client(server: Server, url: str, ca_file: Path | None) -> Couch:
    return Couch(
        url, server.credentials, timeout=10, retries=0, ca_file=str(ca_file) if ca_file else None
    )


def test_couchops_reads_and_writes_through_https_verified_against_the_cluster_ca(
    server: Server, https_url: str, pki: dict[str, Issued]
) -> None:
    couch = _client(server, https_url, pki["serving"].ca)
    name = f"couchops-tls-{uuid.uuid4().hex[:10]}"
    try:
        couch.request("PUT", db_path(name), ok=(201, 202))
        couch.put_doc(name, {"_id": "u1:profile", "step": "identity"})
        assert couch.get_doc(name, "u1:profile")["step"] == "identity"  # type: ignore[index]
    finally:
        couch.request("DELETE", db_path(name), ok=(200, 202, 404))
        couch.close()


@pytest.mark.parametrize("ca", ["other-ca", None])
def test_a_certificate_the_given_ca_did_not_issue_is_refused(
    server: Server,
    https_url: str,
    pki: dict[str, Issued],
    ca: str | None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With another CA, or with no CA at all (the system's trusted CAs, which never issued
    the cluster's private CA), the handshake fails before any credential is sent."""
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
    couch = _client(server, https_url, pki[ca].ca if ca else None)
    with pytest.raises(CouchError, match="CERTIFICATE_VERIFY_FAILED"):
        couch.get("/")


def test_a_host_name_the_certificate_does_not_hold_is_refused(
    server: Server, https_url: str, pki: dict[str, Issued]
) -> None:
    couch = _client(server, https_url.replace("localhost", "127.0.0.1"), pki["serving"].ca)
    with pytest.raises(CouchError, match="CERTIFICATE_VERIFY_FAILED"):
        couch.get("/")


def test_couchdb_ca_file_wins_over_requests_ca_bundle(
    server: Server, https_url: str, pki: dict[str, Issued], monkeypatch: pytest.MonkeyPatch
) -> None:
    """requests lets REQUESTS_CA_BUNDLE (set on many machines and images) replace a Session's
    `verify`: the CA given to couchops must hold either way."""
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(pki["other-ca"].ca))
    assert _client(server, https_url, pki["serving"].ca).get("/")
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(pki["serving"].ca))
    with pytest.raises(CouchError, match="CERTIFICATE_VERIFY_FAILED"):
        _client(server, https_url, pki["other-ca"].ca).get("/")


def test_the_couchops_command_backs_up_over_https_with_couchdb_ca_file(
    server: Server, https_url: str, pki: dict[str, Issued], tmp_path: Path
) -> None:
    """As the jobs run it: COUCHDB_URL on https, COUCHDB_CA_FILE the mounted `ca.crt`."""
    env = {
        **server.env(),
        "COUCHDB_URL": https_url,
        "COUCHDB_CA_FILE": str(pki["serving"].ca),
        "BACKUP_DIR": str(tmp_path / "backups"),
        "HTTP_RETRIES": "0",
    }
    env.pop("COUCHDB_NODE_URLS", None)
    verified = run_cli(["backup"], env)
    assert verified.returncode == 0, verified.stderr[-2000:]
    assert "CERTIFICATE_VERIFY_FAILED" not in verified.stderr
    refused = run_cli(["backup"], {**env, "COUCHDB_CA_FILE": str(pki["other-ca"].ca)})
    assert refused.returncode != 0
    assert "CERTIFICATE_VERIFY_FAILED" in refused.stderr
