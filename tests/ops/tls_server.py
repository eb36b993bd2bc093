"""A test CA and an HTTPS front for a plain CouchDB-protocol server, both on loopback.

The certificates are made by the `openssl` command line as cert-manager makes them for the
cluster (an ECDSA CA; a serving certificate of that CA for given DNS names, server and client
auth), and written as cert-manager's Secret is: `tls.crt`, `tls.key`, `ca.crt`. The front is
Python's own TLS server (the `ssl` module) relaying bytes to the plain server, so couchops'
client meets a real TLS handshake, certificate chain and host name check.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import socketserver
import ssl
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Issued:
    """A cert-manager-shaped Secret on disk."""

    directory: Path

    @property
    def cert(self) -> Path:
        return self.directory / "tls.crt"

    @property
    def key(self) -> Path:
        return self.directory / "tls.key"

    @property
    def ca(self) -> Path:
        return self.directory / "ca.crt"


def _openssl(*args: str) -> None:
    openssl = shutil.which("openssl")
    if openssl is None:
        raise RuntimeError("the openssl command line is needed to make the test certificates")
    subprocess.run([openssl, *args], check=True, capture_output=True)


def make_ca(directory: Path, name: str) -> Issued:
    directory.mkdir(parents=True)
    ca = Issued(directory)
    _openssl("ecparam", "-name", "secp384r1", "-genkey", "-noout", "-out", str(ca.key))
    _openssl(
        "req", "-x509", "-new", "-key", str(ca.key), "-subj", f"/CN={name}", "-days", "2",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign,digitalSignature",
        "-out", str(ca.ca),
    )  # fmt: skip
    return ca


def issue(ca: Issued, directory: Path, dns_names: list[str]) -> Issued:
    directory.mkdir(parents=True)
    leaf = Issued(directory)
    request = directory / "req.csr"
    extensions = directory / "ext.cnf"
    extensions.write_text(
        "subjectAltName=" + ",".join(f"DNS:{name}" for name in dns_names) + "\n"
        "keyUsage=critical,digitalSignature\n"
        "extendedKeyUsage=serverAuth,clientAuth\n"
        "basicConstraints=critical,CA:FALSE\n"
    )
    _openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", str(leaf.key))
    _openssl(
        "req", "-new", "-key", str(leaf.key), "-subj", f"/CN={dns_names[0]}", "-out", str(request)
    )  # fmt: skip
    _openssl(
        "x509", "-req", "-in", str(request), "-CA", str(ca.ca), "-CAkey", str(ca.key),
        "-CAcreateserial", "-days", "1", "-sha256", "-extfile", str(extensions),
        "-out", str(leaf.cert),
    )  # fmt: skip
    shutil.copyfile(ca.ca, leaf.ca)
    return leaf


class _Relay(socketserver.BaseRequestHandler):
    server: TlsFront

    def handle(self) -> None:
        try:
            client = self.server.context.wrap_socket(self.request, server_side=True)
        except (ssl.SSLError, OSError):
            return  # a client that refused our certificate, as the tests expect
        with client, socket.create_connection(self.server.backend) as backend:
            pump = threading.Thread(target=_copy, args=(backend, client), daemon=True)
            pump.start()
            _copy(client, backend)
            pump.join(timeout=60)


def _copy(source: socket.socket, target: socket.socket) -> None:
    try:
        while data := source.recv(65536):
            target.sendall(data)
    except OSError:
        pass
    finally:
        with contextlib.suppress(OSError):
            target.shutdown(socket.SHUT_WR)


class TlsFront(socketserver.ThreadingTCPServer):
    """HTTPS on 127.0.0.1 (a free port) with `issued`'s certificate, relayed to `backend`."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, issued: Issued, backend: tuple[str, int]) -> None:
        super().__init__(("127.0.0.1", 0), _Relay)
        self.backend = backend
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.minimum_version = ssl.TLSVersion.TLSv1_2
        self.context.load_cert_chain(issued.cert, issued.key)
        self.port = int(self.server_address[1])
        self._thread = threading.Thread(target=self.serve_forever, daemon=True)

    def __enter__(self) -> TlsFront:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()
        self.server_close()
