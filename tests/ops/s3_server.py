"""A real S3 server for the tests: SeaweedFS's `weed server -s3`, built from its Go module by
``scripts/bootstrap-seaweedfs.sh``, started once per session on loopback ports picked here.

Requests are signed and checked: the server reads an identities file with one access key and
secret, and refuses any other. Buckets are not created on upload (``-s3.autoCreateBucket=false``)
so a missing bucket is an error as at a provider; telemetry is off, so the server sends nothing
anywhere. Use it by importing the fixtures into a test module::

    from tests.ops.s3_server import S3Server, s3_server  # noqa: F401

``s3_server`` (session) yields an `S3Server`: ``endpoint``, ``access_key_id`` and
``secret_access_key`` (an administrator's), ``writer`` (a key and secret allowed only to read,
write and list objects), ``region``, ``new_bucket()`` (a fresh, empty bucket's name) and
``client()`` (a boto3 client with the administrator's credentials, for what a test inspects).
Without the binary the tests that use it are skipped, naming the script that builds it.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import pytest
import requests
from botocore.config import Config

SEAWEEDFS_VERSION = "v0.0.0-20261109003541-7506e5f91cd6"
"""As scripts/bootstrap-seaweedfs.sh builds it."""
WEED = (
    Path(os.environ.get("TOOLCHAIN_CACHE", Path.home() / ".cache" / "onboarding-toolchain"))
    / f"seaweedfs-{SEAWEEDFS_VERSION}"
    / "bin"
    / "weed"
)
REGION = "fr-par"
START_TIMEOUT = 90.0
MASTER_TOML = """\
[master.volume_growth]
copy_1 = 1
copy_2 = 1
copy_3 = 1
copy_other = 1
allocation_deferral = "0s"
"""


@dataclass
class S3Server:
    endpoint: str
    access_key_id: str
    secret_access_key: str = field(repr=False)
    region: str = REGION
    writer: tuple[str, str] = field(default=("", ""), repr=False)
    """Another key and secret, allowed to read, write and list objects but not to administer
    buckets (S3 actions Read, Write, List): what a backup job should be given."""
    pid: int = 0
    log: Path | None = None

    def client(self, **config: Any) -> Any:
        return boto3.session.Session().client(
            "s3",
            endpoint_url=self.endpoint,
            region_name=self.region,
            aws_access_key_id=self.access_key_id,
            aws_secret_access_key=self.secret_access_key,
            config=Config(
                signature_version="s3v4",
                s3={"addressing_style": "path"},
                retries={"total_max_attempts": 2, "mode": "standard"},
                **config,
            ),
        )

    def new_bucket(self) -> str:
        name = f"couchops-test-{uuid.uuid4().hex[:12]}"
        self.client().create_bucket(Bucket=name)
        return name


def _free_ports(count: int) -> list[int]:
    """Distinct free loopback ports (held open together, so none is picked twice)."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [int(s.getsockname()[1]) for s in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _command(data: Path, config: Path, ports: list[int]) -> list[str]:
    master, master_grpc, volume, volume_grpc, filer, filer_grpc, s3, s3_grpc = ports
    return [
        str(WEED),
        "server",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        f"-dir={data}",
        "-master.telemetry=false",
        f"-master.port={master}",
        f"-master.port.grpc={master_grpc}",
        "-master.volumeSizeLimitMB=32",
        f"-volume.port={volume}",
        f"-volume.port.grpc={volume_grpc}",
        "-volume.max=200",
        "-volume.preStopSeconds=0",
        "-filer",
        f"-filer.port={filer}",
        f"-filer.port.grpc={filer_grpc}",
        "-s3",
        f"-s3.port={s3}",
        f"-s3.port.grpc={s3_grpc}",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        f"-s3.config={config}",
        "-s3.autoCreateBucket=false",
    ]


def _wait_until_ready(server: S3Server, process: subprocess.Popen[bytes], log: Path) -> None:
    """Until a signed request is answered: the S3 port opens before the filer and the volume
    server are ready, so a bucket is created and an object written and read back."""
    deadline = time.monotonic() + START_TIMEOUT
    probe = f"couchops-probe-{uuid.uuid4().hex[:8]}"
    last = ""
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"weed exited ({process.returncode}): {log.read_text()[-2000:]}")
        try:
            requests.get(server.endpoint, timeout=2)
            client = server.client(connect_timeout=2, read_timeout=5)
            client.create_bucket(Bucket=probe)
            client.put_object(Bucket=probe, Key="probe", Body=b"ok")
            if client.get_object(Bucket=probe, Key="probe")["Body"].read() == b"ok":
                client.delete_object(Bucket=probe, Key="probe")
                client.delete_bucket(Bucket=probe)
                return
        except Exception as exc:  # not ready yet: refused, 5xx, no volume yet
            last = f"{type(exc).__name__}: {exc}"
        time.sleep(0.5)
    raise RuntimeError(
        f"weed did not serve S3 within {START_TIMEOUT:.0f} s ({last}): {log.read_text()[-2000:]}"
    )


def _stop(process: subprocess.Popen[bytes], ports: list[int]) -> None:
    """SIGTERM to the server's PID, SIGKILL 3 s later: a graceful stop takes weed about 15 s,
    and its data is thrown away."""
    if process.poll() is None:
        os.kill(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=3)
        except subprocess.TimeoutExpired:
            os.kill(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
    # a stopped server removes the gRPC sockets it made in /tmp; a killed one leaves them
    for port in ports:
        for sock in Path(tempfile.gettempdir()).glob(f"seaweedfs-*-{port}.sock"):
            sock.unlink(missing_ok=True)


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    if not WEED.is_file():
        pytest.skip(
            f"SeaweedFS is not built ({WEED} is missing): run scripts/bootstrap-seaweedfs.sh"
        )
    workdir = tmp_path_factory.mktemp("seaweedfs")
    data = workdir / "data"
    data.mkdir()
    access_key, secret_key = f"AK{secrets.token_hex(8).upper()}", secrets.token_urlsafe(30)
    writer_key, writer_secret = f"AK{secrets.token_hex(8).upper()}", secrets.token_urlsafe(30)
    config = workdir / "s3.json"
    config.write_text(
        json.dumps(
            {
                "identities": [
                    {
                        "name": "couchops-test",
                        "credentials": [{"accessKey": access_key, "secretKey": secret_key}],
                        "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                    },
                    {
                        "name": "couchops-writer",
                        "credentials": [{"accessKey": writer_key, "secretKey": writer_secret}],
                        "actions": ["Read", "Write", "List"],
                    },
                ]
            }
        )
    )
    config.chmod(0o600)
    # read from the working directory: one volume per new bucket (each bucket is a collection
    # of its own, and the default 7 would exhaust -volume.max within a few tests), none held
    # back after start
    (workdir / "master.toml").write_text(MASTER_TOML)
    ports = _free_ports(8)
    log = workdir / "weed.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            _command(data, config, ports), cwd=workdir, stdout=out, stderr=subprocess.STDOUT
        )
    server = S3Server(
        f"http://127.0.0.1:{ports[6]}",
        access_key,
        secret_key,
        writer=(writer_key, writer_secret),
        pid=process.pid,
        log=log,
    )
    try:
        _wait_until_ready(server, process, log)
        yield server
    finally:
        _stop(process, ports)
        shutil.rmtree(data, ignore_errors=True)
