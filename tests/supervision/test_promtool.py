"""`promtool check rules` and `promtool test rules` over freshly exported files."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from supervision.context import ENVIRONMENTS, default_context
from supervision.export import write

pytestmark = [pytest.mark.prometheus, pytest.mark.slow]


def _promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        message = "promtool not found (Debian: apt-get install -y prometheus)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


def _run(*args: str, cwd: Path) -> None:
    result = subprocess.run(args, check=False, cwd=cwd, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, (
        f"{' '.join(args)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}"
    )


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("monitoring")
    write(out, [default_context(env) for env in ENVIRONMENTS])
    return out


def test_promtool_accepts_the_rules(exported: Path) -> None:
    rules = sorted(str(p) for p in (exported / "rules").glob("*.rules.yaml"))
    assert len(rules) == len(ENVIRONMENTS)
    _run(_promtool(), "check", "rules", *rules, cwd=exported)


@pytest.mark.parametrize("environment", ENVIRONMENTS)
def test_promtool_unit_tests_pass(exported: Path, environment: str) -> None:
    tests = sorted(p.name for p in (exported / "tests").glob(f"{environment}.*test.yaml"))
    assert len(tests) == 2
    _run(_promtool(), "test", "rules", *tests, cwd=exported / "tests")
