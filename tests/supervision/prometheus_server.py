"""A real Prometheus for the tests: series written as OpenMetrics, turned into TSDB blocks by
`promtool tsdb create-blocks-from openmetrics`, served on a free loopback port.

The server scrapes nothing (empty configuration) and listens on 127.0.0.1 only.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

import pytest
import requests

Samples = Sequence[tuple[float, float]]


def require(binary: str) -> str:
    path = shutil.which(binary)
    if path is None:
        message = f"{binary} not found (Debian: apt-get install -y prometheus)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _labels(labels: Mapping[str, str]) -> str:
    escaped = (
        f'{k}="{v.replace(chr(92), chr(92) * 2).replace(chr(34), chr(92) + chr(34))}"'
        for k, v in labels.items()
    )
    return "{" + ",".join(escaped) + "}"


def write_openmetrics(
    path: Path, families: Mapping[str, Sequence[tuple[Mapping[str, str], Samples]]]
) -> None:
    """families: metric name -> [(labels, [(unix seconds, value), ...]), ...]."""
    with path.open("w", encoding="utf-8") as out:
        for name, series in families.items():
            out.write(f"# TYPE {name} gauge\n")
            for labels, samples in series:
                head = f"{name}{_labels(labels)}"
                # repr: exact, where 6 significant digits would round timestamps to ~1000 s.
                out.writelines(f"{head} {value!r} {at:.3f}\n" for at, value in samples)
        out.write("# EOF\n")


def create_blocks(openmetrics: Path, data_dir: Path) -> None:
    result = subprocess.run(
        [
            require("promtool"),
            "tsdb",
            "create-blocks-from",
            "openmetrics",
            "--quiet",
            # Blocks of 10 days, not the default 2 h: a month of samples then takes seconds
            # instead of minutes (one block written per 2 h window). Hidden flag, in 2.42 too.
            "--max-block-duration=240h",
            str(openmetrics),
            str(data_dir),
        ],
        check=False,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, (
        f"promtool create-blocks failed:\n{result.stdout}\n{result.stderr}"
    )


@contextmanager
def serve(data_dir: Path, log: Path) -> Iterator[str]:
    """Prometheus over `data_dir` on a free loopback port; yields its URL, stops it after."""
    config = data_dir.parent / "prometheus.yml"
    config.write_text("global:\n  evaluation_interval: 1m\n", encoding="utf-8")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with log.open("w") as log_file:
        process = subprocess.Popen(
            [
                require("prometheus"),
                f"--config.file={config}",
                f"--storage.tsdb.path={data_dir}",
                # Blocks older than the retention are deleted at start: the test data is
                # months old by the time CI runs, so keep everything.
                "--storage.tsdb.retention.time=100y",
                f"--web.listen-address=127.0.0.1:{port}",
                "--log.level=warn",
            ],
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.monotonic() + 120
            while True:
                if process.poll() is not None:
                    pytest.fail(f"prometheus exited with {process.returncode}:\n{log.read_text()}")
                try:
                    if requests.get(f"{url}/-/ready", timeout=2).status_code == 200:
                        break
                except requests.exceptions.ConnectionError:
                    pass
                if time.monotonic() > deadline:
                    pytest.fail(f"prometheus not ready after 120 s:\n{log.read_text()}")
                time.sleep(0.3)
            yield url
        finally:
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
