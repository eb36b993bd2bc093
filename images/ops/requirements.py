"""Prints the pinned requirements of the couchops image: the project's dependencies (from
pyproject.toml, the one source of versions) that couchops imports, and nothing else (the
Pulumi SDKs and the rest of the project have no place in the image).

    python images/ops/requirements.py pyproject.toml > requirements.txt

A plain script, not a Dockerfile heredoc, so the classic builder (DOCKER_BUILDKIT=0) builds the
image too. tests/unit/images/test_ops_image.py checks that WANTED covers every third-party
module couchops imports.
"""

from __future__ import annotations

import re
import sys
import tomllib

# Distributions couchops imports directly (botocore and urllib3 come with boto3 and requests).
WANTED = frozenset(
    {
        "requests",
        "pydantic",
        "structlog",
        "prometheus-client",
        "orjson",
        "ijson",
        "pyrage",
        "boto3",
    }
)


def pinned(pyproject: str) -> list[str]:
    with open(pyproject, "rb") as file:
        specs: list[str] = tomllib.load(file)["project"]["dependencies"]
    found = {re.split(r"[=<>!~\[ ;]", spec, maxsplit=1)[0].lower(): spec for spec in specs}
    missing = sorted(WANTED - found.keys())
    if missing:
        raise SystemExit(f"{pyproject} does not pin {', '.join(missing)}")
    return [found[name] for name in sorted(WANTED)]


if __name__ == "__main__":
    print("\n".join(pinned(sys.argv[1] if len(sys.argv) > 1 else "pyproject.toml")))
