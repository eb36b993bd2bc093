"""The merge-request pipelines, checked by the forges' own tools (scripts/bootstrap-ci-linters.sh
builds or fetches them once, cached outside the repository):

- .gitlab-ci.yml against GitLab's CI JSON schema (the pipeline editor's), then what the
  pipeline must do: tests, a policy-checked preview of each stack posted on the merge request
  without credentials, preprod on merge, prod manual; every job's script through shellcheck;
- .github/workflows/ through actionlint (which runs shellcheck on every `run:`);
- the note posted on the merge request, made from real `pulumi preview --policy-pack` output
  (a passing stack, and a program that breaks the rules).

Skipped, with the reason, when the linters are not built (run scripts/bootstrap-ci-linters.sh).
"""

from __future__ import annotations

import copy
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped]
import pytest
import yaml

from tests.integration import test_pulumi_cli as cli
from tests.integration.test_policy_pack import PACK, bad_project  # noqa: F401

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
BOOTSTRAP = (REPO / "scripts" / "bootstrap-ci-linters.sh").read_text()


def _pin(name: str) -> str:
    return next(
        line.split("=", 1)[1] for line in BOOTSTRAP.splitlines() if line.startswith(f"{name}=")
    )


LINTERS = (
    Path(os.environ.get("TOOLCHAIN_CACHE", Path.home() / ".cache" / "onboarding-toolchain"))
    / f"ci-linters-{_pin('ACTIONLINT_VERSION')}-{_pin('GITLAB_CI_LOCAL_VERSION')}"
)
ACTIONLINT = LINTERS / "bin" / "actionlint"
GITLAB_SCHEMA = LINTERS / "gitlab-ci.schema.json"
SHELLCHECK = shutil.which("shellcheck")

if not (ACTIONLINT.is_file() and GITLAB_SCHEMA.is_file() and SHELLCHECK):
    pytest.skip(
        f"CI linters not ready ({LINTERS}, shellcheck): run scripts/bootstrap-ci-linters.sh",
        allow_module_level=True,
    )

sys.path.insert(0, str(REPO / "scripts" / "ci"))
import post_preview  # noqa: E402


def gitlab_ci() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((REPO / ".gitlab-ci.yml").read_text())
    return loaded


def schema_errors(document: dict[str, Any]) -> list[str]:
    schema = yaml.safe_load(GITLAB_SCHEMA.read_text())
    validator = jsonschema.Draft7Validator(schema)
    return [
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
        for e in validator.iter_errors(document)
    ]


def test_the_gitlab_pipeline_is_valid_for_gitlab() -> None:
    assert schema_errors(gitlab_ci()) == []


def test_the_schema_check_finds_what_gitlab_would_refuse() -> None:
    broken = copy.deepcopy(gitlab_ci())
    broken["deploy-prod"]["rules"][0]["when"] = "manually"
    broken["lint"]["scripts"] = broken["lint"].pop("script")
    errors = schema_errors(broken)
    assert any(e.startswith("deploy-prod") for e in errors), errors
    assert any(e.startswith("lint") for e in errors), errors


JOBS_IN_MERGE_REQUESTS = {"lint", "test", "preview", "post-preview"}


def runs_in(job: dict[str, Any], source: str, branch: str) -> bool:
    """Whether a job is in the pipeline of that source and branch, by its rules' `if`s."""
    rules = job.get("rules")
    if rules is None:
        return True
    for rule in rules:
        condition = rule.get("if", "")
        if "merge_request_event" in condition and source != "merge_request_event":
            continue
        if "$CI_DEFAULT_BRANCH" in condition and branch != "main":
            continue
        return bool(rule.get("when") != "never")
    return False


def test_the_gitlab_pipeline_does_what_the_bank_asks() -> None:
    ci = gitlab_ci()
    jobs = {name: job for name, job in ci.items() if isinstance(job, dict) and "script" in job}
    assert ci["stages"] == ["test", "preview", "report", "preprod", "prod"]
    in_mr = {n for n, j in jobs.items() if runs_in(j, "merge_request_event", "feature")}
    on_main = {n for n, j in jobs.items() if runs_in(j, "push", "main")}
    assert in_mr == JOBS_IN_MERGE_REQUESTS
    assert on_main == {"lint", "test", "deploy-preprod", "preview-prod", "deploy-prod"}
    # Merge requests: no environment (so no environment-scoped credentials), render mode.
    assert not [n for n in in_mr if "environment" in jobs[n]]
    preview = jobs["preview"]
    assert preview["variables"]["ONBOARDING_RENDER"] == "1"
    assert preview["parallel"]["matrix"] == [{"STACK": ["prod", "preprod"]}]
    assert any('scripts/pulumi.sh preview "$STACK"' in line for line in preview["script"])
    assert "run preview --policy-pack policies" in (REPO / "scripts" / "pulumi.sh").read_text()
    post = jobs["post-preview"]
    assert post["rules"][0]["when"] == "always"
    assert any("scripts/ci/post_preview.py --forge gitlab" in line for line in post["script"])
    # Main: preprod deployed, prod by hand, behind the protected environment, after its preview.
    assert jobs["deploy-preprod"]["environment"]["name"] == "preprod"
    assert any(
        "CONFIRM=1 scripts/pulumi.sh up preprod" in s for s in jobs["deploy-preprod"]["script"]
    )
    prod = jobs["deploy-prod"]
    assert prod["rules"][0]["when"] == "manual" and prod["rules"][0]["allow_failure"] is False
    assert prod["environment"] == {"name": "prod", "deployment_tier": "production"}
    assert prod["needs"] == ["preview-prod"] and jobs["preview-prod"]["needs"] == ["deploy-preprod"]
    assert {jobs[n]["resource_group"] for n in ("deploy-preprod", "deploy-prod")} == {
        "preprod",
        "prod",
    }


def test_every_gitlab_job_script_passes_shellcheck(tmp_path: Path) -> None:
    ci = gitlab_ci()
    default = ci.get("default", {}).get("before_script", [])
    checked = 0
    for name, job in ci.items():
        if not isinstance(job, dict) or "script" not in job:
            continue
        assert SHELLCHECK is not None
        lines = [*job.get("before_script", default), *job["script"]]
        script = tmp_path / f"{name}.sh"
        script.write_text("#!/usr/bin/env bash\nset -e\n" + "\n".join(lines) + "\n")
        done = subprocess.run(
            [SHELLCHECK, "--severity=warning", str(script)],
            capture_output=True,
            text=True,
            check=False,
        )
        assert done.returncode == 0, f"{name}:\n{done.stdout}"
        checked += 1
    assert checked == 7


def actionlint(root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(ACTIONLINT), "-no-color"],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_the_github_workflows_pass_actionlint() -> None:
    done = actionlint(REPO)
    assert done.returncode == 0, done.stdout + done.stderr


def test_actionlint_finds_what_github_would_refuse(tmp_path: Path) -> None:
    shutil.copytree(REPO / ".github", tmp_path / ".github")
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)  # actionlint finds it so
    workflow = tmp_path / ".github" / "workflows" / "pipeline.yml"
    text = workflow.read_text()
    workflow.write_text(
        text.replace(
            "github.event_name == 'pull_request'", "github.evnt_name == 'pull_request'", 1
        ).replace("pull-requests: write", "pull-requests: writ", 1)
    )
    done = actionlint(tmp_path)
    assert done.returncode == 1
    assert 'property "evnt_name" is not defined' in done.stdout
    assert '"writ"' in done.stdout


def test_the_github_workflow_does_what_the_bank_asks() -> None:
    workflow = yaml.safe_load((REPO / ".github" / "workflows" / "pipeline.yml").read_text())
    jobs = workflow["jobs"]
    assert workflow["permissions"] == {"contents": "read"}
    assert jobs["preview"]["permissions"]["pull-requests"] == "write"
    assert "environment" not in jobs["preview"]
    assert jobs["deploy-preprod"]["environment"] == "preprod"
    assert jobs["deploy-prod"]["environment"] == "prod"
    assert jobs["deploy-prod"]["needs"] == ["deploy-preprod"]
    uses = [s["uses"] for job in jobs.values() for s in job["steps"] if "uses" in s]
    assert uses and all(len(u.split("@")[1]) == 40 for u in uses), uses  # pinned by commit


def test_the_note_reports_a_passing_preview_and_each_broken_rule(
    bad_project: tuple[Path, dict[str, str]],  # noqa: F811
    tmp_path: Path,
) -> None:
    project, env = bad_project
    broken = cli.pulumi(
        project, env, "preview", "--stack", "bad", "--policy-pack", str(PACK), check=False
    )
    assert broken.returncode != 0
    (tmp_path / "preview-bad.log").write_text(broken.stdout + broken.stderr)

    state = f"file://{tmp_path / 'good-state'}"
    good_env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PULUMI_", "ONBOARDING_", "KUBECONFIG"))
    }
    good_env.update(PULUMI_BACKEND_URL=state, ONBOARDING_RENDER="1")
    good = subprocess.run(
        [str(REPO / "scripts" / "pulumi.sh"), "preview", "preprod"],
        env=good_env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert good.returncode == 0, good.stdout + good.stderr
    (tmp_path / "preview-preprod.log").write_text(good.stdout + good.stderr)

    logs = [
        tmp_path / "preview-preprod.log",
        tmp_path / "preview-bad.log",
        tmp_path / "preview-prod.log",
    ]
    body = post_preview.note_body(logs, {"CI_COMMIT_SHORT_SHA": "abc1234"})
    assert body.startswith(post_preview.MARKER)
    assert "### preprod: policies passed" in body
    assert "### bad: policy violations: 3" in body
    for rule in [
        "couchdb-service-internal-only",
        "no-secret-in-configmap",
        "couchdb-not-routed-from-edge",
    ]:
        assert f"[mandatory]  {rule}" in body
    assert "### prod: no preview" in body  # a preview job that did not run
