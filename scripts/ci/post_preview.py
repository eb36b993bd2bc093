#!/usr/bin/env python3
"""Posts the previews of a merge request (GitLab) or pull request (GitHub) as one note on it,
updated in place at each push (found again by a hidden marker).

    python3 scripts/ci/post_preview.py --forge gitlab preview-prod.log preview-preprod.log

Each log is the output of `scripts/pulumi.sh preview <stack>` (with the policy pack), named
preview-<stack>.log; a missing log (a preview job that did not run) is reported as such. The
note gives, per stack, the policy verdict, the resource summary and the errors, then the whole
log folded (its end kept when it is long).

- GitLab: the Notes API of the merge request (CI_API_V4_URL, CI_PROJECT_ID,
  CI_MERGE_REQUEST_IID), authenticated by a project access token in GITLAB_PREVIEW_NOTE_TOKEN
  (CI_JOB_TOKEN may not write notes).
- GitHub: the issue-comments API of the pull request (GITHUB_API_URL, GITHUB_REPOSITORY, the
  number from GITHUB_EVENT_PATH), authenticated by GITHUB_TOKEN (`pull-requests: write`).
Outside a merge or pull request the note is printed and nothing is posted. Standard library
only: it runs before and without the project's virtualenv.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any

MARKER = "<!-- onboarding-preview -->"
LOG_TAIL_CHARS = 40_000
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


class PostError(RuntimeError):
    pass


def _section(lines: list[str], title: str) -> list[str]:
    """A block of pulumi's summary: the title line and the indented lines after it."""
    for start, line in enumerate(lines):
        if line.strip() == title:
            block = [line]
            for following in lines[start + 1 :]:
                if following.strip() and not following.startswith((" ", "\t")):
                    break
                block.append(following)
            return [b for b in block if b.strip()]
    return []


def summarize(stack: str, log: Path) -> str:
    if not log.is_file():
        return f"### {stack}: no preview\n\nNo log ({log.name}): the preview job did not run.\n"
    text = _ANSI.sub("", log.read_text(errors="replace"))
    lines = text.splitlines()
    errors = [line.strip() for line in lines if line.strip().startswith("error:")]
    violations = [line.strip() for line in lines if "[mandatory]" in line]
    advisories = [line.strip() for line in lines if "[advisory]" in line]
    if violations:
        verdict = f"policy violations: {len(violations)}"
    elif errors:
        verdict = "preview failed"
    elif not _section(lines, "Resources:"):
        verdict = "preview incomplete (no resource summary)"
    else:
        verdict = "policies passed"
    parts = [f"### {stack}: {verdict}", ""]
    for title, found in (("Mandatory policy violations", violations), ("Advisories", advisories)):
        if found:
            parts += [f"**{title}**", "", *(f"- `{v}`" for v in found), ""]
    if errors:
        parts += ["**Errors**", "", *(f"- `{e}`" for e in errors[:20]), ""]
    policies = _section(lines, "Policies:")
    if policies:
        parts += ["```", *policies[:80], "```", ""]
    resources = _section(lines, "Resources:")
    if resources:
        parts += ["```", *resources, "```", ""]
    shown = text if len(text) <= LOG_TAIL_CHARS else "…\n" + text[-LOG_TAIL_CHARS:]
    parts += [
        f"<details><summary>Full preview of {stack}</summary>",
        "",
        "```",
        shown.replace("```", "'''"),
        "```",
        "</details>",
        "",
    ]
    return "\n".join(parts)


def note_body(logs: list[Path], env: Mapping[str, str]) -> str:
    commit = env.get("CI_COMMIT_SHORT_SHA") or env.get("GITHUB_SHA", "")[:8]
    header = [
        MARKER,
        "## Pulumi preview with the policy pack (render mode)",
        "",
        f"Commit `{commit}`. Rendered into a throwaway state, without cluster or state "
        "credentials: every resource shows as created; the policy pack checks them all. The "
        "preview against the real state runs on main, before each deploy.",
        "",
    ]
    sections = [summarize(log.stem.removeprefix("preview-"), log) for log in logs]
    return "\n".join(header) + "\n".join(sections)


def _request(method: str, url: str, headers: dict[str, str], body: Any = None) -> Any:
    if not url.startswith(("https://", "http://")):
        raise PostError(f"not an HTTP(S) API URL: {url}")
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method, headers=headers)  # noqa: S310
    if data is not None:
        request.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310 (the forge's API URL)
        payload = response.read()
    return json.loads(payload) if payload else None


def post_gitlab(body: str, env: Mapping[str, str]) -> str:
    iid = env.get("CI_MERGE_REQUEST_IID")
    if not iid:
        return "not a merge request pipeline: nothing posted"
    token = env.get("GITLAB_PREVIEW_NOTE_TOKEN")
    if not token:
        raise PostError(
            "GITLAB_PREVIEW_NOTE_TOKEN is not set: a project access token (Reporter, api scope) "
            "as a masked CI/CD variable; CI_JOB_TOKEN cannot write notes"
        )
    base = f"{env['CI_API_V4_URL']}/projects/{env['CI_PROJECT_ID']}/merge_requests/{iid}/notes"
    headers = {"PRIVATE-TOKEN": token}
    notes = _request("GET", f"{base}?per_page=100&sort=desc&order_by=updated_at", headers)
    mine = [n for n in notes if MARKER in n.get("body", "") and not n.get("system")]
    if mine:
        _request("PUT", f"{base}/{mine[0]['id']}", headers, {"body": body})
        return f"updated note {mine[0]['id']} on merge request !{iid}"
    created = _request("POST", base, headers, {"body": body})
    return f"added note {created['id']} to merge request !{iid}"


def post_github(body: str, env: Mapping[str, str]) -> str:
    event_path = env.get("GITHUB_EVENT_PATH")
    event = json.loads(Path(event_path).read_text()) if event_path else {}
    number = (event.get("pull_request") or {}).get("number")
    if not number:
        return "not a pull request: nothing posted"
    token = env.get("GITHUB_TOKEN")
    if not token:
        raise PostError("GITHUB_TOKEN is not set (the job needs permissions: pull-requests: write)")
    api = env.get("GITHUB_API_URL", "https://api.github.com")
    repo = env["GITHUB_REPOSITORY"]
    headers = {"Authorization": f"Bearer {token}", "Accept": "application/vnd.github+json"}
    comments = _request("GET", f"{api}/repos/{repo}/issues/{number}/comments?per_page=100", headers)
    mine = [c for c in comments if MARKER in (c.get("body") or "")]
    if mine:
        _request(
            "PATCH", f"{api}/repos/{repo}/issues/comments/{mine[-1]['id']}", headers, {"body": body}
        )
        return f"updated comment {mine[-1]['id']} on pull request #{number}"
    created = _request(
        "POST", f"{api}/repos/{repo}/issues/{number}/comments", headers, {"body": body}
    )
    return f"added comment {created['id']} to pull request #{number}"


def main(argv: list[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--forge", choices=["gitlab", "github", "auto"], default="auto")
    parser.add_argument("logs", nargs="+", type=Path, help="preview-<stack>.log files")
    args = parser.parse_args(argv)
    env = os.environ if env is None else env
    forge = args.forge
    if forge == "auto":
        forge = "gitlab" if env.get("GITLAB_CI") else "github" if env.get("GITHUB_ACTIONS") else ""
    body = note_body(args.logs, env)
    try:
        if forge == "gitlab":
            outcome = post_gitlab(body, env)
        elif forge == "github":
            outcome = post_github(body, env)
        else:
            outcome = "no forge detected: nothing posted"
    except PostError as error:
        print(f"post_preview: {error}", file=sys.stderr)
        return 2
    print(body)
    print(f"post_preview: {outcome}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
