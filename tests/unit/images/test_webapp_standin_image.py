"""The web app stand-in (images/webapp-standin/) against the Deployment the program declares
for the real site: started with that Deployment's environment, it answers its probes and the
PodMonitor's scrape on the ports they name, and its image runs as the pod's user.

The Deployment is the program's own (mocked run of both stacks), not a copy of its values.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import certifi
import pytest
import requests

from tests.unit.harness import Recorded, one

REPO = Path(__file__).resolve().parents[3]
STANDIN = REPO / "images" / "webapp-standin"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def started_as_deployed(stack: list[Recorded], tmp_path: Path) -> Iterator[dict[str, int]]:
    """The stand-in with the Deployment's environment: secrets and the CA file stood in for,
    the container ports moved to free loopback ports. Yields container port -> local port."""
    (container,) = one(stack, "Deployment", "webapp").spec["template"]["spec"]["containers"]
    local = {p["containerPort"]: _free_port() for p in container["ports"]}
    # Any PEM CA stands in for the cluster's (the app loads it at start).
    ca_file = tmp_path / "ca.crt"
    shutil.copyfile(certifi.where(), ca_file)
    env = {k: v for k, v in os.environ.items() if not k.startswith("COUCHDB_")}
    env["BIND_ADDRESS"] = "127.0.0.1"
    for var in container["env"]:
        value = var.get("value", f"secret-{var['name'].lower()}")
        if var["name"] in ("PORT", "MANAGEMENT_PORT"):
            value = str(local[int(value)])
        if var["name"] == "COUCHDB_CA_FILE":
            value = str(ca_file)
        env[var["name"]] = value
    process = subprocess.Popen(
        [sys.executable, str(STANDIN / "app.py")],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 20
        while not _listening(local.values()):
            if process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"did not start: {process.communicate()[1]}")
            time.sleep(0.1)
        yield local
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=10)


def _listening(ports: Any) -> bool:
    for port in ports:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) != 0:
                return False
    return True


def test_it_answers_the_deployments_probes_and_scrape_on_the_ports_they_name(
    stack: list[Recorded], tmp_path: Path
) -> None:
    (container,) = one(stack, "Deployment", "webapp").spec["template"]["spec"]["containers"]
    by_name = {p["name"]: p["containerPort"] for p in container["ports"]}
    (endpoint,) = one(stack, "PodMonitor", "webapp").spec["podMetricsEndpoints"]
    checks = [
        (container[probe]["httpGet"]["port"], container[probe]["httpGet"]["path"])
        for probe in ("readinessProbe", "livenessProbe")
    ] + [(endpoint["port"], endpoint["path"])]
    http = requests.Session()
    http.trust_env = False
    with started_as_deployed(stack, tmp_path) as local:
        answers = {
            (name, path): http.get(f"http://127.0.0.1:{local[by_name[name]]}{path}", timeout=5)
            for name, path in checks
        }
        # The Service's port (the edge's) serves neither.
        public = {
            path: http.get(f"http://127.0.0.1:{local[by_name['http']]}{path}", timeout=5)
            for _, path in checks
        }
    assert {key: answer.status_code for key, answer in answers.items()} == dict.fromkeys(
        answers, 200
    )
    assert (
        "# TYPE http_requests_total counter" in answers[(endpoint["port"], endpoint["path"])].text
    )
    assert {path: answer.status_code for path, answer in public.items()} == dict.fromkeys(
        public, 404
    )


def test_the_image_runs_as_the_pods_user(stack: list[Recorded]) -> None:
    pod = one(stack, "Deployment", "webapp").spec["template"]["spec"]["securityContext"]
    users = re.findall(r"^USER (\S+)$", (STANDIN / "Dockerfile").read_text(), re.M)
    assert users == [f"{int(pod['runAsUser'])}:{int(pod['runAsGroup'])}"]


def test_the_dockerfile_builds_with_the_classic_builder_from_its_allow_listed_context() -> None:
    text = (STANDIN / "Dockerfile").read_text()
    assert not re.search(r"<<-?\s*['\"]?[A-Za-z_]+", text)
    assert not re.search(r"^\s*#\s*syntax=|--mount=|--link\b|--chmod=|--parents\b", text, re.M)
    allowed = {
        line[1:] for line in (STANDIN / ".dockerignore").read_text().splitlines() if line[:1] == "!"
    }
    sources = {
        source
        for line in text.splitlines()
        if line.startswith("COPY ")
        for source in line.split()[1:-1]
    }
    assert sources == {"app.py"}
    assert sources <= allowed


@pytest.mark.parametrize("missing", ["COUCHDB_PASSWORD", "USER_PARTITION_SECRET"])
def test_it_refuses_to_start_without_a_variable_the_deployment_gives(
    stack: list[Recorded], missing: str
) -> None:
    (container,) = one(stack, "Deployment", "webapp").spec["template"]["spec"]["containers"]
    names = {var["name"] for var in container["env"]}
    assert missing in names
    env = {k: v for k, v in os.environ.items() if not k.startswith("COUCHDB_")}
    env.update({name: "x" for name in names - {missing, "COUCHDB_CA_FILE"}})
    done = subprocess.run(
        [sys.executable, str(STANDIN / "app.py")],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode != 0
    assert missing in done.stderr
