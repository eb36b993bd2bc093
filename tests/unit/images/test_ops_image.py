"""The couchops image (images/ops/Dockerfile) and its build context (/.dockerignore).

The context is the one the real docker CLI sends: `docker build` with the classic builder
(DOCKER_BUILDKIT=0) is pointed at a stand-in daemon on loopback that answers the ping, keeps
the context tar the CLI streams to POST /build, and ends the build. So the file list and the
size below are docker's own reading of .dockerignore (its pattern matcher, its exceptions),
not a reimplementation. Skipped, with the reason, when no docker CLI is on PATH.
"""

from __future__ import annotations

import ast
import importlib.metadata
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import ClassVar

import pytest

REPO = Path(__file__).resolve().parents[3]
DOCKERFILE = REPO / "images" / "ops" / "Dockerfile"
sys.path.insert(0, str(REPO / "images" / "ops"))
from requirements import WANTED, pinned  # noqa: E402

# Never in a build context: the virtualenv and node modules (hundreds of MB), rendered/ (the
# manifests, Secrets in clear), the Pulumi state, the git history, the tests and their keys.
FORBIDDEN = (".venv/", "node_modules/", "rendered/", ".pulumi-state/", ".git/", "tests/")
# Secret material, not the words for it: a PEM private key, an age identity, a Pulumi stack
# file's salt, an AWS access key id, a rendered Kubernetes Secret.
SECRET_MATERIAL = re.compile(
    rb"-----BEGIN [A-Z ]*PRIVATE KEY-----|AGE-SECRET-KEY-1[0-9A-Z]{58}|encryptionsalt: v1:"
    rb"|\bAKIA[0-9A-Z]{16}\b|^kind: Secret\b",
    re.M,
)


class _Daemon(BaseHTTPRequestHandler):
    """Just enough of the Docker Engine API for the classic builder to send its context."""

    protocol_version = "HTTP/1.1"
    captured: ClassVar[list[bytes]] = []

    def log_message(self, format: str, *args: object) -> None:
        pass

    def _reply(self, code: int, body: bytes, content_type: str = "application/json") -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Api-Version", "1.47")
        self.send_header("Ostype", "linux")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_HEAD(self) -> None:
        self._reply(200, b"")

    def do_GET(self) -> None:
        if self.path.endswith("/_ping"):
            self._reply(200, b"OK", "text/plain")
        else:
            self._reply(404, b'{"message": "not in this stand-in"}')

    def do_POST(self) -> None:
        if "/build" not in self.path:
            self._reply(404, b'{"message": "not in this stand-in"}')
            return
        body = bytearray()
        if "chunked" in self.headers.get("Transfer-Encoding", ""):
            while size := int(self.rfile.readline().split(b";")[0].strip(), 16):
                body += self.rfile.read(size)
                self.rfile.readline()
            self.rfile.readline()
        else:
            body += self.rfile.read(int(self.headers.get("Content-Length", "0")))
        type(self).captured.append(bytes(body))
        message = {"error": "context captured", "errorDetail": {"message": "context captured"}}
        self._reply(200, json.dumps(message).encode() + b"\n")


@pytest.fixture(scope="module")
def context() -> Iterator[dict[str, int]]:
    """The build context docker sends for images/ops/Dockerfile: path -> size in bytes."""
    docker = shutil.which("docker")
    if docker is None:
        pytest.skip("no docker CLI on PATH: the context is docker's own computation")
    server = HTTPServer(("127.0.0.1", 0), _Daemon)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    _Daemon.captured.clear()
    env = {k: v for k, v in os.environ.items() if not k.startswith("DOCKER_")}
    env.update(
        DOCKER_HOST=f"tcp://127.0.0.1:{server.server_address[1]}",
        DOCKER_BUILDKIT="0",
        DOCKER_CONFIG=str(REPO / ".no-docker-config"),  # never the user's credentials
        NO_PROXY="127.0.0.1",
        no_proxy="127.0.0.1",
    )
    try:
        done = subprocess.run(
            [docker, "build", "-f", str(DOCKERFILE.relative_to(REPO)), "."],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    finally:
        server.shutdown()
        thread.join()
    assert "context captured" in done.stdout + done.stderr, done.stdout + done.stderr
    (tar,) = _Daemon.captured
    with tarfile.open(fileobj=io.BytesIO(tar)) as archive:
        members = {m.name: m for m in archive.getmembers() if m.isfile()}
        contents = {name: archive.extractfile(m).read() for name, m in members.items()}  # type: ignore[union-attr]
    yield {name: len(data) for name, data in contents.items()} | {
        "<secret-material>": sum(bool(SECRET_MATERIAL.search(d)) for d in contents.values())
    }


def test_the_context_is_small_and_holds_only_what_the_image_needs(context: dict[str, int]) -> None:
    files = {name: size for name, size in context.items() if not name.startswith("<")}
    couchops = {name for name in files if name.startswith("couchops/")}
    assert {n.removeprefix("couchops/") for n in couchops} == {
        str(p.relative_to(REPO / "couchops"))
        for p in (REPO / "couchops").rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    }
    assert "couchops/cli.py" in couchops
    # Docker always sends the Dockerfile and .dockerignore; the rest is the allow-list.
    assert set(files) - couchops == {
        ".dockerignore",
        "images/ops/Dockerfile",
        "images/ops/requirements.py",
        "pyproject.toml",
    }
    assert not [n for n in files if n.startswith(FORBIDDEN) or "__pycache__" in n]
    assert sum(files.values()) < 2 * 1024 * 1024, sum(files.values())


def test_the_context_holds_no_secret(context: dict[str, int]) -> None:
    assert context["<secret-material>"] == 0


def test_every_file_the_dockerfile_copies_is_in_the_context(context: dict[str, int]) -> None:
    sources = [
        source
        for line in DOCKERFILE.read_text().splitlines()
        if line.startswith("COPY ") and "--from=" not in line
        for source in line.split()[1:-1]
    ]
    assert sources, "no COPY in the Dockerfile"
    for source in sources:
        assert any(name == source or name.startswith(source) for name in context), source


def test_the_dockerfile_builds_with_the_classic_builder() -> None:
    text = DOCKERFILE.read_text()
    # Heredocs (RUN <<EOF, COPY <<EOF) and BuildKit-only flags are refused by the classic builder.
    assert not re.search(r"<<-?\s*['\"]?[A-Za-z_]+", text)
    assert not re.search(r"^\s*#\s*syntax=|--mount=|--link\b|--chmod=|--parents\b", text, re.M)


def third_party_imports() -> set[str]:
    modules: set[str] = set()
    for path in (REPO / "couchops").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                modules |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules.add(node.module.split(".")[0])
    return {m for m in modules if m not in sys.stdlib_module_names and m != "couchops"}


def requirements_closure(names: set[str]) -> set[str]:
    seen: set[str] = set()
    todo = [n.lower() for n in names]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        for requirement in importlib.metadata.requires(name) or []:
            if "extra ==" not in requirement:
                todo.append(re.split(r"[=<>!~\[ ;(]", requirement, maxsplit=1)[0].lower())
    return {n.replace("_", "-") for n in seen}


def test_the_image_installs_every_distribution_couchops_imports() -> None:
    distributions = importlib.metadata.packages_distributions()
    imported = {
        module: {d.lower().replace("_", "-") for d in distributions.get(module, [])}
        for module in third_party_imports()
    }
    assert {"boto3", "ijson", "pyrage", "requests"} <= imported.keys()
    installed = requirements_closure(set(WANTED))
    missing = {m: d for m, d in imported.items() if not d & installed}
    assert missing == {}, f"couchops imports these, the image does not install them: {missing}"


def test_the_wanted_set_is_pinned_by_pyproject() -> None:
    specs = pinned(str(REPO / "pyproject.toml"))
    assert len(specs) == len(WANTED)
    assert all("==" in spec for spec in specs), specs
