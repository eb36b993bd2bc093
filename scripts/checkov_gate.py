"""Judges checkov's JSON reports against the one file of justified skips.

    checkov_gate.py SKIP_FILE REPORT.json [REPORT.json ...]

Runs with the checkov virtualenv's Python (scripts/scan-manifests.sh), which knows every
check checkov has. The skip file holds one skip a line:

    <check id> <what it skips> <reason, in words>

where <what it skips> is a glob over checkov's resource id (`StatefulSet.onboarding-*.couchdb`)
or `file:<glob>` over the reported file path. `#` starts a comment line. A skip is refused when
it has no reason, names a check checkov does not have, or excuses nothing in the reports (a
stale skip would keep a reason that is no longer true). Exit 0 only when every failed check is
excused by a skip and every skip excuses something.
"""

from __future__ import annotations

import fnmatch
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Only in checkov's own virtualenv (scripts/scan-manifests.sh), never in the project's.
from checkov.docs_generator import get_checks

# A reason names what makes the finding acceptable here: a few words at least.
MIN_REASON_WORDS = 8


@dataclass
class Skip:
    line: int
    check: str
    target: str
    reason: str
    excused: list[str] = field(default_factory=list)

    def matches(self, finding: dict[str, Any]) -> bool:
        if finding["check_id"] != self.check:
            return False
        if self.target.startswith("file:"):
            return fnmatch.fnmatchcase(finding.get("file_path") or "", self.target[5:])
        return fnmatch.fnmatchcase(finding.get("resource") or "", self.target)


def known_checks() -> set[str]:
    return {check[0] for check in get_checks(["kubernetes", "secrets"])}


def read_skips(path: Path, known: set[str]) -> tuple[list[Skip], list[str]]:
    skips: list[Skip] = []
    errors: list[str] = []
    seen: set[tuple[str, str]] = set()
    for number, raw in enumerate(path.read_text().splitlines(), start=1):
        text = raw.strip()
        if not text or text.startswith("#"):
            continue
        parts = text.split(None, 2)
        where = f"{path}:{number}"
        if len(parts) < 3 or len(parts[2].split()) < MIN_REASON_WORDS:
            errors.append(f"{where}: a skip needs a reason of {MIN_REASON_WORDS} words or more")
            continue
        check, target, reason = parts
        if check not in known:
            errors.append(f"{where}: {check} is no check of checkov's kubernetes or secrets")
            continue
        if (check, target) in seen:
            errors.append(f"{where}: {check} {target} is skipped twice")
            continue
        seen.add((check, target))
        skips.append(Skip(number, check, target, reason))
    return skips, errors


def findings(report: Any) -> tuple[int, list[dict[str, Any]]]:
    """(passed checks, failed checks) of one checkov JSON report (one framework, one target,
    or a list of them; a scan that found nothing is a bare summary)."""
    if isinstance(report, list):
        passed, failed = 0, []
        for part in report:
            p, f = findings(part)
            passed += p
            failed += f
        return passed, failed
    results = report.get("results")
    if results is None:
        return int(report.get("passed", 0)), []
    return len(results.get("passed_checks", [])), list(results.get("failed_checks", []))


def main(argv: list[str]) -> int:
    if len(argv) < 3:
        print(__doc__, file=sys.stderr)
        return 2
    skips, errors = read_skips(Path(argv[1]), known_checks())
    passed = 0
    unexcused: list[str] = []
    for name in argv[2:]:
        p, failed = findings(json.loads(Path(name).read_text()))
        passed += p
        for finding in failed:
            label = f"{finding['check_id']} {finding.get('resource')} ({finding.get('file_path')})"
            skip = next((s for s in skips if s.matches(finding)), None)
            if skip is None:
                unexcused.append(f"FAILED {label}: {finding.get('check_name')}")
            else:
                skip.excused.append(label)
    for skip in skips:
        if skip.excused:
            print(f"skipped {len(skip.excused):3d} x {skip.check} {skip.target}: {skip.reason}")
        else:
            errors.append(
                f"{argv[1]}:{skip.line}: {skip.check} {skip.target} excuses no finding any "
                "more: delete the line"
            )
    if passed == 0:
        errors.append("no check passed: the reports scanned nothing (no rendered manifests?)")
    for line in unexcused + errors:
        print(line, file=sys.stderr)
    excused = sum(len(s.excused) for s in skips)
    print(
        f"checkov: {passed} passed, {len(unexcused)} failed, {excused} skipped ({len(skips)} skips)"
    )
    return 1 if unexcused or errors else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
