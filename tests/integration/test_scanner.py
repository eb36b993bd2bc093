"""scripts/scan-manifests.sh: the real checkov on the rendered manifests of both stacks, judged
against security/checkov-skips.txt (scripts/checkov_gate.py).

Scans what the real CLI renders from the current program: a copy of the project rendered by
test_pulumi_cli's fixtures, with its own state (rendered/ and .pulumi-state/ are never touched;
.ci/run also scans rendered/ after render-and-validate). Zero failed checks, every skip with a
reason, naming a check checkov has, excusing something. The gate's refusals are proven on the
same reports with altered skip files, and the secrets scan on a copy of the manifests with a
password put where none belongs.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

# The render of both stacks by the real CLI (module fixtures, run again for this module).
from tests.integration.test_pulumi_cli import Run, project, runs  # noqa: F401

ROOT = Path(__file__).resolve().parents[2]
SKIPS = ROOT / "security" / "checkov-skips.txt"
STACKS = ("prod", "preprod")
SCANNER = ROOT / "scripts" / "scan-manifests.sh"
# The virtualenv the scanner installs checkov into, at the version it pins.
_VERSION = re.search(r"^CHECKOV_VERSION=(\S+)$", SCANNER.read_text(), re.MULTILINE)
assert _VERSION is not None
CHECKOV = (
    Path(os.environ.get("TOOLCHAIN_CACHE", Path.home() / ".cache" / "onboarding-toolchain"))
    / f"checkov-{_VERSION.group(1)}"
)

pytestmark = [pytest.mark.integration]


@pytest.fixture(scope="module")
def rendered(request: pytest.FixtureRequest) -> Path:
    """The folder holding both stacks' freshly rendered manifests (<root>/<stack>/)."""
    done: dict[str, Run] = request.getfixturevalue("runs")
    roots = {run.rendered.parent for run in done.values()}
    assert len(roots) == 1 and all((root / s).is_dir() for root in roots for s in STACKS)
    return roots.pop()


def scan(*stacks: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(SCANNER), *stacks],
        cwd=ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )


def gate(skips: Path, reports: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            str(CHECKOV / "bin" / "python"),
            str(ROOT / "scripts" / "checkov_gate.py"),
            str(skips),
            *sorted(str(p) for p in reports.glob("*.json")),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


@pytest.fixture(scope="module")
def reports(tmp_path_factory: pytest.TempPathFactory, rendered: Path) -> Path:
    kept = tmp_path_factory.mktemp("checkov-reports")
    result = scan(CHECKOV_REPORTS=str(kept), SCAN_ROOT=str(rendered))
    assert result.returncode == 0, result.stdout + result.stderr
    summary = re.search(r"checkov: (\d+) passed, (\d+) failed, (\d+) skipped", result.stdout)
    assert summary is not None, result.stdout
    passed, failed, skipped = map(int, summary.groups())
    assert failed == 0
    assert passed > 1000  # both stacks' workloads were scanned, not an empty folder
    assert skipped > 0
    return kept


def skip_lines() -> list[str]:
    return [
        line for line in SKIPS.read_text().splitlines() if line.strip() and not line.startswith("#")
    ]


def test_both_stacks_pass_every_check_or_a_justified_skip(reports: Path) -> None:
    names = {p.name for p in reports.glob("*.json")}
    assert {f"{s}-{f}.json" for s in STACKS for f in ("kubernetes", "secrets")} <= names


def test_every_skip_has_a_reason_and_names_a_check_checkov_has(reports: Path) -> None:
    known = subprocess.run(
        [
            str(CHECKOV / "bin" / "python"),
            "-c",
            "from checkov.docs_generator import get_checks\n"
            "print('\\n'.join(c[0] for c in get_checks(['kubernetes', 'secrets'])))",
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    ).stdout.split()
    lines = skip_lines()
    assert lines
    for line in lines:
        check, target, reason = line.split(None, 2)
        assert check in known, line
        assert target
        assert len(reason.split()) >= 8, line


def test_an_unknown_check_a_missing_reason_and_a_stale_skip_are_refused(
    reports: Path, tmp_path: Path
) -> None:
    lines = skip_lines()
    cases = {
        "unknown": ["CKV_K8S_99999 * a reason long enough to pass the count of words", *lines],
        "no-reason": [re.sub(r"^(\S+ \S+) .*$", r"\1 because", lines[0]), *lines[1:]],
        "stale": [*lines, "CKV_K8S_20 Pod.*.nothing a reason long enough to pass the word count"],
    }
    expected = {
        "unknown": "CKV_K8S_99999 is no check of checkov",
        "no-reason": "a skip needs a reason",
        "stale": "excuses no finding any more",
    }
    for case, content in cases.items():
        skips = tmp_path / f"{case}.txt"
        skips.write_text("\n".join(content) + "\n")
        result = gate(skips, reports)
        assert result.returncode == 1, case
        assert expected[case] in result.stderr, (case, result.stderr)


def test_a_finding_without_its_skip_fails(reports: Path, tmp_path: Path) -> None:
    skips = tmp_path / "fewer.txt"
    kept = [line for line in skip_lines() if not line.startswith("CKV_K8S_40")]
    skips.write_text("\n".join(kept) + "\n")
    result = gate(skips, reports)
    assert result.returncode == 1
    assert "FAILED CKV_K8S_40 StatefulSet.onboarding-prod.couchdb" in result.stderr
    assert "FAILED CKV_K8S_40 StatefulSet.onboarding-preprod.couchdb" in result.stderr


def test_a_secret_outside_the_secret_objects_fails_the_scan(tmp_path: Path, rendered: Path) -> None:
    """The skip of the rendered Secret objects hides nothing else: a password in a
    ConfigMap of the same folder is found."""
    shutil.copytree(rendered / "prod", tmp_path / "prod")
    leak = tmp_path / "prod" / "1-manifest" / "v1-configmap-onboarding-prod-leak.yaml"
    leak.write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: leak\n  namespace: onboarding-prod\n"
        "data:\n  db_password: Zx8qP2mN7vR4tL9wK3sJ6hF1dG5bC0aE\n"
    )
    result = scan("prod", SCAN_ROOT=str(tmp_path))
    assert result.returncode == 1
    assert re.search(
        r"FAILED CKV_SECRET_\d+ .*v1-configmap-onboarding-prod-leak\.yaml", result.stderr
    )
